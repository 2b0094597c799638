"""The ex-post Gaussian mixture (hebae.expost) and the sampler every run stores."""

import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from hebae import expost

TRUE_MEANS = torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
TRUE_COVS = torch.stack([
    torch.tensor([[1.0, 0.6], [0.6, 1.0]]), torch.tensor([[0.5, 0.0], [0.0, 2.0]]), torch.tensor([[1.5, -0.4], [-0.4, 0.3]]),
]).double()
TRUE_WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


def _truth():
    return MixtureSameFamily(Categorical(TRUE_WEIGHTS), MultivariateNormal(TRUE_MEANS, TRUE_COVS))


def _draw(n=6000, seed=0):
    torch.manual_seed(seed)
    return _truth().sample((n,))


def test_em_recovers_a_known_mixture():
    gmm = expost.fit_gmm(_draw(), 3, seed=1)
    order = torch.cdist(TRUE_MEANS, gmm.means).argmin(1)  # match components to the truth
    assert sorted(order.tolist()) == [0, 1, 2]
    assert torch.allclose(gmm.means[order], TRUE_MEANS, atol=0.1)
    assert torch.allclose(gmm.covariances[order], TRUE_COVS, atol=0.15)
    assert torch.allclose(gmm.weights[order], TRUE_WEIGHTS, atol=0.03)
    assert gmm.converged


def test_log_prob_is_the_mixture_density():
    gmm = expost.fit_gmm(_draw(500), 3, seed=0)
    reference = MixtureSameFamily(Categorical(gmm.weights), MultivariateNormal(gmm.means, gmm.covariances))
    x = torch.randn(50, 2, dtype=torch.float64) * 3
    assert torch.allclose(gmm.log_prob(x), reference.log_prob(x), atol=1e-9)


def test_fit_is_a_maximum_likelihood_improvement_over_one_gaussian():
    x = _draw(2000)
    one, three = expost.fit_gmm(x, 1), expost.fit_gmm(x, 3)
    assert three.log_prob(x).mean() > one.log_prob(x).mean() + 0.3
    # One component is the sample mean and (biased) covariance, plus the ridge.
    assert torch.allclose(one.means[0], x.mean(0), atol=1e-9)
    assert torch.allclose(one.covariances[0], torch.cov(x.T, correction=0) + 1e-6 * torch.eye(2, dtype=x.dtype), atol=1e-9)


def test_samples_follow_the_fitted_mixture_and_repeat_under_a_seed():
    gmm = expost.fit_gmm(_draw(3000), 3, seed=0)
    a = gmm.sample(20000, torch.Generator().manual_seed(3))
    b = gmm.sample(20000, torch.Generator().manual_seed(3))
    assert a.dtype == torch.float32 and a.shape == (20000, 2)
    assert torch.equal(a, b)
    expected_mean = (gmm.weights[:, None] * gmm.means).sum(0)
    assert torch.allclose(a.double().mean(0), expected_mean, atol=0.1)


def test_a_flat_cloud_stays_invertible():
    """Codes on a line (a collapsed dimension) still give a finite density: the ridge."""
    x = torch.cat([torch.randn(400, 1), torch.zeros(400, 1)], 1)
    gmm = expost.fit_gmm(x, 2)
    assert torch.isfinite(gmm.log_prob(x.double())).all()


@pytest.mark.parametrize("codes,components,message", [
    (torch.zeros(10), 2, r"codes must have shape \(n, k\)"),
    (torch.zeros(10, 2), 0, "components must be a positive integer"),
    (torch.zeros(3, 2), 5, r"components \(5\) must not exceed the number of codes \(3\)"),
])
def test_bad_input(codes, components, message):
    with pytest.raises(ValueError, match=message):
        expost.fit_gmm(codes, components)


def test_log_prob_of_one_component_is_the_gaussian_density():
    gmm = expost.GaussianMixture(
        torch.ones(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)[None], 1, True
    )
    assert gmm.log_prob(torch.zeros(1, 2)).item() == pytest.approx(-math.log(2 * math.pi))
