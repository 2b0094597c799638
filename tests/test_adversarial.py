"""Adversarial prior matching in the training loop (the second optimiser of the model contract),
and the three model pages built on it: AAE, WAE-GAN and MaskAAE."""

import sys

import pytest
import torch
from torch import nn

import page_models
from hebae import batched, bounds, data, experiment, train
from pages import model_class

CPU = torch.device("cpu")
AAE, WAEGAN, MaskAAE = model_class("aae", "AAE"), model_class("waegan", "WAEGAN"), model_class("maskaae", "MaskAAE")


class TinyAAE(nn.Module):
    """A small adversarial autoencoder: a latent discriminator trained with the cross-entropy,
    the encoder with the non-saturating generator loss. ``calls`` records, in order, which loss
    saw which batch; ``poison`` makes the adversary's objective NaN at that call; ``scale``
    multiplies the adversary's objective (a tiny scale makes it look collapsed)."""

    adversary_lr = None
    adversary_betas = (0.5, 0.999)

    def __init__(self, pixels=64, k=3, hidden=16, poison=None, scale=1.0, collapse=None):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, k))
        self.decoder = nn.Sequential(nn.Linear(k, hidden), nn.ReLU(), nn.Linear(hidden, pixels))
        self.adversary = nn.Sequential(nn.Linear(k, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.poison, self.scale, self.adversary_collapse = poison, scale, collapse
        self.calls = []

    def adversary_loss(self, x):
        self.calls.append(("adversary", x))
        z = self.encoder(x.flatten(1))
        prior = bounds.standard_normal(z.shape)
        real = nn.functional.softplus(-self.adversary(prior)).mean()
        fake = nn.functional.softplus(self.adversary(z)).mean()
        objective = self.scale * (real + fake)
        if len([c for c in self.calls if c[0] == "adversary"]) == self.poison:
            objective = objective * float("nan")
        return {"objective": objective, "real": real, "fake": fake}

    def loss(self, x):
        self.calls.append(("main", x))
        x = x.flatten(1)
        z = self.encoder(x)
        rec = nn.functional.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").sum(1).mean()
        gen = nn.functional.softplus(-self.adversary(z)).mean()
        return {"objective": rec + gen, "rec": rec, "reg": gen}


def _images(n=128):
    return data.synthetic("train", n=n).images


def _config(epochs=2, **kw):
    return train.TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, **kw)


def _fit(model, epochs=2, seed=0, **kw):
    train.seed_everything(seed)
    return train.fit(model, _images(), _config(epochs, seed=seed), device="cpu", progress=False, **kw)


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(module, before):
    return [not torch.equal(p, b) for p, b in zip(module.parameters(), before)]


# ------------------------------------------------------------------------------ the contract


def test_each_optimiser_steps_only_its_own_parameters():
    torch.manual_seed(0)
    model = TinyAAE()
    engine = train.LoneEngine(model, _config(), CPU, None)
    adversary_ids = {id(p) for p in model.adversary.parameters()}
    main_ids = {id(p) for g in engine.optimizer.param_groups for p in g["params"]}
    second_ids = {id(p) for g in engine.adversary_optimizer.param_groups for p in g["params"]}
    assert second_ids == adversary_ids and not main_ids & adversary_ids
    assert main_ids | second_ids == {id(p) for p in model.parameters()}

    data_, index = _images(), torch.arange(32)[None]
    main = [*model.encoder.parameters(), *model.decoder.parameters()]
    before_main, before_adv = [p.detach().clone() for p in main], _snapshot(model.adversary)
    engine.adversary_update(engine.adversary_loss(data_, index)["objective"])
    assert all(torch.equal(p, b) for p, b in zip(main, before_main))  # the second step left the model alone
    assert all(p.grad is None for p in main)  # and did not even compute its gradients
    assert all(_changed(model.adversary, before_adv))

    before_adv = _snapshot(model.adversary)
    engine.update(engine.loss(data_, index)["objective"])
    assert not any(_changed(model.adversary, before_adv))  # the main step left the adversary alone
    assert all(not torch.equal(p, b) for p, b in zip(main, before_main))


def test_the_default_param_groups_leave_the_adversary_out_and_a_page_may_not_put_it_back():
    config, _ = experiment.configure(AAE, dataset="synthetic", latent_dim=3, profile="smoke")
    model = AAE(config, page_models.SHAPE)
    grouped = {id(p) for g in model.param_groups() for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters()} - {id(p) for p in model.adversary.parameters()}

    class Greedy(TinyAAE):
        def param_groups(self):
            return [{"params": list(self.parameters())}]

    with pytest.raises(ValueError, match="must leave out the adversary's parameters"):
        train.LoneEngine(Greedy(), _config(), CPU, None)


def test_half_an_adversarial_model_is_refused():
    class NoAdversary(TinyAAE):
        def __init__(self):
            super().__init__()
            del self.adversary

    class NoLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.adversary = nn.Linear(2, 1)

        def loss(self, x):
            return {"objective": self.adversary.weight.sum()}

    for model in (NoAdversary(), NoLoss()):
        with pytest.raises(ValueError, match="needs both self.adversary"):
            train.LoneEngine(model, _config(), CPU, None)


def test_every_batch_takes_the_adversary_step_then_the_main_step_on_the_same_batch():
    model = TinyAAE()
    _fit(model, epochs=2)
    batches = 2 * (128 // 32)
    assert [c[0] for c in model.calls] == ["adversary", "main"] * batches
    for (_, a), (_, b) in zip(model.calls[0::2], model.calls[1::2]):
        assert torch.equal(a, b)


def test_the_history_records_the_adversarys_terms_as_epoch_means():
    model = TinyAAE()
    history = _fit(model, epochs=2)
    for record in history:
        assert {"adv_objective", "adv_real", "adv_fake", "objective", "rec", "reg"} <= record.keys()
        assert record["adv_objective"] == pytest.approx(record["adv_real"] + record["adv_fake"], rel=1e-5)
    # A model without an adversary keeps its history as it was.
    plain = TinyAAE()
    plain.adversary_loss = None
    plain.adversary = None
    plain.loss = lambda x: {"objective": plain.decoder(plain.encoder(x.flatten(1))).pow(2).mean()}
    assert not any(k.startswith("adv_") for k in _fit(plain, epochs=1)[0])


def test_the_schedule_and_the_adversarys_own_rate_and_betas(tmp_path):
    class Slow(TinyAAE):
        adversary_lr = 5e-4
        adversary_betas = (0.3, 0.9)

    path = tmp_path / "run.pt"
    _fit(Slow(), epochs=3, checkpoint=path)
    state = torch.load(path, weights_only=True)
    (group,) = state["adversary_optimizer"]["param_groups"]
    assert group["lr"] == pytest.approx(5e-4 * 0.995**2)  # the MNIST schedule at epoch 3
    assert tuple(group["betas"]) == (0.3, 0.9)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-3 * 0.995**2)
    path = tmp_path / "default.pt"
    _fit(TinyAAE(), epochs=1, checkpoint=path)  # adversary_lr None: the run's
    assert torch.load(path, weights_only=True)["adversary_optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-3)


class Stop(KeyboardInterrupt):
    pass


def test_a_stopped_adversarial_run_resumes_as_if_never_stopped(tmp_path):
    torch.manual_seed(5)
    reference_model = TinyAAE()
    reference = _fit(reference_model, epochs=3)
    reference_rng = torch.get_rng_state()

    def stop_at_3(model, epoch):
        if epoch == 3:
            raise Stop
        return {}

    path = tmp_path / "run.pt"
    torch.manual_seed(5)
    with pytest.raises(Stop):
        _fit(TinyAAE(), epochs=3, checkpoint=path, evaluate=stop_at_3)
    assert torch.load(path, weights_only=True)["epoch"] == 2
    train.seed_everything(0)
    torch.rand(7)  # a new process's generator is anywhere: the checkpoint puts it back
    model = TinyAAE()
    history = train.fit(model, _images(), _config(3, seed=0), device="cpu", progress=False, checkpoint=path)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(history) == strip(reference)  # exactly: the same numbers in the same order
    for (k, a), b in zip(reference_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(torch.get_rng_state(), reference_rng)


def test_resuming_without_the_adversarys_optimiser_state_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    _fit(TinyAAE(), epochs=2, checkpoint=path)
    state = torch.load(path, weights_only=True)
    del state["adversary_optimizer"]
    train.save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(ValueError, match="no adversary optimiser state"):
        _fit(TinyAAE(), epochs=2, checkpoint=path)


def test_a_non_finite_adversary_names_itself_with_epoch_and_batch():
    with pytest.raises(train.NonFiniteLossError, match=r"the adversary's objective became nan at epoch 2, batch 3 of 4"):
        _fit(TinyAAE(poison=7), epochs=3)  # 4 batches per epoch: call 7 is epoch 2, batch 3


def test_a_collapsed_discriminator_stops_the_run_naming_the_epoch():
    # Scaled down a thousandfold, the cross-entropy sits near 1e-3 on every batch: a discriminator
    # that is sure of every code and every prior draw.
    with pytest.raises(train.AdversaryCollapseError, match=r"below 0.01 on every batch of epoch 1 "):
        _fit(TinyAAE(scale=1e-3, collapse=1e-2), epochs=2)
    # The same objective is healthy when the threshold is off (the default) or not reached.
    assert len(_fit(TinyAAE(scale=1e-3), epochs=2)) == 2
    assert len(_fit(TinyAAE(collapse=1e-2), epochs=2)) == 2


def test_one_low_batch_is_not_a_collapse():
    class OneLow(TinyAAE):
        def adversary_loss(self, x):
            terms = super().adversary_loss(x)
            if len(self.calls) % 8 != 1:  # every batch but the first of each epoch looks collapsed
                terms["objective"] = terms["objective"] * 1e-4
            return terms

    assert len(_fit(OneLow(collapse=1e-2), epochs=2)) == 2


def test_nothing_in_an_epoch_reads_the_device(monkeypatch):
    """The loop's own code inside the batches never calls what would wait for a GPU."""
    inside = {"on": False}

    def forbid(name):
        real = getattr(torch.Tensor, name)

        def wrapped(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if inside["on"] and caller.endswith(("hebae/train.py", "hebae/batched.py")):
                raise AssertionError(f"the loop called Tensor.{name} inside an epoch")
            return real(self, *args, **kwargs)

        return wrapped

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, forbid(name))

    class Watched(train.LoneEngine):
        def epoch(self):
            from contextlib import contextmanager

            @contextmanager
            def batches():
                self.models[0].train()
                inside["on"] = True
                try:
                    yield
                finally:
                    inside["on"] = False

            return batches()

    train.seed_everything(0)
    model, config = TinyAAE(collapse=1e-3), _config(2)
    engine = Watched(model, config, CPU, None)
    history = train.train_runs(engine, _images(), [config], [None], progress=False)[0]
    assert len(history) == 2 and "adv_objective" in history[0]


# ------------------------------------------------------------------- stacked runs: never


def test_adversarial_models_are_never_stacked():
    aae, wae = AAE, model_class("wae", "WAE")
    config, _ = experiment.configure(aae, dataset="synthetic", profile="smoke", latent_dim=3)
    gpu = torch.device("cuda")  # what pays() decides for a GPU; nothing runs on it
    assert batched.pays(config, gpu, wae) and not batched.pays(config, gpu, aae)
    torch.manual_seed(0)
    models = [aae(config, page_models.SHAPE) for _ in range(2)]
    with pytest.raises(batched.BatchingUnsupported, match="trains an adversary"):
        batched.StackedEngine(models, [_config()] * 2, [train.rng_state(CPU)] * 2, [None, None], CPU)


def test_run_group_trains_adversarial_runs_one_by_one_even_when_asked_to_batch(tmp_path, recwarn):
    aae = AAE
    configs = [experiment.configure(aae, dataset="synthetic", profile="smoke", latent_dim=3, seed=s, epochs=1,
                                    n_train=128, n_test=64, batch_size=32)[0] for s in (0, 1)]
    stored = batched.run_group(configs, aae, device="cpu", progress=False, root=tmp_path, batch=True)
    assert [r.provenance["batch"] for r in stored] == [{"size": 1, "index": 0}] * 2
    assert not [w for w in recwarn if issubclass(w.category, batched.BatchingFallback)]  # not a fallback: a rule
    assert all("adv_objective" in r.history[0] for r in stored)


# ------------------------------------------------------------------------- the three pages


@pytest.mark.parametrize("cls", [AAE, WAEGAN, MaskAAE], ids=lambda c: c.name)
def test_each_page_model_trains_a_few_steps_on_synthetic_data(cls):
    model = page_models.build(cls)
    adversary_before, main_before = _snapshot(model.adversary), [p.detach().clone() for p in model.main_parameters()]
    train.seed_everything(0)
    history = train.fit(model, page_models.images(64), train.TrainConfig(epochs=2, batch_size=16, lr=1e-3),
                        device="cpu", progress=False)
    assert len(history) == 2 and "adv_objective" in history[0]
    assert all(torch.isfinite(torch.tensor(v)) for h in history for v in h.values() if isinstance(v, float))
    # Every weight matrix moved (a Wasserstein critic's last bias has no gradient: it cancels in the gap).
    names = [name for name, _ in model.adversary.named_parameters()]
    assert all(c for name, c in zip(names, _changed(model.adversary, adversary_before)) if name.endswith("weight"))
    assert any(not torch.equal(p, b) for p, b in zip(model.main_parameters(), main_before))
    assert model.has_adversary and not model.has_posterior


def _fixed_critic(model, weight):
    """Replace the model's adversary by the linear map z -> weight·z (no bias)."""
    linear = nn.Linear(model.latent_dim, 1, bias=False).to(torch.float64)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float64)[None])
    model.adversary = nn.Sequential(linear)


def test_aae_losses_at_a_discriminator_that_cannot_tell():
    model = page_models.build(AAE)
    _fixed_critic(model, [0.0, 0.0, 0.0])  # logit 0 everywhere: σ(D) = 1/2
    x = page_models.images(8)
    with torch.no_grad():
        adversary_terms, terms = model.adversary_loss(x), model.loss(x)
    assert float(adversary_terms["objective"]) == pytest.approx(2 * torch.log(torch.tensor(2.0)).item())
    assert float(terms["reg"]) == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert float(terms["objective"]) == pytest.approx(float(terms["rec"]) + model.lam * float(terms["reg"]))
    assert model.adversary_collapse == 0.01 and AAE.adversary_lr is None


def test_waegan_settings_and_cost():
    model = page_models.build(WAEGAN)
    assert model.adversary_lr == pytest.approx(0.5 * model.config["lr"])
    assert model.param_groups()[0]["betas"] == (0.5, 0.999)
    assert [m.out_features for m in model.adversary if isinstance(m, nn.Linear)] == [512, 512, 512, 512, 1]
    x, z = page_models.images(4), torch.zeros(4, 3, dtype=torch.float64)
    by_hand = 0.05 * (torch.sigmoid(model.decoder(z)) - x).pow(2).flatten(1).sum(1).mean()
    assert torch.allclose(model.reconstruction(x, z), by_hand)
    bernoulli = page_models.build(WAEGAN, cost="bernoulli")
    assert torch.allclose(bernoulli.reconstruction(x, z), bernoulli.reconstruction_nll(bernoulli.decoder(z), x).mean())
    with pytest.raises(ValueError, match="cost must be one of l2sq, bernoulli"):
        page_models.build(WAEGAN, cost="l1")


def test_maskaae_mask_closes_dimensions_in_codes_samples_and_counts():
    model = page_models.build(MaskAAE)
    with torch.no_grad():
        model.mask_rate.copy_(torch.tensor([-1.0, 0.005, 1.0], dtype=torch.float64))  # w = 10·v: closed, 0.05, 10
    alpha = model.mask()
    assert alpha[0] == 0 and 0 < alpha[1] < MaskAAE.active_threshold < alpha[2] < 1
    assert model.active_dims() == 1
    codes = model.encode_mean(page_models.images(6))
    assert torch.all(codes[:, 0] == 0) and torch.all(codes[:, 2] != 0)
    draws = model.sample_prior(100, torch.Generator().manual_seed(0))
    assert torch.all(draws[:, 0] == 0) and torch.allclose(draws[:, 1].std(), alpha[1].float(), rtol=0.3)
    model.eval()
    terms = model.loss(page_models.images(8))
    assert float(terms["m_A"]) == 1 and model.mask_rate[0] == -1.0 and int(model.steps) == 0  # eval: no projection, no step
    model.train()
    model.loss(page_models.images(8))
    assert model.mask_rate[0] == 0.0 and int(model.steps) == 1  # training: w projected to >= 0, one step counted
    from hebae import measure

    assert measure.test_objective(model, page_models.images(8), 4, CPU)["test_m_A"] == model.active_dims()


def test_maskaae_counts_its_training_steps_and_doubles_its_regulariser_on_their_schedule():
    model = page_models.build(MaskAAE)
    train.seed_everything(0)
    train.fit(model, page_models.images(64), train.TrainConfig(epochs=2, batch_size=16), device="cpu", progress=False)
    assert int(model.steps) == 2 * 4  # one per main step; the critic's steps and the evaluation do not count
    assert [page_models.build(MaskAAE, latent_dim=m).interval for m in (20, 32, 96)] == [75, 3600, 10_000]  # their I
    weights = []
    for t in (0, 299, 300, 1199, 1200, 10**7):
        model.steps.fill_(t)
        weights.append(float(model.binarising_weight()))
    assert weights == pytest.approx([2 / 3, 2 / 3, 4 / 3, 16 / 3, 32 / 3, 2048.0])


def test_maskaae_routes_each_gradient_to_the_step_that_owns_it():
    model = page_models.build(MaskAAE).train()
    x = page_models.images(8)
    with bounds.noise_source(lambda shape, **kw: torch.ones(shape, dtype=torch.float64)):
        terms = model.loss(x)
        grads = torch.autograd.grad(terms["objective"], [model.mask_rate, *model.encoder.parameters()])
        model.steps.zero_()
        alpha = model.mask()
        raw = model.encoder(model._inputs(x))
        z = raw.detach() * alpha
        gap = model.critic(z).mean() - model.critic(torch.ones_like(z) * alpha).mean()
        mask_loss = (1000 / 64 * model.reconstruction_nll(model.decoder(z), x).mean() + (1 - gap) ** 2
                     + model.binarising_weight() * (alpha * (1 - alpha)).sum())
        kept = alpha.detach()
        autoencoder_loss = (model.reconstruction_nll(model.decoder(raw * kept), x).mean()
                            + 100 * 64 * ((raw - raw.mean(0)).pow(2) * torch.exp(-10 * kept**2)).mean()
                            - model.lam * model.critic(raw * kept).mean())
        (mask_grad,) = torch.autograd.grad(mask_loss, model.mask_rate)
        encoder_grads = torch.autograd.grad(autoencoder_loss, list(model.encoder.parameters()))
    assert torch.allclose(grads[0], mask_grad)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(grads[1:], encoder_grads))


