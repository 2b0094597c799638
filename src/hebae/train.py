"""One seeded, device-agnostic training loop with the paper's learning-rate schedules.

A model is any ``nn.Module`` with a method ``loss(x) -> dict[str, Tensor]`` whose ``"objective"``
entry is the scalar to minimise; the other entries (reconstruction, regulariser, ...) are
averaged per epoch into the history. A model may define ``param_groups()`` (the optimiser's
parameter groups, e.g. weight decay on the decoder only); otherwise all its parameters train alike.
The loop knows nothing of storage or metrics: an optional ``evaluate(model, epoch)`` callback adds
per-epoch numbers such as a test ELBO.

**Adversarial models.** A model with an ``adversary`` submodule and an ``adversary_loss(x)``
method (the contract is in :mod:`hebae.autoencoder`) trains with a second Adam over the
adversary's parameters only. Per batch the loop first takes one step of it on
``adversary_loss(x)["objective"]``, then the main step on ``loss(x)``, on the same batch; each
backward pass accumulates gradients into its own optimiser's parameters only. The history
records the adversary's terms as ``adv_<term>`` (epoch means), the learning-rate schedule scales
both optimisers, and the checkpoint holds both. A non-finite adversary objective stops the run
through the NaN guard; so does a *collapsed* adversary (:class:`AdversaryCollapseError`) when the
model sets ``adversary_collapse``.

Given a ``checkpoint`` path, :func:`fit` saves the weights, the optimiser, the shuffling
generator and the global random state there after every epoch (atomically), and a later call
with the same model, data and config resumes from it: the history it ends with is the one an
uninterrupted run would have had. Nothing inside an epoch waits for the device: the loss terms
accumulate on it and the NaN guard reads them once per epoch. :mod:`hebae.batched` trains many
runs of one architecture as one stacked model with the same semantics.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import random
import time
import warnings
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


class AdversaryCollapseError(FloatingPointError):
    """The adversary's objective stayed below the model's ``adversary_collapse`` on every batch of
    an epoch: the discriminator tells every code from a prior draw, so the encoder no longer fools
    it and its gradient says only "move away from here". The message names the epoch."""


def adversary_of(model) -> torch.nn.Module | None:
    """The model's adversary, or None for a model without one. A model must define both
    ``adversary`` (an ``nn.Module``) and ``adversary_loss`` or neither (``ValueError`` otherwise)."""
    adversary = getattr(model, "adversary", None)
    has_loss = callable(getattr(model, "adversary_loss", None))
    if adversary is None and not has_loss:
        return None
    if not isinstance(adversary, torch.nn.Module) or not has_loss:
        raise ValueError(
            f"{type(model).__name__}: an adversarial model needs both self.adversary (an nn.Module built in __init__) "
            f"and adversary_loss(x); got adversary={type(adversary).__name__}, adversary_loss {'defined' if has_loss else 'missing'}"
        )
    return adversary


def is_adversarial(model_or_class) -> bool:
    """Whether a model, or a model class, trains an adversary (defines ``adversary_loss``)."""
    return callable(getattr(model_or_class, "adversary_loss", None))


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


def lr_factor(schedule: str, epoch: int, epochs: int = 100) -> float:
    """Learning-rate multiplier at 0-based ``epoch`` of a run of ``epochs`` epochs.

    ``mnist``: ×0.995 every epoch. ``celeba`` (WAE paper): halved after 30 % of the epochs, then a
    further ÷5 after 50 % and ÷10 after 70 %, each step compounding on the last: at the paper's
    100 epochs the steps fall at epochs 30, 50 and 70, as in the official code; a shorter run
    takes the same schedule compressed, so that it still ends at a hundredth of the rate.
    """
    if schedule == "mnist":
        return 0.995**epoch
    if schedule == "celeba":
        factor = 1.0
        for tenths, divisor in ((3, 2), (5, 5), (7, 10)):  # integer tenths: no rounding at the boundary
            if 10 * epoch >= tenths * epochs:
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


def use_tf32(device: torch.device) -> bool:
    """Set, and return, whether float32 matrix products and convolutions on ``device`` use TF32
    (10-bit mantissas on tensor cores): only on CUDA and only when asked for, with
    ``$HEBAE_TF32=1`` (``make paper TF32=1``). It is what the official TensorFlow code gets by
    default on recent GPUs; float32 stays our default. Every history record says which was used."""
    value = os.environ.get("HEBAE_TF32", "0").strip()
    if value not in {"0", "1", ""}:
        raise ValueError(f"HEBAE_TF32 must be '0' or '1'; got {value!r}")
    on = device.type == "cuda" and value == "1"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    return on


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    """The global random state a run draws from: the CPU generator's, and the GPU's on cuda."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def learning_rate(config: TrainConfig, epoch: int) -> float:
    return config.lr * lr_factor(config.schedule, epoch, config.epochs)


