"""FlexAE as its page defines it: a deterministic autoencoder, a prior generator G from
N(0, I_m') and a WGAN-GP critic as the adversary."""

import math

import pytest
import torch
from torch import nn

from hebae import experiment, train
from pages import classes, model_namespace

SHAPE = (1, 8, 8)
M = 3  # the latent dimension m of the small models here


@pytest.fixture(scope="module")
def page():
    return model_namespace("flexae")


def build(lam=1.0, dtype=torch.float64, **options):
    cls = classes()["flexae"]
    config, _ = experiment.configure(cls, dataset="synthetic", latent_dim=M, profile="smoke", lam=lam, **options)
    torch.manual_seed(0)
    return cls(config, SHAPE).to(dtype)


def images(n=6, dtype=torch.float64):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=dtype)


def grads(objective, params):
    return torch.autograd.grad(objective, params, allow_unused=True, retain_graph=True)


def test_the_page_is_a_row_of_the_model_table(page):
    model = build()
    assert classes()["flexae"].__name__ == "FlexAE"
    assert model.has_adversary and not model.has_posterior and not model.has_elbo
    assert model.heads == 1 and model.encode_mean(images()).shape == (6, M)


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_prior_generator_maps_m_prime_noise_to_the_latent_space(factor):
    model = build(noise_factor=factor)
    assert model.noise_dim == factor * M >= M
    first = next(l for l in model.prior_net if isinstance(l, nn.Linear))
    assert first.in_features == factor * M
    z = model.sample_prior(10, torch.Generator().manual_seed(5))
    assert z.shape == (10, M)
    # sample_prior is G applied to N(0, I_m') draws made on the CPU from the given generator.
    u = torch.randn(10, factor * M, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(z, model.prior_net(u.double()).detach())
    torch.testing.assert_close(z, model.sample_prior(10, torch.Generator().manual_seed(5)))


def test_capacity_ladder_sets_the_hidden_widths_of_g(page):
    for capacity, widths in page["CAPACITY"].items():
        model = build(prior_capacity=capacity)
        linears = [l for l in model.prior_net if isinstance(l, nn.Linear)]
        assert [l.out_features for l in linears] == [*widths, M]
        assert sum(isinstance(l, nn.ReLU) for l in model.prior_net) == len(widths)
    counts = [sum(p.numel() for p in build(prior_capacity=c).prior_net.parameters()) for c in sorted(page["CAPACITY"])]
    assert counts == sorted(counts)  # increasing capacity, as in the lecture's Table 5
    assert page["CAPACITY"][6] == (1024,) * 4  # FlexAE's code


def test_the_critic_is_the_adversary_and_the_main_optimiser_leaves_it_out():
    model = build()
    critic = {id(p) for p in model.adversary.parameters()}
    main = {id(p) for g in model.param_groups() for p in g["params"]}
    assert critic and not critic & main
    assert main | critic == {id(p) for p in model.parameters()}
    assert {id(p) for p in model.prior_net.parameters()} <= main  # G trains in the main step
    assert model.adversary(torch.zeros(2, M, dtype=torch.float64)).shape == (2, 1)


def test_gradient_penalty_of_a_linear_critic_is_exact(page):
    critic = nn.Linear(M, 1).double()
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 0.0, 4.0]]))  # ‖∇C‖ = 5 everywhere
    z_q, z_p = torch.randn(7, M, dtype=torch.float64), torch.randn(7, M, dtype=torch.float64)
    assert page["gradient_penalty"](critic, z_q, z_p).item() == pytest.approx(16.0, rel=1e-12)


def test_critic_objective_and_its_terms():
    model = build()
    x = images()
    torch.manual_seed(3)
    terms = model.adversary_loss(x)
    assert set(terms) == {"objective", "wasserstein", "gp"}
    assert terms["objective"].item() == pytest.approx(-terms["wasserstein"].item() + 10.0 * terms["gp"].item(), rel=1e-10)
    # Ŵ is the critic's mean score on the codes minus its mean score on G's draws (same draws).
    torch.manual_seed(3)
    u = torch.randn(x.shape[0], model.noise_dim, dtype=torch.float64)
    with torch.no_grad():
        w = model.adversary(model.encode_mean(x)).mean() - model.adversary(model.prior_net(u)).mean()
    assert terms["wasserstein"].item() == pytest.approx(w.item(), rel=1e-10)


