"""Resumable runs: a run stopped after some epochs and restarted ends as if never stopped;
what dead runs leave behind is cleaned up."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from hebae import experiment, runs, train
from pages import classes
from test_batched import SEEDS_LAMS, TinyVAE, _alone, _assert_same, _images, _together, float64  # noqa: F401 (a fixture)

CPU = torch.device("cpu")


class Stop(KeyboardInterrupt):
    pass


def _stop_at(epoch, evaluate=None):
    def callback(model, e):
        if e == epoch:
            raise Stop
        return evaluate(model, e) if evaluate else {}

    return callback


def _configs(epochs=3):
    return [train.TrainConfig(epochs=epochs, batch_size=16, lr=3e-3, seed=s) for s, _ in SEEDS_LAMS]


def _eval(test):
    return lambda m, e: {"test_objective": float(m.loss(test)["objective"])}


def test_a_lone_run_stopped_and_restarted_ends_as_if_never_stopped(tmp_path):
    images, test, make = _images(), _images(32), TinyVAE
    reference = _alone(make, images, _configs(), _eval(test))
    for (seed, lam), config, ref in zip(SEEDS_LAMS, _configs(), reference):
        path = tmp_path / f"{seed}.pt"
        train.seed_everything(seed)
        with pytest.raises(Stop):  # stopped while evaluating epoch 3: epoch 2 is the last complete
            train.fit(make(lam), images, config, device="cpu", progress=False, checkpoint=path, evaluate=_stop_at(3, _eval(test)))
        assert torch.load(path, weights_only=True)["epoch"] == 2
        train.seed_everything(seed)
        torch.rand(5)  # a restarted process's generator is anywhere: the checkpoint puts it back
        model = make(lam)
        history = train.fit(model, images, config, device="cpu", progress=False, checkpoint=path, evaluate=_eval(test))
        _assert_same([ref], [(model, history, torch.get_rng_state())], rtol=1e-6)


def test_a_batch_stopped_resumes_batched_or_alone(tmp_path, float64):
    # float64: a batch and lone runs sum in other orders, which float32 shows at 1e-6 on some CPUs
    images, test = _images(), _images(32)
    reference = _alone(TinyVAE, images, _configs(), _eval(test))
    paths = [tmp_path / f"{s}.pt" for s, _ in SEEDS_LAMS]
    with pytest.raises(Stop):
        _together(TinyVAE, images, _configs(), _stop_at(3, _eval(test)), checkpoints=paths)
    assert [torch.load(p, weights_only=True)["epoch"] for p in paths] == [2, 2, 2]
    backup = [p.read_bytes() for p in paths]
    _assert_same(reference, _together(TinyVAE, images, _configs(), _eval(test), checkpoints=paths), rtol=1e-6)
    for p, b in zip(paths, backup):  # the same checkpoints, finished as lone runs
        p.write_bytes(b)
    _assert_same(reference, _alone_from(paths, images, test), rtol=1e-6)


def _alone_from(paths, images, test):
    out = []
    for (seed, lam), config, path in zip(SEEDS_LAMS, _configs(), paths):
        train.seed_everything(seed)
        model = TinyVAE(lam)
        history = train.fit(model, images, config, device="cpu", progress=False, checkpoint=path, evaluate=_eval(test))
        out.append((model, history, torch.get_rng_state()))
    return out


def test_a_checkpoint_of_another_training_config_is_ignored(tmp_path):
    images, path = _images(64), tmp_path / "r.pt"
    train.fit(TinyVAE(1.0), images, train.TrainConfig(epochs=1, batch_size=16), device="cpu", progress=False, checkpoint=path)
    with pytest.warns(UserWarning, match="another training config"):
        history = train.fit(TinyVAE(1.0), images, train.TrainConfig(epochs=2, batch_size=16, lr=1e-4), device="cpu", progress=False, checkpoint=path)
    assert [h["epoch"] for h in history] == [1, 2]


KILLER = """
import os, signal, sys
from hebae import experiment, measure
from pages import classes

calls = []
def per_epoch(model, test_images, _real=measure.per_epoch):
    calls.append(1)
    if len(calls) == 2:  # while evaluating epoch 2: epoch 1 is checkpointed
        os.kill(os.getpid(), signal.SIGKILL)
    return _real(model, test_images)