def optimizer_factory(groups: list[dict], config: TrainConfig) -> Callable[[int], torch.optim.Optimizer]:
    """``make(epoch)``: a fresh Adam over ``groups`` at that epoch's learning rate."""

    def make(epoch: int) -> torch.optim.Optimizer:
        # Fresh copies: an optimiser writes its defaults into the group dicts it is given.
        return torch.optim.Adam([dict(g) for g in groups], lr=learning_rate(config, epoch))

    return make


def autocast_for(config: TrainConfig, device: torch.device):
    """The autocast context of the forward pass, and whether it is bf16."""
    bf16 = config.bf16 and bf16_pays(device)
    return (torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()), bf16


def at_least_float32(value: torch.Tensor) -> torch.Tensor:
    """A loss term to accumulate: half precision promoted to float32, float64 kept."""
    value = value.detach()
    return value if value.dtype == torch.float64 else value.float()


class NanGuard:
    """Remembers, on the device, the first batch of an epoch whose objective was not finite, for
    one run (a scalar objective) or many (a vector); :meth:`check` reads it once, at the end."""

    def __init__(self, shape: tuple, device: torch.device):
        self.first = torch.full(shape, -1, dtype=torch.long, device=device)
        self.value = torch.zeros(shape, dtype=torch.float32, device=device)

    def update(self, objective: torch.Tensor, batch: int) -> None:
        objective = objective.detach().float()
        new = ~torch.isfinite(objective) & (self.first < 0)
        self.first = torch.where(new, batch, self.first)
        self.value = torch.where(new, objective, self.value)

    def failures(self) -> list[tuple[int, int, float]]:
        """``(run index, 0-based batch, value)`` of every run whose objective went bad."""
        first, value = self.first.reshape(-1).tolist(), self.value.reshape(-1).tolist()
        return [(i, b, v) for i, (b, v) in enumerate(zip(first, value)) if b >= 0]


def non_finite(value: float, epoch: int, batch: int, batches: int, lr: float, who: str = "", what: str = "objective") -> NonFiniteLossError:
    return NonFiniteLossError(
        f"{who}{what} became {value} at epoch {epoch + 1}, batch {batch + 1} of {batches} "
        f"(lr {lr:.3g}); try a smaller lr or a larger jitter"
    )


# ----------------------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".writing")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path | None, config: TrainConfig) -> dict | None:
    """The resume state at ``path``, or None when there is none or it was made under another
    training config (then it is ignored, with a warning). Loaded with ``weights_only``: no code
    is unpickled."""
    if path is None or not Path(path).exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT or state.get("train_config") != dataclasses.asdict(config):
        warnings.warn(f"ignoring the resume checkpoint {path}: it was made under another training config")
        return None
    return state


def epoch_checkpoint(config: TrainConfig, epoch: int, history: list[dict], model_state: dict, optimizer_state: dict,
                     shuffle_state: torch.Tensor, rng: dict, adversary_optimizer_state: dict | None = None) -> dict:
    """What a run needs to go on after ``epoch`` (1-based, complete) as if never stopped."""
    extra = {} if adversary_optimizer_state is None else {"adversary_optimizer": adversary_optimizer_state}
    return {
        **extra,
        "train_config": dataclasses.asdict(config),
        "epoch": epoch,
        "history": history,
        "model": {k: v.detach().cpu().clone() for k, v in model_state.items()},
        "optimizer": optimizer_state,
        "shuffle": shuffle_state,
        "rng": rng,
    }


class Every:
    """True at most once per ``seconds`` (always when ``seconds`` is 0), and at the last epoch."""

    def __init__(self, seconds: float):
        self.seconds, self.last = seconds, time.monotonic()

    def __call__(self, last_epoch: bool) -> bool:
        now = time.monotonic()
        if last_epoch or now - self.last >= self.seconds:
            self.last = now
            return True
        return False


