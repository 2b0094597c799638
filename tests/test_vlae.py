"""The VLAE page's model (book/vlae.md): shapes, the identities its update rests on, gradients,
and the errors a bad parameter gives."""

import pytest
import torch

from hebae import experiment
from hebae.bounds import standard_normal_logpdf
import page_models
from pages import model_namespace

SHAPE = page_models.SHAPE


@pytest.fixture(scope="module")
def page():
    return model_namespace("vlae")


def _model(page, dtype=torch.float64, **options):
    return page_models.build(page["VLAE"], dtype, **options)


_images = page_models.images


@pytest.mark.parametrize("mode_update", ["vlae", "cg"])
@pytest.mark.parametrize("updates", [0, 1, 4])
def test_shapes_and_finite_terms(page, updates, mode_update):
    model = _model(page, torch.float32, updates=updates, mode_update=mode_update)
    x = _images(6, torch.float32)
    q = model.posterior(x)
    assert q.mean.shape == (6, 3) and q.covariance_matrix.shape == (6, 3, 3)
    assert model.encode_mean(x).shape == (6, 3)
    terms = model.loss(x)
    assert set(terms) == {"objective", "rec", "reg"}
    assert all(v.shape == () and torch.isfinite(v) for v in terms.values())
    assert terms["reg"] >= 0  # a KL divergence


def test_no_update_keeps_the_encoder_guess(page):
    model = _model(page, updates=0)
    x = _images()
    assert torch.equal(model.encode_mean(x), model.encoder(x))


def test_linear_gaussian_update_reaches_the_exact_posterior(page):
    torch.manual_seed(3)
    k, D, s2 = 4, 9, 0.5
    W, b = torch.randn(D, k, dtype=torch.float64), torch.randn(D, dtype=torch.float64)
    x, z0 = torch.randn(3, D, dtype=torch.float64), torch.randn(3, k, dtype=torch.float64)
    precision = W.T @ W / s2 + torch.eye(k, dtype=torch.float64)
    mode = torch.linalg.solve(precision, ((x - b) @ W / s2).T).T
    residual = lambda z: (x - z @ W.T - b) / s2
    target, L = page["newton_target"](z0, W.expand(3, D, k), residual(z0), torch.full((3, D), 1 / s2, dtype=torch.float64))
    torch.testing.assert_close(target, mode)
    torch.testing.assert_close(L @ L.mT, precision.expand(3, k, k))
    # Conjugate gradient with the quadratic model's line search: exact after k steps.
    z, g = z0, residual(z0) @ W - z0
    d = g
    for _ in range(k):
        z = page["cg_step"](z, g, d, ((d @ W.T).pow(2) / s2).sum(-1) + d.pow(2).sum(-1))
        g_new = residual(z) @ W - z
        d, g = page["polak_ribiere"](g_new, g, d), g_new
    torch.testing.assert_close(z, mode)


def test_decay_is_the_supplements():
    ns = model_namespace("vlae")
    assert [ns["decay"](t) for t in range(4)] == [0.5, 0.25, 0.5 / 3, 0.125]