measure.per_epoch = per_epoch
config = {config}
experiment.run(config, classes()["vae"], device="cpu", progress=False)
"""


def test_a_killed_run_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    vae = classes()["vae"]
    config, _ = experiment.configure(vae, dataset="synthetic", profile="smoke", epochs=3, n_train=128, n_test=64, batch_size=32)
    root = tmp_path / "results"
    env = {**os.environ, "HEBAE_RESULTS_DIR": str(root)}
    killed = subprocess.run([sys.executable, "-c", KILLER.format(config=repr(config))], cwd=runs.PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    rid = runs.run_id(config)
    partial = root / f".{rid}.partial"
    assert (partial / runs.RESUME_FILE).exists() and (root / f".{rid}.lock").exists()
    assert runs.clean_stale(root) == []  # its owner is dead, but it can be resumed from: kept
    monkeypatch.setenv("HEBAE_RESULTS_DIR", str(root))
    resumed = experiment.run(config, vae, device="cpu", progress=False)
    assert [p.name for p in root.iterdir()] == [rid]  # lock and temporary folder gone
    fresh = runs.get_or_train(config, lambda w: experiment.train_one(config, vae, CPU, w, progress=False), root=tmp_path / "fresh")
    assert len(resumed.history) == 3
    for a, b in zip(resumed.history, fresh.history):
        assert {k: v for k, v in a.items() if k != "seconds"} == pytest.approx({k: v for k, v in b.items() if k != "seconds"}, rel=1e-5)


def _owned_by(path, pid, host=None):
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "since": 0}))


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_clean_stale_removes_what_dead_runs_leave_and_keeps_the_rest(tmp_path):
    dead = _dead_pid()
    a, b, c, d = (f"vae-{i:012x}" for i in range(4))
    # a: dead owner, nothing to resume from -> removed (with its lock)
    (tmp_path / f".{a}.partial").mkdir()
    _owned_by(tmp_path / f".{a}.lock", dead)
    # b: dead owner, resumable -> kept
    (tmp_path / f".{b}.partial").mkdir()
    (tmp_path / f".{b}.partial" / runs.RESUME_FILE).write_bytes(b"state")
    _owned_by(tmp_path / f".{b}.lock", dead)
    # c: a live owner (this process) -> kept
    (tmp_path / f".{c}.partial").mkdir()
    _owned_by(tmp_path / f".{c}.lock", os.getpid())
    # a private folder of a dead process, and an empty one of an earlier version -> removed
    private = tmp_path / f".{d}.tmp-abc123"
    private.mkdir()
    _owned_by(private / "owner.json", dead)
    legacy = tmp_path / f".{d}.x1y2z3"
    legacy.mkdir()
    old = time.time() - 3600
    os.utime(legacy, (old, old))
    # another host's lock, silent for longer than HEBAE_STALE_SECONDS -> dead
    (tmp_path / f".{d}.partial").mkdir()
    _owned_by(tmp_path / f".{d}.lock", 1, host="elsewhere")
    os.utime(tmp_path / f".{d}.lock", (old, old))
    os.utime(tmp_path / f".{d}.partial", (old, old))
    removed = {p.name for p in runs.clean_stale(tmp_path)}
    assert removed == {f".{a}.partial", private.name, legacy.name, f".{d}.partial"}
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {f".{b}.partial", f".{b}.lock", f".{c}.partial", f".{c}.lock"}


def test_a_dead_owners_run_is_taken_over_and_a_live_ones_is_not(tmp_path):
    config = {"model": "vae", "seed": 3}
    rid = runs.run_id(config)
    (tmp_path / f".{rid}.partial").mkdir()
    (tmp_path / f".{rid}.partial" / "left.txt").write_text("from the dead run")
    _owned_by(tmp_path / f".{rid}.lock", _dead_pid())
    seen = []

    def train_fn(workdir):
        seen.append((workdir.name, sorted(p.name for p in workdir.iterdir())))
        return runs.Artifacts(metrics={"ok": 1})

    run = runs.get_or_train(config, train_fn, root=tmp_path)
    assert seen == [(f".{rid}.partial", ["left.txt"])]  # taken over, with what it held
    assert run.provenance["batch"] == {"size": 1, "index": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == [rid]
