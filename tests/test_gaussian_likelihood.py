"""The Gaussian decoder likelihoods (γ fixed at 1, or learned) and the VAE page's ``likelihood``
option, which the two-stage VAE inherits."""

import math

import pytest
import torch
from torch.distributions import Normal

from hebae import bounds, experiment, runs, train
from hebae.autoencoder import LIKELIHOODS
from pages import classes

SHAPE = (1, 8, 8)
D = math.prod(SHAPE)


def build(likelihood, name="vae", dtype=torch.float64, **kw):
    cls = classes()[name]
    config, _ = experiment.configure(cls, dataset="synthetic", latent_dim=3, profile="smoke", likelihood=likelihood, **kw)
    torch.manual_seed(0)
    return cls(config, SHAPE).to(dtype)


def images(n=5, dtype=torch.float64):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=dtype)


def logits_for(x):
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)


# ------------------------------------------------------------------------- the density itself


@pytest.mark.parametrize("log_var", [0.0, -2.3, 1.7])
def test_gaussian_nll_is_the_normal_log_density_summed_over_pixels(log_var):
    x, mean = images(), torch.sigmoid(logits_for(images()))
    expected = -Normal(mean, math.exp(0.5 * log_var)).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(bounds.gaussian_nll(mean, x, log_var), expected, rtol=1e-12, atol=1e-10)


