"""Seconds per training step of VLAE and VLAE + CG at each T, timed back to back on one machine.

    .venv/bin/python benchmarks/vlae_cg.py [--device auto|cpu|cuda] [--updates 1 4] [--rounds 5] [--steps 5]

The supplement says VLAE + CG is about 25 % faster than VLAE at T = 4. The amortisation chapter can
only compare the two runs' epoch times, and those runs were made at different times on a shared
machine. Here both variants train on the same batches in interleaved rounds (VLAE, then CG, then
VLAE ...), so a change of load hits both alike; each round times ``--steps`` Adam steps on MNIST
batches of 128 at the book's widths (k = 20). Printed: the median seconds per step of each variant
and the ratio CG / VLAE per round with its spread, for each T. ``--out`` stores them as JSON with
their provenance (the amortisation chapter reads ``results/vlae-cg-speed.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from hebae import data, experiment, runs, train
from pages import classes


def build(updates: int, mode_update: str, device):
    config, _ = experiment.configure(classes()["vlae"], profile="reduced", dataset="mnist", updates=updates,
                                     mode_update=mode_update, seed=0)
    torch.manual_seed(0)
    model = classes()["vlae"](config, (1, 28, 28)).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=config["lr"])


def time_steps(model, optimiser, batches, device) -> float:
    """Seconds per step over ``batches`` (the device synchronised before the clock stops)."""
    start = time.perf_counter()
    for x in batches:
        optimiser.zero_grad(set_to_none=True)
        model.loss(x)["objective"].backward()
        optimiser.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=train.DEVICES)
    parser.add_argument("--updates", type=int, nargs="+", default=[1, 4], help="values of T (default 1 4)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per T (default 5)")
    parser.add_argument("--steps", type=int, default=5, help="Adam steps per variant and round (default 5)")
    parser.add_argument("--out", type=Path, default=None, help="write the results here as JSON (default: print only)")
    args = parser.parse_args()
    if args.rounds < 2 or args.steps < 1:
        raise SystemExit(f"--rounds must be >= 2 and --steps >= 1; got {args.rounds} and {args.steps}")
    device = train.pick_device(args.device)
    images = data.load("mnist", "train", limit=128 * args.steps).images.to(device)
    batches = list(images.split(128))
    print(f"device {device}, {torch.get_num_threads()} thread(s); {args.rounds} rounds of {len(batches)} steps of 128 images")
    started, results = datetime.now(timezone.utc), []
    for t in args.updates:
        vlae, cg = build(t, "vlae", device), build(t, "cg", device)
        time_steps(*vlae, batches[:1], device), time_steps(*cg, batches[:1], device)  # warm-up
        seconds = {"vlae": [], "cg": []}
        for _ in range(args.rounds):
            seconds["vlae"].append(time_steps(*vlae, batches, device))
            seconds["cg"].append(time_steps(*cg, batches, device))
        ratios = [c / v for c, v in zip(seconds["cg"], seconds["vlae"])]
        print(f"T = {t}: VLAE {statistics.median(seconds['vlae']):.3f} s/step, VLAE + CG {statistics.median(seconds['cg']):.3f} s/step; "
              f"CG / VLAE per round: median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
        results.append({"updates": t, "seconds_vlae": seconds["vlae"], "seconds_cg": seconds["cg"], "ratio_cg_to_vlae": ratios})
    if args.out is not None:
        wall = (datetime.now(timezone.utc) - started).total_seconds()
        record = {"results": results, "steps_per_round": len(batches), "batch_size": 128, "threads": torch.get_num_threads(),
                  "provenance": runs.provenance({"profile": "reduced"}, started, wall,
                                                command="python benchmarks/vlae_cg.py " + " ".join(sys.argv[1:]))}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(args.out)
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
