"""The mathematical pieces the models are built from, each one line of an equation.

The derivation chapter checks every function here against an independent computation, and the
model chapters train with these same functions, so the chapter guards the training code.
Shapes: a batch of m latent vectors is (m, k).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

# Where the models' noise comes from. None: torch's global generator, as ``torch.randn``. The
# training loop may install another source for a stretch of code (:func:`noise_source`): batched
# training (``hebae.batched``) hands every run the draws a lone run of it would have made.
_NOISE: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("hebae_noise", default=None)


def standard_normal(shape, *, device=None, dtype=None) -> torch.Tensor:
    """N(0, I) noise of ``shape``, as ``torch.randn(shape, device=device, dtype=dtype)``.

    Every random draw a model makes in ``loss`` goes through this function (the
    reparameterisations below use it, and a page that needs prior draws calls it), so that the
    training loop can control where the draws come from. Outside such control it *is*
    ``torch.randn`` on the global generator.
    """
    source = _NOISE.get()
    if source is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return source(tuple(shape), device=device, dtype=dtype)


@contextlib.contextmanager
def noise_source(source: Callable | None) -> Iterator[None]:
    """Within the block, :func:`standard_normal` returns ``source(shape, device=, dtype=)``."""
    token = _NOISE.set(source)
    try:
        yield
    finally:
        _NOISE.reset(token)


def in_float32(fn):
    """Run ``fn`` outside autocast with half-precision tensor arguments promoted to float32.

    Batch statistics, log-determinants, Cholesky factors and kernel sums lose too much in
    bfloat16 (``torch.logdet`` refuses it outright), so the models' training under bf16
    autocast computes them here in float32; float64 inputs stay float64.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        args = [a.float() if isinstance(a, torch.Tensor) and a.dtype in (torch.bfloat16, torch.float16) else a for a in args]
        with torch.autocast(device_type=device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | z) for a Bernoulli decoder, summed over pixels: one value per example."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, log_var: torch.Tensor | float) -> torch.Tensor:
    """-log N(x; mean, γ I) with log γ = ``log_var``, summed over pixels: one value per example.

    ½ Σ_d [(x_d − mean_d)² / γ + log γ + log 2π]. A density, not a probability: on pixels in
    [0, 1] it can exceed 1, so its negative log can be negative, and it is not comparable with
    a Bernoulli log-probability of the same image. ``log_var`` is a scalar (the single variance
    of Dai and Wipf's decoder) or anything that broadcasts against ``x``.
    """
    log_var = torch.as_tensor(log_var, dtype=mean.dtype, device=mean.device)
    per_pixel = (x - mean).pow(2) * torch.exp(-log_var) + log_var + math.log(2 * math.pi)
    return 0.5 * per_pixel.flatten(1).sum(1)


@in_float32
def kl_diag_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)), summed over dimensions: one value per example.

    The closed form behind the VAE's Eq. 4: ½ Σ_j (σ_j² + μ_j² − 1 − log σ_j²).
    """
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(-1)


@in_float32
def kl_normal(mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, cov) || N(0, I)) for a full covariance: ½(tr Σ + βᵀβ − k − log|Σ|)."""
    k = mean.shape[-1]
    trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
    return 0.5 * (trace + (mean * mean).sum(-1) - k - torch.logdet(cov))


