"""The runs behind the amortisation chapter (book/amortisation.md), kept apart from
:mod:`hebae.grids` so the two can change independently, and the gaps computed on them.

Every point is MNIST at k = 20 and the model's default λ: the VAE and HEBAE, and each model whose
posterior is refined or enriched by T steps (VLAE's mode updates, SA-VAE's gradient steps, the
Householder and the inverse autoregressive flows) at each T of the profile, plus VLAE + CG at the
largest T (the supplement's speed claim is at T = 4).

* ``paper`` (a GPU): the supplement's T ∈ {1, 2, 4, 8}, its Adam step 5·10⁻⁴ and batch 128, every
  training image, the book's 100 epochs (not its 2,000, nor its best-validation checkpoint), three
  seeds.
* ``reduced`` (a 2-core CPU; about 32 CPU-minutes for the 11 runs, estimated from the seconds per
  batch, per evaluation and per measurement of each model, measured with one thread on a shared
  2-core machine): T ∈ {1, 4}, one seed, 10 epochs of the first 5,000 training images and 2,000
  test images, the book's Adam step 10⁻³ decayed ×0.995 per epoch.
* ``smoke``: T ∈ {1, 2}, one seed, the smoke profile's sizes (seconds).
"""

from __future__ import annotations

import dataclasses

from . import experiment, gaps, paths, profiles
from .grids import SEEDS

LATENT_DIM = 20
UPDATES = {"paper": (1, 2, 4, 8), "reduced": (1, 4), "smoke": (1, 2)}
# The option that sets T on each model's page.
T_OPTION = {"vlae": "updates", "savae": "svi_steps", "hf": "flows", "iaf": "flows"}
GRID_SEEDS = {"paper": SEEDS, "reduced": (0,), "smoke": (0,)}
# What a point sets beyond the profile's defaults: the supplement's learning rate at paper scale;
# on the CPU a training subset and a test split of 2,000 images, enough for every measurement of
# the reduced profile (2,000 for the index-code MI, 1,000 + 1,000 for the refit) at a fifth of the
# cost of the per-epoch evaluation on all 10,000 (measured: for VLAE at T = 4, evaluating 2,000
# images every epoch still costs about 40 % of its training epoch on 5,000).
REDUCED_DATA = {"n_train": 5000, "n_test": 2000}
SCALE = {"paper": {"lr": 5e-4}, "reduced": {"epochs": 10, **REDUCED_DATA}, "smoke": {}}

# The gaps (hebae.gaps) on the first test images of each run.
GAPS = {
    "paper": gaps.Settings(images=500, steps=500, samples_fit=16, samples_elbo=1000, samples_is=5000),
    "reduced": gaps.Settings(images=100, steps=300, samples_fit=8, samples_elbo=500, samples_is=1000),
    "smoke": gaps.Settings(images=8, steps=10, samples_fit=2, samples_elbo=16, samples_is=32),
}
# Each model's own variational family, which Cremer et al.'s gaps are relative to: diagonal for the
# VAE and SA-VAE, full-covariance for the Gaussian posteriors with correlations. IAF's is a flow,
# richer than any Gaussian; the full Gaussian stands in for it and the chapter says so.
OWN_FAMILY = {"vae": "diagonal", "savae": "diagonal", "vlae": "full", "hf": "full", "hebae": "full", "iaf": "full"}


def amortisation(profile: str) -> list[dict]:
    """The grid's points at ``profile``, seed by seed (an interrupted grid holds whole seeds)."""
    profile = profiles.resolve(profile)
    updates, scale = UPDATES[profile], SCALE[profile]
    common = {"latent_dim": LATENT_DIM, "lam": None, **scale}
    points = []
    for s in GRID_SEEDS[profile]:
        points += [{"model": "vae", "seed": s, **common}, {"model": "hebae", "seed": s, **common}]
        for model, option in T_OPTION.items():
            points += [{"model": model, "seed": s, option: t, **common} for t in updates]
        points.append({"model": "vlae", "seed": s, "updates": max(updates), "mode_update": "cg", **common})
    return points


def amortisation_gaussian(profile: str) -> list[dict]:
    """The supplement's Gaussian decoder (γ learned with the weights) for the two pages that offer
    it, the VAE and VLAE at each T of the profile, with the grid's other settings."""
    profile = profiles.resolve(profile)
    common = {"latent_dim": LATENT_DIM, "lam": None, "likelihood": "gaussian-learned", **SCALE[profile]}
    return [p for s in GRID_SEEDS[profile]
            for p in [{"model": "vae", "seed": s, **common},
                      *({"model": "vlae", "seed": s, "updates": t, **common} for t in UPDATES[profile])]]


def gap_settings(profile: str, model: str) -> gaps.Settings:
    """The gap computation for a run of ``model`` at ``profile``: its own family, plus the full
    covariance where that is not its own (so every model is also measured against one family)."""
    base = GAPS[profiles.resolve(profile)]
    own = OWN_FAMILY.get(model, "full")
    families = (own,) if own == "full" else (own, "full")
    return dataclasses.replace(base, families=families)


def gaps_of(run, build, *, device: str = "cpu", compute: bool = True) -> gaps.Gaps | None:
    """The gaps of a stored run: read from ``<results>/gaps/`` where computed before, else computed
    from the run's checkpoint and stored there (``compute`` False: None instead). None also when
    the checkpoint is not on this machine (checkpoints are not committed; the gap files are)."""
    settings = gap_settings(run.config["profile"], run.config["model"])
    path = gaps.path_for(paths.results_root(), run.id, settings)
    if path.exists():
        return gaps.load(path)
    if not compute or not run.checkpoint.exists():
        return None
    test = experiment.load_data(run.config)[1].images
    model = experiment.load_model(run, build, test.shape[1:]).to(device)
    result = gaps.compute(model, test, settings)
    gaps.save(result, path)
    return result
