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


def pays(config: dict, device: torch.device) -> bool:
    """Whether batching pays: on a GPU, for the small dense nets, which leave it idle when trained
    one run at a time; not for a conv-net step, which fills it alone (and keeps its channels-last
    layout and bf16 autocast only when trained alone); and not on a CPU, where one dense-net run
    already keeps the cores busy (measured on a 2-core CPU, ``benchmarks/grid_throughput.py``:
    batched 0.82–0.89 times the run-epochs per second of sequential training)."""
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


@dataclasses.dataclass
class _Run:
    """One run's own state inside a batch."""

    model: nn.Module  # a lone model, kept in step with the stack for evaluation and checkpoints
    shuffle: torch.Generator
    cpu: torch.Generator  # the global CPU generator as the lone run would have it
    device: torch.Generator  # its device generator (the CPU one on a CPU)
    history: list[dict]

    def rng(self, dev: torch.device) -> dict:
        state = {"cpu": self.cpu.get_state()}
        if dev.type == "cuda":
            state["cuda"] = self.device.get_state()
        return state

    @contextmanager
    def as_global(self, dev: torch.device):
        """Within the block, torch's global generators are this run's."""
        saved = train.rng_state(dev)
        train.set_rng_state(self.rng(dev), dev)
        try:
            yield
        finally:
            self.cpu.set_state(torch.get_rng_state())
            if dev.type == "cuda":
                self.device.set_state(torch.cuda.get_rng_state(dev))
            train.set_rng_state(saved, dev)


def _generators(state: dict, dev: torch.device) -> tuple[torch.Generator, torch.Generator]:
    cpu = torch.Generator()
    cpu.set_state(state["cpu"])
    if dev.type != "cuda":
        return cpu, cpu
    gpu = torch.Generator(device=dev)
    gpu.set_state(state["cuda"])
    return cpu, gpu


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
    from torch.func import functional_call, vmap
    from tqdm.auto import tqdm

    dev = train.pick_device(device) if isinstance(device, str) else device
    n_runs = len(models)
    if not (n_runs == len(configs) == len(rng_states)) or n_runs < 1:
        raise ValueError("models, configs and rng_states must be lists of the same, non-zero length")
    base = dataclasses.replace(configs[0], seed=0)
    if any(dataclasses.replace(c, seed=0) != base for c in configs):
        raise ValueError("runs trained together must share every training setting but the seed")
    config = configs[0]
    checkpoints = list(checkpoints) if checkpoints is not None else [None] * n_runs
    data = images.to(dev)
    n = data.shape[0]
    size = config.batch_size
    batches = n // size
    if batches < 1:
        raise ValueError(f"batch_size {size} exceeds the number of training images {n}")
    autocast, bf16 = train.autocast_for(config, dev)

    # Per-run state, resumed where a checkpoint exists.
    state: list[_Run] = []
    resumes = [train.load_checkpoint(path, c) for path, c in zip(checkpoints, configs)]
    if len({len(r["history"]) if r else 0 for r in resumes}) > 1:
        raise ValueError("runs resumed together must have completed the same number of epochs")
    for model, c, rng, resume in zip(models, configs, rng_states, resumes):
        model.to(dev)
        shuffle = torch.Generator().manual_seed(c.seed)
        if resume is not None:
            model.load_state_dict(resume["model"])
            shuffle.set_state(resume["shuffle"])
            rng = resume["rng"]
        cpu, gpu = _generators(rng, dev)
        state.append(_Run(model, shuffle, cpu, gpu, list(resume["history"]) if resume else []))
    done = len(state[0].history)

    # The stack: one leaf tensor per parameter and buffer, run axis first.
    template = copy.deepcopy(models[0]).to(dev).train()
    wrapper = _LossOf(template)
    names = [name for name, _ in models[0].named_parameters()]
    buffer_names = [name for name, _ in models[0].named_buffers()]
    members = [(dict(m.named_parameters()), dict(m.named_buffers())) for m in models]
    params = {f"model.{k}": torch.stack([p[k].detach() for p, _ in members]).requires_grad_() for k in names}
    buffers = {f"model.{k}": torch.stack([b[k].detach() for _, b in members]).clone() for k in buffer_names}
    first_param = next(iter(params.values()))
    lams = torch.tensor([float(getattr(m, "lam", 0.0)) for m in models], dtype=first_param.dtype, device=dev)
    index = {id(p): f"model.{k}" for k, p in models[0].named_parameters()}
    groups = models[0].param_groups() if hasattr(models[0], "param_groups") else [{"params": list(models[0].parameters())}]
    stacked_groups = [{**g, "params": [params[index[id(p)]] for p in g["params"]]} for g in groups]
    make_optimizer = train.optimizer_factory(stacked_groups, config)
    optimizer = make_optimizer(0)
    if done:
        optimizer.load_state_dict(_stack_optimizer([r["optimizer"] for r in resumes]))

    def one_run(p, b, lam, x, draws):
        own = getattr(template, "lam", 0.0)
        template.lam = lam  # this run's λ, a tensor inside the vectorised call
        try:
            with bounds.noise_source(_replay(list(draws))):
                return functional_call(wrapper, (p, b), (x,), strict=True, tie_weights=False)
        finally:
            template.lam = own

    step_fn = vmap(one_run, randomness="error")

    x0 = data[:size]
    specs = _probe(models[0], x0, autocast)

    def draw_noise(generators: list[torch.Generator]) -> list[torch.Tensor]:
        return [torch.stack([torch.randn(shape, generator=g, device=dev, dtype=dtype) for g in generators])
                for shape, dtype in specs]

    def sync_models() -> None:
        with torch.no_grad():
            for i, run in enumerate(state):
                own_p, own_b = members[i]
                for k in names:
                    own_p[k].copy_(params[f"model.{k}"][i])
                for k in buffer_names:
                    own_b[k].copy_(buffers[f"model.{k}"][i])

    _trial(step_fn, params, buffers, lams, x0, draw_noise, state, autocast, bf16, dev)

    save_now = train.Every(checkpoint_seconds)
    bar = tqdm(range(done, config.epochs), desc=f"{type(models[0]).__name__} × {n_runs}", disable=not progress)
    history_lr = state[0].history[-1]["lr"] if done else None
    for epoch in bar:
        lr = train.learning_rate(config, epoch)
        if config.reset_adam and epoch > 0 and lr != history_lr:
            optimizer = make_optimizer(epoch)
        for group_ in optimizer.param_groups:
            group_["lr"] = lr
        start = time.perf_counter()
        orders = torch.stack([torch.randperm(n, generator=run.shuffle) for run in state]).to(dev)
        sums: dict[str, torch.Tensor] = {}
        guard = train.NanGuard((n_runs,), dev)
        generators = [run.device for run in state]
        try:
            with _quiet_vmap_fallbacks():
                for b in range(batches):
                    x = data[orders[:, b * size : (b + 1) * size]]
                    draws = draw_noise(generators)
                    with autocast:
                        terms = step_fn(params, buffers, lams, x, draws)
                    objective = terms["objective"]
                    guard.update(objective, b)
                    optimizer.zero_grad(set_to_none=True)
                    objective.sum().backward()
                    optimizer.step()
                    for key, value in terms.items():
                        sums[key] = sums.get(key, 0.0) + train.at_least_float32(value)
        except Exception as error:
            failures = guard.failures()
            if failures:
                raise _non_finite(failures, epoch, batches, lr, models) from error
            raise
        failures = guard.failures()
        if failures:
            raise _non_finite(failures, epoch, batches, lr, models)
        seconds = time.perf_counter() - start
        means = {k: (v / batches).tolist() for k, v in sums.items()}
        sync_models()
        for i, run in enumerate(state):
            record = {"epoch": epoch + 1, "lr": lr, "bf16": bf16}
            record.update({k: v[i] for k, v in means.items()})
            record["seconds"] = seconds
            if evaluate is not None:
                run.model.eval()
                with torch.no_grad(), run.as_global(dev):
                    record.update(evaluate(run.model, epoch + 1))
            run.history.append(record)
        history_lr = lr
        bar.set_postfix(objective=f"{sum(means['objective']) / n_runs:.2f}")
        if any(p is not None for p in checkpoints) and save_now(epoch + 1 == config.epochs):
            opt_state = optimizer.state_dict()
            for i, (run, path) in enumerate(zip(state, checkpoints)):
                if path is not None:
                    train.save_checkpoint(path, train.epoch_checkpoint(
                        configs[i], epoch + 1, run.history, run.model.state_dict(), _slice_optimizer(opt_state, i),
                        run.shuffle.get_state(), run.rng(dev),
                    ))
    sync_models()
    for i, run in enumerate(state):
        run.model.eval()
        rng_states[i] = run.rng(dev)
    return [run.history for run in state]


