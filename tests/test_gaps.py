"""hebae.gaps on a linear-Gaussian model, whose posterior, log p(x) and every optimal Gaussian
are known in closed form: the gaps come out with the right signs and values."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal

from hebae import experiment, gaps

K, D, NOISE = 3, 7, 0.4  # latent and data dimensions, the likelihood's variance
DT = torch.float64


class LinearGaussian(nn.Module):
    """z ~ N(0, I), x | z ~ N(W z + b, NOISE·I); the 'encoder' is a deliberately poor diagonal
    Gaussian: 0.8 times the true posterior mean, standard deviation 0.3 in every direction."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(torch.randn(D, K, generator=gen, dtype=DT))
        self.b = nn.Parameter(torch.randn(D, generator=gen, dtype=DT))
        self.latent_dim = K

    def exact(self, x):
        """The true posterior N(m, Λ⁻¹) and log p(x), from the closed forms."""
        W, b = self.W.detach(), self.b.detach()
        precision = torch.eye(K, dtype=DT) + W.T @ W / NOISE
        mean = torch.linalg.solve(precision, ((x - b) @ W / NOISE).T).T
        marginal = MultivariateNormal(b, covariance_matrix=W @ W.T + NOISE * torch.eye(D, dtype=DT))
        return mean, precision, marginal.log_prob(x)

    def posterior(self, x):
        mean, _, _ = self.exact(x)
        return Independent(Normal(0.8 * mean, torch.full_like(mean, 0.3)), 1)

    def log_likelihood(self, x, z):
        return Independent(Normal(z @ self.W.T + self.b, math.sqrt(NOISE)), 1).log_prob(x)

    def log_prior(self, z):
        return -0.5 * (z.pow(2).sum(-1) + K * math.log(2 * math.pi))


def kl(q_mean, q_cov, mean, precision):
    """KL(N(q_mean, q_cov) || N(mean, precision⁻¹)) per image."""
    diff = q_mean - mean
    return 0.5 * (torch.einsum("ij,mji->m", precision, q_cov) + torch.einsum("mi,ij,mj->m", diff, precision, diff)
                  - K - torch.logdet(precision) - torch.logdet(q_cov))


@pytest.fixture(scope="module")
def model():
    return LinearGaussian()


@pytest.fixture(scope="module")
def images(model):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(6, K, generator=gen, dtype=DT)
    return (z @ model.W.detach().T + model.b.detach() + math.sqrt(NOISE) * torch.randn(6, D, generator=gen, dtype=DT))


SETTINGS = gaps.Settings(images=6, families=("diagonal", "full"), steps=400, samples_fit=16, lr=0.03,
                         samples_elbo=20000, samples_is=4000)


@pytest.fixture(scope="module")
def result(model, images):
    return gaps.compute(model, images, SETTINGS)


def test_the_true_posterior_has_elbo_and_importance_estimate_equal_to_log_px(model, images):
    mean, precision, log_px = model.exact(images)
    truth = MultivariateNormal(mean, precision_matrix=precision.expand(len(images), K, K))
    torch.testing.assert_close(gaps.elbo(model, images, truth, 10), log_px)  # log w is constant under the posterior
    torch.testing.assert_close(gaps.log_marginal(model, images, [truth], 10), log_px)


def test_full_covariance_optimum_reaches_log_px(model, images, result):
    _, _, log_px = model.exact(images)
    # Monte Carlo tolerances: a few times the estimates' own noise at these sample sizes.
    np.testing.assert_allclose(result.log_px, log_px.numpy(), atol=0.05)
    np.testing.assert_allclose(result.elbo_optimal["full"], log_px.numpy(), atol=0.03)
    assert np.all(np.abs(result.approximation("full")) < 0.06)
    assert abs(result.approximation("full").mean()) < 0.02


def test_diagonal_optimum_has_the_known_approximation_gap(model, images, result):
    # The best diagonal Gaussian for N(m, Λ⁻¹) has mean m and variances 1/Λ_jj; its KL is ½(Σ log Λ_jj − log|Λ|).
    _, precision, _ = model.exact(images)
    expected = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)).item()
    assert expected > 0.1  # the posterior is correlated enough for the check to mean something
    np.testing.assert_allclose(result.approximation("diagonal"), expected, atol=0.08)
    assert abs(result.approximation("diagonal").mean() - expected) < 0.03


