"""Batched training (hebae.batched) against the same runs trained alone."""

import math
import time

import pytest
import torch
from torch import nn

from hebae import batched, bounds, data, experiment, runs, train
from pages import classes

CPU = torch.device("cpu")


class TinyVAE(nn.Module):
    """A small VAE that exercises what the pages use: λ as ``self.lam``, noise through
    hebae.bounds (the reparameterisation and a second, prior-like draw), a buffer updated in
    place during training (like HEBAE's running Σ̂), Cholesky on a batch covariance, and its
    own optimiser groups. Everything stays in the default dtype."""

    def __init__(self, lam, pixels=64, k=3, hidden=16, item=False):
        super().__init__()
        self.lam, self.item = lam, item
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, 2 * k))
        self.decoder = nn.Sequential(nn.Linear(k, hidden), nn.ReLU(), nn.Linear(hidden, pixels))
        self.register_buffer("running", torch.zeros(k, k))

    def loss(self, x):
        x = x.flatten(1)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = bounds.reparameterise_diag(mu, logvar)
        _, sigma = bounds.batch_moments(mu)
        if self.training:
            with torch.no_grad():
                self.running.lerp_(sigma, 0.1)
        r = bounds.cholesky_factor(sigma.detach(), 1e-3)
        prior = bounds.standard_normal(z.shape, device=z.device, dtype=z.dtype) @ r.T
        rec = nn.functional.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").sum(1).mean()
        kl = bounds.kl_diag_normal(mu, logvar).mean()
        spread = (z - prior).pow(2).mean()
        if self.item and kl.item() > 0:  # host-side read: cannot be vectorised
            spread = spread * 1.0
        return {"objective": rec + self.lam * kl + 0.01 * spread, "rec": rec, "reg": kl}

    def param_groups(self):
        return [{"params": list(self.encoder.parameters())},
                {"params": list(self.decoder.parameters()), "weight_decay": 1e-3}]


SEEDS_LAMS = [(0, 1.0), (1, 0.3), (2, 3.0)]


def _images(n=192):
    return data.synthetic("train", n=n).images.to(torch.get_default_dtype())


def _evaluate(test):
    # Draws from the global generator, as the per-epoch test ELBO does.
    return lambda m, epoch: {"test_objective": float(m.loss(test)["objective"])}


def _alone(make, images, configs, evaluate, checkpoint=None):
    out = []
    for (seed, lam), cfg in zip(SEEDS_LAMS, configs):
        train.seed_everything(seed)
        model = make(lam)
        history = train.fit(model, images, cfg, device="cpu", evaluate=evaluate, progress=False, checkpoint=checkpoint)
        out.append((model, history, torch.get_rng_state()))
    return out


def _together(make, images, configs, evaluate, **kw):
    models, states = [], []
    for seed, lam in SEEDS_LAMS:
        train.seed_everything(seed)
        models.append(make(lam))
        states.append(train.rng_state(CPU))
    histories = batched.fit_batched(models, images, configs, states, device="cpu", evaluate=evaluate, progress=False, **kw)
    return [(m, h, s["cpu"]) for m, h, s in zip(models, histories, states)]


def _assert_same(alone, together, rtol):
    for (m1, h1, rng1), (m2, h2, rng2) in zip(alone, together):
        assert len(h1) == len(h2)
        for r1, r2 in zip(h1, h2):
            assert r1.keys() == r2.keys()
            for key in r1:
                if key != "seconds":
                    assert r2[key] == pytest.approx(r1[key], rel=rtol, abs=rtol), key
        for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
            torch.testing.assert_close(b, a, rtol=rtol, atol=rtol, msg=k)
        assert torch.equal(rng1, rng2)  # the same noise was drawn, to the last number


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("reset_adam", [False, True])
def test_a_batch_of_three_trains_as_three_lone_runs_float64(float64, reset_adam):
    images, test = _images(), _images(32)
    configs = [train.TrainConfig(epochs=3, batch_size=16, lr=3e-3, seed=s, reset_adam=reset_adam) for s, _ in SEEDS_LAMS]
    make = lambda lam: TinyVAE(lam)  # noqa: E731
    alone = _alone(make, images, configs, _evaluate(test))
    together = _together(make, images, configs, _evaluate(test))
    _assert_same(alone, together, rtol=1e-10)  # 36 steps, per-run λ, seeds, data order and noise
    assert len({h[-1]["objective"] for _, h, _ in together}) == 3


def test_a_page_model_trains_batched_as_alone():
    """HEBAE as the book defines it (batch covariance, Cholesky, in-place running Σ̂). Its
    reconstruction term is computed in float32 by the model contract, so the runs agree to
    float32 precision."""
    hebae = classes()["hebae"]
    cfgs = [experiment.configure(hebae, dataset="synthetic", profile="smoke", seed=s, lam=lam, batch_size=32,
                                 latent_dim=3, epochs=2, n_train=128)[0] for s, lam in SEEDS_LAMS]
    images = _images(128)
    make = lambda lam: hebae({**cfgs[0], "lam": lam}, images.shape[1:])  # noqa: E731
    configs = [experiment.train_config(c) for c in cfgs]
    evaluate = experiment.evaluator(_images(64))
    _assert_same(_alone(make, images, configs, evaluate), _together(make, images, configs, evaluate), rtol=2e-4)


