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

While a run trains, its files live in ``<results>/.<id>.partial/``, owned through the lock file
``<results>/.<id>.lock`` (process id, host). A training loop may keep a resume checkpoint
there; if the process dies, the next process asking for the same config takes the folder over
(its owner is dead: same host and no such process, or another host and no sign of life for
``$HEBAE_STALE_SECONDS``, default an hour) and resumes. :func:`clean_stale` removes what dead
runs left behind and cannot be resumed from.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator

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


RESUME_FILE = "resume.pt"  # a training loop's resume state in a run's temporary folder (never stored)


def stale_seconds() -> float:
    return float(os.environ.get("HEBAE_STALE_SECONDS", "3600"))


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _last_sign_of_life(*paths: Path) -> float:
    """The newest modification time of ``paths`` and the files directly in them."""
    times = []
    for path in paths:
        for p in [path, *(path.iterdir() if path.is_dir() else ())]:
            try:
                times.append(p.stat().st_mtime)
            except OSError:
                pass
    return max(times, default=0.0)


def _owner_dead(owner_file: Path, *activity: Path) -> bool:
    """Whether the process named in ``owner_file`` is gone: on this host, no such process; on
    another host (a shared results folder), no write to ``owner_file`` or ``activity`` for
    :func:`stale_seconds`. An unreadable owner file counts by age alone."""
    try:
        owner = json.loads(owner_file.read_text())
    except (OSError, ValueError):
        owner = {}
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return not _pid_alive(owner["pid"])
    return time.time() - _last_sign_of_life(owner_file, *activity) > stale_seconds()


def _try_lock(lock: Path, partial: Path) -> bool:
    """Create ``lock`` for this process; break it first if its owner is dead."""
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _owner_dead(lock, partial):
                return False
            # Break the dead owner's lock: a rename succeeds for one process only.
            grave = lock.with_name(f"{lock.name}.stale-{os.getpid()}-{time.monotonic_ns()}")
            try:
                os.rename(lock, grave)
            except FileNotFoundError:
                continue
            if not _owner_dead(grave, partial):  # a live owner took it meanwhile: give it back
                os.rename(grave, lock)
                return False
            grave.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(_owner(), f)
        return True
    return False


class Claim:
    """A run being made: its temporary ``workdir`` and, once trained, :meth:`store`."""

    def __init__(self, config: dict, final: Path, workdir: Path, lock: Path | None):
        self.config, self.final, self.workdir, self.lock = config, final, workdir, lock
        self.run: Run | None = None
        self.restart_clock()

    def restart_clock(self) -> None:
        """Start the run's clock now (its provenance's ``started_utc`` and ``wall_seconds``)."""
        self.started = datetime.now(timezone.utc)
        self._t0 = time.perf_counter()

    @property
    def resume_file(self) -> Path:
        return self.workdir / RESUME_FILE

    def store(self, artifacts: Artifacts, *, wall_seconds: float | None = None, **extra) -> Run:
        """Write the artifacts and rename the folder into place; ``extra`` goes into the provenance."""
        wall = time.perf_counter() - self._t0 if wall_seconds is None else wall_seconds
        tmp = self.workdir
        self.resume_file.unlink(missing_ok=True)
        _write_json(tmp / "config.json", self.config)
        _write_json(tmp / "history.json", artifacts.history)
        _write_json(tmp / "metrics.json", artifacts.metrics)
        if artifacts.arrays:
            np.savez_compressed(tmp / "arrays.npz", **artifacts.arrays)
        (tmp / "owner.json").unlink(missing_ok=True)
        _write_json(tmp / "provenance.json", provenance(self.config, self.started, wall, **extra))
        try:
            os.replace(tmp, self.final)
        except OSError:
            if not (self.final / "config.json").exists():
                raise
            # Another process stored the same run meanwhile: keep theirs, drop ours.
            shutil.rmtree(tmp, ignore_errors=True)
        self.run = Run(self.final)
        return self.run