def test_maskaae_critic_loss_by_hand():
    """A linear critic of unit norm has gradient norm 1 everywhere (no penalty), and its gap is
    its weight applied to the difference of the masked means."""
    model = page_models.build(MaskAAE)
    direction = torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64)
    _fixed_critic(model, direction)
    x = page_models.images(8)
    with bounds.noise_source(lambda shape, **kw: torch.full(shape, 0.5, dtype=torch.float64)):
        terms = {k: v.detach() for k, v in model.adversary_loss(x).items()}
    alpha = model.mask().detach()
    codes = model.encoder(model._inputs(x)) * alpha
    expected_gap = (codes.mean(0) - 0.5 * alpha) @ direction
    assert float(terms["penalty"]) == pytest.approx(0.0, abs=1e-12)
    assert float(terms["gap"]) == pytest.approx(float(expected_gap.detach()), rel=1e-5)
    assert float(terms["objective"]) == pytest.approx(float(terms["gap"]))
    assert model.adversary_collapse is None  # a Wasserstein critic has no floor to collapse to


@pytest.mark.parametrize("cls", [AAE, WAEGAN, MaskAAE], ids=lambda c: c.name)
def test_the_adversarys_step_on_the_conv_nets_under_bf16_autocast(cls):
    """As test_models checks each model's main step: the adversary's terms stay float32 and finite."""
    config, _ = experiment.configure(cls, dataset="celeba", profile="smoke", batch_size=8, latent_dim=4)
    torch.manual_seed(0)
    model = cls(config, (3, 64, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = model.adversary_loss(torch.rand(8, 3, 64, 64))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    terms["objective"].backward(inputs=list(model.adversary.parameters()))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.adversary[0].parameters())
    assert all(p.grad is None for p in model.main_parameters())


def test_a_run_stores_the_arrays_its_model_measures():
    """MaskAAE's trained mask is stored with the run (measure calls measured_arrays), so its page
    shows the mask and checks m_A without the checkpoint, which is never committed."""
    from hebae import measure

    cls = MaskAAE
    model = page_models.build(cls, dtype=torch.float32, latent_dim=6)
    stored = measure.measure(model, page_models.images(40, dtype=torch.float32), model.config, "cpu").arrays
    assert stored["mask"].shape == (6,)
    assert int((stored["mask"] >= cls.active_threshold).sum()) == model.active_dims()
