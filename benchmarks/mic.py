"""Seconds for MIC/TIC (minepy) between a sample index and one latent dimension, by size.

    .venv/bin/python benchmarks/mic.py

The runs use 200 test points x 5 posterior draws (n = 1000 pairs) per dimension; this prints
the time per dimension for that and neighbouring sizes, and for one k = 20 run.
"""

from __future__ import annotations

import time

import numpy as np

from hebae import metrics


def main() -> None:
    rng = np.random.default_rng(0)
    draws = 5
    print("points x draws = n    seconds per dimension   (alpha 0.6, c 15, mic_approx)")
    for points in (100, 200, 400, 800):
        index = np.tile(np.arange(points), draws)
        codes = (np.sin(index / 30.0) + rng.normal(size=index.size))[:, None]
        start = time.perf_counter()
        metrics.mic_tic(index, codes)
        print(f"{points:6d} x {draws} = {points * draws:5d}    {time.perf_counter() - start:8.3f}")
    index = np.tile(np.arange(200), draws)
    start = time.perf_counter()
    metrics.mic_tic(index, rng.normal(size=(index.size, 20)))
    print(f"one run, k = 20 at 200 x 5: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