def test_amortisation_gap_is_the_encoder_kl_less_the_optimum_kl(model, images, result):
    mean, precision, _ = model.exact(images)
    q = model.posterior(images)
    kl_encoder = kl(q.mean, torch.diag_embed(q.variance), mean, precision)
    kl_diagonal = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))
    for family, expected in (("full", kl_encoder), ("diagonal", kl_encoder - kl_diagonal)):
        np.testing.assert_allclose(result.amortisation(family), expected.numpy(), atol=0.15)
        assert abs(result.amortisation(family).mean() - expected.mean().item()) < 0.05
    assert np.all(result.amortisation("diagonal") > 0.2)  # the encoder is worse than either optimum


def test_moments_are_the_encoder_and_the_optima(model, images, result):
    mean, precision, _ = model.exact(images)
    loc, cov = result.moments["encoder"]
    np.testing.assert_allclose(loc, 0.8 * mean.numpy())
    np.testing.assert_allclose(cov, np.broadcast_to(0.09 * np.eye(K), cov.shape))
    loc, cov = result.moments["full"]
    np.testing.assert_allclose(loc, mean.numpy(), atol=0.03)
    np.testing.assert_allclose(cov, np.broadcast_to(torch.linalg.inv(precision).numpy(), cov.shape), atol=0.03)
    # The ELBO is flat to second order around its optimum, so the variances found by a noisy
    # search are loose (a 15 % error in a variance costs about 0.005 nats).
    loc, cov = result.moments["diagonal"]
    np.testing.assert_allclose(np.diagonal(cov, axis1=1, axis2=2), np.broadcast_to(1 / precision.diagonal().numpy(), (6, K)), rtol=0.2)
    assert np.all(cov[:, ~np.eye(K, dtype=bool)] == 0)


def test_repeatable_leaves_global_generator_and_weights_alone(model, images):
    small = gaps.Settings(images=3, families=("full",), steps=5, samples_fit=2, samples_elbo=8, samples_is=8, seed=4)
    weights = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = gaps.compute(model, images, small), gaps.compute(model, images, small)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(a.log_px, b.log_px)
    np.testing.assert_array_equal(a.elbo_optimal["full"], b.elbo_optimal["full"])
    assert all(torch.equal(p, w) and p.requires_grad for p, w in zip(model.parameters(), weights))
    assert a.log_px.shape == (3,) and a.moments["full"][1].shape == (3, K, K)


def test_moments_of_a_distribution_without_closed_form_come_from_draws():
    base = Normal(torch.tensor([[1.0, -2.0]], dtype=DT), torch.tensor([[0.5, 2.0]], dtype=DT))
    q = Independent(torch.distributions.TransformedDistribution(base, []), 1)  # not recognised as a Normal
    torch.manual_seed(0)
    loc, cov = gaps.gaussian_moments(q, draws=20000)
    torch.testing.assert_close(loc, torch.tensor([[1.0, -2.0]], dtype=DT), atol=0.05, rtol=0)
    torch.testing.assert_close(cov, torch.diag_embed(torch.tensor([[0.25, 4.0]], dtype=DT)), atol=0.15, rtol=0)


def test_save_and_load_round_trip(result, tmp_path):
    path = gaps.path_for(tmp_path, "vae-0123456789ab", SETTINGS)
    assert path.parent == tmp_path / "gaps" and path.name.startswith("vae-0123456789ab-")
    assert path != gaps.path_for(tmp_path, "vae-0123456789ab", gaps.Settings(images=7))
    gaps.save(result, path)
    back = gaps.load(path)
    np.testing.assert_array_equal(back.log_px, result.log_px)
    np.testing.assert_array_equal(back.amortisation("diagonal"), result.amortisation("diagonal"))
    np.testing.assert_allclose(back.moments["full"][1], result.moments["full"][1], rtol=1e-6)
    assert back.settings == result.settings and back.info == result.info
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(images=0), "images must be an integer >= 1; got 0"),
        (dict(steps=2.5), "steps must be an integer >= 1; got 2.5"),
        (dict(families=("full", "flow")), "families must be a non-empty tuple of distinct names from diagonal, full"),
        (dict(families=()), "families must be a non-empty tuple"),
        (dict(lr=-1.0), "lr must be a finite number > 0; got -1.0"),
    ],
)
def test_bad_settings_give_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gaps.Settings(**kwargs)