def test_gaussian_nll_takes_a_per_pixel_log_variance():
    x, mean = images(), torch.sigmoid(logits_for(images()))
    log_var = torch.linspace(-3, 1, D, dtype=torch.float64).reshape(SHAPE)
    expected = -Normal(mean, (0.5 * log_var).exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(bounds.gaussian_nll(mean, x, log_var), expected, rtol=1e-12, atol=1e-10)


def test_a_sharp_gaussian_has_a_negative_nll_where_a_bernoulli_cannot():
    """The caveat on the VAE page: a density on [0, 1] exceeds 1 when γ is small."""
    x = images()
    sharp = bounds.gaussian_nll(x + 0.01, x, math.log(1e-3))
    assert (sharp < 0).all()
    assert (bounds.bernoulli_nll(torch.logit(x.clamp(1e-3, 1 - 1e-3)), x) > 0).all()


# ------------------------------------------------------------------ the likelihood in a model


@pytest.mark.parametrize("likelihood, log_gamma", [("gaussian-fixed", 0.0), ("gaussian-learned", -1.5)])
def test_reconstruction_term_is_the_gaussian_nll_of_the_sigmoid_mean(likelihood, log_gamma):
    model = build(likelihood)
    if likelihood == "gaussian-learned":
        with torch.no_grad():
            model.log_gamma.fill_(log_gamma)
    x = images()
    logits = logits_for(x)
    expected = -Normal(torch.sigmoid(logits), math.exp(0.5 * log_gamma)).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(model.reconstruction_nll(logits, x), expected, rtol=1e-6, atol=1e-6)
    assert model.has_likelihood and model.has_elbo
    torch.testing.assert_close(model.decode(torch.zeros(2, 3, dtype=torch.float64)),
                               torch.sigmoid(model.decoder(torch.zeros(2, 3, dtype=torch.float64))).float())


def test_log_likelihood_over_posterior_samples():
    model = build("gaussian-learned")
    with torch.no_grad():
        model.log_gamma.fill_(-0.7)
    x = images(4)
    z = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = model.log_likelihood(x, z)
    assert got.shape == (6, 4)
    for s in range(6):
        mean = torch.sigmoid(model.decoder(z[s])).reshape(x.shape)
        expected = Normal(mean, math.exp(-0.35)).log_prob(x).flatten(1).sum(1)
        torch.testing.assert_close(got[s].double(), expected, rtol=1e-5, atol=1e-4)


def test_only_the_learned_likelihood_owns_a_parameter():
    """Bernoulli and fixed-γ models keep the checkpoint keys every stored run has."""
    keys = {name: set(build(name).state_dict()) for name in ("bernoulli", "gaussian-fixed", "gaussian-learned")}
    assert keys["gaussian-fixed"] == keys["bernoulli"]
    assert keys["gaussian-learned"] == keys["bernoulli"] | {"log_gamma"}
    assert not build("mse").has_likelihood


def test_learned_gamma_gradient_is_half_of_d_minus_the_scaled_squared_error():
    """d/d(log γ) of the mean reconstruction term: ½ (D − ‖x − x̂‖²/γ), averaged over the batch."""
    model = build("gaussian-learned")
    with torch.no_grad():
        model.log_gamma.fill_(-1.0)
    x = images()
    logits = logits_for(x)
    model.reconstruction_nll(logits, x).mean().backward()
    squared = (x - torch.sigmoid(logits)).pow(2).flatten(1).sum(1)
    expected = 0.5 * (D - squared / math.exp(-1.0)).mean()
    torch.testing.assert_close(model.log_gamma.grad, expected.to(model.log_gamma.dtype), rtol=1e-5, atol=1e-6)
    # A descent step moves γ towards the squared error per pixel, γ* = E‖x − x̂‖² / D.
    gamma_star = float(squared.mean() / D)
    assert (model.log_gamma.grad > 0) == (gamma_star < math.exp(-1.0))


def test_learned_gamma_trains_and_the_history_records_it():
    model = build("gaussian-learned", dtype=torch.float32)
    settings = train.TrainConfig(epochs=2, batch_size=16, lr=1e-2, schedule="mnist", seed=0)
    history = train.fit(model, images(64, torch.float32), settings, device=torch.device("cpu"), progress=False)
    # Pixels uniform on [0, 1] against a mean near ½ leave a squared error far below γ = 1 per pixel.
    assert model.log_gamma.item() < 0
    assert [h["gamma"] for h in history] == sorted((h["gamma"] for h in history), reverse=True)
    assert all(0 < h["gamma"] < 1 for h in history)
    assert all(math.isclose(h["objective"], h["rec"] + h["reg"], rel_tol=1e-5, abs_tol=1e-4) for h in history)


def test_the_two_stage_vae_takes_dai_and_wipfs_first_stage():
    model = build("gaussian-learned", name="twostage")
    assert model.likelihood == "gaussian-learned" and isinstance(model.log_gamma, torch.nn.Parameter)
    assert "log_gamma" in dict(model.named_parameters())


# --------------------------------------------------------------- configs of the stored runs


def _without_option(cls):
    """The page's class as it was before it declared ``likelihood``: same name, no options."""
    return type(cls.__name__, (cls,), {"options": {}})


@pytest.mark.parametrize("name", ["vae", "twostage"])
def test_declaring_the_option_changes_no_default_config(name):
    cls = classes()[name]
    plain = _without_option(cls)
    for dataset in ("mnist", "fashion", "celeba", "synthetic"):
        for profile in ("paper", "reduced", "smoke"):
            for extra in ({}, {"latent_dim": 16, "n_fid": 200}, {"lam": 0.3, "seed": 2}):
                before, _ = experiment.configure(plain, dataset=dataset, profile=profile, **extra)
                after, _ = experiment.configure(cls, dataset=dataset, profile=profile, **extra)
                assert runs.canonical(after) == runs.canonical(before), (dataset, profile, extra)
                # Naming the dataset's own likelihood is the same run.
                named, _ = experiment.configure(cls, dataset=dataset, profile=profile, likelihood=before["likelihood"], **extra)
                assert runs.run_id(named) == runs.run_id(before)


@pytest.mark.parametrize("name, params, run_id", [
    ("vae", {"dataset": "mnist"}, "vae-e6205b4a522f"),  # the MNIST chapter's k = 20 run, seed 0
    ("vae", {"dataset": "mnist", "latent_dim": 16, "n_fid": 200}, "vae-9f3cf7e61972"),  # the landscape's
    ("twostage", {"dataset": "mnist", "latent_dim": 16, "n_fid": 200}, "twostage-db3a69d2e2bd"),
    ("vae", {"dataset": "celeba", "lam": 1e-3}, "vae-e7dc2072aa01"),  # the CelebA grid's, still mse
])
def test_stored_runs_keep_their_ids(name, params, run_id):
    config, _ = experiment.configure(classes()[name], profile="reduced", **params)
    assert runs.run_id(config) == run_id


def test_a_gaussian_first_stage_is_a_run_of_its_own():
    a, _ = experiment.configure(classes()["vae"], dataset="mnist", profile="reduced")
    b, _ = experiment.configure(classes()["vae"], dataset="mnist", profile="reduced", likelihood="gaussian-learned")
    assert b["likelihood"] == "gaussian-learned" and runs.run_id(a) != runs.run_id(b)


# ------------------------------------------------------------------------------- bad input


def test_an_unknown_likelihood_is_refused_by_name_with_the_allowed_values():
    allowed = ", ".join(LIKELIHOODS)
    with pytest.raises(ValueError, match=f"^likelihood must be one of {allowed}; got 'poisson'$"):
        experiment.configure(classes()["vae"], dataset="mnist", profile="smoke", likelihood="poisson")
    config, _ = experiment.configure(classes()["vae"], dataset="synthetic", profile="smoke")
    with pytest.raises(ValueError, match=f"^likelihood must be one of {allowed}; got 'gaussian'$"):
        classes()["vae"]({**config, "likelihood": "gaussian"}, SHAPE)


def test_a_model_without_the_option_refuses_it():
    with pytest.raises(ValueError, match="likelihood is not a parameter of wae"):
        experiment.configure(classes()["wae"], dataset="mnist", profile="smoke", likelihood="gaussian-fixed")
