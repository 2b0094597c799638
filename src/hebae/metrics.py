"""Measures shared by every model: the ELBO under N(0, I), an importance-weighted
log-likelihood estimate, and summaries of the latent means.

A *probabilistic* model here is any module with

* ``posterior(x)``: a ``torch.distributions`` distribution over z, batch shape (m,), event (k,);
  an ``Independent(Normal)`` or a ``MultivariateNormal``;
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
    term, ``elbo_kl`` the second.
    """
    device = next(model.parameters()).device
    total_ll = total_kl = 0.0
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        q = model.posterior(x)
        z = q.rsample((samples,))
        total_ll += model.log_likelihood(x, z).mean(0).sum().item()
        total_kl += kl_to_standard_normal(q).sum().item()
    n = images.shape[0]
    return {"elbo": (total_ll - total_kl) / n, "elbo_rec": -total_ll / n, "elbo_kl": total_kl / n}


@torch.no_grad()
def iw_log_likelihood(
    model, images: torch.Tensor, *, samples: int = 1000, chunk: int = 100, batch_size: int = 50, seed: int = 0
) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) per example (Burda et al.):

    log (1/K) Σ_k p(x | z_k) p(z_k) / q(z_k | x),  z_k ~ q(z | x).

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
                log_w.append(model.log_likelihood(x, z) + standard_normal_logpdf(z) - q.log_prob(z))
            out.append(torch.logsumexp(torch.cat(log_w), 0) - math.log(samples))
    return torch.cat(out).cpu()


def latent_summary(mu: torch.Tensor, *, active_threshold: float = 0.01) -> dict:
    """Moments of a set of latent means (n, k) and the two numbers Fig. 2 is read by.

    * ``active_dims``: dimensions whose mean varies across the data, Var_x[μ_j(x)] > 0.01
      (the active-unit criterion of Burda et al.); a collapsed dimension carries no information.
    * ``mean_abs_offdiag_corr``: mean |correlation| over the k(k−1) off-diagonal pairs; 0 for
      the independent code the N(0, I) prior asks for.
    """
    mu = mu.double()
    cov = torch.cov(mu.T, correction=0).reshape(mu.shape[1], mu.shape[1])
    std = cov.diagonal().sqrt()
    corr = cov / (std[:, None] * std[None, :]).clamp_min(1e-12)
    k = mu.shape[1]
    off = ~torch.eye(k, dtype=torch.bool)
    return {
        "mean": mu.mean(0),
        "cov": cov,
        "corr": corr,
        "active_dims": int((cov.diagonal() > active_threshold).sum()),
        "mean_abs_offdiag_corr": float(corr[off].abs().mean()) if k > 1 else 0.0,
    }


@torch.no_grad()
def index_code_mi(model, images: torch.Tensor, *, samples: int = 10, chunk: int = 500, seed: int = 0) -> float:
    """The index-code mutual information I(i; z) of the paper's Eq. 10, by Monte Carlo.

    With i uniform over the N given examples and z ~ q(z | x_i), the aggregate posterior is the
    mixture q(z) = (1/N) Σ_j q(z | x_j), and

        I(i; z) = E_i E_{z ~ q(z | x_i)} [log q(z | x_i) − log q(z)]  ≤  log N.

    Every log q(z | x_j) is evaluated exactly; only the outer expectation is sampled.
    """
    device = next(model.parameters()).device
    x = images.to(device)
    n = x.shape[0]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        q = model.posterior(x)
        z = q.sample((samples,))  # (S, N, k)
    own = q.log_prob(z).reshape(-1)  # log q(z_is | x_i)
    flat = z.reshape(-1, 1, z.shape[-1])
    mix = torch.cat([torch.logsumexp(q.log_prob(flat[c : c + chunk]), dim=1) for c in range(0, flat.shape[0], chunk)])
    return float((own - mix).mean() + math.log(n))


def mic_tic(index: np.ndarray, codes: np.ndarray, *, alpha: float = 0.6, c: float = 15, est: str = "mic_approx") -> tuple[np.ndarray, np.ndarray]:
    """MIC and TIC (minepy) between a sample index and each latent dimension.

    ``index`` (n,) holds the example each row of ``codes`` (n, k) was drawn for; returns two
    arrays of length k. The MINE settings are minepy's defaults (alpha 0.6, c 15, mic_approx).
    """
    from minepy import MINE

    mine = MINE(alpha=alpha, c=c, est=est)
    mic, tic = [], []
    x = np.asarray(index, dtype=float)
    for j in range(codes.shape[1]):
        mine.compute_score(x, np.asarray(codes[:, j], dtype=float))
        mic.append(mine.mic())
        tic.append(mine.tic())
    return np.array(mic), np.array(tic)
