import math

import numpy as np
import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from hebae import bounds, experiment, metrics
from pages import classes


def test_kl_to_standard_normal_both_forms():
    mu, std = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.5, 2.0]])
    diag = Independent(Normal(mu, std), 1)
    full = MultivariateNormal(mu, covariance_matrix=torch.diag_embed(std**2))
    prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    expected = torch.distributions.kl_divergence(diag, prior)
    torch.testing.assert_close(metrics.kl_to_standard_normal(diag), expected)
    torch.testing.assert_close(metrics.kl_to_standard_normal(full), expected)
    with pytest.raises(TypeError, match="posterior must be"):
        metrics.kl_to_standard_normal(Normal(mu, std))


@pytest.fixture(scope="module")
def vae():
    config, _ = experiment.configure(classes()["vae"], dataset="synthetic", latent_dim=3, batch_size=8)
    torch.manual_seed(0)
    return classes()["vae"](config, (1, 8, 8)).eval()


def test_elbo_is_minus_the_vae_objective_at_lambda_one(vae):
    x = torch.rand(64, 1, 8, 8)
    torch.manual_seed(1)
    estimate = metrics.elbo(vae, x, samples=200)
    torch.manual_seed(1)
    objective = torch.stack([vae.loss(x)["objective"] for _ in range(200)]).mean()
    assert estimate["elbo"] == pytest.approx(-objective.item(), rel=2e-3)
    assert estimate["elbo"] == pytest.approx(-estimate["elbo_rec"] - estimate["elbo_kl"])


def test_importance_weighting_tightens_the_bound(vae):
    x = torch.rand(8, 1, 8, 8)
    one = metrics.iw_log_likelihood(vae, x, samples=1, seed=0)
    many = metrics.iw_log_likelihood(vae, x, samples=1000, seed=0)
    torch.manual_seed(0)
    elbo = metrics.elbo(vae, x, samples=1000)["elbo"]
    assert many.mean() > elbo
    assert one.mean().item() == pytest.approx(elbo, abs=5.0)  # K = 1 is a one-sample ELBO
    torch.testing.assert_close(many, metrics.iw_log_likelihood(vae, x, samples=1000, seed=0))


def test_latent_summary_counts_active_dims_and_correlation():
    torch.manual_seed(0)
    z = torch.randn(20000, 4)
    z[:, 3] *= 0.01  # collapsed: variance 1e-4
    s = metrics.latent_summary(z)
    assert s["active_dims"] == 3
    assert s["mean_abs_offdiag_corr"] < 0.02
    z[:, 1] = z[:, 0]
    assert metrics.latent_summary(z)["corr"][0, 1] == pytest.approx(1.0)


class FixedPosterior(torch.nn.Module):
    """A 'model' whose posterior for example i is N(centres[i], scale² I)."""

    def __init__(self, centres, scale):
        super().__init__()
        self.centres, self.scale = centres, scale
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def posterior(self, idx):
        loc = self.centres[idx.long()]
        return Independent(Normal(loc, torch.full_like(loc, self.scale)), 1)


@pytest.mark.parametrize("scale,low,high", [(1e-3, 0.99, 1.0), (1e3, 0.0, 0.01)])
def test_index_code_mi_between_zero_and_log_n(scale, low, high):
    n = 64
    centres = torch.randn(n, 3) * 5
    model = FixedPosterior(centres, scale)
    mi = metrics.index_code_mi(model, torch.arange(n), samples=20)
    # Separated posteriors identify their example: I = log N; overlapping ones carry nothing.
    # (Monte Carlo noise may dip a hair below 0 when the posteriors coincide.)
    assert low * math.log(n) - 1e-2 <= mi <= high * math.log(n) + 1e-6


def test_mic_of_noiseless_function_and_of_noise():
    rng = np.random.default_rng(0)
    x = np.arange(1000.0)
    mic, tic = metrics.mic_tic(x, np.stack([np.sin(x / 50), rng.normal(size=1000)], 1))
    assert mic[0] > 0.95
    assert mic[1] < 0.25 and tic[1] < tic[0]


