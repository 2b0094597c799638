"""The scales a run can be made at, in one table.

A profile sets the *defaults* of every number that shapes a stored result: how long and on how
much data a model trains, how wide the CelebA nets are, and the sizes of every estimator the
run stores (importance samples, MIC points, FID samples, ...). A reader's explicit value always
wins over the profile's default. The profile's name and every resolved number go into the
run's config, so a run made at one scale can never be served for another.

``$HEBAE_PROFILE`` (or ``HEBAE_SMOKE=1``) is read in one place, :func:`default`, and only when a
page leaves its ``profile`` parameter at ``None``.
"""

from __future__ import annotations

import os

NAMES = ("paper", "reduced", "smoke")

# Estimator sizes shared by every dataset at a profile.
#   n_iw, k_iw       test images and importance samples behind log p(x)
#   n_keep           test latents kept in the run (figures, rank-ordered MIC)
#   n_mi, mi_draws   test images N and posterior draws per image of the index-code MI (<= log N)
#   n_mic, mic_draws test points and posterior draws per point of MIC/TIC
#   n_refit          held-out test images to refit the posterior scale on (and as many to score)
#   refit_steps      Adam steps of that refit
#   n_samples        prior samples decoded and stored for the sample grids
_MEASURE = {
    "paper": dict(n_iw=500, k_iw=1000, n_keep=1000, n_mi=5000, mi_draws=5, n_mic=200, mic_draws=5, n_refit=1000, refit_steps=100, n_samples=64),
    "reduced": dict(n_iw=100, k_iw=1000, n_keep=1000, n_mi=2000, mi_draws=5, n_mic=200, mic_draws=5, n_refit=1000, refit_steps=100, n_samples=64),
    "smoke": dict(n_iw=16, k_iw=64, n_keep=128, n_mi=128, mi_draws=2, n_mic=50, mic_draws=5, n_refit=64, refit_steps=20, n_samples=16),
}

# Training scale per profile and dataset. n_train/n_test None: the whole split. lr, where given,
# replaces the paper's learning rate at that profile.
# conv_channels: the CelebA encoder's filters (the decoder mirrors them); n_fid: generated images
# behind a CelebA FID (against n_fid test images too, where there are that many); fid_sets: the
# image sets scored (hebae.measure.FID_SETS; absent: all) - on a CPU, CelebA scores its prior
# samples only, the one set its chapter reads, since each set costs n_fid Inception passes.
_TRAIN = {
    "paper": {
        "mnist": dict(epochs=100, n_train=None, n_test=None),
        "synthetic": dict(epochs=20, n_train=None, n_test=None),
        # The paper's widths and FID sample size, but 10 epochs of our 15,360 training faces (about
        # 1 % of the paper's 100 epochs of 162,770): a GPU window is minutes long, and every run
        # must finish inside one (measured on an H200: 11-14k images/s, so about 15 s a run).
        "celeba": dict(epochs=10, n_train=None, n_test=None, conv_channels=[128, 256, 512, 1024], n_fid=10000,
                       fid_sets=["prior", "gmm", "gmm_draws", "rec"]),
    },
    # Small enough for a 2-core CPU. CelebA: 1/16 of the paper's width, one epoch of every
    # training face at 5 times the official learning rate (at 1e-4 one epoch leaves grey blobs).
    "reduced": {
        "mnist": dict(epochs=10, n_train=10000, n_test=None),
        "synthetic": dict(epochs=5, n_train=None, n_test=None),
        "celeba": dict(epochs=1, n_train=None, n_test=None, conv_channels=[8, 16, 32, 64], n_fid=500, lr=5e-4, fid_sets=["prior"]),
    },
    # Seconds: for tests and CI. The conv nets shrink 16-fold in width.
    "smoke": {
        "mnist": dict(epochs=1, n_train=512, n_test=256),
        "synthetic": dict(epochs=1, n_train=512, n_test=256),
        "celeba": dict(epochs=1, n_train=512, n_test=256, conv_channels=[8, 16, 32, 64], n_fid=64, fid_sets=["prior"]),
    },
}

def default() -> str:
    """The profile named by the environment: ``HEBAE_SMOKE=1`` gives smoke, else
    ``$HEBAE_PROFILE``, else paper. The only place the environment chooses a scale."""
    smoke = os.environ.get("HEBAE_SMOKE", "0").strip()
    if smoke not in {"0", "1", ""}:
        raise ValueError(f"HEBAE_SMOKE must be '0' or '1'; got {smoke!r}")
    if smoke == "1":
        return "smoke"
    value = os.environ.get("HEBAE_PROFILE", "").strip() or "paper"
    if value not in NAMES:
        raise ValueError(f"HEBAE_PROFILE must be one of {', '.join(NAMES)}; got {value!r}")
    return value


def resolve(name: str | None) -> str:
    """``name`` checked, or the environment's default when it is None."""
    if name is None:
        return default()
    if name not in NAMES:
        raise ValueError(f"profile must be one of {', '.join(NAMES)}; got {name!r}")
    return name


def shown(name: str | None, complete) -> str:
    """The profile a results page shows. ``complete(profile)`` says whether every run the page
    needs is stored at that profile.

    A profile the reader names is taken as asked (its missing runs train). Left at None, the
    environment's profile is shown where its runs are complete; else the largest smaller profile
    whose runs are complete, so that ``make book PROFILE=paper`` renders what the GPU has made and
    the rest at the reduced scale, each page saying which; where none is complete, the
    environment's profile, whose runs then train.
    """
    if name is not None:
        return resolve(name)
    wanted = default()
    for candidate in NAMES[NAMES.index(wanted):]:
        if candidate != "smoke" or wanted == "smoke":
            if complete(candidate):
                return candidate
    return wanted


# Datasets trained exactly as another: Fashion-MNIST is a drop-in for MNIST (same shape, the
# same networks, settings and scales), and synthetic8 and synthetic16 are the synthetic data
# generated from 8- and 16-dimensional codes (hebae.data.SYNTHETIC). The one place that says so.
SETTINGS_OF = {"fashion": "mnist", "synthetic8": "synthetic", "synthetic16": "synthetic"}


def settings_dataset(dataset: str) -> str:
    """The dataset whose settings ``dataset`` takes (itself unless it is an alias)."""
    return SETTINGS_OF.get(dataset, dataset)


def sizes(name: str, dataset: str) -> dict:
    """Every default the profile ``name`` sets for ``dataset``."""
    name = resolve(name)
    if settings_dataset(dataset) not in _TRAIN[name]:
        names = [n for d in _TRAIN[name] for n in (d, *(a for a, of in SETTINGS_OF.items() if of == d and not a.startswith(d)))]
        names += [a for a in SETTINGS_OF if a not in names]  # variants named after their data set come last
        raise ValueError(f"dataset must be one of {', '.join(names)}; got {dataset!r}")
    return {**_MEASURE[name], **_TRAIN[name][settings_dataset(dataset)]}


def describe(config: dict) -> str:
    """The scale of a run in words, for figure titles: read from its config, never the environment."""
    n_train = config.get("n_train")
    text = f"{config['profile']} profile: {config['epochs']} epoch(s) on {'all' if n_train is None else f'{n_train:,}'} training images"
    if config.get("conv_channels"):
        text += f", conv widths {config['conv_channels']}"
    return text
