"""The VAE + IAF page's model (book/iaf.md): each step is autoregressive, the log-density is the
change of variables and integrates to one, the flow inverts, the posterior works with the
library's estimators, gradients reach every part, and a bad option gives one clear error."""

import math

import pytest
import torch

from hebae import experiment, gaps, metrics
from hebae.bounds import standard_normal_logpdf
import page_models
from pages import model_namespace


@pytest.fixture(scope="module")
def page():
    return model_namespace("iaf")


def _model(page, dtype=torch.float64, **options):
    return page_models.build(page["IAFVAE"], dtype, **options)


_images = page_models.images


@pytest.mark.parametrize("flows", [1, 2, 4, 8])
def test_shapes_and_finite_terms(page, flows):
    model = _model(page, torch.float32, flows=flows)
    x = _images(6, torch.float32)
    terms = model.loss(x)
    assert set(terms) == {"objective", "rec", "reg"}
    assert all(v.shape == () and torch.isfinite(v) for v in terms.values())
    q = model.posterior(x)
    z = q.sample((4,))
    assert z.shape == (4, 6, 3) and q.log_prob(z).shape == (4, 6)
    assert q.stddev.shape == (6, 3) and model.encode_mean(x).shape == (6, 3)


@pytest.mark.parametrize("t", [0, 1, 2])
def test_each_step_is_autoregressive_with_the_gate_on_its_diagonal(page, t):
    model = _model(page, flows=4)
    c = torch.randn(1, 6, dtype=torch.float64)
    z = torch.randn(3, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda v: model.step(t, v[None], c)[0][0], z)
    ordered = J if t % 2 == 0 else J.flip(0, 1)  # odd steps work in reversed order
    assert torch.equal(ordered.triu(1), torch.zeros_like(ordered))
    _, s = model.steps[t]((z.flip(-1) if t % 2 else z)[None], c)
    torch.testing.assert_close(ordered.diagonal(), torch.sigmoid(s[0]))


def test_the_first_output_of_a_made_sees_no_coordinate(page):
    made = page["MADE"](4, 2, width=16).double()
    c = torch.randn(1, 2, dtype=torch.float64)
    a, b = torch.randn(1, 4, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)
    (m_a, s_a), (m_b, s_b) = made(a, c), made(b, c)
    assert m_a[0, 0] == m_b[0, 0] and s_a[0, 0] == s_b[0, 0]


@pytest.mark.parametrize("flows", [1, 4])
def test_log_density_is_the_change_of_variables(page, flows):
    model = _model(page, flows=flows)
    x = _images(3)
    mu, logvar = model.encode(x)
    eps = torch.randn(3, 3, dtype=torch.float64)
    z, log_q = model.flow(mu, logvar, eps)
    for i in range(3):
        J = torch.autograd.functional.jacobian(lambda e: model.flow(mu[i : i + 1], logvar[i : i + 1], e[None])[0][0], eps[i])
        torch.testing.assert_close(log_q[i], standard_normal_logpdf(eps[i]) - torch.linalg.slogdet(J)[1])


def test_inversion_recovers_the_noise_and_scores_foreign_points_alike(page):
    model = _model(page, flows=4)
    x = _images(4)
    q = model.posterior(x)
    z = q.sample((5,))
    cached = q.log_prob(z)
    by_inversion = q.log_prob(z.clone())  # not the draw itself: computed by undoing each step
    torch.testing.assert_close(by_inversion, cached)
    mu, logvar = model.encode(x)
    eps = torch.randn(5, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(model.invert(model.flow(mu, logvar, eps)[0], mu, logvar)[0], eps)


def test_the_density_integrates_to_one(page):
    config, _ = experiment.configure(page["IAFVAE"], dataset="synthetic", latent_dim=2, profile="smoke", flows=2)
    torch.manual_seed(0)
    model = page["IAFVAE"](config, page_models.SHAPE).double()
    q = model.posterior(_images(1))
    side = torch.linspace(-7, 7, 281, dtype=torch.float64)
    grid = torch.cartesian_prod(side, side)[:, None, :]  # (points, 1 image, 2)
    step = (side[1] - side[0]).item()
    mass = q.log_prob(grid).exp().sum().item() * step**2
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_encode_mean_is_the_flow_at_zero_noise_and_stddev_is_repeatable(page):
    model = _model(page, flows=2)
    x = _images(3)
    mu, logvar = model.encode(x)
    torch.testing.assert_close(model.encode_mean(x), model.flow(mu, logvar, torch.zeros_like(mu))[0])
    q = model.posterior(x)
    torch.manual_seed(1)
    first = q.stddev
    torch.manual_seed(2)
    torch.testing.assert_close(q.stddev, first)  # a fixed generator, not the global one
    draws = q.sample((4000,))
    torch.testing.assert_close(first, draws.std(0), rtol=0.25, atol=0)  # 64 draws against 4,000


def test_gradients_reach_encoder_decoder_and_every_step(page):
    model = _model(page, torch.float32, flows=2)
    model.loss(_images(16, torch.float32))["objective"].backward()
    for part in (model.encoder, model.decoder, *model.steps):
        for name, p in part.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_the_library_estimators_accept_the_flow_posterior(page):
    """Importance weighting and the gaps need only sampling and the log-density."""
    model = _model(page, torch.float32, flows=2).eval()
    x = _images(4, torch.float32)
    iw = metrics.iw_log_likelihood(model, x, samples=16, chunk=8)
    assert iw.shape == (4,) and torch.isfinite(iw).all()
    result = gaps.compute(model, x, gaps.Settings(images=4, steps=3, samples_fit=2, samples_elbo=8, samples_is=16))
    assert result.log_px.shape == (4,) and all(math.isfinite(v) for v in result.amortisation("full"))


def test_bad_flows_gives_one_clear_error(page):
    with pytest.raises(ValueError, match="flows must be one of 4, 1, 2, 8; got 3"):
        experiment.configure(page["IAFVAE"], dataset="synthetic", profile="smoke", flows=3)