@pytest.mark.parametrize("mode_update", ["vlae", "cg"])
def test_laplace_precision_is_the_autograd_hessian_at_the_mode(page, mode_update):
    model = _model(page, updates=4, mode_update=mode_update)
    x = _images(3)
    mu, L = model.laplace(x)
    cov = model.posterior(x).covariance_matrix
    for i in range(len(x)):
        neg_log_joint = lambda z: -(model.log_likelihood(x[i : i + 1], z.unsqueeze(0)).sum() + standard_normal_logpdf(z))
        hessian = torch.autograd.functional.hessian(neg_log_joint, mu[i].detach())
        # log_likelihood runs in float32 (hebae.autoencoder), so float32's tolerance.
        torch.testing.assert_close(L[i] @ L[i].T, hessian, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(cov[i], torch.linalg.inv(hessian), rtol=1e-5, atol=1e-6)


def test_jacobian_matches_autograd_per_image(page):
    model = _model(page)
    z = torch.randn(4, 3, dtype=torch.float64)
    W, out = model.jacobian(z)
    for i in range(len(z)):
        torch.testing.assert_close(W[i], torch.autograd.functional.jacobian(lambda v: model.output(v.unsqueeze(0))[0], z[i]))
    torch.testing.assert_close(out, model.output(z))


def test_updates_move_towards_higher_joint_density(page):
    """From the encoder's guess, four damped updates on a fresh model raise log p(x, z) for every image."""
    x = _images(8)
    before, after = (_model(page, updates=t) for t in (0, 4))
    after.load_state_dict(before.state_dict())

    def log_joint(model):
        z = model.encode_mean(x)
        return model.log_likelihood(x, z.unsqueeze(0))[0] + standard_normal_logpdf(z)

    assert (log_joint(after) > log_joint(before)).all()


@pytest.mark.parametrize("mode_update", ["vlae", "cg"])
def test_gradients_reach_encoder_and_decoder(page, mode_update):
    model = _model(page, torch.float32, updates=2, mode_update=mode_update)
    model.loss(_images(16, torch.float32))["objective"].backward()
    for part in (model.encoder, model.decoder):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert all(g.abs().sum() > 0 for g in grads)


def test_posterior_works_under_no_grad(page):
    """The measurements call the posterior under torch.no_grad; the Jacobians must still come out."""
    model = _model(page, updates=2)
    x = _images()
    with torch.no_grad():
        q = model.posterior(x)
    torch.testing.assert_close(q.covariance_matrix, model.posterior(x).covariance_matrix.detach())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"updates": 3}, "updates must be one of 4, 1, 2, 8, 0; got 3"),
        ({"mode_update": "newton"}, "mode_update must be one of vlae, cg; got 'newton'"),
        ({"lam": 0.0}, "lam must be > 0 for vlae"),
        ({"flows": 2}, "flows is not a parameter of vlae"),
    ],
)
def test_bad_parameters_give_one_clear_error(page, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        experiment.configure(page["VLAE"], dataset="synthetic", profile="smoke", **options)


@pytest.mark.parametrize("likelihood", ["gaussian-fixed", "gaussian-learned"])
def test_gaussian_decoders_take_a_gauss_newton_step(page, likelihood):
    """With N(x; sigmoid f(z), γ I) the gradient is exact and Λ is the Gauss–Newton matrix JᵀJ/γ + I
    of the mean's Jacobian J (the sigmoid's curvature left out)."""
    model = _model(page, likelihood=likelihood)
    if likelihood == "gaussian-learned":
        with torch.no_grad():
            model.log_gamma.fill_(-1.3)
    gamma = model.log_gamma.exp().item() if likelihood == "gaussian-learned" else 1.0
    x, z = _images(3), torch.randn(3, 3, dtype=torch.float64)
    for i in range(len(x)):
        log_joint = lambda v: model.log_likelihood(x[i : i + 1], v.unsqueeze(0).unsqueeze(0)).sum() + standard_normal_logpdf(v)
        v = z[i].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_joint(v), v)
        torch.testing.assert_close(model.gradient(x[i : i + 1], z[i : i + 1])[0], grad.to(torch.float64), rtol=1e-4, atol=1e-5)
        J = torch.autograd.functional.jacobian(lambda u: torch.sigmoid(model.decoder(u.unsqueeze(0)).flatten()), z[i])
        W, _ = model.jacobian(z[i : i + 1])
        torch.testing.assert_close(W[0], J)
        _, L = model.laplace(x[i : i + 1])
        mu = model.mode(x[i : i + 1])
        Jm = torch.autograd.functional.jacobian(lambda u: torch.sigmoid(model.decoder(u.unsqueeze(0)).flatten()), mu[0].detach())
        torch.testing.assert_close(L[0] @ L[0].T, Jm.T @ Jm / gamma + torch.eye(3, dtype=torch.float64))
    terms = model.loss(_images(6))
    assert torch.isfinite(terms["objective"]) and ("gamma" in terms) == (likelihood == "gaussian-learned")


def test_declaring_the_likelihood_leaves_the_default_run_as_it_was(page):
    config, _ = experiment.configure(page["VLAE"], profile="reduced", device="cpu")
    assert config["likelihood"] == "bernoulli"
    from hebae import runs

    assert runs.run_id(config) == "vlae-ea27d2e977cb"  # the id of the stored reduced run (results/), made before the option
