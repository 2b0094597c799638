import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from hebae import bounds, experiment, metrics
from pages import model_class


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
    config, _ = experiment.configure("vae", dataset="synthetic", latent_dim=3, batch_size=8)
    torch.manual_seed(0)
    return model_class("vae", "VAE")(config, (1, 8, 8)).eval()


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
