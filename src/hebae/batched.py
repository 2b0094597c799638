"""Many runs of one architecture trained as one stacked model.

The runs of a grid that differ only in their seed and λ share every shape: their weights are
stacked along a leading run axis and one vectorised step (``torch.func.vmap`` over
``functional_call`` of the model's own ``loss``) trains them all. Each run keeps what makes it
itself: its initialisation (built exactly as a lone run builds it), its data order (its own
shuffling generator), its λ (a per-run tensor in place of ``model.lam`` during the step) and
its noise. One Adam over the stacked tensors is exactly one Adam per run, because Adam acts
elementwise.

**Noise.** A model draws its noise through :func:`hebae.bounds.standard_normal`. A lone run
draws it from torch's global generator; here every run has its own generator, started from the
global state a lone run would have started training with, and before each step the loop draws
every run's noise from it, in the order and shapes the model asks for (learnt from one probe
call), and hands it to the vectorised step. So a batched run consumes the very numbers a lone
run would; the per-epoch evaluation runs with the global generator set to the run's own. The
equivalence is tested to float64 precision (``tests/test_batched.py``).

**Adversarial models train alone.** A model with an adversary (:func:`hebae.train.is_adversarial`)
takes two optimiser steps per batch; the stack does not implement the second, so :func:`pays`
never batches such a model, :func:`run_group` trains its runs one by one, and
:class:`StackedEngine` refuses it (:class:`BatchingUnsupported`). On a GPU this costs the
speed-up of stacking, not correctness; a stacked adversary step can come when it is measured to pay.

**When it cannot batch.** A loss that reads a tensor's value on the host (``.item()``, ``if``
on a tensor), draws noise past :func:`hebae.bounds.standard_normal`, or otherwise gives other
numbers under ``vmap`` is detected by a trial step, before any training, that compares the
vectorised loss with each run's own: such runs are then trained one by one, with a warning
(:class:`BatchingFallback`), never silently wrong.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import bounds, runs, train

# Config entries that may differ between runs trained together; everything else must agree.
PER_RUN = ("seed", "lam")


class BatchingUnsupported(RuntimeError):
    """The model's loss cannot be vectorised over runs (the message says why)."""


class BatchingFallback(UserWarning):
    """Runs that were to train batched are trained one by one instead."""


def group_key(config: dict) -> str:
    """Runs whose configs agree on everything but their seed and λ train as one batch."""
    return runs.canonical({k: v for k, v in config.items() if k not in PER_RUN})


def group(configs: list[dict]) -> list[list[dict]]:
    """``configs`` split into batchable groups, in order of first appearance (each config once)."""
    out: dict[str, list[dict]] = {}
    for config in configs:
        members = out.setdefault(group_key(config), [])
        if config not in members:
            members.append(config)
    return list(out.values())


def pays(config: dict, device: torch.device, build=None) -> bool:
    """Whether batching pays: on a GPU, for the small dense nets, which leave it idle when trained
    one run at a time; not for a conv-net step, which fills it alone (and keeps its channels-last
    layout and bf16 autocast only when trained alone); and not on a CPU, where one dense-net run
    already keeps the cores busy (measured on a 2-core CPU, ``benchmarks/grid_throughput.py``:
    batched 0.82–0.89 times the run-epochs per second of sequential training). Never for a
    ``build`` (the model's page class) that trains an adversary: the stack cannot."""
    if build is not None and train.is_adversarial(build):
        return False
    return device.type == "cuda" and config.get("dataset") != "celeba"


# ------------------------------------------------------------------------------ the stacked step


