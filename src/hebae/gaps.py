"""The approximation and amortisation gaps of Cremer, Li and Duvenaud (2018), image by image.

For a trained model and test images x, three numbers per image:

* ``log_px``: log p(x), by importance sampling with a defensive mixture proposal (equal parts
  of the encoder's posterior and every optimised Gaussian below), ``samples_is`` draws in all;
* ``elbo_encoder``: the ELBO of the encoder's posterior q_φ(z | x) (``model.posterior``);
* ``elbo_optimal[family]``: the ELBO of the best Gaussian of ``family`` for this one image,
  found by stochastic gradient ascent on its ELBO with the model frozen: ``"diagonal"`` (the
  fully factorised Gaussian Cremer et al. optimise) or ``"full"`` (a full covariance, through
  its Cholesky factor).

Then, for a family F, the approximation gap is log p(x) − ELBO(q*_F) and the amortisation gap
ELBO(q*_F) − ELBO(q_φ). Every ELBO here is a Monte Carlo estimate, log p(x | z) + log p(z) −
log q(z | x) averaged over ``samples_elbo`` draws, with the model's own prior
(``model.log_prior``), so a posterior without a closed-form KL (a flow) is scored like any other.
The log p(x) estimate is a stochastic lower bound; it makes the approximation gap, if anything,
too small.

A *model* here is anything with the contract's ``posterior(x)`` (``rsample``/``sample`` and
``log_prob``), ``log_likelihood(x, z)`` for z of shape (s, m, k), ``log_prior(z)``,
``latent_dim`` and ``parameters()``. This module imports nothing from the book.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

FAMILIES = ("diagonal", "full")


@dataclass(frozen=True)
class Settings:
    """The sizes behind one computation (all of them go into the stored file's name)."""

    images: int = 100  # the first test images
    families: tuple = ("full",)
    steps: int = 300  # Adam steps of the per-image optimisation
    samples_fit: int = 8  # draws per step of that optimisation
    lr: float = 0.02  # Adam's step, decayed linearly to a tenth over the steps
    samples_elbo: int = 500  # draws behind each reported ELBO
    samples_is: int = 1000  # draws behind log p(x), shared equally by the mixture's parts
    seed: int = 0

    def __post_init__(self):
        for name in ("images", "steps", "samples_fit", "samples_elbo", "samples_is"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        families = tuple(self.families)
        if not families or any(f not in FAMILIES for f in families) or len(set(families)) != len(families):
            raise ValueError(f"families must be a non-empty tuple of distinct names from {', '.join(FAMILIES)}; got {self.families!r}")
        object.__setattr__(self, "families", families)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0; got {self.lr!r}")

    def key(self) -> str:
        return json.dumps({**asdict(self), "families": list(self.families)}, sort_keys=True, separators=(",", ":"))


@dataclass
class Gaps:
    """Per-image results (numpy, float64) and what made them."""

    log_px: np.ndarray
    elbo_encoder: np.ndarray
    elbo_optimal: dict[str, np.ndarray]
    # Gaussian moments per image: the encoder's posterior (moment-matched from draws where it is
    # not Gaussian) and each optimum; shapes (n, k) and (n, k, k).
    moments: dict[str, tuple[np.ndarray, np.ndarray]]
    settings: dict
    info: dict = field(default_factory=dict)

    def approximation(self, family: str) -> np.ndarray:
        return self.log_px - self.elbo_optimal[_family(family)]

    def amortisation(self, family: str) -> np.ndarray:
        return self.elbo_optimal[_family(family)] - self.elbo_encoder


def _family(name: str) -> str:
    if name not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {name!r}")
    return name


def _device(model) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------- estimates


def log_joint(model, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(x | z) + log p(z) for draws z of shape (s, m, k): shape (s, m)."""
    return model.log_likelihood(x, z) + model.log_prior(z)


@torch.no_grad()
def elbo(model, x: torch.Tensor, q: Distribution, samples: int, *, chunk: int = 100) -> torch.Tensor:
    """The Monte Carlo ELBO of q for each image of x: the mean of log p(x, z) − log q(z) over
    ``samples`` draws of q (drawn in chunks, each scored before the next is drawn)."""
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for done in range(0, samples, chunk):
        z = q.sample((min(chunk, samples - done),))
        total += (log_joint(model, x, z) - q.log_prob(z)).double().sum(0)
    return total / samples


@torch.no_grad()
def log_marginal(model, x: torch.Tensor, proposals: list[Distribution], samples: int, *, chunk: int = 100) -> torch.Tensor:
    """log p(x) per image by importance sampling from the equal mixture of ``proposals``
    (defensive importance sampling: the estimate is never much worse than the best part's).
    Each part gets ``samples // len(proposals)`` draws (at least one)."""
    per_part = max(samples // len(proposals), 1)
    log_w = []
    for part in proposals:
        for done in range(0, per_part, chunk):
            z = part.sample((min(chunk, per_part - done),))
            # The drawing part first: a flow scores its own draw without inverting itself.
            densities = [part.log_prob(z)] + [other.log_prob(z) for other in proposals if other is not part]
            log_mix = torch.logsumexp(torch.stack([d.double() for d in densities]), 0) - math.log(len(proposals))
            log_w.append(log_joint(model, x, z).double() - log_mix)
    log_w = torch.cat(log_w)
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


@torch.no_grad()
def gaussian_moments(q: Distribution, draws: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (m, k) and covariance (m, k, k) of q: exact for a Gaussian, else from ``draws``."""
    if isinstance(q, MultivariateNormal):
        return q.loc, q.covariance_matrix
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        return q.base_dist.loc, torch.diag_embed(q.base_dist.scale.pow(2))
    z = q.sample((draws,))
    loc = z.mean(0)
    centred = z - loc
    return loc, torch.einsum("smi,smj->mij", centred, centred) / (draws - 1)


def _gaussian(family: str, loc: torch.Tensor, raw: torch.Tensor) -> Distribution:
    """The Gaussian of ``family`` from unconstrained parameters: log standard deviations (m, k),
    or a lower-triangular factor with its diagonal stored as logs (m, k, k)."""
    if family == "diagonal":
        return Independent(Normal(loc, raw.exp()), 1)
    tril = torch.tril(raw, -1) + torch.diag_embed(raw.diagonal(dim1=-2, dim2=-1).exp())
    return MultivariateNormal(loc, scale_tril=tril)


def _entropy(family: str, raw: torch.Tensor) -> torch.Tensor:
    k = raw.shape[-1]
    log_sd = raw if family == "diagonal" else raw.diagonal(dim1=-2, dim2=-1)
    return log_sd.sum(-1) + 0.5 * k * (1.0 + math.log(2 * math.pi))


def fit_gaussian(model, x: torch.Tensor, family: str, loc: torch.Tensor, cov: torch.Tensor, *, steps: int,
                 samples: int, lr: float) -> Distribution:
    """The Gaussian of ``family`` maximising each image's ELBO, from (loc, cov) (the encoder's
    moments, so the search starts where amortised inference left off).

    The images' parameters are independent and the objective is the sum of their ELBOs, so one
    Adam over the batch is one optimisation per image. Each step uses ``samples``
    reparameterised draws and the Gaussian's entropy in closed form; the step size decays
    linearly from ``lr`` to ``lr / 10``. The model's weights are frozen meanwhile.
    """
    family = _family(family)
    k = loc.shape[-1]
    jitter = 1e-6 * torch.eye(k, dtype=cov.dtype, device=cov.device)
    with torch.no_grad():
        if family == "diagonal":
            raw = 0.5 * cov.diagonal(dim1=-2, dim2=-1).clamp_min(1e-12).log()
        else:
            tril = torch.linalg.cholesky(0.5 * (cov + cov.mT) + jitter)
            raw = torch.tril(tril, -1) + torch.diag_embed(tril.diagonal(dim1=-2, dim2=-1).log())
    loc = loc.detach().clone().requires_grad_(True)
    raw = raw.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([loc, raw], lr=lr)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = lr * (1.0 - 0.9 * step / max(steps - 1, 1))
            q = _gaussian(family, loc, raw)
            z = q.rsample((samples,))
            objective = log_joint(model, x, z).mean(0) + _entropy(family, raw)
            optimizer.zero_grad(set_to_none=True)
            (-objective.sum()).backward()
            optimizer.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return _gaussian(family, loc.detach(), raw.detach())


def compute(model, images: torch.Tensor, settings: Settings | None = None) -> Gaps:
    """The gaps of ``model`` on the first ``settings.images`` of ``images``, repeatable under
    ``settings.seed`` (the global generator is restored afterwards)."""
    settings = settings or Settings()
    device = _device(model)
    x = images[: settings.images].to(device)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(settings.seed)
            with torch.no_grad():
                q_encoder = model.posterior(x)
            encoder_elbo = elbo(model, x, q_encoder, settings.samples_elbo)
            loc, cov = gaussian_moments(q_encoder)
            moments = {"encoder": (loc, cov)}
            optima, optimal_elbo = {}, {}
            for family in settings.families:
                q = fit_gaussian(model, x, family, loc, cov, steps=settings.steps, samples=settings.samples_fit, lr=settings.lr)
                optima[family] = q
                optimal_elbo[family] = elbo(model, x, q, settings.samples_elbo)
                moments[family] = gaussian_moments(q)
            log_px = log_marginal(model, x, [q_encoder, *optima.values()], settings.samples_is)
    finally:
        model.train(was_training)
    as_numpy = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    return Gaps(
        log_px=as_numpy(log_px),
        elbo_encoder=as_numpy(encoder_elbo),
        elbo_optimal={f: as_numpy(v) for f, v in optimal_elbo.items()},
        moments={name: (as_numpy(m), as_numpy(c)) for name, (m, c) in moments.items()},
        settings=json.loads(settings.key()),
        info={"seconds": round(time.perf_counter() - start, 1), "device": str(device),
              "encoder_posterior": type(q_encoder).__name__},
    )


# ---------------------------------------------------------------------------------- storage


def path_for(root: Path, run_id: str, settings: Settings) -> Path:
    """Where the gaps of run ``run_id`` at ``settings`` are kept: ``<root>/gaps/<run id>-<hash>.npz``."""
    import hashlib

    digest = hashlib.sha256(settings.key().encode()).hexdigest()[:10]
    return Path(root) / "gaps" / f"{run_id}-{digest}.npz"


def save(gaps: Gaps, path: Path) -> None:
    """Write ``gaps`` to ``path`` atomically (float32 moments, float64 per-image numbers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"log_px": gaps.log_px, "elbo_encoder": gaps.elbo_encoder}
    for family, values in gaps.elbo_optimal.items():
        arrays[f"elbo_optimal_{family}"] = values
    for name, (loc, cov) in gaps.moments.items():
        arrays[f"loc_{name}"], arrays[f"cov_{name}"] = loc.astype(np.float32), cov.astype(np.float32)
    arrays["meta"] = np.array(json.dumps({"settings": gaps.settings, "info": gaps.info}, sort_keys=True))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(path: Path) -> Gaps:
    with np.load(Path(path), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays.pop("meta")))
    families = [f for f in FAMILIES if f"elbo_optimal_{f}" in arrays]
    names = [k[len("loc_"):] for k in arrays if k.startswith("loc_")]
    return Gaps(
        log_px=arrays["log_px"], elbo_encoder=arrays["elbo_encoder"],
        elbo_optimal={f: arrays[f"elbo_optimal_{f}"] for f in families},
        moments={n: (arrays[f"loc_{n}"].astype(np.float64), arrays[f"cov_{n}"].astype(np.float64)) for n in names},
        settings=meta["settings"], info=meta["info"],
    )
