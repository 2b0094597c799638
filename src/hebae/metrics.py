"""Measures shared by every model: the ELBO under N(0, I), an importance-weighted
log-likelihood estimate, and summaries of the latent means.

A *probabilistic* model here is any module with

* ``posterior(x)``: a ``torch.distributions`` distribution over z, batch shape (m,), event (k,):
  an ``Independent(Normal)`` or a ``MultivariateNormal``, or any other with ``rsample`` and
  ``log_prob`` (a flow's), whose KL is then estimated from the ELBO's own draws and whose
  index-code mutual information is not computed;
* ``log_likelihood(x, z)``: log p(x | z), one value per example (z may carry leading sample
  dimensions: (s, m, k) gives (s, m)).

The prior is always the standard normal N(0, I), so every model is scored on the same scale.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from .bounds import kl_diag_normal, kl_normal, standard_normal_logpdf


def is_gaussian(q: Distribution) -> bool:
    """Whether q is one of the Gaussian posteriors whose KL and density matrix have closed forms."""
    return isinstance(q, MultivariateNormal) or (isinstance(q, Independent) and isinstance(q.base_dist, Normal))


def kl_to_standard_normal(q: Distribution) -> torch.Tensor:
    """KL(q || N(0, I)) for a diagonal or full-covariance Gaussian posterior, per example."""
    if isinstance(q, MultivariateNormal):
        return kl_normal(q.loc, q.covariance_matrix)
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        return kl_diag_normal(q.base_dist.loc, 2.0 * q.base_dist.scale.log())
    raise TypeError(f"posterior must be Independent(Normal) or MultivariateNormal; got {type(q).__name__}")


@torch.no_grad()
def elbo(model, images: torch.Tensor, *, batch_size: int = 1000, samples: int = 1) -> dict[str, float]:
    """Mean per-example ELBO under N(0, I): E_q[log p(x | z)] − KL(q(z | x) || N(0, I)).

    Returns the ELBO and its two parts, in nats per example: ``elbo_rec`` is the negated first
    term, ``elbo_kl`` the second (in closed form for a Gaussian posterior, else estimated from
    the ``samples`` draws).
    """
    device = next(model.parameters()).device
    total_ll = total_kl = 0.0
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        q = model.posterior(x)
        z = q.rsample((samples,))
        total_ll += model.log_likelihood(x, z).mean(0).sum().item()
        # A posterior without a closed-form KL (a flow) has it estimated at the same draws.
        kl = kl_to_standard_normal(q) if is_gaussian(q) else (q.log_prob(z) - standard_normal_logpdf(z)).mean(0)
        total_kl += kl.sum().item()
    n = images.shape[0]
    return {"elbo": (total_ll - total_kl) / n, "elbo_rec": -total_ll / n, "elbo_kl": total_kl / n}


@torch.no_grad()
def iw_log_likelihood(
    model, images: torch.Tensor, *, samples: int = 1000, chunk: int = 100, batch_size: int = 50, seed: int = 0
) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) per example (Burda et al.):

    log (1/K) Σ_k p(x | z_k) p(z_k) / q(z_k | x),  z_k ~ q(z | x),

    with p(z) the model's own prior (``model.log_prior``, N(0, I) unless a page defines another).

    It is a lower bound in expectation that tightens as K grows; with K = 1 it is the ELBO.
    The proposals are drawn under a fixed seed so the estimate is repeatable.
    """
    device = next(model.parameters()).device
    out = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(device)
            q = model.posterior(x)
            log_w = []
            for done in range(0, samples, chunk):
                z = q.sample((min(chunk, samples - done),))  # (s, m, k)
                log_w.append(model.log_likelihood(x, z) + model.log_prior(z) - q.log_prob(z))
            out.append(torch.logsumexp(torch.cat(log_w), 0) - math.log(samples))
    return torch.cat(out).cpu()


def correlation(cov: np.ndarray) -> np.ndarray:
    """The correlation matrix of a covariance matrix; a dimension without variance correlates 0."""
    std = np.sqrt(np.diag(cov))
    return cov / np.outer(std, std).clip(1e-12)


@torch.no_grad()
def mean_log_sd(model, images: torch.Tensor, *, batch_size: int = 1000) -> float:
    """The posterior's log standard deviation averaged over images and dimensions."""
    device = next(model.parameters()).device
    total = sum(float(model.posterior(images[i : i + batch_size].to(device)).stddev.log().sum()) for i in range(0, len(images), batch_size))
    return total / (images.shape[0] * model.latent_dim)


