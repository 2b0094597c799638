"""Make every run of one or more grids, skipping runs already stored.

    python tools/reproduce.py --grid mnist-paper mnist-ablations --profile paper --device cuda
    python tools/reproduce.py --grid mnist-paper --executor slurm --slurm-partition gpu

Executors (``--executor``, ``make reproduce EXECUTOR=...``):

* ``local`` (default): the runs that differ only in seed and λ train together as one batch
  (hebae.batched), one group after another, or ``--jobs`` groups at a time in worker processes;
* ``slurm``: one SLURM job per group through submitit (``pip install 'hebae[cluster]'``), all
  writing into the shared results folder;
* ``papermill``: each run alone, as one execution of its model page (book/<model>.md), its
  notebook written to _build/reproduce/<run id>.ipynb; ``--jobs`` at a time.

Every executor stores the same runs under the same ids. A run that was killed resumes from its
last checkpointed epoch when the command is run again.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from hebae import grids, grids_amortisation, grids_latent, launch, profiles, runs, train
from pages import classes

ROOT = Path(__file__).resolve().parents[1]
GRIDS = {
    **{name: ("mnist", lambda profile, name=name: grids.mnist(name, profile)) for name in grids.GRIDS},
    "mnist-ablations": ("mnist", grids.mnist_ablations),
    "celeba": ("celeba", grids.celeba),
    **{f"landscape-{d}": (d, grids.landscape) for d in grids.LANDSCAPE_DATASETS},
    **{f"landscape2-{d}": (d, grids.landscape_part2) for d in grids.LANDSCAPE_DATASETS},
    "flexae-ladder": ("mnist", grids.flexae_ladder),
    "amortisation": ("mnist", grids_amortisation.amortisation),
    "amortisation-fashion": ("fashion", grids_amortisation.amortisation),
    "amortisation-gaussian": ("mnist", grids_amortisation.amortisation_gaussian),
    # The latent-dimension chapter; a model whose page is not in the book yet is left out.
    **{f"latent-{d}": (d, lambda profile, d=d: grids_latent.latent(d, profile, classes())) for d in grids_latent.LATENT_DATASETS},
}


def parameters(point: dict, dataset: str, profile: str, device: str) -> list[str]:
    """papermill ``-p`` options for one grid point (None stays the page's default)."""
    values = {**point, "dataset": dataset, "profile": profile, "device": device}
    values.pop("model")
    out = []
    for key, value in values.items():
        if value is not None:
            out += ["-p", key, repr(value) if isinstance(value, float) else str(value)]
    return out


def execute(point: dict, config: dict, params: list[str], threads: int) -> tuple[dict, int, str]:
    out = ROOT / "_build" / "reproduce" / f"{runs.run_id(config)}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "hebae.papermill", f"book/{point['model']}.md", str(out), *params, "--no-progress-bar"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return config, done.returncode, (done.stdout + done.stderr)[-2000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", nargs="+", default=["mnist-paper"], choices=tuple(GRIDS), help="one or more grids")
    parser.add_argument("--profile", default=None, choices=profiles.NAMES, help="default: $HEBAE_PROFILE, else paper")
    parser.add_argument("--device", default="auto", choices=train.DEVICES)
    parser.add_argument("--executor", default="local", choices=(*launch.EXECUTORS, "papermill"))
    parser.add_argument("--jobs", type=int, default=1, help="groups (papermill: runs) at a time on this machine")
    parser.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                        help="save each run's resume state after an epoch at most this often (default 60; 0: every epoch). "
                             "Every epoch of a paper-scale grid on a GPU would write about 200 GB.")
    parser.add_argument("--batch", default="auto", choices=("auto", "on", "off"),
                        help="train a group's runs as one batch: auto (on a GPU, for the dense nets), on, or off")
    parser.add_argument("--slurm-partition", default=None)
    parser.add_argument("--slurm-time", type=int, default=60, metavar="MINUTES", help="time limit of one job")
    parser.add_argument("--dry-run", action="store_true", help="list the runs to make, make none")
    parser.add_argument("--forecast", action="store_true",
                        help="first time a short warm-up of every group and print the predicted wall time")
    parser.add_argument("--forecast-only", action="store_true", help="print the forecast, make no run")
    parser.add_argument("--tf32", action="store_true",
                        help="TF32 matrix products and convolutions on CUDA (recorded in every history record); default float32")
    args = parser.parse_args()
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1; got {args.jobs}")
    profile = profiles.resolve(args.profile)
    if args.tf32:
        os.environ["HEBAE_TF32"] = "1"  # read by the training loop, here and in worker processes
    removed = runs.clean_stale()
    if removed:
        print(f"removed {len(removed)} temporary folder(s) of dead runs")
    todo, total = [], 0
    for name in args.grid:
        dataset, make_points = GRIDS[name]
        points = make_points(profile)
        configs = [grids.configure(p, classes(), dataset=dataset, profile=profile)[0] for p in points]
        missing = [(p, c) for p, c in zip(points, configs) if runs.find(c) is None]
        new = [(p, c) for p, c in missing if c not in [t[1] for t in todo]]  # a run two grids share is made once
        shared = f" ({len(missing) - len(new)} of them listed by an earlier grid)" if len(missing) > len(new) else ""
        print(f"grid {name} at the {profile} profile: {len(points)} runs, {len(points) - len(missing)} stored, "
              f"{len(missing)} to make{shared}")
        todo += [(p, c, dataset) for p, c in new]
        total += len(points)
    if args.dry_run:
        for p, c, _ in todo:
            print(runs.run_id(c), p)
        return 0
    if args.executor == "papermill":
        return _papermill(todo, profile, args)
    groups = launch.plan([c for _, c, _ in todo])
    print(f"{len(groups)} group(s) of runs that train together: " + ", ".join(str(len(g)) for g in groups))
    batch = {"auto": None, "on": True, "off": False}[args.batch]
    if (args.forecast or args.forecast_only) and groups:
        _forecast(groups, args.device, args.jobs, batch)
    if args.forecast_only:
        return 0
    slurm = {"timeout_min": args.slurm_time, **({"slurm_partition": args.slurm_partition} if args.slurm_partition else {})}
    outcomes = launch.launch(groups, executor=args.executor, device=args.device, jobs=args.jobs,
                             checkpoint_seconds=args.checkpoint_every, slurm=slurm,
                             batch=batch)
    failed = [o for o in outcomes if o.error]
    for o in failed:
        print(f"FAILED {o.name}: {o.error[-2000:]}")
    made = sum(len(o.stored) for o in outcomes)
    print(f"done: {made} runs stored, {len(failed)} group(s) failed")
    return 1 if failed else 0


def _forecast(groups, device: str, jobs: int, batch) -> None:
    from hebae import forecast

    dev = train.pick_device(device)
    train.use_tf32(dev)
    models = classes()
    rows = [forecast.group(g, models[g[0]["model"]], dev, batch=batch)
            for g in tqdm(groups, desc="warm-up", disable=not sys.stderr.isatty())]
    fid_rate = forecast.inception_images_per_second(dev) if any(r.fid_images for r in rows) else 1.0
    table, _ = forecast.report(rows, fid_rate, jobs)
    print(table, flush=True)


def _papermill(todo, profile, args) -> int:
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    failed = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(execute, p, c, parameters(p, dataset, profile, args.device), threads) for p, c, dataset in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs"):
            config, code, log = future.result()
            if code:
                failed += 1
                tqdm.write(f"FAILED {runs.run_id(config)}: {log}")
    print(f"done: {len(todo) - failed} made, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
