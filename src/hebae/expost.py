"""Ex-post density estimation: a Gaussian mixture fitted to a trained autoencoder's codes.

Ghosh et al. (2020) sample a deterministic autoencoder by fitting a mixture of Gaussians with full
covariances to the codes of the training images *after* training, then decoding draws from it.
Any model with an encoder mean can be sampled this way, which makes the sampler a yardstick:
it asks how much a model gains over its own prior once the prior matches the codes.

Expectation–maximisation in float64, k-means++ starts, a small ridge on every covariance (as
scikit-learn's ``reg_covar``) so that a component on a flat cloud stays invertible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GaussianMixture:
    weights: torch.Tensor  # (c,)
    means: torch.Tensor  # (c, k)
    covariances: torch.Tensor  # (c, k, k)
    iterations: int
    converged: bool

    @property
    def _chol(self) -> torch.Tensor:
        return torch.linalg.cholesky(self.covariances)

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log w_c + log N(x; m_c, S_c) for every point and component: (n, c)."""
        x = x.to(self.means)
        chol = self._chol
        diff = x[:, None, :] - self.means[None]  # (n, c, k)
        solved = torch.linalg.solve_triangular(chol[None], diff[..., None], upper=False).squeeze(-1)
        log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        k = x.shape[-1]
        return self.weights.log() - 0.5 * (solved.pow(2).sum(-1) + log_det + k * math.log(2 * math.pi))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_prob(x), dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws as float32 on the CPU (so that a seed gives the same codes everywhere)."""
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=self.means.dtype)
        z = self.means[component] + (self._chol[component] @ eps[..., None]).squeeze(-1)
        return z.float()


def _kmeans_pp(x: torch.Tensor, c: int, generator: torch.Generator) -> torch.Tensor:
    centres = [x[torch.randint(len(x), (1,), generator=generator)].squeeze(0)]
    for _ in range(1, c):
        d2 = torch.cdist(x, torch.stack(centres)).pow(2).min(1).values
        centres.append(x[torch.multinomial(d2 / d2.sum(), 1, generator=generator)].squeeze(0))
    return torch.stack(centres)


def fit_gmm(
    codes: torch.Tensor, components: int = 10, *, seed: int = 0, max_iter: int = 200, tol: float = 1e-4, reg_covar: float = 1e-6
) -> GaussianMixture:
    """Fit a ``components``-component, full-covariance mixture to ``codes`` (n, k) by EM.

    Stops when the mean log-likelihood per point improves by less than ``tol`` nats.
    """
    if codes.ndim != 2:
        raise ValueError(f"codes must have shape (n, k); got {tuple(codes.shape)}")
    if not isinstance(components, int) or components < 1:
        raise ValueError(f"components must be a positive integer; got {components!r}")
    if len(codes) < components:
        raise ValueError(f"components ({components}) must not exceed the number of codes ({len(codes)})")
    x = codes.detach().to(torch.float64).cpu()
    n, k = x.shape
    ridge = reg_covar * torch.eye(k, dtype=x.dtype)
    gen = torch.Generator().manual_seed(seed)
    # Start: hard assignment to the nearest k-means++ centre.
    resp = torch.nn.functional.one_hot(torch.cdist(x, _kmeans_pp(x, components, gen)).argmin(1), components).to(x)
    previous, converged, it = -math.inf, False, 0
    for it in range(1, max_iter + 1):
        # M step.
        counts = resp.sum(0) + 10 * torch.finfo(x.dtype).eps
        means = resp.T @ x / counts[:, None]
        diff = x[None] - means[:, None]  # (c, n, k)
        covs = torch.einsum("cn,cni,cnj->cij", resp.T, diff, diff) / counts[:, None, None] + ridge
        gmm = GaussianMixture(counts / n, means, covs, it, False)
        # E step.
        log_joint = gmm.component_log_prob(x)
        log_norm = torch.logsumexp(log_joint, 1, keepdim=True)
        resp = (log_joint - log_norm).exp()
        current = log_norm.mean().item()
        if current - previous < tol:
            converged = True
            break
        previous = current
    return GaussianMixture(gmm.weights, gmm.means, gmm.covariances, it, converged)
