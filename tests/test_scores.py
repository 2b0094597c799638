"""What a run scores (hebae.measure.fid): every image set, each with its errors, in one pass of
the network, with reconstructions scored against real images they are not copies of."""

import numpy as np
import pytest
import torch
from torch import nn

from hebae import expost, fid, measure


class Pixels(nn.Module):
    """'Features': the image pooled to 4×4 per channel (48 numbers), cheap and transparent."""

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


class Identity(nn.Module):
    """A perfect autoencoder on 8×8 images whose 64-d code is the image and whose posterior is
    a narrow Gaussian around it."""

    has_posterior = True

    def encode_mean(self, x):
        return x.flatten(1)

    def decode(self, z):
        return z.clamp(0, 1).reshape(-1, 1, 8, 8)

    def reconstruct(self, x):
        return x.clone()

    def sample_prior(self, n, generator=None):
        return torch.rand(n, 64, generator=generator)

    def posterior(self, x):
        return torch.distributions.Normal(self.encode_mean(x), 0.01)


@pytest.fixture
def counted(monkeypatch):
    extractor = fid.Extractor("pixels", Pixels(), torch.device("cpu"), dim=48)
    calls = []
    real_features = extractor.features

    def features(images, **kwargs):
        calls.append(len(images))
        return real_features(images, **kwargs)

    object.__setattr__(extractor, "features", features)
    monkeypatch.setattr(measure, "_inception", lambda device: extractor)
    return calls


def test_a_run_scores_every_set_with_errors_in_one_pass(counted):
    images = torch.rand(80, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = Identity()
    gmms = {"gmm_": measure.expost_sampler(model, images, 0, "cpu"),
            "gmm_draws_": measure.expost_sampler(model, images, 0, "cpu", draws=True)}
    config = {"dataset": "synthetic", "n_fid": 20, "seed": 0}
    out = measure.fid(model, images, config, "cpu", gmms=gmms)
    assert counted == [20, 4 * 20]  # the real set once, every generated set in one call
    for prefix in measure.SCORED:
        for key in ("fid", "fid_se", "kid", "kid_se", "precision", "recall"):
            assert np.isfinite(out[f"{prefix}{key}"]), f"{prefix}{key}"
        assert out[f"{prefix}fid_se"] > 0 and out[f"{prefix}kid_se"] > 0
    assert out["fid_generated"] == out["fid_real"] == 20 and out["pr_metric"].startswith("improved precision and recall")
    # A perfect autoencoder's reconstructions of *other* test images are not at distance 0 from
    # the real set: they are scored like any independent sample of real images.
    assert out["rec_fid"] > 0
    paired = fid.frechet_distance_features(*(fid.Extractor("p", Pixels(), torch.device("cpu"), dim=48).features(images[:20]),) * 2)
    assert paired == pytest.approx(0, abs=1e-6)


def test_a_config_scores_only_the_sets_it_names(counted):
    images = torch.rand(80, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = Identity()
    gmms = {"gmm_": measure.expost_sampler(model, images, 0, "cpu")}
    config = {"dataset": "synthetic", "n_fid": 20, "seed": 0, "fid_sets": ["prior", "rec"]}
    out = measure.fid(model, images, config, "cpu", gmms=gmms)
    assert counted == [20, 2 * 20]  # the mixture is given but not asked for: not encoded
    assert {"fid", "rec_fid"} <= set(out) and not any(k.startswith("gmm_") for k in out)
    for bad in ([], ["prior", "vamp"], "prior"):
        with pytest.raises(ValueError, match="fid_sets must be a non-empty list of prior, gmm, gmm_draws, rec"):
            measure.fid(model, images, {**config, "fid_sets": bad}, "cpu")


def test_the_real_set_and_the_reconstructed_set_are_disjoint():
    real, rec = measure.fid_split(torch.zeros(100, 1, 2, 2), 30)
    assert (real.start, real.stop, rec.start, rec.stop) == (0, 30, 30, 60)
    real, rec = measure.fid_split(torch.zeros(50, 1, 2, 2), 30)  # too few: both halves shrink
    assert (real.stop, rec.start, rec.stop) == (25, 25, 50)
    with pytest.raises(ValueError, match="at least 8 images"):
        measure.fid_split(torch.zeros(6, 1, 2, 2), 30)


def test_a_mixture_on_draws_needs_a_posterior():
    model = Identity()
    model.has_posterior = False
    with pytest.raises(ValueError, match="draws=True needs a model with a posterior"):
        measure.expost_sampler(model, torch.rand(40, 1, 8, 8), 0, "cpu", draws=True)
    assert isinstance(measure.expost_sampler(model, torch.rand(40, 1, 8, 8), 0, "cpu"), expost.GaussianMixture)