@in_float32
def batch_moments(mu: torch.Tensor, *, unbiased: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """β̂ and Σ̂: the mean and covariance of a batch of encoder means (m, k).

    The official code uses ``tfp.stats.covariance``, which divides by m; that is the default.
    """
    m = mu.shape[0]
    if m < 2:
        raise ValueError(f"batch_moments needs at least 2 rows (batch_size >= 2); got {m}")
    beta = mu.mean(0)
    centred = mu - beta
    sigma = centred.T @ centred / (m - 1 if unbiased else m)
    return beta, sigma


@in_float32
def hebae_regulariser(mu: torch.Tensor, *, jitter: float = 0.0) -> torch.Tensor:
    """½(tr Σ̂ − k − log|Σ̂|) + ½‖β̂‖²: the batch regulariser HEBAE trains with (Eq. 11, 17).

    It equals KL(N(β̂, Σ̂) || N(0, I)). ``jitter`` adds εI to Σ̂ before the log-determinant,
    which keeps it finite when the batch covariance is (nearly) singular.
    """
    beta, sigma = batch_moments(mu)
    if jitter:
        sigma = sigma + jitter * torch.eye(sigma.shape[0], dtype=sigma.dtype, device=sigma.device)
    return kl_normal(beta, sigma)


def reparameterise_diag(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = μ + σ ⊙ ε with σ = exp(½ logvar): the VAE's Eq. 3."""
    eps = standard_normal(mu.shape, device=mu.device, dtype=mu.dtype) if eps is None else eps
    return mu + (0.5 * logvar).exp() * eps


@in_float32
def cholesky_factor(sigma: torch.Tensor, jitter: float = 1e-6) -> torch.Tensor:
    """Lower-triangular R with R Rᵀ = Σ + jitter·I (the jitter keeps the factorisation stable).

    Where Σ + jitter·I is not positive definite (a NaN in the batch, say), R is all NaN rather
    than an exception: ``linalg.cholesky`` would read the device's verdict on the host at every
    training step, a synchronisation the GPU path avoids; the NaN reaches the objective, and the
    training loop's NaN guard names the epoch and batch.
    """
    eye = torch.eye(sigma.shape[-1], dtype=sigma.dtype, device=sigma.device)
    r, info = torch.linalg.cholesky_ex(sigma + jitter * eye)
    return torch.where((info == 0)[..., None, None], r, torch.full_like(r, float("nan")))


@in_float32
def reparameterise_cholesky(
    mu: torch.Tensor, log_scale: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor | None = None,
    *, jitter: float = 1e-6,
) -> torch.Tensor:
    """z_i = μ_i + s_i ⊙ (R ε_i): the multivariate reparameterisation of Eq. 8 and Eq. 14.

    ``log_scale`` (m, k) is the per-sample log scale the encoder outputs; the official code lets
    it vary by dimension, which makes Eq. 8's scalar σ_i a vector s_i. The draw has covariance
    diag(s_i) Σ diag(s_i).
    """
    eps = standard_normal(mu.shape, device=mu.device, dtype=mu.dtype) if eps is None else eps
    r = cholesky_factor(sigma, jitter)
    return mu + log_scale.exp() * (eps @ r.T)


@in_float32
def reparameterise_diagonal_shortcut(
    mu: torch.Tensor, log_scale: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """z_i = μ_i + s_i ⊙ sqrt(diag Σ) ⊙ ε_i: the official code's shortcut for Eq. 8.

    It keeps the variances of Eq. 8 and drops the correlations: its covariance is
    diag(s_i)² diag(Σ) instead of diag(s_i) Σ diag(s_i).
    """
    eps = standard_normal(mu.shape, device=mu.device, dtype=mu.dtype) if eps is None else eps
    return mu + log_scale.exp() * sigma.diagonal().clamp_min(0).sqrt() * eps


# The WAE code's kernel scales s (C_s = 2 k σ²_p s); a prior variance σ²_p ≠ 1 multiplies them.
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


@in_float32
def imq_kernel_sum(a: torch.Tensor, b: torch.Tensor, scales=IMQ_SCALES) -> torch.Tensor:
    """Σ_s C_s / (C_s + ‖a_i − b_j‖²) with C_s = 2 k s: the inverse multiquadratic kernel of WAE-MMD.

    Summed over scales as in the WAE code, because no single bandwidth suits every stage of
    training. Returns the (n, m) kernel matrix.
    """
    k = a.shape[-1]
    d2 = torch.cdist(a, b).pow(2)
    return sum(2.0 * k * s / (2.0 * k * s + d2) for s in scales)


@in_float32
def mmd_imq(z: torch.Tensor, z_prior: torch.Tensor, scales=IMQ_SCALES) -> torch.Tensor:
    """Unbiased MMD² estimate between samples ``z`` (n, k) and ``z_prior`` (n, k) with the IMQ kernel."""
    n = z.shape[0]
    if n < 2:
        raise ValueError(f"mmd_imq needs at least 2 samples; got {n}")
    off = 1.0 - torch.eye(n, dtype=z.dtype, device=z.device)
    k_zz = imq_kernel_sum(z, z, scales)
    k_pp = imq_kernel_sum(z_prior, z_prior, scales)
    k_zp = imq_kernel_sum(z, z_prior, scales)
    return ((k_zz + k_pp) * off).sum() / (n * (n - 1)) - 2.0 * k_zp.mean()


def standard_normal_logpdf(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))