def test_critic_step_reaches_the_critic_only():
    model = build()
    objective = model.adversary_loss(images())["objective"]
    assert objective.requires_grad
    for name, module in (("encoder", model.encoder), ("decoder", model.decoder), ("G", model.prior_net)):
        assert all(g is None for g in grads(objective, list(module.parameters()))), name
    critic_grads = grads(objective, list(model.adversary.parameters()))
    assert all(g is not None and torch.isfinite(g).all() for g in critic_grads)
    assert any(g.abs().sum() > 0 for g in critic_grads)


def test_main_objective_is_rec_plus_lambda_times_w_with_g_trained_by_the_critic_term_alone():
    x = images()
    out = {}
    for lam in (1.0, 2.5):
        model = build(lam=lam)
        torch.manual_seed(4)
        terms = model.loss(x)
        assert set(terms) == {"objective", "rec", "reg"}
        assert terms["objective"].item() == pytest.approx(terms["rec"].item() + lam * terms["reg"].item(), rel=1e-10)
        main = [p for g in model.param_groups() for p in g["params"]]
        assert all(g is not None for g in grads(terms["objective"], main))  # encoder, decoder and G all learn
        out[lam] = {name: grads(terms["objective"], list(m.parameters()))
                    for name, m in (("decoder", model.decoder), ("G", model.prior_net), ("encoder", model.encoder))}
    # G sees only λ·Ŵ, so its gradient scales with λ; the decoder sees only the reconstruction.
    for g1, g2 in zip(out[1.0]["G"], out[2.5]["G"]):
        torch.testing.assert_close(2.5 * g1, g2)
    for g1, g2 in zip(out[1.0]["decoder"], out[2.5]["decoder"]):
        torch.testing.assert_close(g1, g2)
    # The encoder sees both, so λ changes its gradient too (the critic's pull towards the prior).
    assert any(not torch.allclose(a, b) for a, b in zip(out[1.0]["encoder"], out[2.5]["encoder"]))


def test_bad_parameters_are_refused_by_name():
    cls = classes()["flexae"]
    with pytest.raises(ValueError, match=r"^lam must be > 0 for flexae"):
        experiment.configure(cls, dataset="mnist", profile="smoke", lam=0.0)
    with pytest.raises(ValueError, match=r"^prior_capacity must be one of 6, 1, 2, 3, 4, 5; got 7$"):
        experiment.configure(cls, dataset="mnist", profile="smoke", prior_capacity=7)
    with pytest.raises(ValueError, match=r"^noise_factor must be one of 1, 2, 4; got 3$"):
        experiment.configure(cls, dataset="mnist", profile="smoke", noise_factor=3)


def _fit(seed=0):
    model = build(dtype=torch.float32)
    torch.manual_seed(seed)
    settings = train.TrainConfig(epochs=2, batch_size=8, lr=1e-3, seed=seed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = train.fit(model, images(32, torch.float32), settings, device=torch.device("cpu"), progress=False)
    return model, before, history


def test_a_few_epochs_through_the_training_loop():
    model, before, history = _fit()
    assert len(history) == 2
    for record in history:
        for key in ("objective", "rec", "reg", "adv_objective", "adv_wasserstein", "adv_gp"):
            assert math.isfinite(record[key]), (key, record)
        assert record["adv_objective"] == pytest.approx(-record["adv_wasserstein"] + 10.0 * record["adv_gp"], rel=1e-4, abs=1e-4)
    after = model.state_dict()
    for prefix in ("encoder.", "decoder.", "prior_net.", "adversary."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix
    # Seeded: the same run twice gives the same history.
    _, _, again = _fit()
    assert [h["adv_wasserstein"] for h in again] == [h["adv_wasserstein"] for h in history]
