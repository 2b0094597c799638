import json

import numpy as np
import pytest

from hebae import paths, runs


def _artifacts(workdir):
    (workdir / "checkpoint.safetensors").write_bytes(b"weights")
    return runs.Artifacts(history=[{"epoch": 1, "objective": 1.5}], metrics={"elbo": -99.0}, arrays={"mu": np.arange(6.0).reshape(2, 3)})


def test_run_id_is_stable_and_order_free():
    a = runs.run_id({"model": "hebae", "lam": 1.0, "seed": 0})
    assert a == runs.run_id({"seed": 0, "lam": 1.0, "model": "hebae"})
    assert a.startswith("hebae-") and len(a) == len("hebae-") + 12
    assert a != runs.run_id({"model": "hebae", "lam": 0.3, "seed": 0})


def test_trains_once_then_loads(tmp_path):
    calls = []

    def train(workdir):
        calls.append(workdir)
        return _artifacts(workdir)

    config = {"model": "vae", "lam": 1.0, "profile": "reduced"}
    first = runs.get_or_train(config, train, root=tmp_path)
    second = runs.get_or_train(config, train, root=tmp_path)
    assert len(calls) == 1 and first.path == second.path
    assert second.config == config and second.metrics == {"elbo": -99.0}
    assert second.history[0]["objective"] == 1.5
    np.testing.assert_array_equal(second.arrays["mu"], np.arange(6.0).reshape(2, 3))
    assert second.checkpoint.read_bytes() == b"weights"
    prov = second.provenance
    assert {"git_commit", "packages", "machine", "device", "wall_seconds", "started_utc"} <= prov.keys()
    assert prov["packages"]["torch"]
    assert prov["profile"] == "reduced"  # copied from the config, never read from the environment
    assert prov["batch"] == {"size": 1, "index": 0}  # trained alone
    assert runs.find(config, root=tmp_path).path == first.path
    assert [r.id for r in runs.select(root=tmp_path, model="vae")] == [first.id]
    assert runs.select(root=tmp_path, model="wae") == []


def test_failed_training_leaves_nothing(tmp_path):
    def train(workdir):
        (workdir / "checkpoint.safetensors").write_bytes(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        runs.get_or_train({"model": "vae"}, train, root=tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert runs.find({"model": "vae"}, root=tmp_path) is None


def test_config_that_cannot_be_stored_is_rejected_before_training(tmp_path):
    with pytest.raises(ValueError):
        runs.get_or_train({"model": "vae", "lam": float("nan")}, _artifacts, root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_results_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HEBAE_RESULTS_DIR", str(tmp_path))
    run = runs.get_or_train({"model": "wae"}, _artifacts)
    assert run.path.parent == tmp_path
    assert json.loads((run.path / "config.json").read_text()) == {"model": "wae"}


def test_a_run_stored_meanwhile_by_another_process_wins(tmp_path):
    config = {"model": "vae", "seed": 7}

    def train_while_another_finishes(workdir):
        runs.get_or_train(config, lambda w: runs.Artifacts(metrics={"who": "other"}), root=tmp_path)
        return runs.Artifacts(metrics={"who": "us"})

    run = runs.get_or_train(config, train_while_another_finishes, root=tmp_path)
    assert run.metrics == {"who": "other"}
    assert [p.name for p in tmp_path.iterdir()] == [run.id]


def test_every_stored_run_agrees_with_its_provenance_on_profile():
    stored = runs.select(root=paths.PROJECT_ROOT / "results")
    for run in stored:
        assert run.config.get("profile") in ("paper", "reduced", "smoke"), run.id
        assert run.provenance.get("profile") == run.config["profile"], run.id
        assert "smoke" not in run.config, f"{run.id}: the profile is one key, 'profile'"
