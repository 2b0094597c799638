"""Run a grid of model pages through papermill, concurrently, skipping runs already stored.

    python tools/reproduce.py --grid mnist-paper --device cuda --jobs 4

Each run is one execution of a model page (book/<model>.md) with its parameters; its notebook
is written to _build/reproduce/<run id>.ipynb. The scale follows $HEBAE_PROFILE (paper by
default); ``make reproduce`` sets it from PROFILE.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from hebae import experiment, grids, runs, train

ROOT = Path(__file__).resolve().parents[1]


def configured(point: dict) -> dict:
    config, _ = experiment.configure(point["model"], dataset="mnist", latent_dim=point["latent_dim"], lam=point["lam"], seed=point["seed"])
    return {**point, "config": config}


def execute(point: dict, device: str, threads: int) -> tuple[dict, int, str]:
    out = ROOT / "_build" / "reproduce" / f"{runs.run_id(point['config'])}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    params = ["-p", "latent_dim", str(point["latent_dim"]), "-p", "seed", str(point["seed"]), "-p", "device", device]
    if point["lam"] is not None:
        params += ["-p", "lam", repr(point["lam"])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "hebae.papermill", f"book/{point['model']}.md", str(out), *params, "--no-progress-bar"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return point, done.returncode, (done.stdout + done.stderr)[-2000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="mnist-paper", choices=grids.GRIDS)
    parser.add_argument("--device", default="auto", choices=train.DEVICES)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--dry-run", action="store_true", help="list the runs to make, make none")
    args = parser.parse_args()
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1; got {args.jobs}")
    points = [configured(p) for p in grids.mnist(args.grid)]
    todo = [p for p in points if runs.find(p["config"]) is None]
    print(f"grid {args.grid}: {len(points)} runs, {len(points) - len(todo)} stored, {len(todo)} to make")
    if args.dry_run:
        for p in todo:
            print(runs.run_id(p["config"]), {k: v for k, v in p.items() if k != "config"})
        return 0
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    failed = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(execute, p, args.device, threads) for p in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs"):
            point, code, log = future.result()
            if code:
                failed += 1
                tqdm.write(f"FAILED {runs.run_id(point['config'])}: {log}")
    print(f"done: {len(todo) - failed} made, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
