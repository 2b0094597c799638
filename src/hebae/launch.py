"""Hand a grid of runs to an executor, one job per architecture group.

A *group* is the runs that train together as one batch (:func:`hebae.batched.group`); one job
trains one group with :func:`train_group`, whatever executes it:

* ``local``: this machine; one group after another in this process, or ``jobs`` groups at a
  time in worker processes (several small groups share one GPU well);
* ``slurm``: a SLURM cluster through ``submitit`` (``pip install hebae[cluster]``), one array
  task per group, each on one GPU;
* ``submitit-local``: submitit's local executor, the SLURM path's plumbing run as local
  processes (for tests, and to try the cluster path without a cluster).

Every job writes its runs into one results folder (shared by the cluster's nodes), each run
atomically and under a lock (:mod:`hebae.runs`), so jobs never see each other's half-written
runs and a job that dies is resumed by the next one given the same group.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import batched, runs
from .paths import PROJECT_ROOT

EXECUTORS = ("local", "slurm", "submitit-local")


@dataclass
class Outcome:
    """What one job did: the ids it stored, or the error that stopped it."""

    configs: list[dict]
    stored: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def name(self) -> str:
        c = self.configs[0]
        return f"{c['model']} k={c['latent_dim']} ({len(self.configs)} runs)"


def _models() -> dict:
    book = str(PROJECT_ROOT / "book")
    if book not in sys.path:  # a job started by an executor finds the model table by name too
        sys.path.insert(0, book)
    from pages import classes

    return classes()


def plan(configs: list[dict], root: Path | None = None) -> list[list[dict]]:
    """The groups of ``configs`` that still have runs to make (stored runs left out)."""
    todo = [c for c in configs if runs.find(c, root) is None]
    return batched.group(todo)


def train_group(configs: list[dict], device: str, results: str, checkpoint_seconds: float = 0.0,
                progress: bool = False, threads: int | None = None, batch: bool | None = None) -> list[str]:
    """One job: train (or load) the runs of one group into ``results``; return their ids.
    ``batch`` None batches where it pays (:func:`hebae.batched.pays`)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    build = _models()[configs[0]["model"]]
    stored = batched.run_group(configs, build, device=device, progress=progress, root=Path(results),
                               checkpoint_seconds=checkpoint_seconds, batch=batch)
    return [run.id for run in stored]


def _call(args) -> Outcome:
    configs = args[0]
    try:
        return Outcome(configs, stored=train_group(*args))
    except Exception as error:  # one group's failure does not stop the others
        return Outcome(configs, error=f"{type(error).__name__}: {error}")


def launch(
    groups: list[list[dict]],
    *,
    executor: str = "local",
    device: str = "auto",
    results: Path | None = None,
    jobs: int = 1,
    checkpoint_seconds: float = 0.0,
    progress: bool = True,
    folder: Path | None = None,
    slurm: dict | None = None,
    batch: bool | None = None,
) -> list[Outcome]:
    """Train ``groups``, one job each, on ``executor``; wait for every job and return what each did.

    ``slurm``: submitit parameters for the cluster (``slurm_partition``, ``timeout_min``,
    ``gpus_per_node``, ...). ``folder``: where submitit keeps its job logs.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    results = Path(results or runs.results_root()).resolve()
    results.mkdir(parents=True, exist_ok=True)
    runs.clean_stale(results)
    if not groups:
        return []
    if executor == "local":
        if jobs <= 1:
            return [_call((g, device, str(results), checkpoint_seconds, progress, None, batch)) for g in groups]
        threads = max(1, (os.cpu_count() or 1) // jobs)
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(_call, [(g, device, str(results), checkpoint_seconds, False, threads, batch) for g in groups]))
    return _submitit(groups, executor, device, results, checkpoint_seconds, folder, slurm or {}, batch)


def _submitit(groups, executor, device, results, checkpoint_seconds, folder, slurm, batch) -> list[Outcome]:
    try:
        import submitit
    except ImportError as missing:
        raise RuntimeError(f"executor {executor!r} needs submitit: pip install 'hebae[cluster]' ({missing})") from None
    folder = Path(folder or PROJECT_ROOT / "_build" / "submitit")
    if executor == "slurm":
        pool = submitit.AutoExecutor(folder=folder, cluster="slurm")
        params = {"timeout_min": 60, "gpus_per_node": 1, "cpus_per_task": 8, "name": "hebae-grid", **slurm}
    else:
        pool = submitit.LocalExecutor(folder=folder)
        params = {"timeout_min": 60, **{k: v for k, v in slurm.items() if not k.startswith("slurm_")}}
    pool.update_parameters(**params)
    n = len(groups)
    submitted = pool.map_array(train_group, groups, [device] * n, [str(results)] * n, [checkpoint_seconds] * n,
                               [False] * n, [None] * n, [batch] * n)
    outcomes = []
    for job, configs in zip(submitted, groups):
        try:
            outcomes.append(Outcome(configs, stored=job.result()))
        except Exception as error:
            outcomes.append(Outcome(configs, error=f"job {job.job_id}: {type(error).__name__}: {error}"))
    return outcomes
