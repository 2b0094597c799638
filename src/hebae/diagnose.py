"""Finding where a network first produces a non-finite value, and making such bugs show.

Two tools for a failure that only some processes see (a kernel that reads device memory it
never wrote gives whatever the memory held: zeros in a fresh process, old data after other
work). :func:`poison_device_cache` fills the CUDA caching allocator's free blocks with NaN, so
that such a read gives NaN every time; :func:`watch_non_finite` then names the first module,
in call order, whose output is not finite, and says whether its inputs were. Both are for
diagnosis: the watch reads every module's output on the host.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def all_finite(value) -> bool:
    """Whether every floating-point tensor in ``value`` (a tensor, or a tuple/list/dict of them) is finite."""
    return all(bool(torch.isfinite(t).all()) for t in _tensors(value) if t.is_floating_point())


@dataclass
class Watch:
    """The first non-finite module output seen, as ``(module name, type, inputs finite?)``."""

    first: tuple[str, str, bool] | None = None
    modules: int = 0

    def report(self) -> str:
        if self.first is None:
            return f"every output of {self.modules} modules was finite"
        name, kind, inputs_ok = self.first
        cause = "its inputs were finite, so it made the NaN/inf itself" if inputs_ok else "its inputs were already not finite"
        return f"first non-finite output: {name or '(the model)'} ({kind}); {cause}"


@contextmanager
def watch_non_finite(model: nn.Module):
    """Within the block, every forward call of a submodule of ``model`` is checked; the returned
    :class:`Watch` holds the first whose output was not finite (leaf modules are reported before
    the containers that hold them, because a container's hook runs after its children's)."""
    watch = Watch()

    def hook(name):
        def check(module, inputs, output):
            if watch.first is None and not all_finite(output):
                watch.first = (name, type(module).__name__, all_finite(inputs))

        return check

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()]
    watch.modules = len(handles)
    try:
        yield watch
    finally:
        for handle in handles:
            handle.remove()


def poison_device_cache(device: torch.device | str, *, fraction: float = 0.5, value: float = float("nan")) -> int:
    """Fill ``fraction`` of the free memory of a CUDA ``device`` with ``value`` and hand it back
    to PyTorch's caching allocator (not to the driver), in blocks of the sizes both of its pools
    serve; later allocations reuse those blocks, so a kernel that reads memory it never wrote
    reads ``value``. Returns the bytes poisoned; on a CPU it does nothing and returns 0."""
    device = torch.device(device)
    if device.type != "cuda":
        return 0
    if not 0 < fraction <= 0.9:
        raise ValueError(f"fraction must be in (0, 0.9]; got {fraction}")
    free, _ = torch.cuda.mem_get_info(device)
    budget = int(free * fraction)
    blocks, used = [], 0
    # Large blocks (the allocator's >1 MiB pool) and small ones (its <1 MiB pool).
    for size, share in ((64 << 20, 0.9), (2 << 20, 0.07), (256 << 10, 0.03)):
        for _ in range(int(budget * share) // size):
            blocks.append(torch.full((size // 4,), value, dtype=torch.float32, device=device))
            used += size
    torch.cuda.synchronize(device)
    del blocks
    return used


def mixed_grid(classes: dict, device: torch.device | str, *, paper_widths: bool = False, mnist_runs: int = 3,
               mnist_steps: int = 4, poison: bool = True) -> dict:
    """The sequence that once broke a grid on a GPU: a batched MNIST group of HEBAE runs, then,
    in the same process, CelebA HEBAE training steps in the training setting (bf16 autocast and
    channels-last where they pay). ``classes`` maps model names to page classes. Returns what it
    saw: the MNIST group's and the CelebA steps' objectives, and the first non-finite module of
    the CelebA step (None when every output was finite)."""
    from . import batched, experiment, train

    dev = train.pick_device(device) if isinstance(device, str) else device
    hebae = classes["hebae"]
    poisoned = poison_device_cache(dev) if poison else 0
    configs = [experiment.configure(hebae, dataset="mnist", profile="paper", latent_dim=20, seed=s, lam=lam, epochs=1,
                                    n_train=128 * mnist_steps)[0] for s, lam in zip(range(mnist_runs), (1.0, 0.3, 3.0, 0.1))]
    images = torch.rand(128 * mnist_steps, 1, 28, 28)
    models = [experiment.build_model(c, hebae, (1, 28, 28)) for c in configs]
    states = [train.rng_state(dev) for _ in configs]
    histories = batched.fit_batched(models, images, [experiment.train_config(c) for c in configs], states,
                                    device=dev, progress=False)
    del models
    profile = "paper" if paper_widths else "smoke"
    batch = 100 if paper_widths else 16
    config, _ = experiment.configure(hebae, dataset="celeba", profile=profile, batch_size=batch,
                                     latent_dim=64 if paper_widths else 8, epochs=1, n_train=2 * batch)
    train.seed_everything(0)
    model = hebae(config, (3, 64, 64))
    faces = torch.rand(2 * batch, 3, 64, 64) * 2 - 1
    tc = experiment.train_config(config)
    with watch_non_finite(model) as watch:
        try:
            history = train.fit(model, faces, tc, device=dev, progress=False)
            error = None
        except train.NonFiniteLossError as failure:
            history, error = [], str(failure)
    return {
        "device": str(dev),
        "poisoned_bytes": poisoned,
        "mnist_objectives": [h[-1]["objective"] for h in histories],
        "celeba_objective": history[-1]["objective"] if history else None,
        "celeba_bf16": history[-1]["bf16"] if history else tc.bf16 and train.bf16_pays(dev),
        "celeba_error": error,
        "first_non_finite": watch.first,
        "report": watch.report(),
    }
