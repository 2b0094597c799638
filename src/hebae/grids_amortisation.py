"""The runs behind the amortisation chapter (book/amortisation.md), kept apart from
:mod:`hebae.grids` so the two can change independently.

The VAE and HEBAE points are those of the MNIST grids (k = 20, default λ, the same seeds), so
their stored runs are reused; VLAE is added at each number of mode updates T.
"""

from __future__ import annotations

from . import profiles
from .grids import SEEDS, SMOKE

AMORTISATION_UPDATES = (1, 2, 4)  # T for VLAE; the supplement's 8 is left out on the CPU
AMORTISATION_LATENT_DIM = 20  # the MNIST grids' k, so the VAE and HEBAE runs are shared


def amortisation(profile: str) -> list[dict]:
    """VAE, HEBAE and VLAE at T ∈ AMORTISATION_UPDATES on MNIST, seed by seed (so an interrupted
    grid holds whole seeds); at smoke scale two seeds and T ∈ {1, 2}."""
    smoke = profiles.resolve(profile) == "smoke"
    seeds = SMOKE["seeds"] if smoke else SEEDS
    updates = AMORTISATION_UPDATES[:2] if smoke else AMORTISATION_UPDATES
    common = {"latent_dim": AMORTISATION_LATENT_DIM, "lam": None}
    return [
        point
        for s in seeds
        for point in (
            {"model": "vae", "seed": s, **common},
            {"model": "hebae", "seed": s, **common},
            *({"model": "vlae", "seed": s, "updates": t, **common} for t in updates),
        )
    ]