def _trial(step_fn, params, buffers, lams, x0, draw_noise, state: list[_Run], autocast, bf16: bool, dev) -> None:
    """One vectorised forward pass on clones, against each run's own loss with the same noise:
    raise :class:`BatchingUnsupported` if it fails or disagrees. Nothing is trained or drawn."""
    draws = draw_noise([_generators(run.rng(dev), dev)[1] for run in state])
    x = x0.expand(len(state), *x0.shape)
    try:
        with torch.no_grad(), autocast, _quiet_vmap_fallbacks():
            batched = step_fn({k: v.detach().clone() for k, v in params.items()},
                              {k: v.clone() for k, v in buffers.items()}, lams, x, draws)
            alone = []
            for i, run in enumerate(state):
                lone = copy.deepcopy(run.model).train()
                with bounds.noise_source(_replay([d[i] for d in draws])):
                    alone.append(lone.loss(x0))
    except BatchingUnsupported:
        raise
    except Exception as error:
        raise BatchingUnsupported(f"its loss cannot be vectorised over runs ({type(error).__name__}: {error})") from error
    for key in alone[0]:
        ours = batched[key].float()
        theirs = torch.stack([a[key].detach().float() for a in alone])
        tolerance = 3e-2 if bf16 else 1e-3  # summation order differs; a wrong λ or branch is far off
        if not torch.allclose(ours, theirs, rtol=tolerance, atol=tolerance / 10, equal_nan=True):
            raise BatchingUnsupported(
                f"its loss term {key!r} differs when vectorised over runs ({ours.tolist()} vs {theirs.tolist()} alone)"
            )


def _non_finite(failures, epoch, batches, lr, models) -> train.NonFiniteLossError:
    i, batch, value = failures[0]
    error = train.non_finite(value, epoch, batch, batches, lr, who=f"run {i + 1} of {len(models)} in the batch: ")
    error.runs = [f[0] for f in failures]
    return error


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
            batch = pays(todo[0][0], dev) if batch is None else batch
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