def test_an_unknown_family_is_refused(result):
    with pytest.raises(ValueError, match="family must be one of diagonal, full; got 'flow'"):
        result.approximation("flow")


# ------------------------------------------------------------------ the amortisation chapter's use


def test_the_amortisation_grid_at_each_profile():
    from hebae import grids, grids_amortisation as ga
    from pages import classes

    for profile in ("paper", "reduced", "smoke"):
        points = ga.amortisation(profile)
        configs = [grids.configure(p, classes(), dataset="mnist", profile=profile)[0] for p in points]
        assert len({tuple(sorted(c.items())) for c in configs}) == len(configs)  # no run twice
        for model, option in ga.T_OPTION.items():
            assert sorted({c[option] for c in configs if c["model"] == model and c.get("mode_update") != "cg"}) == list(ga.UPDATES[profile])
        (cg,) = [c for c in configs if c.get("mode_update") == "cg" and c["seed"] == 0]
        assert cg["updates"] == max(ga.UPDATES[profile])
        assert {c["seed"] for c in configs} == set(ga.GRID_SEEDS[profile])
    reduced = [grids.configure(p, classes(), dataset="mnist", profile="reduced")[0] for p in ga.amortisation("reduced")]
    assert {(c["epochs"], c["n_train"], c["n_test"], c["lr"]) for c in reduced} == {(10, 5000, 2000, 1e-3)}
    paper = [grids.configure(p, classes(), dataset="mnist", profile="paper")[0] for p in ga.amortisation("paper")]
    assert {(c["lr"], c["batch_size"], c["n_train"]) for c in paper} == {(5e-4, 128, None)}  # the supplement's Adam step
    assert ga.gap_settings("reduced", "vae").families == ("diagonal", "full")
    assert ga.gap_settings("reduced", "vlae").families == ("full",)


def test_gaps_of_a_run_are_computed_once_then_read_and_need_a_checkpoint(tmp_path, monkeypatch):
    from hebae import experiment, grids_amortisation as ga
    from pages import classes

    monkeypatch.setenv("HEBAE_RESULTS_DIR", str(tmp_path))
    vae = classes()["vae"]
    config, _ = experiment.configure(vae, dataset="synthetic", profile="smoke", epochs=1, n_train=256, n_test=64)
    run = experiment.run(config, vae, device="cpu", progress=False)
    first = ga.gaps_of(run, vae)
    stored = list((tmp_path / "gaps").iterdir())
    assert len(stored) == 1 and stored[0].name.startswith(run.id)
    assert first.log_px.shape == (ga.GAPS["smoke"].images,) and set(first.elbo_optimal) == {"diagonal", "full"}

    def refuse(*args, **kwargs):
        raise AssertionError("stored gaps must be read, not recomputed")

    monkeypatch.setattr(gaps, "compute", refuse)
    np.testing.assert_array_equal(ga.gaps_of(run, vae).log_px, first.log_px)
    stored[0].unlink()
    assert ga.gaps_of(run, vae, compute=False) is None
    run.checkpoint.unlink()
    assert ga.gaps_of(run, vae) is None  # nothing stored and no weights to compute from


def test_the_costly_pages_default_reduced_run_is_the_grids_run():
    from hebae import grids, grids_amortisation as ga
    from pages import classes

    grid = {tuple(sorted(grids.configure(p, classes(), dataset="mnist", profile="reduced")[0].items()))
            for p in ga.amortisation("reduced")}
    for model in ("vlae", "savae"):
        page, _ = experiment.configure(classes()[model], profile="reduced", device="cpu")
        assert (page["n_train"], page["n_test"]) == (5000, 2000)
        assert tuple(sorted(page.items())) in grid  # the page shows the chapter's run, nothing extra to train
        # An explicit size still wins, and other profiles and data sets keep the profile's sizes.
        assert experiment.configure(classes()[model], profile="reduced", n_train=10000)[0]["n_train"] == 10000
        assert experiment.configure(classes()[model], profile="paper")[0]["n_train"] is None
        assert experiment.configure(classes()[model], profile="smoke")[0]["n_train"] == 512


def test_a_model_cannot_replace_a_size_the_profile_has_not():
    from pages import classes

    class Odd(classes()["vae"]):
        name = "vae"
        profile_sizes = {"reduced": {"mnist": {"n_trian": 100}}}

    with pytest.raises(ValueError, match="n_trian"):
        experiment.configure(Odd, profile="reduced")