def test_a_loss_that_reads_values_on_the_host_is_refused_before_training(float64):
    images = _images(64)
    configs = [train.TrainConfig(epochs=1, batch_size=16, seed=s) for s, _ in SEEDS_LAMS]
    with pytest.raises(batched.BatchingUnsupported, match="cannot be vectorised"):
        _together(lambda lam: TinyVAE(lam, item=True), images, configs, None)


def test_runs_must_share_their_training_settings():
    images = _images(64)
    configs = [train.TrainConfig(epochs=1, batch_size=16, seed=0), train.TrainConfig(epochs=1, batch_size=32, seed=1)]
    models = [TinyVAE(1.0), TinyVAE(1.0)]
    with pytest.raises(ValueError, match="share every training setting but the seed"):
        batched.fit_batched(models, images, configs, [train.rng_state(CPU)] * 2, device="cpu", progress=False)


def test_groups_are_configs_that_differ_only_in_seed_and_lambda():
    vae, hebae = classes()["vae"], classes()["hebae"]
    configure = lambda cls, **kw: experiment.configure(cls, dataset="synthetic", profile="smoke", **kw)[0]  # noqa: E731
    configs = [configure(vae, seed=0), configure(hebae, seed=0), configure(vae, seed=1, lam=0.3),
               configure(hebae, seed=0, reparam="diagonal"), configure(vae, seed=0, latent_dim=2)]
    assert [[c["model"] for c in g] for g in batched.group(configs)] == [["vae", "vae"], ["hebae"], ["hebae"], ["vae"]]


def test_run_group_stores_each_run_under_its_own_id_with_its_batch(tmp_path):
    """The grid path end to end at smoke scale: two VAE runs trained as one batch and stored as
    the lone runs would be; the same configs again load them; a non-vectorisable model falls
    back to lone training with a warning."""
    vae = classes()["vae"]
    configs = [experiment.configure(vae, dataset="synthetic", profile="smoke", seed=s, lam=lam, epochs=2, n_train=128, n_test=64, batch_size=32)[0]
               for s, lam in ((0, 1.0), (1, 0.5))]
    stored = batched.run_group(configs, vae, device="cpu", progress=False, root=tmp_path, batch=True)
    assert [r.id for r in stored] == [runs.run_id(c) for c in configs]
    for i, run in enumerate(stored):
        assert run.config == configs[i]
        assert run.provenance["batch"]["size"] == 2 and run.provenance["batch"]["index"] == i
        assert [h["epoch"] for h in run.history] == [1, 2] and math.isfinite(run.metrics["test_elbo"])
        assert run.checkpoint.exists() and not (run.path / runs.RESUME_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(r.id for r in stored)  # no temporary folders left
    again = batched.run_group(configs, vae, device="cpu", progress=False, root=tmp_path)
    assert [r.provenance["started_utc"] for r in again] == [r.provenance["started_utc"] for r in stored]

    class HostVAE(vae):  # reads a value on the host inside its loss: not vectorisable
        def loss(self, x):
            terms = super().loss(x)
            self.last = terms["objective"].item()
            return terms

    others = [{**c, "n_train": 64} for c in configs]
    with pytest.warns(batched.BatchingFallback, match="cannot be vectorised.*one by one"):
        alone = batched.run_group(others, HostVAE, device="cpu", progress=False, root=tmp_path, batch=True)
    assert [r.provenance["batch"]["size"] for r in alone] == [1, 1]


def test_runs_of_a_group_trained_one_by_one_each_record_their_own_time(tmp_path):
    """All runs of a group are claimed at once; a run's wall time must not include the time it
    waited for the runs trained before it (their sum would then exceed the time that passed)."""
    vae = classes()["vae"]
    configs = [experiment.configure(vae, dataset="synthetic", profile="smoke", seed=s, epochs=1, n_train=64, n_test=32, batch_size=32)[0]
               for s in (0, 1, 2)]
    start = time.perf_counter()
    stored = batched.run_group(configs, vae, device="cpu", progress=False, root=tmp_path, batch=False)
    elapsed = time.perf_counter() - start
    walls = [r.provenance["wall_seconds"] for r in stored]
    assert all(w > 0 for w in walls) and sum(walls) <= elapsed
    starts = [r.provenance["started_utc"] for r in stored]
    assert starts == sorted(starts)


def test_batching_is_used_by_default_only_where_it_pays():
    """On a CPU one dense-net run keeps the cores busy (benchmarks/grid_throughput.py measured
    batched training slower there); on a GPU the dense nets batch; the conv nets never do."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert not batched.pays({"dataset": "mnist"}, cpu)
    assert batched.pays({"dataset": "mnist"}, gpu) and batched.pays({"dataset": "fashion"}, gpu)
    assert not batched.pays({"dataset": "celeba"}, gpu)
