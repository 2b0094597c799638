"""What every run measures, the same way for every model, with the sizes its config names.

The model contract (:mod:`hebae.autoencoder`) decides what applies: a model with a posterior
gets its index-code mutual information and posterior scales; one with a posterior and a
normalised likelihood also gets its ELBO and importance-weighted log-likelihood under N(0, I);
every model with a normalised likelihood gets the *refit* yardstick (its means and decoder
frozen, one posterior scale per dimension fitted on held-out images). Samples are drawn through
the model's ``sample_prior``.

Generation is scored in two ways, by data set: image data with FID, KID and precision/recall on
Inception features (:func:`fid`, when the config names ``n_fid``); synthetic data, whose 8×8
"images" are vectors no image network was made for, with the Fréchet distance between the data
vectors themselves (:func:`data_scores`, always). Every run also stores NAC, the normalised
absolute correlation of its codes (:func:`hebae.metrics.nac_of_codes`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from . import expost, metrics, profiles, runs


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


@torch.no_grad()
def _batched(fn, images: torch.Tensor, device, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([fn(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])


def _prefixed(prefix: str, numbers: dict) -> dict:
    return {f"{prefix}{k}": v for k, v in numbers.items()}


@torch.no_grad()
def per_epoch(model, test_images: torch.Tensor) -> dict[str, float]:
    """The numbers the history records after every epoch: the test ELBO under N(0, I) where the
    model has one, and the mean log posterior standard deviation where it has a posterior."""
    out = {}
    if model.has_elbo:
        out.update(_prefixed("test_", metrics.elbo(model, test_images)))
    if model.has_posterior:
        out["test_log_sd"] = metrics.mean_log_sd(model, test_images[:2000])
    return out


@torch.no_grad()
def test_objective(model, images: torch.Tensor, batch_size: int, device) -> dict[str, float]:
    """The model's own objective terms on the test set, in full batches as in training."""
    sums: dict[str, float] = {}
    batches = max(len(images) // batch_size, 1)
    for b in range(batches):
        terms = model.loss(images[b * batch_size : (b + 1) * batch_size].to(device))
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    return {f"test_{k}": v / batches for k, v in sums.items()}


@torch.no_grad()
def interpolations(model, images: torch.Tensor, device, pairs: int = 4, steps: int = 8) -> torch.Tensor:
    """Decoded straight lines between the codes of test images 2p and 2p+1: (pairs·steps, C, H, W)."""
    mu = model.encode_mean(images[: 2 * pairs].to(device))
    t = torch.linspace(0, 1, steps, device=device)[None, :, None]
    line = mu[0::2, None] * (1 - t) + mu[1::2, None] * t  # (pairs, steps, k)
    return model.decode(line.reshape(pairs * steps, -1)).cpu()


@torch.no_grad()
def samples(model, n: int, seed: int, device, batch_size: int = 500, draw=None) -> torch.Tensor:
    """``n`` decoded samples under ``seed``, their codes drawn by ``draw(n, generator)``: the
    model's ``sample_prior`` unless another sampler (the ex-post mixture's) is given."""
    draw = draw or model.sample_prior
    gen = torch.Generator().manual_seed(seed)
    chunks = [draw(min(batch_size, n - i), gen).to(device) for i in range(0, n, batch_size)]
    return torch.cat([model.decode(z).cpu() for z in chunks])


@functools.lru_cache(maxsize=2)
def _inception(device: str):
    # Loading verifies the 87 MB weights file by its hash: once per process, not once per run.
    from . import fid as fid_module

    return fid_module.inception(device)


def expost_sampler(model, train_images: torch.Tensor, seed: int, device, n_fit: int = 10000, *, draws: bool = False) -> expost.GaussianMixture:
    """The ex-post sampler of Ghosh et al.: a 10-component, full-covariance Gaussian mixture fitted
    to the codes of (up to ``n_fit``) training images: their encoder means, or with ``draws`` one
    posterior draw per image (models with a posterior only). A VAE's prior was trained to match
    the aggregate of draws, not of means, so a mixture on means mixes prior mismatch with the
    posterior noise it leaves out; both are reported."""
    images = train_images[:n_fit]
    if not draws:
        return expost.fit_gmm(_batched(model.encode_mean, images, device), 10, seed=seed)
    if not model.has_posterior:
        raise ValueError(f"draws=True needs a model with a posterior; {type(model).__name__} has none")
    with torch.random.fork_rng(devices=[]):  # the draws repeat under the seed, and leave the global stream alone
        torch.manual_seed(seed)
        codes = _batched(lambda x: model.posterior(x).sample(), images, device)
    return expost.fit_gmm(codes, 10, seed=seed)


# The image sets a run scores, by metric-key prefix.
SCORED = {
    "": "samples of the model's prior",
    "gmm_": "samples of the ex-post GMM fitted to encoder means",
    "gmm_draws_": "samples of the ex-post GMM fitted to posterior draws",
    "rec_": "reconstructions of test images disjoint from the real set",
}
# The names a config's ``fid_sets`` takes (absent: all that apply). A profile narrows them where
# the Inception network is the cost a CPU cannot pay and no chapter reads the others (CelebA).
FID_SETS = {"prior": "", "gmm": "gmm_", "gmm_draws": "gmm_draws_", "rec": "rec_"}


def fid_sets(config: dict) -> list[str]:
    """The prefixes of the image sets ``config`` asks to score (checked)."""
    names = config.get("fid_sets", list(FID_SETS))
    if not isinstance(names, (list, tuple)) or not names or any(n not in FID_SETS for n in names):
        raise ValueError(f"fid_sets must be a non-empty list of {', '.join(FID_SETS)}; got {names!r}")
    return [FID_SETS[n] for n in names]


def fid_split(test_images: torch.Tensor, n_fid: int) -> tuple[slice, slice]:
    """The real set (the first n test images) and the disjoint test images whose
    reconstructions are scored (the next n): a reconstruction scored against its own original
    is paired, and a perfect autoencoder would score 0 where independent real images do not.
    With fewer than 2·``n_fid`` test images both halves shrink to half the split."""
    n = min(n_fid, len(test_images) // 2)
    if n < 4:
        raise ValueError(f"the test split must hold at least 8 images to score FID on disjoint halves; got {len(test_images)}")
    return slice(0, n), slice(n, 2 * n)


def is_synthetic(config: dict) -> bool:
    """Whether the run's data are the synthetic vectors (any code dimension), not images."""
    return profiles.settings_dataset(config["dataset"]) == "synthetic"


# Generated vectors behind a data-space distance when the config names no n_fid; the test split
# caps it (half of it is the real set, the other half is reconstructed).
DATA_FD_SIZE = 1000


def _generated_sets(model, test_images: torch.Tensor, config: dict, device, n: int, rec_part: slice,
                    gmms: dict[str, expost.GaussianMixture] | None) -> dict[str, torch.Tensor]:
    """The sets of :data:`SCORED` the config asks for, by prefix: n samples of the prior and of
    each given mixture (seeded by the run), and the reconstructions of ``test_images[rec_part]``."""
    seed, wanted = config["seed"] + 1, fid_sets(config)
    sets = {"": samples(model, n, seed, device)} if "" in wanted else {}
    for prefix, gmm in (gmms or {}).items():
        if prefix in wanted:
            sets[prefix] = samples(model, n, seed, device, draw=gmm.sample)
    if "rec_" in wanted:
        sets["rec_"] = _batched(model.reconstruct, test_images[rec_part], device)
    return sets


def data_scores(model, test_images: torch.Tensor, config: dict, device, *,
                gmms: dict[str, expost.GaussianMixture] | None = None, train_images: torch.Tensor | None = None) -> dict:
    """The Fréchet distance on the data vectors themselves (:func:`hebae.metrics.data_frechet`)
    for each set of :data:`SCORED` that applies, against the first n test vectors, with FID's
    bootstrap error: keys ``<prefix>data_fd`` and ``<prefix>data_fd_se``.

    n is ``n_fid`` where the config names it, else :data:`DATA_FD_SIZE`, at most half the test
    split (:func:`fid_split`); the generated sets hold n vectors each, and reconstructions are
    of the next n test vectors. Beside them: ``data_fd_scale`` (the real vectors' total
    variance), ``data_fd_floor`` and ``data_fd_floor_se`` (the distance between the real set and
    n training vectors: what an exact copy of the data distribution scores at this size), and
    the sizes (``data_fd_generated``, ``data_fd_real``, ``data_fd_bootstrap``). A test split of
    fewer than 8 vectors scores nothing (an empty dict).
    """
    if len(test_images) < 8:  # too few to split into a real set and reconstructions: nothing to score
        return {}
    real_part, rec_part = fid_split(test_images, config.get("n_fid") or DATA_FD_SIZE)
    n = real_part.stop
    real = test_images[real_part]
    sets = _generated_sets(model, test_images, config, device, n, rec_part, gmms)
    from .fid import FID_BOOTSTRAP

    out = {"data_fd_generated": n, "data_fd_real": n, "data_fd_bootstrap": FID_BOOTSTRAP}
    for prefix, generated in sets.items():
        scored = metrics.data_frechet(generated, real, resamples=out["data_fd_bootstrap"], seed=config["seed"])
        out[f"{prefix}data_fd"], out[f"{prefix}data_fd_se"] = scored["fd"], scored["fd_se"]
        out["data_fd_scale"] = scored["scale"]
    if train_images is not None and len(train_images) >= n:
        floor = metrics.data_frechet(train_images[:n], real, resamples=out["data_fd_bootstrap"], seed=config["seed"])
        out["data_fd_floor"], out["data_fd_floor_se"] = floor["fd"], floor["fd_se"]
    return out


def fid(model, test_images: torch.Tensor, config: dict, device, *, gmms: dict[str, expost.GaussianMixture] | None = None,
        progress: bool = False) -> dict:
    """FID (with its bootstrap error), KID (with its standard error) and improved precision and
    recall of each image set in :data:`SCORED` that applies, against the first ``n_fid`` test
    images (whose features are cached once per dataset, see :func:`hebae.fid.dataset_features`).

    ``gmms`` maps a prefix ("gmm_", "gmm_draws_") to its ex-post mixture. Every generated set
    of the run passes the Inception network in one call; the real set's precision radii are
    computed once. Keys: ``<prefix>fid``, ``<prefix>fid_se``, ``<prefix>kid``, ``<prefix>kid_se``,
    ``<prefix>precision``, ``<prefix>recall``, and what :func:`hebae.fid.describe_scores` names.
    """
    from . import fid as fid_module

    real_part, rec_part = fid_split(test_images, config["n_fid"])
    n_real = real_part.stop
    extractor = _inception(str(device))
    real = fid_module.dataset_features(config["dataset"], "test", n_real, extractor, progress=progress) if _is_test_prefix(
        config, test_images, n_real) else extractor.features(test_images[real_part], progress=progress)
    reference = fid_module.Reference.of(real)
    n_gen = config["n_fid"]
    sets = _generated_sets(model, test_images, config, device, n_gen, rec_part, gmms)
    features = extractor.features(torch.cat(list(sets.values())), progress=progress)
    bounds = np.cumsum([0, *(len(v) for v in sets.values())])
    out = fid_module.describe_scores(n_gen, n_real)
    if "rec_" in sets:
        out["rec_fid_images"] = f"test images {rec_part.start}-{rec_part.stop - 1} against test images 0-{n_real - 1}"
    for (prefix, _), a, b in zip(sets.items(), bounds[:-1], bounds[1:]):
        out.update(_prefixed(prefix, fid_module.score(features[a:b], reference, seed=config["seed"])))
    return out


def _is_test_prefix(config: dict, test_images: torch.Tensor, n: int) -> bool:
    """Whether ``test_images`` starts with the dataset's own test split (so its cached features
    apply): true for every run's data; checked on the first images, never assumed."""
    from . import data

    if is_synthetic(config):
        return False
    try:
        head = data.load(config["dataset"], "test", limit=min(n, 8)).images
    except Exception:  # noqa: BLE001 - no loadable split: encode the images given
        return False
    return head.shape == test_images[: len(head)].shape and torch.equal(head, test_images[: len(head)])


@torch.no_grad()
def _mic(config: dict, mu: torch.Tensor, std: torch.Tensor) -> tuple[dict, dict]:
    """MIC/TIC between sample index and each code dimension, two ways (see the MI chapter).

    ``mic``: the index in test-set order, our reading of the paper's protocol (the paper does
    not give one): ``n_mic`` points × ``mic_draws`` posterior draws. ``mic_ranked``: the index
    re-ordered, per dimension, by the rank of the mean μ_j, so that a noiseless code is a
    monotone function of the index and MIC measures noise, not the arbitrary order of the data.
    Drawing z_ij = μ_ij + sd_ij ε is exact for every posterior here: MIC sees one dimension at a
    time and each marginal is Gaussian.
    """
    n, draws = min(config["n_mic"], len(mu)), config["mic_draws"]
    gen = torch.Generator().manual_seed(config["seed"])
    eps = torch.randn(draws, n, mu.shape[1], generator=gen)
    codes = (mu[:n] + std[:n] * eps).reshape(-1, mu.shape[1]).numpy()
    index = np.tile(np.arange(n), draws)
    ranks = np.tile(mu[:n].argsort(0).argsort(0).numpy(), (draws, 1))  # (draws·n, k)
    arrays, numbers = {}, {"mic_points": n, "mic_draws": draws}
    for name, idx in (("", index), ("_ranked", ranks)):
        arrays[f"mic{name}"], arrays[f"tic{name}"] = metrics.mic_tic(idx, codes)
        numbers[f"mean_mic{name}"] = float(arrays[f"mic{name}"].mean())
        numbers[f"mean_tic{name}"] = float(arrays[f"tic{name}"].mean())
    return numbers, arrays


def measure(model, test_images: torch.Tensor, config: dict, device, *, train_images: torch.Tensor | None = None, progress: bool = False) -> runs.Artifacts:
    """The numbers and arrays every run stores (the history excluded)."""
    model.eval()
    out = test_objective(model, test_images, config["batch_size"], device)
    mu = _batched(model.encode_mean, test_images, device)
    summary = metrics.latent_summary(mu)
    out.update({k: summary[k] for k in ("active_dims", "mean_abs_offdiag_corr", "mean_abs_offdiag_corr_active")})
    keep = config["n_keep"]
    # NAC from the codes kept in the run (test_mu), so that a page can recompute it for a run
    # stored before NAC was, by the same procedure and at the same sample size.
    if len(mu) >= 3 and torch.isfinite(mu[:keep]).all():
        out.update(metrics.nac_of_codes(mu[:keep].numpy(), seed=config["seed"]))
    arrays = {
        "test_mu_mean": summary["mean"].numpy(),
        "test_mu_cov": summary["cov"].numpy(),
        "test_mu": mu[:keep].numpy().astype(np.float32),
    }
    # A model's own trained quantities a page shows without its checkpoint, which is never committed.
    arrays.update({k: np.asarray(v) for k, v in (model.measured_arrays() if hasattr(model, "measured_arrays") else {}).items()})
    if model.has_elbo:
        out.update(_prefixed("test_", metrics.elbo(model, test_images)))
        iw = metrics.iw_log_likelihood(model, test_images[: config["n_iw"]], samples=config["k_iw"])
        out.update(iw_log_likelihood=float(iw.mean()), iw_samples=config["k_iw"], iw_images=min(config["n_iw"], len(test_images)))
    if model.has_posterior:
        mi_images = test_images[: config["n_mi"]]
        mi = metrics.index_code_mi(model, mi_images, samples=config["mi_draws"])
        out.update(index_code_mi=mi, index_code_mi_n=len(mi_images), index_code_mi_gap=math.log(len(mi_images)) - mi)
        std = _batched(lambda x: model.posterior(x).stddev, test_images[:keep], device)
        arrays["test_posterior_std"] = std.numpy().astype(np.float32)
        out["test_log_sd"] = float(std.log().mean())
    else:
        std = torch.zeros_like(mu[:keep])
    if model.has_likelihood:
        out.update(metrics.refit_scale(
            model, test_images, config["n_refit"], samples=config["k_iw"], n_iw=config["n_iw"], seed=config["seed"], steps=config["refit_steps"]
        ))
    numbers, mic_arrays = _mic(config, mu[:keep], std)
    out.update(numbers)
    arrays.update(mic_arrays)
    arrays["samples"] = _to_uint8(samples(model, config["n_samples"], config["seed"], device))
    originals = test_images[:16]
    arrays["reconstructions"] = _to_uint8(torch.cat([originals, model.reconstruct(originals.to(device)).cpu()]))
    arrays["interpolations"] = _to_uint8(interpolations(model, test_images, device))
    gmms, wanted = {}, fid_sets(config)
    if train_images is not None and "gmm_" in wanted:
        gmms["gmm_"] = expost_sampler(model, train_images, config["seed"], device)
    if train_images is not None and "gmm_draws_" in wanted and model.has_posterior:
        gmms["gmm_draws_"] = expost_sampler(model, train_images, config["seed"], device, draws=True)
    for prefix, gmm in gmms.items():
        arrays[f"{prefix}samples"] = _to_uint8(samples(model, config["n_samples"], config["seed"], device, draw=gmm.sample))
        out.update({f"{prefix}iterations": gmm.iterations, f"{prefix}converged": gmm.converged})
    if is_synthetic(config):
        out.update(data_scores(model, test_images, config, device, gmms=gmms, train_images=train_images))
    elif config.get("n_fid"):
        out.update(fid(model, test_images, config, device, gmms=gmms, progress=progress))
    return runs.Artifacts(metrics=out, arrays=arrays)