@contextmanager
def claim(config: dict, root: Path | None = None) -> Iterator[Claim | None]:
    """Claim the run of ``config`` for training; None when it is stored already.

    The workdir is the run's resumable ``.<id>.partial`` folder (taken over from a dead owner,
    with whatever it holds), or, while another live process owns that, a private temporary
    folder. On an error the workdir is removed; on an interruption (``KeyboardInterrupt``,
    ``SystemExit``) the resumable one is kept for the next process.
    """
    canonical(config)  # fail early on a config that cannot be stored
    root = root or results_root()
    final = root / run_id(config)
    if (final / "config.json").exists():
        yield None
        return
    root.mkdir(parents=True, exist_ok=True)
    lock, partial = root / f".{final.name}.lock", root / f".{final.name}.partial"
    if _try_lock(lock, partial):
        partial.mkdir(exist_ok=True)
        work = Claim(config, final, partial, lock)
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
        _write_json(tmp / "owner.json", _owner())
        work = Claim(config, final, tmp, None)
    try:
        yield work
    except Exception:
        shutil.rmtree(work.workdir, ignore_errors=True)
        raise
    except BaseException:
        if work.lock is None:
            shutil.rmtree(work.workdir, ignore_errors=True)
        raise
    finally:
        if work.lock is not None:
            work.lock.unlink(missing_ok=True)


def discard(work: Claim) -> None:
    """Drop a claimed run's temporary folder (its training failed); the claim's lock is released
    when its block ends."""
    shutil.rmtree(work.workdir, ignore_errors=True)


def get_or_train(
    config: dict,
    train: Callable[[Path], Artifacts],
    *,
    root: Path | None = None,
) -> Run:
    """Load the run for ``config``; train and store it first if it does not exist.

    ``train(workdir)`` gets the run's temporary folder (for a checkpoint, and for a resume state
    in ``workdir / RESUME_FILE``, which is never stored) and returns the :class:`Artifacts`.
    Nothing half-written is ever stored: the folder is renamed into place only after every file
    has been written.
    """
    with claim(config, root) as work:
        if work is None:
            return Run((root or results_root()) / run_id(config))
        artifacts = train(work.workdir)
        return work.store(artifacts, batch={"size": 1, "index": 0})


_PARTIAL = re.compile(r"^\.(?P<id>.+-[0-9a-f]{12})\.partial$")
_LOCK = re.compile(r"^\.(?P<id>.+-[0-9a-f]{12})\.lock(\.stale-.*)?$")
_PRIVATE = re.compile(r"^\.(?P<id>.+-[0-9a-f]{12})\.tmp-.+$")
_LEGACY = re.compile(r"^\.(?P<id>.+-[0-9a-f]{12})\.[^.]+$")  # mkdtemp folders of earlier versions


def clean_stale(root: Path | None = None) -> list[Path]:
    """Remove what dead runs left in ``root``; return what was removed.

    A dead run's ``.partial`` folder stays while it holds a resume state (the next process that
    asks for the run resumes from it), unless the run has been stored since; private temporary
    folders of dead processes, broken locks, and the nameless temporary folders of earlier
    versions (when empty, or a day old) go.
    """
    root = root or results_root()
    if not root.is_dir():
        return []
    removed = []

    def drop(path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)

    now = time.time()
    for path in sorted(root.glob(".*")):
        name = path.name
        if m := _PARTIAL.match(name):
            lock = root / f".{m['id']}.lock"
            if lock.exists() and not _owner_dead(lock, path):
                continue
            if (root / m["id"] / "config.json").exists() or not (path / RESUME_FILE).exists():
                drop(path)
                lock.unlink(missing_ok=True)
        elif m := _LOCK.match(name):
            partial = root / f".{m['id']}.partial"
            if (".stale-" in name or not partial.exists()) and _owner_dead(path, partial):
                drop(path)
        elif _PRIVATE.match(name):
            if _owner_dead(path / "owner.json", path):
                drop(path)
        elif _LEGACY.match(name) and path.is_dir() and not (path / "owner.json").exists():
            age = now - _last_sign_of_life(path)
            if age > 86400 or (not any(path.iterdir()) and age > 600):
                drop(path)
    return removed


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


def git_state() -> dict:
    """The commit the code is at and whether tracked files differ from it (None: no git here)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None}


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def provenance(config: dict, started: datetime, wall_seconds: float, **extra) -> dict:
    """Where and how a run was made: code version, packages, machine, device, time. The scale
    is copied from the config, the one place it is decided. ``extra`` adds entries, such as
    ``batch`` ({"size": runs trained together, "index": this run's place}) and
    ``resumed_from_epoch``."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("hebae", "torch", "torchvision", "numpy", "minepy", "pytorch-fid"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        **git_state(),
        "packages": packages,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.node(),
        "device": _device_name(),
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_seconds": round(wall_seconds, 3),
        "profile": config.get("profile"),
        **extra,
    }


def frame(stored: list[Run]):
    """One row per run: its config, then its final metrics (a pandas DataFrame)."""
    import pandas as pd

    return pd.DataFrame([{"run": r, **r.config, **r.metrics} for r in stored])
