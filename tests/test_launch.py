"""The grid launcher: one job per architecture group, on the local executor (the same function
a SLURM job runs), and the reproduce tool's plan."""

import subprocess
import sys

import pytest

from hebae import experiment, launch, runs
from hebae.paths import PROJECT_ROOT
from pages import classes


def _configs():
    vae, wae = classes()["vae"], classes()["wae"]
    common = dict(dataset="synthetic", profile="smoke", epochs=1, n_train=64, n_test=64, batch_size=32, latent_dim=2)
    return [experiment.configure(vae, seed=s, **common)[0] for s in (0, 1)] + [experiment.configure(wae, seed=0, **common)[0]]


def test_local_executor_trains_each_group_once_and_stores_every_run(tmp_path):
    configs = _configs()
    groups = launch.plan(configs, root=tmp_path)
    assert [len(g) for g in groups] == [2, 1]
    # Batching is asked for: by default it is used only on a GPU (hebae.batched.pays).
    outcomes = launch.launch(groups, executor="local", device="cpu", results=tmp_path, progress=False, batch=True)
    assert [o.error for o in outcomes] == [None, None]
    assert [i for o in outcomes for i in o.stored] == [runs.run_id(c) for c in configs]
    sizes = [runs.find(c, tmp_path).provenance["batch"]["size"] for c in configs]
    assert sizes == [2, 2, 1]
    assert launch.plan(configs, root=tmp_path) == []  # nothing left to make
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(runs.run_id(c) for c in configs)


def test_a_failing_group_is_reported_and_the_others_stored(tmp_path):
    good, bad = _configs()[2:], [{**_configs()[0], "model": "nope"}]
    outcomes = launch.launch([bad, good], executor="local", device="cpu", results=tmp_path, progress=False)
    assert outcomes[0].error and "nope" in outcomes[0].error and outcomes[1].error is None
    assert all(runs.find(c, tmp_path) for c in good)


def test_submitit_local_executor_runs_the_cluster_path(tmp_path):
    pytest.importorskip("submitit")
    configs = _configs()[2:]
    outcomes = launch.launch(launch.plan(configs, root=tmp_path), executor="submitit-local", device="cpu",
                             results=tmp_path / "results", folder=tmp_path / "jobs", slurm={"timeout_min": 10})
    assert [o.error for o in outcomes] == [None], outcomes
    assert runs.find(configs[0], tmp_path / "results").provenance["batch"]["size"] == 1


def test_unknown_executor_is_refused(tmp_path):
    with pytest.raises(ValueError, match="executor must be one of local, slurm, submitit-local"):
        launch.launch([], executor="ray", results=tmp_path)


def test_reproduce_plans_several_grids_as_groups():
    out = subprocess.run([sys.executable, "tools/reproduce.py", "--grid", "mnist-paper", "mnist-ablations", "--profile", "paper", "--dry-run"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "grid mnist-paper at the paper profile: 78 runs" in out.stdout
    assert "grid mnist-ablations at the paper profile: 9 runs" in out.stdout
