"""The sets of runs behind the results chapters, as page parameters.

A point is ``{"model", "latent_dim", "lam", "seed"}`` (``lam`` None: the model's default).
At smoke scale every grid shrinks to a handful of points so that tests stay quick.
"""

from __future__ import annotations

import itertools

from .paths import profile

SEEDS = (0, 1, 2)
LATENT_DIMS = (2, 5, 10, 20)
LAMBDAS = {
    "mnist-paper": (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
    "mnist-cpu": (0.01, 0.1, 1.0, 10.0, 100.0),
}
GRIDS = tuple(LAMBDAS)
SMOKE = {"seeds": (0, 1), "latent_dims": (2, 20), "lambdas": (0.1, 10.0)}


def default_grid() -> str:
    """The grid the figures use at the current profile: the paper's at paper scale."""
    return "mnist-paper" if profile() == "paper" else "mnist-cpu"


def mnist(name: str) -> list[dict]:
    """Every run the MNIST figures need: Fig. 1a (k and λ sweeps), Fig. 2 and Fig. 4."""
    if name not in LAMBDAS:
        raise ValueError(f"grid must be one of {', '.join(GRIDS)}; got {name!r}")
    seeds, dims, lambdas = SEEDS, LATENT_DIMS, LAMBDAS[name]
    if profile() == "smoke":
        seeds, dims, lambdas = SMOKE["seeds"], SMOKE["latent_dims"], SMOKE["lambdas"]
    points = [
        *({"model": m, "latent_dim": k, "lam": None, "seed": s} for m, k, s in itertools.product(("vae", "hebae"), dims, seeds)),
        *({"model": m, "latent_dim": 20, "lam": lam, "seed": s} for m, lam, s in itertools.product(("vae", "hebae"), lambdas, seeds)),
        *({"model": m, "latent_dim": k, "lam": None, "seed": s} for m, k, s in itertools.product(("vae", "wae", "hebae"), (10, 20), seeds)),
    ]
    unique = []
    for p in points:
        if p["lam"] == 1.0 and p["model"] != "wae":
            p = {**p, "lam": None}  # λ = 1 is the default: the same run
        if p not in unique:
            unique.append(p)
    return unique


CELEBA_LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # on the official code's λ scale (MSE averaged over pixels)


def celeba() -> list[dict]:
    """The runs behind Fig. 1b (FID vs λ, all three models) and Fig. 3 (each model's default λ)."""
    lambdas = (1e-3, 1.0) if profile() == "smoke" else CELEBA_LAMBDAS
    return [{"model": m, "latent_dim": 64, "lam": lam, "seed": 0} for m in ("vae", "wae", "hebae") for lam in lambdas]