class _RefitPosterior:
    """A model's means and decoder with q(z | x) = N(μ(x), diag σ²), one σ_j per dimension."""

    def __init__(self, model, log_sd: torch.Tensor):
        self.model, self.log_sd = model, log_sd

    def parameters(self):
        return self.model.parameters()

    def posterior(self, x: torch.Tensor) -> Distribution:
        mu = self.model.encode_mean(x)
        return Independent(Normal(mu, self.log_sd.exp().expand_as(mu)), 1)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.model.log_likelihood(x, z)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_logpdf(z)  # the yardstick is under N(0, I) for every model


def refit_scale(
    model, images: torch.Tensor, n: int, *, samples: int, n_iw: int, seed: int = 0,
    steps: int = 100, batch_size: int = 200, lr: float = 0.05,
) -> dict[str, float]:
    """The refit yardstick, for any model with means and a normalised likelihood.

    With the encoder means and the decoder frozen, fit one posterior scale per dimension,
    q(z | x) = N(μ(x), diag σ²), to maximise the ELBO under N(0, I) on the first ``n`` images;
    report the ELBO and the importance-weighted log p(x) (``samples`` proposals on ``n_iw``
    images) on the next ``n``. It is a refit, not the trained posterior: it asks how good a
    likelihood the trained means and decoder admit once a sensible noise level is chosen.
    """
    n = min(n, images.shape[0] // 2)
    device = next(model.parameters()).device
    fit, score = images[:n].to(device), images[n : 2 * n]
    with torch.no_grad():
        mu_fit = model.encode_mean(fit)
    log_sd = torch.full((model.latent_dim,), -2.0, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([log_sd], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            idx = torch.randint(n, (min(batch_size, n),), generator=gen).to(device)
            m = mu_fit[idx]
            z = m + log_sd.exp() * torch.randn(m.shape, generator=gen).to(device)
            kl = kl_diag_normal(m, 2.0 * log_sd.expand_as(m))
            loss = (kl - model.log_likelihood(fit[idx], z)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    refit = _RefitPosterior(model, log_sd.detach())
    scored = elbo(refit, score)
    iw = iw_log_likelihood(refit, score[:n_iw], samples=samples, seed=seed)
    return {
        "refit_elbo": scored["elbo"], "refit_elbo_kl": scored["elbo_kl"], "refit_log_sd": float(log_sd.detach().mean()),
        "refit_iw_log_likelihood": float(iw.mean()), "refit_images": n,
    }


def latent_summary(mu: torch.Tensor, *, active_threshold: float = 0.01) -> dict:
    """Moments of a set of latent means (n, k) and the numbers Fig. 2 is read by.

    * ``active_dims``: dimensions whose mean varies across the data, Var_x[μ_j(x)] > 0.01
      (the active-unit criterion of Burda et al.); a collapsed dimension carries no information.
    * ``mean_abs_offdiag_corr``: mean |correlation| over the k(k−1) off-diagonal pairs; 0 for
      the independent code the N(0, I) prior asks for.
    * ``mean_abs_offdiag_corr_active``: the same over the active dimensions only, since the
      correlations of a collapsed dimension are those of numerical noise.
    """
    mu = mu.double()
    cov = torch.cov(mu.T, correction=0).reshape(mu.shape[1], mu.shape[1])
    corr = torch.from_numpy(correlation(cov.numpy()))
    k = mu.shape[1]
    off = ~torch.eye(k, dtype=torch.bool)
    active = cov.diagonal() > active_threshold
    return {
        "mean": mu.mean(0),
        "cov": cov,
        "corr": corr,
        "active_dims": int(active.sum()),
        "mean_abs_offdiag_corr": float(corr[off].abs().mean()) if k > 1 else 0.0,
        "mean_abs_offdiag_corr_active": nac(cov.numpy(), active.numpy()),
    }


# ------------------------------------------------------------------------------------ NAC

ACTIVE_THRESHOLD = 0.01  # variance of a code dimension's mean above which it counts as active


def nac(cov, dims=None) -> float:
    """NAC, the normalised absolute correlation of a code covariance (the landscape lecture's
    Table 2, from MaskAAE): the mean of |Σ_ij| / sqrt(Σ_ii Σ_jj) over the ordered pairs i ≠ j of
    the dimensions ``dims`` (a boolean mask of length k; None: every dimension with non-zero
    variance). Normalising by the variances makes it the mean absolute off-diagonal
    *correlation*, blind to the scale of each dimension; 0 for independent dimensions, 1 when
    all are copies of one. A dimension without variance (a masked one) has no correlation and
    is left out; with fewer than two dimensions NAC is undefined (NaN).
    """
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] < 1:
        raise ValueError(f"cov must be a square (k, k) matrix; got shape {cov.shape}")
    if not np.isfinite(cov).all():
        raise ValueError("cov must be finite")
    var = np.diag(cov)
    if dims is None:
        dims = var > 0
    dims = np.asarray(dims)
    if dims.dtype != bool or dims.shape != var.shape:
        raise ValueError(f"dims must be a boolean mask of shape ({len(var)},) or None; got {dims!r}")
    if (var[dims] <= 0).any():
        raise ValueError("dims must select dimensions with positive variance (a correlation needs both variances)")
    k = int(dims.sum())
    if k < 2:
        return float("nan")
    sub = cov[np.ix_(dims, dims)]
    sd = np.sqrt(np.diag(sub))
    corr = np.abs(sub / np.outer(sd, sd))
    return float((corr.sum() - np.trace(corr)) / (k * (k - 1)))


def nac_of_codes(codes, *, threshold: float = ACTIVE_THRESHOLD, resamples: int = 100, seed: int = 0) -> dict:
    """NAC of a set of codes (N, k) over its active dimensions (variance above ``threshold``,
    fixed on the whole set), with a bootstrap standard error: the codes resampled with
    replacement ``resamples`` times, NAC recomputed over the same dimensions, the replicates'
    spread. Keys: ``nac``, ``nac_se``, ``nac_dims`` (dimensions it is taken over), ``nac_codes`` (N)."""
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] < 3:
        raise ValueError(f"codes must have shape (N, k) with N >= 3; got {codes.shape}")
    if not np.isfinite(codes).all():
        raise ValueError("codes must be finite")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 2:
        raise ValueError(f"resamples must be an integer >= 2; got {resamples!r}")
    dims = codes.var(axis=0) > threshold
    value = nac(np.cov(codes, rowvar=False, ddof=0).reshape(codes.shape[1], -1), dims)
    se = float("nan")
    if np.isfinite(value):
        rng = np.random.default_rng(seed)
        picked = codes[:, dims]
        replicates = []
        for _ in range(resamples):
            sample = picked[rng.integers(0, len(picked), len(picked))]
            cov = np.cov(sample, rowvar=False, ddof=0)
            # A replicate can lose all spread in a dimension only for tiny N; it says nothing then.
            if (np.diag(cov) > 0).all():
                replicates.append(nac(cov))
        se = float(np.std(replicates, ddof=1)) if len(replicates) > 1 else float("nan")
    return {"nac": value, "nac_se": se, "nac_dims": int(dims.sum()), "nac_codes": int(len(codes))}


def nac_null(n: int) -> float:
    """The NAC that independent Gaussian codes show from ``n`` samples: E|r| for the sample
    correlation r of two independent normal variables, Γ((n−1)/2) / (√π Γ(n/2)), about
    sqrt(2 / (π n)) for large n. A NAC near it is what no correlation at all looks like at
    that sample size (0.025 at n = 1000)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 3:
        raise ValueError(f"n must be an integer >= 3; got {n!r}")
    return float(np.exp(math.lgamma((n - 1) / 2) - math.lgamma(n / 2)) / math.sqrt(math.pi))


# ------------------------------------------------------------------- data-space Fréchet distance


def data_frechet(generated, real, *, resamples: int = 100, seed: int = 0) -> dict:
    """The Fréchet distance between Gaussians fitted to two sets of data vectors themselves, no
    feature network in between: the landscape lecture's distance for synthetic data, where
    Inception features would mean nothing. ``generated`` and ``real`` are (N, ...) tensors or
    arrays, flattened to (N, d); the same d on both sides.

    Its error is FID's (:func:`hebae.fid.fid_bootstrap_se`): both sets resampled with replacement
    ``resamples`` times. Keys: ``fd``, ``fd_se``, and ``scale``, the total variance tr Σ of the
    real vectors, which divides the distance into a number free of the data's units (the
    "scaled" distance the book's latent-dimension chapter plots).
    """
    from . import fid

    a, b = _vectors(generated, "generated"), _vectors(real, "real")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"generated and real must have the same dimension; got {a.shape[1]} and {b.shape[1]}")
    return {
        "fd": fid.frechet_distance_features(a, b),
        "fd_se": fid.fid_bootstrap_se(a, b, resamples=resamples, seed=seed),
        "scale": float(np.trace(np.atleast_2d(np.cov(b, rowvar=False)))),
    }


def _vectors(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must hold at least 2 vectors, shape (N, ...); got {x.shape}")
    x = x.reshape(len(x), -1)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite")
    return x


@torch.no_grad()
def log_prob_matrix(q: Distribution, z: torch.Tensor) -> torch.Tensor:
    """log q_j(z_m) for every code z_m (M, k) under every component j of a batch of Gaussians
    q (batch N): an (M, N) matrix in float64.

    The quadratic form is expanded into matrix products, zᵀP_j z − 2 zᵀP_j μ_j + μ_jᵀP_j μ_j
    with P_j the precision, so the whole matrix costs a few matmuls instead of M·N triangular
    solves. Float64, because for narrow posteriors (HEBAE's) the three terms are large and
    nearly cancel.
    """
    z = z.double()
    k = z.shape[-1]
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        loc, scale = q.base_dist.loc.double(), q.base_dist.scale.double()
        prec = scale.pow(-2)
        quad = z.pow(2) @ prec.T - 2.0 * z @ (loc * prec).T + (loc.pow(2) * prec).sum(-1)
        half_logdet = scale.log().sum(-1)
    elif isinstance(q, MultivariateNormal):
        loc, tril = q.loc.double(), q.scale_tril.double()
        prec = torch.cholesky_inverse(tril)  # (N, k, k)
        outer = (z[:, :, None] * z[:, None, :]).reshape(len(z), k * k)
        p_loc = (prec @ loc[..., None])[..., 0]
        quad = outer @ prec.reshape(-1, k * k).T - 2.0 * z @ p_loc.T + (loc * p_loc).sum(-1)
        half_logdet = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    else:
        raise TypeError(f"posterior must be Independent(Normal) or MultivariateNormal; got {type(q).__name__}")
    return -0.5 * quad - half_logdet - 0.5 * k * math.log(2 * math.pi)


@torch.no_grad()
def index_code_mi(model, images: torch.Tensor, *, samples: int = 10, chunk: int = 2000, seed: int = 0) -> float:
    """The index-code mutual information I(i; z) of the paper's Eq. 10, by Monte Carlo.

    With i uniform over the N given examples and z ~ q(z | x_i), the aggregate posterior is the
    mixture q(z) = (1/N) Σ_j q(z | x_j), and

        I(i; z) = E_i E_{z ~ q(z | x_i)} [log q(z | x_i) − log q(z)]  ≤  log N.

    Every log q(z | x_j) is evaluated exactly; only the outer expectation is sampled. NaN for
    a posterior that is not Gaussian (:func:`is_gaussian`).
    """
    device = next(model.parameters()).device
    x = images.to(device)
    n = x.shape[0]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        q = model.posterior(x)
        if not is_gaussian(q):
            # log q_j(z) at every other image's draws has no closed form for a flow: N·S inversions.
            return float("nan")
        z = q.sample((samples,))  # (S, N, k)
    own = q.log_prob(z).reshape(-1).double()  # log q(z_is | x_i)
    flat = z.reshape(-1, z.shape[-1])
    mix = torch.cat([torch.logsumexp(log_prob_matrix(q, flat[c : c + chunk]), dim=1) for c in range(0, flat.shape[0], chunk)])
    return float((own - mix).mean() + math.log(n))


def mic_tic(index: np.ndarray, codes: np.ndarray, *, alpha: float = 0.6, c: float = 15, est: str = "mic_approx") -> tuple[np.ndarray, np.ndarray]:
    """MIC and TIC (minepy) between a sample index and each latent dimension.

    ``index`` (n,) holds the example each row of ``codes`` (n, k) was drawn for, or (n, k) to
    give each dimension its own ordering of the examples; returns two arrays of length k. The
    MINE settings are minepy's defaults (alpha 0.6, c 15, mic_approx).
    """
    from minepy import MINE

    mine = MINE(alpha=alpha, c=c, est=est)
    mic, tic = [], []
    index = np.asarray(index, dtype=float)
    if index.shape not in ((codes.shape[0],), codes.shape):
        raise ValueError(f"index must have shape ({codes.shape[0]},) or {codes.shape}; got {index.shape}")
    for j in range(codes.shape[1]):
        x = index if index.ndim == 1 else index[:, j]
        mine.compute_score(x, np.asarray(codes[:, j], dtype=float))
        mic.append(mine.mic())
        tic.append(mine.tic())
    return np.array(mic), np.array(tic)
