"""One seeded, device-agnostic training loop with the paper's learning-rate schedules.

A model is any ``nn.Module`` with a method ``loss(x) -> dict[str, Tensor]`` whose ``"objective"``
entry is the scalar to minimise; the other entries (reconstruction, regulariser, ...) are
averaged per epoch into the history. A model may define ``param_groups()`` (the optimiser's
parameter groups, e.g. weight decay on the decoder only); otherwise all its parameters train alike. The loop knows nothing of storage or metrics: an optional
``evaluate(model, epoch)`` callback adds per-epoch numbers such as a test ELBO.
"""

from __future__ import annotations

import functools
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

SCHEDULES = ("mnist", "celeba", "constant")
DEVICES = ("auto", "cpu", "cuda")


class NonFiniteLossError(FloatingPointError):
    """The objective became NaN or infinite; the message names the epoch and batch."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    schedule: str = "mnist"
    seed: int = 0
    # The official code builds a fresh Adam optimiser whenever the learning rate changes, which
    # resets Adam's moment estimates. Off by default: one optimiser for the whole run.
    reset_adam: bool = False
    # Autocast the forward pass to bfloat16 (conv nets) where that pays: on GPUs, and on CPUs with
    # bf16 matrix units (AMX, AVX512-BF16). The model keeps its statistics, log-determinants and
    # losses in float32. The history records whether it was used.
    bf16: bool = False
    channels_last: bool = False  # NHWC memory layout, which the conv kernels prefer

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1; got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number; got {self.lr}")


def lr_factor(schedule: str, epoch: int) -> float:
    """Learning-rate multiplier at 0-based ``epoch``.

    ``mnist``: ×0.995 every epoch. ``celeba`` (WAE paper): halved after 30 epochs, then a further
    ÷5 after 50 and ÷10 after 70, each step compounding on the last.
    """
    if schedule == "mnist":
        return 0.995**epoch
    if schedule == "celeba":
        factor = 1.0
        for boundary, divisor in ((30, 2), (50, 5), (70, 10)):
            if epoch >= boundary:
                factor /= divisor
        return factor
    if schedule == "constant":
        return 1.0
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` gives cuda when available, else cpu; ``cpu`` and ``cuda`` are taken as asked."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use auto or cpu")
    return torch.device(device)


def bf16_pays(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up on ``device``. CPUs without bf16 units emulate it:
    measured on an AVX2-only CPU, the CelebA conv nets ran about 15 times slower under it."""
    return device.type == "cuda" or _cpu_has_bf16_units()


@functools.cache
def _cpu_has_bf16_units() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit(
    model: torch.nn.Module,
    images: torch.Tensor,
    config: TrainConfig,
    *,
    device: torch.device | str = "auto",
    evaluate: Callable[[torch.nn.Module, int], dict] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` on ``images`` (N, C, H, W); return one history dict per epoch.

    The model must already be seeded and built; shuffling uses its own generator seeded from
    ``config.seed``, so the same seed gives the same history on the same device.
    """
    from tqdm.auto import tqdm

    device = pick_device(device) if isinstance(device, str) else device
    model.to(device)
    data = images.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
        data = data.contiguous(memory_format=torch.channels_last)
    n = data.shape[0]
    batches = n // config.batch_size  # drop the ragged last batch: batch statistics need full batches
    if batches < 1:
        raise ValueError(f"batch_size {config.batch_size} exceeds the number of training images {n}")
    shuffle = torch.Generator().manual_seed(config.seed)
    bf16 = config.bf16 and bf16_pays(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    groups = model.param_groups() if hasattr(model, "param_groups") else [{"params": list(model.parameters())}]

    def make_optimizer(epoch: int):
        # Fresh copies: an optimiser writes its defaults into the group dicts it is given.
        return torch.optim.Adam([dict(g) for g in groups], lr=config.lr * lr_factor(config.schedule, epoch))

    optimizer = make_optimizer(0)
    history: list[dict] = []
    bar = tqdm(range(config.epochs), desc=type(model).__name__, disable=not progress)
    for epoch in bar:
        lr = config.lr * lr_factor(config.schedule, epoch)
        if config.reset_adam and epoch > 0 and lr != history[-1]["lr"]:
            optimizer = make_optimizer(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        start = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        order = torch.randperm(n, generator=shuffle).to(device)
        for b in range(batches):
            x = data[order[b * config.batch_size : (b + 1) * config.batch_size]]
            with autocast:
                terms = model.loss(x)
            objective = terms["objective"]
            if not torch.isfinite(objective):
                raise NonFiniteLossError(
                    f"objective became {objective.item()} at epoch {epoch + 1}, batch {b + 1} of "
                    f"{batches} (lr {lr:.3g}); try a smaller lr or a larger jitter"
                )
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float()
        record = {"epoch": epoch + 1, "lr": lr, "bf16": bf16}
        record.update({k: (v / batches).item() for k, v in sums.items()})
        record["seconds"] = time.perf_counter() - start
        if evaluate is not None:
            model.eval()
            with torch.no_grad():
                record.update(evaluate(model, epoch + 1))
        history.append(record)
        bar.set_postfix(objective=f"{record['objective']:.2f}")
    model.eval()
    return history
