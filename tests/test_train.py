import pytest
import torch

from hebae import data, nets, train
from hebae.bounds import bernoulli_nll


class TinyAE(torch.nn.Module):
    def __init__(self, shape, poison_at: int | None = None):
        super().__init__()
        cfg = nets.NetConfig("dense", shape, latent_dim=2, heads=1, hidden=(16,), decoder_hidden=(16,))
        self.encoder, self.decoder = nets.build(cfg)
        self.poison_at, self.calls = poison_at, 0

    def loss(self, x):
        self.calls += 1
        rec = bernoulli_nll(self.decoder(self.encoder(x)), x).mean()
        if self.calls == self.poison_at:
            rec = rec * float("nan")
        return {"objective": rec, "rec": rec}


def _run(seed, **overrides):
    images = data.synthetic("train", n=256).images
    train.seed_everything(seed)
    model = TinyAE(images.shape[1:])
    cfg = train.TrainConfig(epochs=2, batch_size=32, lr=1e-3, seed=seed, **overrides)
    history = train.fit(model, images, cfg, device="cpu", progress=False)
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_same_seed_same_history_on_cpu():
    a, b = _run(3), _run(3)
    assert a == b
    assert [h["epoch"] for h in a] == [1, 2]
    assert a[1]["objective"] < a[0]["objective"]


def test_other_seed_other_history():
    assert _run(3) != _run(4)


def test_reset_adam_changes_the_trajectory():
    assert _run(3, reset_adam=True) != _run(3)


def test_evaluate_callback_adds_to_history():
    images = data.synthetic("train", n=64).images
    model = TinyAE(images.shape[1:])
    cfg = train.TrainConfig(epochs=2, batch_size=16)
    history = train.fit(model, images, cfg, device="cpu", progress=False, evaluate=lambda m, e: {"test": e * 10.0})
    assert [h["test"] for h in history] == [10.0, 20.0]


def test_nan_guard_names_epoch_and_batch():
    images = data.synthetic("train", n=128).images
    model = TinyAE(images.shape[1:], poison_at=7)  # 4 batches per epoch: epoch 2, batch 3
    cfg = train.TrainConfig(epochs=3, batch_size=32)
    with pytest.raises(train.NonFiniteLossError, match="epoch 2, batch 3 of 4"):
        train.fit(model, images, cfg, device="cpu", progress=False)


def test_learning_rate_schedules():
    assert train.lr_factor("mnist", 0) == 1.0
    assert train.lr_factor("mnist", 10) == pytest.approx(0.995**10)
    celeba = [train.lr_factor("celeba", e) for e in (0, 29, 30, 49, 50, 69, 70, 99)]
    assert celeba == pytest.approx([1, 1, 1 / 2, 1 / 2, 1 / 10, 1 / 10, 1 / 100, 1 / 100])
    # a ten-epoch run: the same steps at 30, 50 and 70 % of its epochs
    short = [train.lr_factor("celeba", e, 10) for e in range(10)]
    assert short == pytest.approx([1, 1, 1, 1 / 2, 1 / 2, 1 / 10, 1 / 10, 1 / 100, 1 / 100, 1 / 100])
    assert train.lr_factor("celeba", 0, 1) == 1.0  # a one-epoch run never steps


def test_bad_train_config_and_device():
    with pytest.raises(ValueError, match="schedule must be one of mnist, celeba, constant"):
        train.TrainConfig(schedule="cosine")
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        train.TrainConfig(lr=float("nan"))
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        train.pick_device("tpu")
    images = data.synthetic("train", n=8).images
    with pytest.raises(ValueError, match="batch_size 16 exceeds the number of training images 8"):
        train.fit(TinyAE(images.shape[1:]), images, train.TrainConfig(batch_size=16), device="cpu", progress=False)