def test_latent_summary_over_active_dimensions_ignores_collapsed_ones():
    torch.manual_seed(0)
    z = torch.randn(5000, 3)
    z[:, 2] = 1e-3 * z[:, 0] + 1e-4 * torch.randn(5000)  # collapsed, and perfectly tied to dim 0
    s = metrics.latent_summary(z)
    assert s["active_dims"] == 2
    assert s["mean_abs_offdiag_corr"] > 0.3  # inflated by the collapsed dimension
    assert s["mean_abs_offdiag_corr_active"] < 0.05


def test_mic_with_an_index_per_dimension():
    rng = np.random.default_rng(0)
    code = rng.normal(size=(300, 2))
    index = np.arange(300)
    ranks = code.argsort(0).argsort(0)
    arbitrary = metrics.mic_tic(index, code)[0]
    ranked = metrics.mic_tic(ranks, code)[0]
    assert (ranked > 0.95).all() and (arbitrary < 0.5).all()
    with pytest.raises(ValueError, match=r"index must have shape \(300,\) or \(300, 2\)"):
        metrics.mic_tic(index[:10], code)


def test_refit_scale_finds_the_noise_level_and_scores_held_out_images(vae):
    x = torch.rand(400, 1, 8, 8)
    out = metrics.refit_scale(vae, x, 200, samples=50, n_iw=20, seed=0)
    assert out["refit_images"] == 200
    assert out["refit_iw_log_likelihood"] >= out["refit_elbo"] - 5.0
    # The refit must not touch the model: its parameters stay trainable and unchanged.
    assert all(p.requires_grad for p in vae.parameters())
    # A refit beats a deliberately bad fixed scale on the same held-out images.
    bad = metrics._RefitPosterior(vae, torch.full((3,), 3.0))
    assert out["refit_elbo"] > metrics.elbo(bad, x[200:400])["elbo"]


@pytest.mark.parametrize("family", ["diagonal", "full"])
def test_log_prob_matrix_matches_torch_distributions(family):
    torch.manual_seed(0)
    loc, scale = torch.randn(7, 3), torch.rand(7, 3) * 0.01 + 1e-3  # narrow, as HEBAE's
    if family == "diagonal":
        q = Independent(Normal(loc, scale), 1)
    else:
        r = torch.linalg.cholesky(torch.tensor([[1.0, 0.5, 0.1], [0.5, 2.0, 0.3], [0.1, 0.3, 0.7]]))
        q = MultivariateNormal(loc, scale_tril=scale[:, :, None] * r)
    z = q.sample((2,)).reshape(-1, 3)  # codes near the components, where log-densities are large
    if family == "diagonal":  # the reference in float64 throughout
        reference = Independent(Normal(loc.double(), scale.double()), 1)
    else:
        reference = MultivariateNormal(loc.double(), scale_tril=q.scale_tril.double())
    torch.testing.assert_close(metrics.log_prob_matrix(q, z), reference.log_prob(z[:, None, :].double()), rtol=1e-9, atol=1e-6)


class _Opaque(torch.distributions.Distribution):
    """A Gaussian posterior hidden behind a type metrics does not know: only rsample and log_prob."""

    arg_constraints = {}

    def __init__(self, q):
        self.q = q
        super().__init__(q.batch_shape, q.event_shape, validate_args=False)

    def rsample(self, sample_shape=torch.Size()):
        return self.q.rsample(sample_shape)

    def log_prob(self, z):
        return self.q.log_prob(z)


def test_a_posterior_without_closed_forms_gets_a_sampled_kl_and_no_index_code_mi(vae):
    images = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    exact = metrics.elbo(vae, images, samples=1)
    gaussian_posterior = vae.posterior
    vae.posterior = lambda x: _Opaque(gaussian_posterior(x))
    try:
        torch.manual_seed(0)
        sampled = metrics.elbo(vae, images, samples=2000)
        assert not metrics.is_gaussian(vae.posterior(images[:2]))
        assert math.isnan(metrics.index_code_mi(vae, images[:16], samples=2))
    finally:
        del vae.posterior
    assert metrics.is_gaussian(vae.posterior(images[:2]))
    # The KL estimated from draws agrees with the closed form within its Monte Carlo error.
    assert sampled["elbo_kl"] == pytest.approx(exact["elbo_kl"], rel=0.02, abs=0.05)
