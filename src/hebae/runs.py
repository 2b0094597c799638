"""Storage of runs; it knows nothing of what a run computes or at what scale.

A run is its full config. Its id is a stable hash of that config; its artifacts live in
``<results>/<id>/`` and are written atomically: into a temporary folder first, renamed into
place only once complete. Asking for a run that exists loads it instead of training.

Layout of one run folder::

    config.json      the full config (what the id hashes)
    history.json     one record per epoch
    metrics.json     final numbers
    arrays.npz       small arrays the figures need (latent moments, samples, ...)
    provenance.json  git commit, package versions, machine, device, wall time
    checkpoint.safetensors   weights (large; ignored by git)
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from .paths import PROJECT_ROOT, results_root


def canonical(config: dict) -> str:
    """The config as canonical JSON: sorted keys, no whitespace; what the id hashes."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_id(config: dict) -> str:
    """``<model>-<12 hex digits>``: readable, and stable across machines and sessions."""
    digest = hashlib.sha256(canonical(config).encode()).hexdigest()[:12]
    return f"{config.get('model', 'run')}-{digest}"


@dataclass
class Artifacts:
    """What a training function hands back to be stored."""

    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class Run:
    """A stored run, read lazily from its folder."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def id(self) -> str:
        return self.path.name

    def _json(self, name: str):
        return json.loads((self.path / name).read_text())

    @cached_property
    def config(self) -> dict:
        return self._json("config.json")

    @cached_property
    def history(self) -> list[dict]:
        return self._json("history.json")

    @cached_property
    def metrics(self) -> dict:
        return self._json("metrics.json")

    @cached_property
    def provenance(self) -> dict:
        return self._json("provenance.json")

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        path = self.path / "arrays.npz"
        if not path.exists():
            return {}
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.safetensors"

    def __repr__(self) -> str:
        return f"Run({self.id!r})"


def find(config: dict, root: Path | None = None) -> Run | None:
    """The stored run for exactly this config, or None."""
    path = (root or results_root()) / run_id(config)
    return Run(path) if (path / "config.json").exists() else None


def get_or_train(
    config: dict,
    train: Callable[[Path], Artifacts],
    *,
    root: Path | None = None,
) -> Run:
    """Load the run for ``config``; train and store it first if it does not exist.

    ``train(workdir)`` gets a temporary folder for large files (a checkpoint) and returns the
    :class:`Artifacts`. Nothing is left behind if it fails: the folder is renamed into place only
    after every file has been written.
    """
    canonical(config)  # fail early on a config that cannot be stored
    root = root or results_root()
    final = root / run_id(config)
    if (final / "config.json").exists():
        return Run(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        artifacts = train(tmp)
        wall = time.perf_counter() - t0
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "history.json", artifacts.history)
        _write_json(tmp / "metrics.json", artifacts.metrics)
        if artifacts.arrays:
            np.savez_compressed(tmp / "arrays.npz", **artifacts.arrays)
        _write_json(tmp / "provenance.json", provenance(config, started, wall))
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "config.json").exists():
                raise
            # Another process stored the same run meanwhile: keep theirs, drop ours.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Run(final)


def select(root: Path | None = None, **where) -> list[Run]:
    """Every stored run whose config has all the ``where`` items, sorted by id."""
    root = root or results_root()
    if not root.exists():
        return []
    runs = []
    for path in sorted(root.glob("*/config.json")):
        config = json.loads(path.read_text())
        if all(config.get(k) == v for k, v in where.items()):
            runs.append(Run(path.parent))
    return runs


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, allow_nan=True) + "\n")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def provenance(config: dict, started: datetime, wall_seconds: float) -> dict:
    """Where and how a run was made: code version, packages, machine, device, time. The scale
    is copied from the config, the one place it is decided."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("hebae", "torch", "torchvision", "numpy", "minepy", "pytorch-fid"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "packages": packages,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.node(),
        "device": _device_name(),
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_seconds": round(wall_seconds, 3),
        "profile": config.get("profile"),
    }


def frame(stored: list[Run]):
    """One row per run: its config, then its final metrics (a pandas DataFrame)."""
    import pandas as pd

    return pd.DataFrame([{"run": r, **r.config, **r.metrics} for r in stored])
