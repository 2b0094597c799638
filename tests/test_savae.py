"""The SA-VAE page's model (book/savae.md): T = 0 is the VAE, steps are bounded and follow the
clipped gradient, gradients reach every part, and a bad option gives one clear error."""

import pytest
import torch

from hebae import experiment
import page_models
from pages import model_namespace

SHAPE = page_models.SHAPE


@pytest.fixture(scope="module")
def page():
    return model_namespace("savae")


def _model(page, dtype=torch.float64, **options):
    return page_models.build(page["SAVAE"], dtype, **options)


_images = page_models.images


def test_no_steps_is_the_vae(page):
    model = _model(page, svi_steps=0)
    q, vae_q = model.posterior(_images()), page["VAE"].posterior(model, _images())
    assert torch.equal(q.mean, vae_q.mean) and torch.equal(q.stddev, vae_q.stddev)


@pytest.mark.parametrize("steps", [1, 4])
def test_steps_are_bounded_by_the_clip(page, steps):
    model = _model(page, svi_steps=steps, svi_lr=1.0)
    mu0, logvar0 = model.encode(_images())
    mu, logvar = model.refine(_images())
    assert ((mu - mu0).norm(dim=-1) <= steps * page["CLIP"] + 1e-9).all()
    assert ((logvar - logvar0).norm(dim=-1) <= steps * page["CLIP"] + 1e-9).all()
    assert not torch.equal(mu, mu0)


def test_refinement_under_no_grad_keeps_no_graph(page):
    model = _model(page, svi_steps=2)
    with torch.no_grad():
        q = model.posterior(_images())
    assert q.mean.shape == (5, 3) and not q.mean.requires_grad


def test_gradients_reach_encoder_and_decoder(page):
    model = _model(page, torch.float32, svi_steps=2, svi_lr=0.1)
    model.loss(_images(16, torch.float32))["objective"].backward()
    for part in (model.encoder, model.decoder):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in part.parameters())


def test_bad_step_size_gives_one_clear_error(page):
    with pytest.raises(ValueError, match="svi_lr must be one of 0.0005, 1.0, 0.1, 0.001, 0.0001; got 0.5"):
        experiment.configure(page["SAVAE"], dataset="synthetic", profile="smoke", svi_lr=0.5)
