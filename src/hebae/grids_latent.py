"""The runs behind the latent-dimension chapter (book/latent-dimension.md), kept apart from
:mod:`hebae.grids` so the two can change independently.

The lecture's Figs. 2 and 5: generation against the latent dimension m, on synthetic data of
known latent dimension n (``synthetic8``, ``synthetic16``: :data:`hebae.data.SYNTHETIC`) and on
MNIST, for the WAE, HEBAE and MaskAAE, each at its page's default λ, m from well below n to well
above it. A point is ``{"model", "latent_dim", "lam", "seed"}`` plus what the run scores:

* ``fid_sets`` ["prior", "rec"]: samples of the prior and reconstructions only. The ex-post
  mixtures the other chapters score are not read here, and in 64 dimensions fitting one takes
  a minute or more of CPU per run;
* on MNIST, ``n_fid`` as the landscape chapter's (FID and KID on that many images). There the
  WAE and HEBAE points at m = 16 are the landscape chapter's own runs (the same config, which
  scores every set), so they are reused, not remade.

Synthetic runs are scored by the Fréchet distance on the data vectors (hebae.measure.data_scores),
which needs no ``n_fid``.
"""

from __future__ import annotations

from . import data, profiles
from .grids import LANDSCAPE_MODELS, LANDSCAPE_N_FID, SEEDS

LATENT_MODELS = ("wae", "hebae", "maskaae")
LATENT_DATASETS = ("synthetic8", "synthetic16", "mnist")
TRUE_DIM = {d: data.SYNTHETIC[d] for d in LATENT_DATASETS if d in data.SYNTHETIC}  # n; MNIST's is unknown
# m from a quarter of n = 8 to four times n = 16, on both synthetic sets; MNIST over the same
# range without m = 4 (the lecture's MaskAAE keeps 11 to 13 dimensions of MNIST, its Fig. 6, so
# 2 is well below and 64 well above), a run there costing minutes.
LATENT_DIMS = {"synthetic8": (2, 4, 8, 16, 32, 64), "synthetic16": (2, 4, 8, 16, 32, 64), "mnist": (2, 8, 16, 32, 64)}
# At smoke scale: one point below n, at n and above n (MNIST: around the landscape's 16).
SMOKE_DIMS = {"synthetic8": (4, 8, 16), "synthetic16": (8, 16, 32), "mnist": (4, 16, 32)}
# Seeds at the reduced scale, sized for a 2-core CPU (measured: a synthetic run takes about 9
# CPU-seconds for the WAE and HEBAE and 38 for MaskAAE, whose critic dominates; an MNIST run
# 1.5-2 CPU-minutes, MaskAAE's nearly 4): two on the synthetic sets (72 runs, about 22
# CPU-minutes) and one on MNIST (13 new runs, about 32), whose comparisons then rest on each
# run's own bootstrap errors. The paper profile has the book's three seeds everywhere.
LATENT_SEEDS = {
    "paper": {"synthetic8": SEEDS, "synthetic16": SEEDS, "mnist": SEEDS},
    "reduced": {"synthetic8": (0, 1), "synthetic16": (0, 1), "mnist": (0,)},
    "smoke": {"synthetic8": (0,), "synthetic16": (0,), "mnist": (0,)},
}
LATENT_FID_SETS = ["prior", "rec"]
LANDSCAPE_K = 16  # the landscape chapter's latent size (hebae.grids.landscape)


def latent(dataset: str, profile: str, models=None) -> list[dict]:
    """The points of ``dataset`` (one of :data:`LATENT_DATASETS`) at ``profile``, seed by seed, so
    that an interrupted grid holds whole seeds. ``models``: the names available (any collection,
    such as ``pages.classes()``; those not in :data:`LATENT_MODELS` are ignored; None: all of
    them), so that a page or tool can leave out a model whose page is not in the book yet."""
    if dataset not in LATENT_DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(LATENT_DATASETS)}; got {dataset!r}")
    profile = profiles.resolve(profile)
    chosen = LATENT_MODELS if models is None else tuple(m for m in LATENT_MODELS if m in models)
    dims = SMOKE_DIMS[dataset] if profile == "smoke" else LATENT_DIMS[dataset]
    points = []
    for seed in LATENT_SEEDS[profile][dataset]:
        for model in chosen:
            for m in dims:
                point = {"model": model, "latent_dim": m, "lam": None, "seed": seed}
                if dataset == "mnist":
                    point["n_fid"] = LANDSCAPE_N_FID[profile]
                    if m == LANDSCAPE_K and model in LANDSCAPE_MODELS:
                        points.append(point)  # the landscape chapter's run: every set scored
                        continue
                points.append({**point, "fid_sets": list(LATENT_FID_SETS)})
    return points