class _LossOf(nn.Module):
    """``forward`` is the wrapped model's ``loss``, so ``functional_call`` can call it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.loss(x)


def _replay(draws: list[torch.Tensor]):
    """A noise source handing out ``draws`` in order, checking that each is what is asked for."""
    queue = iter(enumerate(draws))

    def source(shape, *, device=None, dtype=None):
        try:
            i, eps = next(queue)
        except StopIteration:
            raise BatchingUnsupported(f"the loss drew more noise than its probe call ({len(draws)} draws)") from None
        if tuple(eps.shape) != tuple(shape) or (dtype is not None and eps.dtype != dtype):
            raise BatchingUnsupported(
                f"noise draw {i + 1} asked for {tuple(shape)} {dtype}, but the probe call drew {tuple(eps.shape)} {eps.dtype}"
            )
        return eps

    return source


def _probe(model: nn.Module, x: torch.Tensor, autocast) -> list[tuple[tuple, torch.dtype]]:
    """The (shape, dtype) of every noise draw one call of ``model.loss`` makes."""
    specs = []

    def record(shape, *, device=None, dtype=None):
        dtype = dtype or torch.get_default_dtype()
        specs.append((tuple(shape), dtype))
        return torch.zeros(shape, device=device, dtype=dtype)

    trial = copy.deepcopy(model).train()
    with torch.no_grad(), autocast, bounds.noise_source(record):
        trial.loss(x)
    return specs


@contextmanager
def _quiet_vmap_fallbacks():
    # An op without a batching rule (HEBAE's in-place running average) runs as a loop over the
    # runs: correct, a little slower; the warning would repeat at every step.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented the batching rule")
        yield


def _generators(state: dict, dev: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """A run's own CPU generator and device generator (the CPU one on a CPU), set to ``state``."""
    cpu = torch.Generator()
    cpu.set_state(state["cpu"])
    if dev.type != "cuda":
        return cpu, cpu
    gpu = torch.Generator(device=dev)
    gpu.set_state(state["cuda"])
    return cpu, gpu