class LoneEngine:
    """One run, its own model and optimiser, drawing noise from torch's global generators: the
    stack of one that :func:`fit` trains. (:class:`hebae.batched.StackedEngine` is the stack of
    many; both follow the same small protocol, which :func:`train_runs` drives.)

    An adversarial model (:func:`adversary_of`) gets a second Adam over its adversary's
    parameters, at ``model.adversary_lr`` (None: the run's lr) with ``model.adversary_betas``;
    the main optimiser must not hold any of them."""

    adversarial = False

    def __init__(self, model: torch.nn.Module, config: TrainConfig, device: torch.device, resume: dict | None):
        self.device, self.config = device, config
        self.models = [model]
        model.to(device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        self.autocast, self.bf16 = autocast_for(config, device)
        adversary = adversary_of(model)
        own = {id(p) for p in adversary.parameters()} if adversary is not None else set()
        if hasattr(model, "param_groups"):
            groups = model.param_groups()
        else:
            groups = [{"params": [p for p in model.parameters() if id(p) not in own]}]
        self._main = [p for g in groups for p in g["params"] if p.requires_grad]
        if own & {id(p) for p in self._main}:
            raise ValueError(f"{type(model).__name__}.param_groups() must leave out the adversary's parameters: "
                             "they are trained by the second optimiser only")
        self._make = optimizer_factory(groups, config)
        self.optimizer = self._make(0)
        if adversary is not None:
            self.adversarial = True
            self._adversary = [p for p in adversary.parameters() if p.requires_grad]
            lr = getattr(model, "adversary_lr", None)
            self.adversary_lr = config.lr if lr is None else float(lr)
            self.adversary_betas = tuple(getattr(model, "adversary_betas", (0.5, 0.999)))
            collapse = getattr(model, "adversary_collapse", None)
            self.adversary_collapse = None if collapse is None else float(collapse)
            if not (self.adversary_lr > 0 and math.isfinite(self.adversary_lr)):
                raise ValueError(f"adversary_lr must be a positive finite number or None; got {lr!r}")
            self.adversary_optimizer = self._make_adversary(0)
        if resume is not None:
            model.load_state_dict(resume["model"])
            self.optimizer.load_state_dict(resume["optimizer"])
            if self.adversarial:
                if "adversary_optimizer" not in resume:
                    raise ValueError("the resume checkpoint holds no adversary optimiser state; it was not made by an adversarial run")
                self.adversary_optimizer.load_state_dict(resume["adversary_optimizer"])
            set_rng_state(resume["rng"], device)

    def _make_adversary(self, epoch: int) -> torch.optim.Optimizer:
        lr = self.adversary_lr * lr_factor(self.config.schedule, epoch, self.config.epochs)
        return torch.optim.Adam(self._adversary, lr=lr, betas=self.adversary_betas)

    def place(self, images: torch.Tensor) -> torch.Tensor:
        data = images.to(self.device)
        return data.contiguous(memory_format=torch.channels_last) if self.config.channels_last else data

    def new_optimizer(self, epoch: int) -> None:
        self.optimizer = self._make(epoch)
        if self.adversarial:
            self.adversary_optimizer = self._make_adversary(epoch)

    def epoch(self):
        self.models[0].train()
        return nullcontext()

    def _terms(self, loss, data: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.autocast:
            terms = loss(data[index[0]])
        return {k: v.reshape(1) for k, v in terms.items()}

    @staticmethod
    def _step(optimizer: torch.optim.Optimizer, objective: torch.Tensor, inputs) -> None:
        optimizer.zero_grad(set_to_none=True)
        objective.sum().backward(inputs=inputs)
        optimizer.step()

    def loss(self, data: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._terms(self.models[0].loss, data, index)

    def update(self, objective: torch.Tensor) -> None:
        # Adversarial: gradients into the main parameters only, so the adversary's stay its own.
        self._step(self.optimizer, objective, self._main if self.adversarial else None)

    def adversary_loss(self, data: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._terms(self.models[0].adversary_loss, data, index)

    def adversary_update(self, objective: torch.Tensor) -> None:
        # Only the adversary's gradients: the encoder's are neither computed nor left behind.
        self._step(self.adversary_optimizer, objective, self._adversary)

    def sync(self) -> None:
        """The lone model is the trained model: nothing to copy."""

    def evaluating(self, i: int):
        return nullcontext()

    def rng(self, i: int) -> dict:
        return rng_state(self.device)

    def optimizer_states(self) -> list[dict]:
        return [self.optimizer.state_dict()]

    def adversary_optimizer_states(self) -> list[dict | None]:
        return [self.adversary_optimizer.state_dict() if self.adversarial else None]

    def finish(self) -> None:
        self.models[0].eval()


def resumes_for(checkpoints: list[Path | None], configs: list[TrainConfig]) -> list[dict | None]:
    """Each run's resume state (None: start afresh); runs resumed together must stand at one epoch."""
    resumes = [load_checkpoint(path, c) for path, c in zip(checkpoints, configs)]
    if len({len(r["history"]) if r else 0 for r in resumes}) > 1:
        raise ValueError("runs resumed together must have completed the same number of epochs")
    return resumes


def batches_of(n: int, batch_size: int) -> int:
    """Full batches per epoch: the ragged last batch is dropped, because batch statistics need full batches."""
    if n // batch_size < 1:
        raise ValueError(f"batch_size {batch_size} exceeds the number of training images {n}")
    return n // batch_size


def train_runs(
    engine,
    images: torch.Tensor,
    configs: list[TrainConfig],
    resumes: list[dict | None],
    *,
    evaluate: Callable[[torch.nn.Module, int], dict] | None = None,
    progress: bool = True,
    checkpoints: list[Path | None] | None = None,
    checkpoint_seconds: float = 0.0,
    desc: str = "",
) -> list[list[dict]]:
    """The training loop, once, for a stack of one run or of many: the learning-rate schedule,
    every run's data order, the NaN guard, the per-epoch history and evaluation, checkpoints and
    resume, the progress bar. ``engine`` holds the models and takes the steps.

    Nothing inside an epoch waits for the device: every run's order for the epoch is drawn on
    the host from its own generator and copied once; the loss terms accumulate on the device and
    the NaN guard is read once, at the end of the epoch.
    """
    from tqdm.auto import tqdm

    config, dev, n_runs = configs[0], engine.device, len(configs)
    tf32 = use_tf32(dev)
    checkpoints = list(checkpoints) if checkpoints is not None else [None] * n_runs
    data = engine.place(images)
    n, size = data.shape[0], config.batch_size
    batches = batches_of(n, size)
    shuffles = [torch.Generator().manual_seed(c.seed) for c in configs]
    for shuffle, resume in zip(shuffles, resumes):
        if resume is not None:
            shuffle.set_state(resume["shuffle"])
    histories = [list(r["history"]) if r else [] for r in resumes]
    done = len(histories[0])
    save_now = Every(checkpoint_seconds)
    last_lr = histories[0][-1]["lr"] if done else None
    adversarial = bool(getattr(engine, "adversarial", False))
    bar = tqdm(range(done, config.epochs), desc=desc, disable=not progress)
    for epoch in bar:
        lr = learning_rate(config, epoch)
        if config.reset_adam and epoch > 0 and lr != last_lr:
            engine.new_optimizer(epoch)
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        if adversarial:
            for group in engine.adversary_optimizer.param_groups:
                group["lr"] = engine.adversary_lr * lr_factor(config.schedule, epoch, config.epochs)
        start = time.perf_counter()
        orders = torch.stack([torch.randperm(n, generator=s) for s in shuffles]).to(dev)
        sums: dict[str, torch.Tensor] = {}
        guard = NanGuard((n_runs,), dev)
        adv_guard = NanGuard((n_runs,), dev)
        # The adversary's largest objective over the epoch, kept on the device: read once, at the end.
        adv_peak = torch.full((n_runs,), -math.inf, device=dev)
        try:
            with engine.epoch():
                for b in range(batches):
                    index = orders[:, b * size : (b + 1) * size]
                    if adversarial:
                        adv = engine.adversary_loss(data, index)
                        adv_guard.update(adv["objective"], b)
                        engine.adversary_update(adv["objective"])
                        adv_peak = torch.maximum(adv_peak, adv["objective"].detach().float())
                        for key, value in adv.items():
                            sums[f"adv_{key}"] = sums.get(f"adv_{key}", 0.0) + at_least_float32(value)
                    terms = engine.loss(data, index)
                    guard.update(terms["objective"], b)
                    engine.update(terms["objective"])
                    for key, value in terms.items():
                        sums[key] = sums.get(key, 0.0) + at_least_float32(value)
        except Exception as error:  # a non-finite objective earlier in the epoch is the cause to name
            diverged = _diverged(guard, adv_guard, epoch, batches, lr, n_runs)
            if diverged is not None:
                raise diverged from error
            raise
        diverged = _diverged(guard, adv_guard, epoch, batches, lr, n_runs)
        if diverged is not None:
            raise diverged
        if adversarial and engine.adversary_collapse is not None:
            _check_collapse(adv_peak.tolist(), engine.adversary_collapse, epoch, lr, n_runs)
        seconds = time.perf_counter() - start
        means = {k: (v / batches).tolist() for k, v in sums.items()}
        engine.sync()
        for i, (model, history) in enumerate(zip(engine.models, histories)):
            record = {"epoch": epoch + 1, "lr": lr, "bf16": engine.bf16, "tf32": tf32}
            record.update({k: v[i] for k, v in means.items()})
            record["seconds"] = seconds
            if evaluate is not None:
                model.eval()
                with torch.no_grad(), engine.evaluating(i):
                    record.update(evaluate(model, epoch + 1))
            history.append(record)
        last_lr = lr
        bar.set_postfix(objective=f"{sum(means['objective']) / n_runs:.2f}")
        if any(p is not None for p in checkpoints) and save_now(epoch + 1 == config.epochs):
            optimizer_states = engine.optimizer_states()
            adversary_states = engine.adversary_optimizer_states() if adversarial else [None] * n_runs
            for i, path in enumerate(checkpoints):
                if path is not None:
                    save_checkpoint(path, epoch_checkpoint(
                        configs[i], epoch + 1, histories[i], engine.models[i].state_dict(), optimizer_states[i],
                        shuffles[i].get_state(), engine.rng(i), adversary_states[i],
                    ))
    engine.sync()
    engine.finish()
    return histories


def _non_finite(failures, epoch: int, batches: int, lr: float, n_runs: int, what: str = "objective") -> NonFiniteLossError:
    i, batch, value = failures[0]
    who = f"run {i + 1} of {n_runs} in the batch: " if n_runs > 1 else ""
    error = non_finite(value, epoch, batch, batches, lr, who=who, what=what)
    error.runs = [f[0] for f in failures]
    return error


def _diverged(guard: NanGuard, adv_guard: NanGuard, epoch: int, batches: int, lr: float, n_runs: int) -> NonFiniteLossError | None:
    """The error naming what went non-finite first: the adversary's objective (its step comes
    first in a batch, so it wins a tie) or the main one; None when both stayed finite."""
    main, adv = guard.failures(), adv_guard.failures()
    if adv and (not main or adv[0][1] <= main[0][1]):
        return _non_finite(adv, epoch, batches, lr, n_runs, what="the adversary's objective")
    return _non_finite(main, epoch, batches, lr, n_runs) if main else None


def _check_collapse(peaks: list[float], threshold: float, epoch: int, lr: float, n_runs: int) -> None:
    collapsed = [i for i, peak in enumerate(peaks) if peak < threshold]
    if collapsed:
        i = collapsed[0]
        who = f"run {i + 1} of {n_runs} in the batch: " if n_runs > 1 else ""
        error = AdversaryCollapseError(
            f"{who}the adversary's objective stayed below {threshold:g} on every batch of epoch {epoch + 1} "
            f"(at most {peaks[i]:.3g}; lr {lr:.3g}): the discriminator tells every code from a prior draw, so the "
            f"encoder no longer fools it and the run has diverged; try a smaller adversary_lr or a larger lam"
        )
        error.runs = collapsed
        raise error


def fit(
    model: torch.nn.Module,
    images: torch.Tensor,
    config: TrainConfig,
    *,
    device: torch.device | str = "auto",
    evaluate: Callable[[torch.nn.Module, int], dict] | None = None,
    progress: bool = True,
    checkpoint: Path | None = None,
    checkpoint_seconds: float = 0.0,
) -> list[dict]:
    """Train ``model`` on ``images`` (N, C, H, W); return one history dict per epoch.

    The model must already be seeded and built; shuffling uses its own generator seeded from
    ``config.seed``, so the same seed gives the same history on the same device. With
    ``checkpoint`` (a file path), the run saves its state there after each epoch (at most once
    per ``checkpoint_seconds``, and after the last) and resumes from it when it exists.
    """
    device = pick_device(device) if isinstance(device, str) else device
    batches_of(images.shape[0], config.batch_size)
    resumes = resumes_for([checkpoint], [config])
    engine = LoneEngine(model, config, device, resumes[0])
    return train_runs(engine, images, [config], resumes, evaluate=evaluate, progress=progress,
                      checkpoints=[checkpoint], checkpoint_seconds=checkpoint_seconds, desc=type(model).__name__)[0]
