"""How fast a grid trains: run-epochs per second, sequential against batched, on this device.

    .venv/bin/python benchmarks/grid_throughput.py [--device auto|cpu|cuda] [--runs N] [--steps S]

**MNIST** (the paper's dense nets, k = 20, batch 128): ``--runs`` runs of ``--model`` trained
for ``--epochs`` epochs of ``--steps`` optimiser steps each, one after another
(``hebae.train.fit``) and as one batch (``hebae.batched.fit_batched``), on random images of
MNIST's shape, in ``--rounds`` alternating rounds; each rate is from the fastest epoch. A
run-epoch is 468 steps (60,000 images). The FLOPs of one step (forward and backward) are counted with
torch.utils.flop_counter; the fraction of peak is against the vendor's float32 figure on a GPU
(TF32 is off, as in training) and against a measured float32 matrix-product rate on a CPU. From
the batched rate the script predicts the training time of the whole ``mnist-paper`` grid at
paper scale (78 runs × 100 epochs; measurement after training not included).

**CelebA** (conv nets, batch 100, k = 64): one training step of ``--celeba-model``, on a GPU at
the paper's widths under bf16 autocast with channels-last memory (the training setting), as a
fraction of the bf16 tensor-core peak; on a CPU at small widths in float32 and under bf16
autocast, saying which is faster (CPUs without bf16 units emulate it; ``train.bf16_pays``).

Defaults finish in about a minute on a 2-core CPU; on a GPU they are sized for it.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from hebae import batched, experiment, grids, train
from celeba_throughput import training_step  # this folder is on the path when a benchmark runs
from pages import classes

STEPS_PER_EPOCH = 60000 // 128
# For comparison, not measured here: a hand-written reference (all runs of one architecture as
# batched matrix products, data on the GPU, forward + backward + Adam captured in one CUDA graph)
# measured on one H200 (issue 20): 78 HEBAE runs, run-steps per second.
REFERENCE = {"float32": 8300, "tf32": 11900}
# Vendor datasheet peaks (FLOP/s, dense), by device-name fragment: float32 (no tensor cores) and bf16.
FP32_PEAKS = {"H100": 67e12, "H200": 67e12, "A100": 19.5e12}
BF16_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def cpu_matmul_rate(size: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return reps * 2 * size**3 / (time.perf_counter() - start)


def peak(device, table) -> tuple[float | None, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in table.items() if k in name), None), "vendor peak"
    return cpu_matmul_rate(), "measured float32 matmul rate"


def mnist_configs(model: str, runs: int, steps: int, epochs: int):
    cls = classes()[model]
    configs = [experiment.configure(cls, dataset="mnist", profile="paper", latent_dim=20, seed=s, lam=[1.0, 0.3, 3.0, 0.1, 10.0][s % 5],
                                    epochs=epochs, n_train=128 * steps)[0] for s in range(runs)]
    return cls, configs


def build(cls, config, dev):
    model = experiment.build_model(config, cls, (1, 28, 28))
    return model, train.rng_state(dev)


def epochs_sequential(cls, configs, images, dev) -> list[float]:
    """Seconds of every epoch of every run trained alone (each epoch: one run's steps)."""
    seconds = []
    for config in configs:
        model, _ = build(cls, config, dev)
        history = train.fit(model, images, experiment.train_config(config), device=dev, progress=False)
        seconds += [h["seconds"] for h in history]
    return seconds


def epochs_batched(cls, configs, images, dev) -> list[float]:
    """Seconds of every epoch of the batch (each epoch: every run's steps)."""
    models, states = zip(*(build(cls, c, dev) for c in configs))
    histories = batched.fit_batched(list(models), images, [experiment.train_config(c) for c in configs], list(states),
                                    device=dev, progress=False)
    return [h["seconds"] for h in histories[0]]


def step_flops(cls, config, dev, shape, batch, autocast=nullcontext(), channels_last=False) -> int:
    model = cls(config, shape).to(dev)
    x = torch.rand(batch, *shape, device=dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        with autocast:
            loss = model.loss(x)["objective"]
        loss.backward()
    return counter.get_total_flops()


def mnist(args, dev) -> None:
    """Steady-state rates: the fastest epoch of each mode (training loop only: the set-up, the
    batch's one-off trial step and any evaluation are outside an epoch's seconds), from rounds
    that alternate the two modes; the fastest is the least disturbed by other work on a shared
    machine."""
    cls, configs = mnist_configs(args.model, args.runs, args.steps, args.epochs)
    images = torch.rand(128 * args.steps, 1, 28, 28)
    flops = step_flops(cls, configs[0], dev, (1, 28, 28), 128)
    rate_peak, note = peak(dev, FP32_PEAKS)
    print(f"MNIST: {args.model}, k = 20, batch 128, {args.runs} runs × {args.epochs} epochs of {args.steps} steps, "
          f"{args.rounds} rounds; {flops / 1e9:.2f} GFLOP per run-step (forward + backward)")
    times = {"sequential": [], "batched": []}
    for _ in range(args.rounds):
        times["sequential"] += epochs_sequential(cls, configs, images, dev)
        times["batched"] += epochs_batched(cls, configs, images, dev)
    run_steps = {"sequential": args.steps, "batched": args.steps * args.runs}  # per epoch of each mode
    rates = {}
    for name, seconds in times.items():
        per_epoch = min(seconds)
        steps_per_second = run_steps[name] / per_epoch
        rates[name] = steps_per_second / STEPS_PER_EPOCH
        achieved = steps_per_second * flops
        fraction = f"{100 * achieved / rate_peak:.1f}% of {rate_peak / 1e12:.2f} TFLOP/s ({note})" if rate_peak else "peak unknown"
        print(f"  {name:10s} {rates[name]:8.4f} run-epochs/s  {steps_per_second:8.1f} run-steps/s  {1000 / steps_per_second:7.1f} ms per run-step  "
              f"{achieved / 1e12:7.3f} TFLOP/s = {fraction}")
    print(f"  batched / sequential: {rates['batched'] / rates['sequential']:.2f}×")
    if dev.type == "cuda":
        tf32 = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "float32"
        ours = rates["batched"] * STEPS_PER_EPOCH
        print(f"  against the CUDA-graph reference ({tf32}, 78 HEBAE runs on an H200): {REFERENCE[tf32]} run-steps/s; "
              f"ours {ours:.0f} ({ours / REFERENCE[tf32]:.2f}×)")
    n_runs = len(grids.mnist("mnist-paper", "paper"))
    hours = n_runs * 100 / rates["batched"] / 3600
    print(f"  predicted training time of mnist-paper at paper scale ({n_runs} runs × 100 epochs) at the batched rate: "
          f"{hours * 60:.1f} min ({hours:.2f} h)")


def celeba(args, dev) -> None:
    cls = classes()[args.celeba_model]
    gpu = dev.type == "cuda"
    profile = "paper" if gpu else "smoke"
    batch = 100 if gpu else args.celeba_batch
    config, _ = experiment.configure(cls, dataset="celeba", profile=profile, batch_size=batch, latent_dim=64 if gpu else 8)
    steps = args.celeba_steps or (20 if gpu else 2)
    modes = [True] if gpu else [False, True]
    print(f"CelebA: {args.celeba_model}, k = {config['latent_dim']}, batch {batch}, conv widths {config['conv_channels']} ({profile} profile), {steps} timed steps")
    results = {}
    for bf16 in modes:
        torch.manual_seed(0)
        model = cls(config, (3, 64, 64)).to(dev)
        step, autocast = training_step(model, torch.rand(batch, 3, 64, 64, device=dev), bf16, dev)

        flops = step_flops(cls, config, dev, (3, 64, 64), batch, autocast, bf16)
        step()
        sync(dev)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(dev)
        seconds = (time.perf_counter() - start) / steps
        results["bf16" if bf16 else "fp32"] = seconds
        rate = flops / seconds
        rate_peak, note = peak(dev, BF16_PEAKS if bf16 else FP32_PEAKS) if gpu or not bf16 else (None, "")
        fraction = f" = {100 * rate / rate_peak:.1f}% of {rate_peak / 1e12:.1f} TFLOP/s ({note})" if rate_peak else ""
        print(f"  {'bf16' if bf16 else 'fp32'}  {batch / seconds:9.1f} images/s  {rate / 1e12:7.3f} TFLOP/s{fraction}")
    if len(results) == 2:
        faster = min(results, key=results.get)
        ratio = max(results.values()) / min(results.values())
        print(f"  {faster} is faster here, by {ratio:.1f}× (training uses bf16 only where it pays: {train.bf16_pays(dev)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=train.DEVICES)
    parser.add_argument("--model", default="hebae", help="MNIST model page (default hebae)")
    parser.add_argument("--runs", type=int, default=None, help="runs in the batch (default 27 on a GPU, 4 on a CPU)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed epoch (default 100 on a GPU, 4 on a CPU)")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs per run and round (default 3)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds alternating sequential and batched (default 1 on a GPU, 2 on a CPU)")
    parser.add_argument("--celeba-model", default="hebae")
    parser.add_argument("--celeba-steps", type=int, default=None)
    parser.add_argument("--celeba-batch", type=int, default=16, help="CPU only (a GPU uses the paper's 100)")
    parser.add_argument("--skip-celeba", action="store_true")
    args = parser.parse_args()
    dev = train.pick_device(args.device)
    train.use_tf32(dev)  # HEBAE_TF32=1 measures the TF32 option
    gpu = dev.type == "cuda"
    args.runs = args.runs or (27 if gpu else 4)
    args.steps = args.steps or (100 if gpu else 4)
    args.rounds = args.rounds or (1 if gpu else 2)
    args.epochs = args.epochs or 3
    name = torch.cuda.get_device_name(dev) if gpu else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")
    mnist(args, dev)
    if not args.skip_celeba:
        celeba(args, dev)


if __name__ == "__main__":
    main()