class StackedEngine:
    """Many runs of one architecture as one stacked model: the engine :func:`hebae.train.train_runs`
    drives for a batch. One leaf tensor per parameter and buffer with the run axis first, one
    vectorised loss, one Adam; every run keeps its own generators, λ and lone model (kept in step
    for evaluation and checkpoints)."""

    adversarial = False  # the loop's second step: not implemented for a stack (see the module docstring)

    def __init__(self, models: list[nn.Module], configs: list[train.TrainConfig], rng_states: list[dict],
                 resumes: list[dict | None], dev: torch.device):
        from torch.func import functional_call, vmap

        if any(train.adversary_of(m) is not None for m in models):
            raise BatchingUnsupported(f"{type(models[0]).__name__} trains an adversary, which a stack of runs does not; "
                                      "its runs train one by one")
        self.device, self.models, config = dev, models, configs[0]
        self._batch_size = config.batch_size
        self.autocast, self.bf16 = train.autocast_for(config, dev)
        self.cpu, self.generators = [], []
        for model, rng, resume in zip(models, rng_states, resumes):
            model.to(dev)
            if resume is not None:
                model.load_state_dict(resume["model"])
                rng = resume["rng"]
            cpu, gpu = _generators(rng, dev)
            self.cpu.append(cpu)
            self.generators.append(gpu)

        template = copy.deepcopy(models[0]).to(dev).train()
        wrapper = _LossOf(template)
        self._names = [name for name, _ in models[0].named_parameters()]
        self._buffer_names = [name for name, _ in models[0].named_buffers()]
        self._members = [(dict(m.named_parameters()), dict(m.named_buffers())) for m in models]
        self.params = {f"model.{k}": torch.stack([p[k].detach() for p, _ in self._members]).requires_grad_() for k in self._names}
        self.buffers = {f"model.{k}": torch.stack([b[k].detach() for _, b in self._members]).clone() for k in self._buffer_names}
        first = next(iter(self.params.values()))
        self.lams = torch.tensor([float(getattr(m, "lam", 0.0)) for m in models], dtype=first.dtype, device=dev)
        index = {id(p): f"model.{k}" for k, p in models[0].named_parameters()}
        groups = models[0].param_groups() if hasattr(models[0], "param_groups") else [{"params": list(models[0].parameters())}]
        stacked_groups = [{**g, "params": [self.params[index[id(p)]] for p in g["params"]]} for g in groups]
        self._make = train.optimizer_factory(stacked_groups, config)
        self.optimizer = self._make(0)
        if resumes[0] is not None:
            self.optimizer.load_state_dict(_stack_optimizer([r["optimizer"] for r in resumes]))

        def one_run(p, b, lam, x, draws):
            own = getattr(template, "lam", 0.0)
            template.lam = lam  # this run's λ, a tensor inside the vectorised call
            try:
                with bounds.noise_source(_replay(list(draws))):
                    return functional_call(wrapper, (p, b), (x,), strict=True, tie_weights=False)
            finally:
                template.lam = own

        self._step = vmap(one_run, randomness="error")
        self._specs: list | None = None

    def place(self, images: torch.Tensor) -> torch.Tensor:
        data = images.to(self.device)
        x0 = data[: self._batch_size]
        self._specs = _probe(self.models[0], x0, self.autocast)
        _trial(self, x0)
        return data

    def draw_noise(self, generators: list[torch.Generator]) -> list[torch.Tensor]:
        """Every run's noise for one step, from its own generator, in the shapes the loss asks for."""
        return [torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=dtype) for g in generators])
                for shape, dtype in self._specs]

    def new_optimizer(self, epoch: int) -> None:
        self.optimizer = self._make(epoch)

    def epoch(self):
        return _quiet_vmap_fallbacks()

    def loss(self, data: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        draws = self.draw_noise(self.generators)
        with self.autocast:
            return self._step(self.params, self.buffers, self.lams, data[index], draws)

    def update(self, objective: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        objective.sum().backward()
        self.optimizer.step()

    def sync(self) -> None:
        """Copy the stack into every run's lone model."""
        with torch.no_grad():
            for i, (own_p, own_b) in enumerate(self._members):
                for k in self._names:
                    own_p[k].copy_(self.params[f"model.{k}"][i])
                for k in self._buffer_names:
                    own_b[k].copy_(self.buffers[f"model.{k}"][i])

    def rng(self, i: int) -> dict:
        state = {"cpu": self.cpu[i].get_state()}
        if self.device.type == "cuda":
            state["cuda"] = self.generators[i].get_state()
        return state

    @contextmanager
    def evaluating(self, i: int):
        """Within the block, torch's global generators are run i's, as they would be alone."""
        saved = train.rng_state(self.device)
        train.set_rng_state(self.rng(i), self.device)
        try:
            yield
        finally:
            self.cpu[i].set_state(torch.get_rng_state())
            if self.device.type == "cuda":
                self.generators[i].set_state(torch.cuda.get_rng_state(self.device))
            train.set_rng_state(saved, self.device)

    def optimizer_states(self) -> list[dict]:
        state = self.optimizer.state_dict()
        return [_slice_optimizer(state, i) for i in range(len(self.models))]

    def finish(self) -> None:
        for model in self.models:
            model.eval()


def fit_batched(
    models: list[nn.Module],
    images: torch.Tensor,
    configs: list[train.TrainConfig],
    rng_states: list[dict],
    *,
    device: torch.device | str = "auto",
    evaluate: Callable[[nn.Module, int], dict] | None = None,
    progress: bool = True,
    checkpoints: list[Path] | None = None,
    checkpoint_seconds: float = 0.0,
) -> list[list[dict]]:
    """Train ``models`` (built as lone runs are) on ``images`` together; one history per run.

    ``configs[i]`` is run i's training config: they may differ only in their seed. Each model's
    λ is its ``lam`` attribute. ``rng_states[i]`` is the global random state (``train.rng_state``)
    run i would start training from alone; on return it holds the state it would end with, and
    each model holds its trained weights. ``checkpoints[i]`` is run i's resume file (the same
    format as :func:`hebae.train.fit`'s: either can resume the other's). Raises
    :class:`BatchingUnsupported` before training when the loss cannot be vectorised.
    """
    dev = train.pick_device(device) if isinstance(device, str) else device
    n_runs = len(models)
    if not (n_runs == len(configs) == len(rng_states)) or n_runs < 1:
        raise ValueError("models, configs and rng_states must be lists of the same, non-zero length")
    base = dataclasses.replace(configs[0], seed=0)
    if any(dataclasses.replace(c, seed=0) != base for c in configs):
        raise ValueError("runs trained together must share every training setting but the seed")
    train.batches_of(images.shape[0], configs[0].batch_size)
    checkpoints = list(checkpoints) if checkpoints is not None else [None] * n_runs
    resumes = train.resumes_for(checkpoints, configs)
    engine = StackedEngine(models, configs, rng_states, resumes, dev)
    histories = train.train_runs(engine, images, configs, resumes, evaluate=evaluate, progress=progress,
                                 checkpoints=checkpoints, checkpoint_seconds=checkpoint_seconds,
                                 desc=f"{type(models[0]).__name__} × {n_runs}")
    for i in range(n_runs):
        rng_states[i] = engine.rng(i)
    return histories


def _trial(engine: StackedEngine, x0: torch.Tensor) -> None:
    """One vectorised forward pass on clones, against each run's own loss with the same noise:
    raise :class:`BatchingUnsupported` if it fails or disagrees. Nothing is trained or drawn."""
    dev = engine.device
    draws = engine.draw_noise([_generators(engine.rng(i), dev)[1] for i in range(len(engine.models))])
    x = x0.expand(len(engine.models), *x0.shape)
    try:
        with torch.no_grad(), engine.autocast, _quiet_vmap_fallbacks():
            batched = engine._step({k: v.detach().clone() for k, v in engine.params.items()},
                                   {k: v.clone() for k, v in engine.buffers.items()}, engine.lams, x, draws)
            alone = []
            for i, model in enumerate(engine.models):
                lone = copy.deepcopy(model).train()
                with bounds.noise_source(_replay([d[i] for d in draws])):
                    alone.append(lone.loss(x0))
    except BatchingUnsupported:
        raise
    except Exception as error:
        raise BatchingUnsupported(f"its loss cannot be vectorised over runs ({type(error).__name__}: {error})") from error
    for key in alone[0]:
        ours = batched[key].float()
        theirs = torch.stack([a[key].detach().float() for a in alone])
        tolerance = 3e-2 if engine.bf16 else 1e-3  # summation order differs; a wrong λ or branch is far off
        if not torch.allclose(ours, theirs, rtol=tolerance, atol=tolerance / 10, equal_nan=True):
            raise BatchingUnsupported(
                f"its loss term {key!r} differs when vectorised over runs ({ours.tolist()} vs {theirs.tolist()} alone)"
            )


def _slice_optimizer(state: dict, i: int) -> dict:
    """Run i's part of the stacked Adam's state dict: a lone run's state dict."""
    return {
        "state": {k: {name: (v[i].clone() if torch.is_tensor(v) and v.dim() > 0 else v) for name, v in s.items()}
                  for k, s in state["state"].items()},
        "param_groups": copy.deepcopy(state["param_groups"]),
    }


def _stack_optimizer(states: list[dict]) -> dict:
    first = states[0]
    return {
        "state": {k: {name: (torch.stack([st["state"][k][name] for st in states]) if torch.is_tensor(v) and v.dim() > 0 else v)
                      for name, v in s.items()}
                  for k, s in first["state"].items()},
        "param_groups": copy.deepcopy(first["param_groups"]),
    }


# --------------------------------------------------------------------------- from configs to runs


def run_group(
    configs: list[dict],
    build,
    *,
    device: str = "auto",
    progress: bool = True,
    root: Path | None = None,
    checkpoint_seconds: float = 0.0,
    batch: bool | None = None,
) -> list[runs.Run]:
    """Load, or train together and store, the runs of ``configs`` (one group: see :func:`group`).

    ``build`` is the model's page class. Each run is stored exactly as :func:`hebae.experiment.run`
    stores it, under its own config's id, with ``batch`` (size, index) in its provenance.
    ``batch`` None batches where it pays (:func:`pays`); False trains the runs one by one. A run
    whose training fails does not stop the others: the failures are raised together at the end.
    """
    from . import experiment

    if len({group_key(c) for c in configs}) > 1:
        raise ValueError("run_group takes the configs of one group (hebae.batched.group)")
    for config in configs:
        if config.get("model") != getattr(build, "name", None):
            raise ValueError(f"config is for model {config.get('model')!r} but build is {getattr(build, 'name', build)!r}")
    root = root or runs.results_root()
    dev = train.pick_device(device)
    failures: list[tuple[dict, BaseException]] = []
    with ExitStack() as stack:
        claims = [stack.enter_context(runs.claim(c, root)) for c in configs]
        todo = [(c, w) for c, w in zip(configs, claims) if w is not None]
        if todo:
            batch = pays(todo[0][0], dev, build) if batch is None else batch
            batch = batch and not train.is_adversarial(build)  # asked for or not: a stack cannot
            parts: dict[int, list] = {}
            for c, w in todo:
                resume = train.load_checkpoint(w.resume_file, experiment.train_config(c))
                parts.setdefault(len(resume["history"]) if resume else 0, []).append((c, w))
            for resumed, part in parts.items():
                if batch and len(part) > 1:
                    failures += _train_batched(part, build, dev, progress, checkpoint_seconds, resumed)
                else:
                    failures += _train_alone(part, build, dev, progress, checkpoint_seconds)
    if failures:
        lines = "; ".join(f"{runs.run_id(c)}: {type(e).__name__}: {e}" for c, e in failures)
        raise RuntimeError(f"{len(failures)} of {len(configs)} runs failed: {lines}") from failures[0][1]
    return [runs.Run(root / runs.run_id(c)) for c in configs]


def _train_alone(part, build, dev, progress, checkpoint_seconds) -> list:
    from . import experiment

    failures = []
    for config, work in part:
        # Every run of the group was claimed at once; each one's clock starts when it does, so its
        # provenance holds its own time, not the time it waited for the runs before it.
        work.restart_clock()
        try:
            artifacts = experiment.train_one(config, build, dev, work.workdir, progress=progress, checkpoint_seconds=checkpoint_seconds)
            work.store(artifacts, batch={"size": 1, "index": 0})
        except Exception as error:
            runs.discard(work)
            failures.append((config, error))
    return failures


def _train_batched(part, build, dev, progress, checkpoint_seconds, resumed: int) -> list:
    from . import experiment

    configs = [c for c, _ in part]
    train_split, test_split = experiment.load_data(configs[0])
    models, rng_states = [], []
    for config in configs:
        models.append(experiment.build_model(config, build, train_split.shape))
        rng_states.append(train.rng_state(dev))
    start = time.perf_counter()
    try:
        histories = fit_batched(
            models, train_split.images, [experiment.train_config(c) for c in configs], rng_states, device=dev,
            evaluate=experiment.evaluator(test_split.images), progress=progress,
            checkpoints=[w.resume_file for _, w in part], checkpoint_seconds=checkpoint_seconds,
        )
    except BatchingUnsupported as why:
        warnings.warn(f"{build.name}: {why}; training its {len(part)} runs one by one", BatchingFallback, stacklevel=2)
        return _train_alone(part, build, dev, progress, checkpoint_seconds)
    except train.NonFiniteLossError as why:
        # Go on alone from the last checkpoint: the healthy runs finish, the failing one fails alone.
        warnings.warn(f"{build.name}: {why}; finishing these {len(part)} runs one by one", BatchingFallback, stacklevel=2)
        return _train_alone(part, build, dev, progress, checkpoint_seconds)
    trained = time.perf_counter() - start
    failures = []
    for i, ((config, work), model, history) in enumerate(zip(part, models, histories)):
        try:
            train.set_rng_state(rng_states[i], dev)  # where a lone run would stand after training
            artifacts = experiment.finish(model, config, history, dev, work.workdir, progress=progress)
            extra = {"resumed_from_epoch": resumed} if resumed else {}
            work.store(artifacts, batch={"size": len(part), "index": i, "training_seconds": round(trained, 3)}, **extra)
        except Exception as error:
            runs.discard(work)
            failures.append((config, error))
    return failures
