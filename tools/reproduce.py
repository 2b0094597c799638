"""Run a grid of model pages through papermill, concurrently, skipping runs already stored.

    python tools/reproduce.py --grid mnist-paper --profile paper --device cuda --jobs 4

Each run is one execution of a model page (book/<model>.md) with its parameters; its notebook
is written to _build/reproduce/<run id>.ipynb. ``make reproduce`` calls this with PROFILE and GRID.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from hebae import grids, profiles, runs, train
from pages import classes

ROOT = Path(__file__).resolve().parents[1]
GRIDS = {
    **{name: ("mnist", lambda profile, name=name: grids.mnist(name, profile)) for name in grids.GRIDS},
    "mnist-ablations": ("mnist", grids.mnist_ablations),
    "celeba": ("celeba", grids.celeba),
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
    parser.add_argument("--grid", default="mnist-paper", choices=tuple(GRIDS))
    parser.add_argument("--profile", default=None, choices=profiles.NAMES, help="default: $HEBAE_PROFILE, else paper")
    parser.add_argument("--device", default="auto", choices=train.DEVICES)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--dry-run", action="store_true", help="list the runs to make, make none")
    args = parser.parse_args()
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1; got {args.jobs}")
    profile = profiles.resolve(args.profile)
    dataset, make_points = GRIDS[args.grid]
    points = make_points(profile)
    configs = [grids.configure(p, classes(), dataset=dataset, profile=profile)[0] for p in points]
    todo = [(p, c) for p, c in zip(points, configs) if runs.find(c) is None]
    print(f"grid {args.grid} at the {profile} profile: {len(points)} runs, {len(points) - len(todo)} stored, {len(todo)} to make")
    if args.dry_run:
        for p, c in todo:
            print(runs.run_id(c), p)
        return 0
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    failed = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(execute, p, c, parameters(p, dataset, profile, args.device), threads) for p, c in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs"):
            config, code, log = future.result()
            if code:
                failed += 1
                tqdm.write(f"FAILED {runs.run_id(config)}: {log}")
    print(f"done: {len(todo) - failed} made, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
