"""The noise of FID and KID against the sample size N, measured on real images alone.

    python tools/fid_spread.py --datasets mnist fashion --pool 2000 --chosen 200

For each data set, the Inception features of the first ``--pool`` test images are computed once
(cached in data/fid-cache); then, for each N, ``--repeats`` random disjoint pairs of N images are
drawn from the pool and scored against each other. Real against real, the true FID is its
small-sample bias and the true KID is 0, so the spread of the scores over pairs is the noise a
comparison at that N must beat, and the coverage of 0 by KID's interval checks its error. The
result is written into results/fid-floor.json under "spread" (the FID chapter reads it), with
the chosen N of the reduced landscape grid and what scoring it costs on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone

import numpy as np
import torch

from hebae import fid, forecast, grids, paths, runs

SIZES = (50, 100, 200, 500, 1000)


def repeats_for(n: int) -> int:
    # Larger N: each pair costs more and scatters less, so fewer pairs give the spread.
    return 30 if n <= 200 else (12 if n <= 500 else 6)


def spread(features: np.ndarray, sizes, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        if 2 * n > len(features):
            raise ValueError(f"N = {n} needs a pool of at least {2 * n} images; got {len(features)} (raise --pool)")
        start, reps = time.perf_counter(), repeats_for(n)
        fids, fid_ses, kids, kid_ses = [], [], [], []
        for r in range(reps):
            order = rng.permutation(len(features))
            a, b = features[order[:n]], features[order[n : 2 * n]]
            fids.append(fid.frechet_distance_features(a, b))
            k = fid.kid(a, b, resamples=30, seed=r)
            kids.append(k["kid"])
            kid_ses.append(k["kid_se"])
            if r < 5:  # the FID bootstrap is the costly part: its mean error from five pairs
                fid_ses.append(fid.fid_bootstrap_se(a, b, resamples=20, seed=r))
        z = fid.critical(fid.LEVEL)
        rows.append({
            "n": n, "repeats": reps,
            "fid_mean": float(np.mean(fids)), "fid_sd": float(np.std(fids, ddof=1)), "fid_se_bootstrap": float(np.mean(fid_ses)),
            "kid_mean": float(np.mean(kids)), "kid_sd": float(np.std(kids, ddof=1)), "kid_se_bootstrap": float(np.mean(kid_ses)),
            "kid_covers_zero": float(np.mean(np.abs(kids) <= z * np.array(kid_ses))),
            "seconds": round(time.perf_counter() - start, 1),
        })
        print(rows[-1], flush=True)
    return rows


def _measured(args, datasets: list[str]) -> dict:
    command = ["--datasets", *datasets, "--pool", str(args.pool), "--sizes", *map(str, args.sizes), "--chosen", str(args.chosen)]
    return {"provenance": {**runs.git_state(), "machine": platform.node(), "measured_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "command": "python tools/fid_spread.py " + " ".join(command)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion"], choices=("mnist", "fashion", "celeba"))
    parser.add_argument("--pool", type=int, default=2000, help="test images per data set (features cached)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--chosen", type=int, default=grids.LANDSCAPE_N_FID["reduced"], help="the N the reduced landscape grid uses")
    args = parser.parse_args()
    torch.set_num_threads(1)
    extractor = fid.inception("cpu")
    path = paths.results_root() / "fid-floor.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    # Data sets measured before and not named now are kept: each carries its own provenance.
    datasets = dict(result.get("spread", {}).get("datasets", {}))
    for name in args.datasets:
        features = fid.dataset_features(name, "test", args.pool, extractor)
        datasets[name] = {"pool": len(features), "rows": spread(features, args.sizes), **_measured(args, [name])}
    block = dict(result.get("spread", {}))
    block.update(
        datasets=datasets,
        method="random disjoint pairs of N test images from a pool of cached test features; FID and KID per pair; "
               "bootstrap errors with 20 (FID, first 5 pairs) and 30 (KID) resamples",
    )
    # The landscape's cost (and the throughput behind it) is remeasured only with the landscape's
    # own data sets: a study of CelebA alone leaves the landscape's numbers as they were.
    if set(grids.LANDSCAPE_DATASETS) <= set(args.datasets) or "throughput" not in block:
        rate = forecast.inception_images_per_second(torch.device("cpu"), n=100, extractor=extractor)
        landscape_runs = len(grids.landscape("reduced")) * len(grids.LANDSCAPE_DATASETS)
        sets = 4  # prior samples, mixture on means, mixture on draws, reconstructions
        block.update(
            sizes=list(args.sizes),
            throughput={"images_per_s": round(rate, 2), "note": "one thread, measured on 100 images after the study"},
            chosen_n=args.chosen,
            landscape_images_at_chosen_n=landscape_runs * sets * args.chosen,
            landscape_hours_at_chosen_n=round(landscape_runs * sets * args.chosen / rate / 3600, 2),
            provenance=_measured(args, args.datasets)["provenance"],
        )
    result["spread"] = block
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)
    print(f"wrote {path}: Inception at {block['throughput']['images_per_s']:.1f} images/s")


if __name__ == "__main__":
    main()
