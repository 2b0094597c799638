"""The VAE + Householder flow page's model (book/hf.md): the rotation is orthogonal, leaves the
KL and the density unchanged, and gradients reach every part."""

import pytest
import torch

from hebae import bounds, experiment, metrics
import page_models
from pages import model_namespace

SHAPE = page_models.SHAPE


@pytest.fixture(scope="module")
def page():
    return model_namespace("hf")


def _model(page, dtype=torch.float64, **options):
    return page_models.build(page["HouseholderVAE"], dtype, **options)


_images = page_models.images


@pytest.mark.parametrize("flows", [1, 2, 4, 8])
def test_rotation_is_orthogonal_and_keeps_the_kl(page, flows):
    model = _model(page, flows=flows)
    x = _images()
    mu, logvar = model.encode(x)
    U = model.rotation(mu, logvar)
    torch.testing.assert_close(U.mT @ U, torch.eye(3, dtype=torch.float64).expand_as(U))
    q = model.posterior(x)
    assert q.mean.shape == (5, 3) and q.covariance_matrix.shape == (5, 3, 3)
    torch.testing.assert_close(metrics.kl_to_standard_normal(q), bounds.kl_diag_normal(mu, logvar))
    torch.testing.assert_close(q.mean, model.encode_mean(x))


def test_a_single_reflection_is_its_own_inverse(page):
    z, v = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(page["reflect"](page["reflect"](z, v), v), z)
    torch.testing.assert_close(page["reflect"](v, v), -v)


def test_gradients_reach_encoder_decoder_and_flow(page):
    model = _model(page, torch.float32, flows=2)
    model.loss(_images(16, torch.float32))["objective"].backward()
    for part in (model.encoder, model.decoder, model.first, *model.next):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in part.parameters())


def test_bad_flows_gives_one_clear_error(page):
    with pytest.raises(ValueError, match="flows must be one of 4, 1, 2, 8; got 3"):
        experiment.configure(page["HouseholderVAE"], dataset="synthetic", profile="smoke", flows=3)
