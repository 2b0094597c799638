"""From a model page's parameters to a stored run.

``configure`` checks every parameter a reader may change and fills in the paper's settings;
``run`` trains the model the page defines (or loads the stored run) and measures it the same
way for every model, so the model pages hold only what differs: the objective.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Callable

import numpy as np
import torch

from . import data, metrics, runs, train
from .train import DEVICES

MODELS = ("vae", "wae", "hebae")
REPARAMS = ("cholesky", "diagonal")

# The paper's settings (Appendix B and the official code), per dataset.
PAPER = {
    "mnist": {"latent_dim": 20, "epochs": 100, "batch_size": 128, "lr": 1e-3, "schedule": "mnist", "likelihood": "bernoulli"},
    "celeba": {"latent_dim": 64, "epochs": 100, "batch_size": 100, "lr": 1e-4, "schedule": "celeba", "likelihood": "mse"},
    # Not in the paper: a small problem of known latent dimension (4) for quick experiments.
    "synthetic": {"latent_dim": 4, "epochs": 20, "batch_size": 128, "lr": 1e-3, "schedule": "mnist", "likelihood": "bernoulli"},
}
DEFAULT_LAM = {  # VAE and HEBAE: λ = 1; WAE: λ = 10 on MNIST and 0.001 on CelebA, as in the official code
    "vae": {"mnist": 1.0, "celeba": 1.0, "synthetic": 1.0},
    "hebae": {"mnist": 1.0, "celeba": 1.0, "synthetic": 1.0},
    "wae": {"mnist": 10.0, "celeba": 1e-3, "synthetic": 10.0},
}
N_IW = 500  # test images behind the importance-weighted log-likelihood (profiles may shrink it)
K_IW = 1000  # importance samples per image
N_KEEP = 1000  # test latents kept in the run; also the N of the index-code mutual information
N_MIC, DRAWS_MIC = 200, 5  # MIC/TIC: test points, posterior draws per point (benchmarks/mic.py)
N_FID = 10000  # generated images behind a CelebA FID (against every test image we have)
CONV_CHANNELS = [128, 256, 512, 1024]  # Appendix B
# At smoke scale the conv nets shrink 16-fold in width: the paper's take minutes per batch on a CPU.
SMOKE_CELEBA = {"conv_channels": [8, 16, 32, 64], "n_fid": 256}


def _number(name: str, value, *, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}; got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    if integer and value != int(value):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    return int(value) if integer else float(value)


def _at_least(name: str, value, low, *, integer: bool = True):
    value = _number(name, value, integer=integer)
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {value!r}")
    return value


def _choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def configure(
    model: str,
    *,
    profile: str | None = None,
    dataset: str = "mnist",
    latent_dim=None,
    lam=None,
    epochs=None,
    batch_size=None,
    lr=None,
    seed=0,
    device: str = "auto",
    reparam=None,
    n_train=None,
    n_test=None,
) -> tuple[dict, str]:
    """Check the parameters, fill ``None`` with the paper's setting, apply the profile.

    Returns ``(config, device)``: the config identifies the run; the device only says where it
    trains. ``profile`` overrides ``$HEBAE_PROFILE``. Bad input raises one ``ValueError``
    naming the parameter and what it may be.
    """
    model = _choice("model", model, MODELS)
    dataset = _choice("dataset", dataset, data.DATASETS)
    device = _choice("device", device, DEVICES)
    paper = PAPER[dataset]
    config = {
        "model": model,
        "dataset": dataset,
        "latent_dim": _at_least("latent_dim", paper["latent_dim"] if latent_dim is None else latent_dim, 1),
        "lam": _at_least("lam", DEFAULT_LAM[model][dataset] if lam is None else lam, 0.0, integer=False),
        "epochs": _at_least("epochs", paper["epochs"] if epochs is None else epochs, 1),
        "batch_size": _at_least("batch_size", paper["batch_size"] if batch_size is None else batch_size, 1),
        "lr": _number("lr", paper["lr"] if lr is None else lr),
        "seed": _at_least("seed", seed, 0),
        "schedule": paper["schedule"],
        "likelihood": paper["likelihood"],
        "n_train": None if n_train is None else _at_least("n_train", n_train, 2),
        "n_test": None if n_test is None else _at_least("n_test", n_test, 2),
        "n_iw": N_IW,
    }
    if dataset == "celeba":
        config.update(conv_channels=CONV_CHANNELS, n_fid=N_FID)
    if config["lr"] <= 0:
        raise ValueError(f"lr must be > 0; got {config['lr']!r}")
    if model in ("hebae", "wae") and config["batch_size"] < 2:
        raise ValueError(f"batch_size must be >= 2 for {model} (it uses batch statistics); got {config['batch_size']}")
    if model == "hebae":
        config["reparam"] = _choice("reparam", "cholesky" if reparam is None else reparam, REPARAMS)
        if config["latent_dim"] >= config["batch_size"]:
            raise ValueError(
                f"latent_dim must be < batch_size for hebae (the batch covariance of a "
                f"{config['latent_dim']}-dimensional code needs more than {config['latent_dim']} "
                f"samples to be invertible); got latent_dim={config['latent_dim']}, "
                f"batch_size={config['batch_size']}"
            )
    elif reparam is not None:
        raise ValueError(f"reparam applies only to hebae; got reparam={reparam!r} for {model}")
    config = runs.apply_profile(config, profile)
    if dataset == "celeba" and config.get("smoke"):
        config.update(SMOKE_CELEBA)
    return config, device


@functools.lru_cache(maxsize=4)
def _load(dataset: str, split: str, limit: int | None) -> data.Split:
    # A results chapter trains many runs in one process; decode the data once.
    return data.load(dataset, split, limit=limit)


def load_data(config: dict) -> tuple[data.Split, data.Split]:
    return _load(config["dataset"], "train", config["n_train"]), _load(config["dataset"], "test", config["n_test"])


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


@torch.no_grad()
def _batched(fn, images: torch.Tensor, device, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([fn(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])


@torch.no_grad()
def _test_objective(model, images: torch.Tensor, batch_size: int, device) -> dict[str, float]:
    """The model's own objective terms on the test set, in full batches as in training."""
    sums: dict[str, float] = {}
    batches = max(len(images) // batch_size, 1)
    for b in range(batches):
        terms = model.loss(images[b * batch_size : (b + 1) * batch_size].to(device))
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    return {f"test_{k}": v / batches for k, v in sums.items()}


def _has_elbo(model) -> bool:
    """An ELBO needs a posterior and a normalised likelihood (not CelebA's pixel-mean MSE)."""
    return hasattr(model, "posterior") and model.has_likelihood


@torch.no_grad()
def measure(model, test_images: torch.Tensor, config: dict, device) -> runs.Artifacts:
    """The numbers and arrays every run stores (history excluded)."""
    model.eval()
    probabilistic = hasattr(model, "posterior")
    scored = _has_elbo(model)
    metrics_out = _test_objective(model, test_images, config["batch_size"], device)
    mu = _batched(model.encode_mean, test_images, device)
    summary = metrics.latent_summary(mu)
    metrics_out.update(active_dims=summary["active_dims"], mean_abs_offdiag_corr=summary["mean_abs_offdiag_corr"])
    arrays = {
        "test_mu_mean": summary["mean"].numpy(),
        "test_mu_cov": summary["cov"].numpy(),
        "test_mu": mu[:N_KEEP].numpy().astype(np.float32),
    }
    if scored:
        metrics_out.update({f"test_{k}": v for k, v in metrics.elbo(model, test_images).items()})
        iw_images = test_images[: config["n_iw"]]
        log_px = metrics.iw_log_likelihood(model, iw_images, samples=K_IW)
        metrics_out.update(iw_log_likelihood=float(log_px.mean()), iw_samples=K_IW, iw_images=len(iw_images))
    if probabilistic:
        metrics_out.update(index_code_mi=metrics.index_code_mi(model, test_images[:N_KEEP]), index_code_mi_n=min(N_KEEP, len(test_images)))
        std = model.posterior(test_images[:N_KEEP].to(device)).variance.sqrt().cpu()
        arrays["test_posterior_std"] = std.numpy().astype(np.float32)
    else:
        std = torch.zeros_like(mu)
    # MIC needs only each dimension's marginal, z_ij = μ_ij + sd_ij ε, exact for every posterior.
    gen = torch.Generator().manual_seed(config["seed"])
    n_mic = min(N_MIC, len(mu))
    eps = torch.randn(DRAWS_MIC, n_mic, mu.shape[1], generator=gen)
    draws = (mu[:n_mic] + std[:n_mic] * eps).reshape(-1, mu.shape[1]).numpy()
    index = np.tile(np.arange(n_mic), DRAWS_MIC)
    arrays["mic"], arrays["tic"] = metrics.mic_tic(index, draws)
    metrics_out.update(mean_mic=float(arrays["mic"].mean()), mean_tic=float(arrays["tic"].mean()), mic_points=n_mic, mic_draws=DRAWS_MIC)
    gen = torch.Generator().manual_seed(config["seed"])
    z = torch.randn(64, config["latent_dim"], generator=gen).to(device)
    arrays["samples"] = _to_uint8(model.decode(z))
    originals = test_images[:16]
    arrays["reconstructions"] = _to_uint8(torch.cat([originals, model.reconstruct(originals.to(device)).cpu()]))
    arrays["interpolations"] = _to_uint8(_interpolations(model, test_images, device))
    if "n_fid" in config:
        metrics_out.update(_fid(model, test_images, config, device))
    return runs.Artifacts(metrics=metrics_out, arrays=arrays)


@torch.no_grad()
def _interpolations(model, images: torch.Tensor, device, pairs: int = 4, steps: int = 8) -> torch.Tensor:
    """Decoded straight lines between the codes of test images 2p and 2p+1: (pairs·steps, C, H, W)."""
    mu = model.encode_mean(images[: 2 * pairs].to(device))
    t = torch.linspace(0, 1, steps, device=device)[None, :, None]
    line = mu[0::2, None] * (1 - t) + mu[1::2, None] * t  # (pairs, steps, k)
    return model.decode(line.reshape(pairs * steps, -1)).cpu()


@torch.no_grad()
def _fid(model, test_images: torch.Tensor, config: dict, device) -> dict:
    """Fréchet distance between ``n_fid`` decoder samples and every test image, on the best
    feature extractor available (see ``hebae.fid``); the extractor's name is stored with it."""
    from . import fid

    extractor = fid.default_extractor(device)
    gen = torch.Generator().manual_seed(config["seed"] + 1)
    samples = torch.cat([
        model.decode(torch.randn(min(500, config["n_fid"] - i), config["latent_dim"], generator=gen).to(device)).cpu()
        for i in range(0, config["n_fid"], 500)
    ])
    distance = fid.frechet_distance(
        fid.feature_stats(samples, extractor, device=device), fid.feature_stats(test_images, extractor, device=device)
    )
    return {
        "fid": distance, "fid_extractor": extractor.name, "fid_comparable_to_published": extractor.comparable_to_published,
        "fid_generated": config["n_fid"], "fid_test_images": len(test_images),
    }


def run(config: dict, build: Callable[[dict, tuple], torch.nn.Module], *, device: str = "auto", progress: bool = True) -> runs.Run:
    """Train the model ``build(config, image_shape)`` returns, or load the stored run."""

    def train_and_measure(workdir):
        from safetensors.torch import save_file

        dev = train.pick_device(device)
        train_split, test_split = load_data(config)
        train.seed_everything(config["seed"])
        model = build(config, train_split.shape)
        test_images = test_split.images

        def evaluate(m, epoch):
            return {f"test_{k}": v for k, v in metrics.elbo(m, test_images).items()} if _has_elbo(m) else {}

        tc = train.TrainConfig(
            epochs=config["epochs"], batch_size=config["batch_size"], lr=config["lr"],
            schedule=config["schedule"], seed=config["seed"],
            bf16=config["dataset"] == "celeba", channels_last=config["dataset"] == "celeba",
        )
        history = train.fit(model, train_split.images, tc, device=dev, evaluate=evaluate, progress=progress)
        artifacts = measure(model, test_images, config, dev)
        artifacts.history = history
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(workdir / "checkpoint.safetensors"))
        return artifacts

    return runs.get_or_train(config, train_and_measure)


def load_model(run: runs.Run, build: Callable[[dict, tuple], torch.nn.Module], image_shape) -> torch.nn.Module:
    """Rebuild a stored run's model from its checkpoint (safetensors: no code is unpickled)."""
    from safetensors.torch import load_file

    if not run.checkpoint.exists():
        raise FileNotFoundError(f"run {run.id} has no checkpoint at {run.checkpoint}; rerun it to recreate one")
    model = build(run.config, image_shape)
    model.load_state_dict(load_file(str(run.checkpoint)))
    return model.eval()
