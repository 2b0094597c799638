"""Training throughput of the CelebA models: images per second at batch 100, and the fraction
of the device's peak arithmetic rate that this reaches.

    .venv/bin/python benchmarks/celeba_throughput.py [--device auto|cpu|cuda] [--steps N] [--profile P]

The FLOPs of one training step (forward and backward) are counted with
torch.utils.flop_counter. The peak is the vendor's dense bf16 tensor-core figure for known GPUs;
on a CPU it is the rate of a large float32 matrix product measured here, a practical ceiling
rather than a datasheet one. The paper-width nets cost about 60 GFLOP per image per step, far
too much for a CPU: there the reduced profile's nets (8 times narrower) are the default. Each
model is timed in float32 and under bf16 autocast with channels-last memory, the training
loop's setting for the conv nets.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from hebae import experiment, profiles, train
from pages import classes

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' datasheets, by device-name fragment.
GPU_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def cpu_peak() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    return reps * 2 * 2048**3 / (time.perf_counter() - start)


def training_step(model, x, bf16: bool, device):
    """One Adam step of ``model`` on ``x`` as a closure, in float32 or, with ``bf16``, under bf16
    autocast with channels-last memory (the training loop's setting for the conv nets); and the
    autocast context it uses."""
    if bf16:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.param_groups(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def step():
        with autocast:
            loss = model.loss(x)["objective"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, autocast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=train.DEVICES)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on GPU, 3 on CPU)")
    parser.add_argument("--profile", default=None, choices=profiles.NAMES, help="whose conv widths (default: paper on GPU, reduced on CPU)")
    args = parser.parse_args()
    device = train.pick_device(args.device)
    gpu = device.type == "cuda"
    profile = args.profile or ("paper" if gpu else "reduced")
    steps = args.steps or (20 if gpu else 3)
    if gpu:
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in GPU_PEAKS.items() if k in name), None)
        peak_note = "vendor dense bf16 peak"
    else:
        name, peak, peak_note = f"cpu, {torch.get_num_threads()} threads", cpu_peak(), "measured float32 matmul rate"
    widths = profiles.sizes(profile, "celeba")["conv_channels"]
    print(f"device: {name}; batch 100, k = 64, conv widths {widths} ({profile} profile)")
    for page, bf16 in [(page, bf16) for page in ("vae", "wae", "hebae") for bf16 in (False, True)]:
        config, _ = experiment.configure(classes()[page], dataset="celeba", profile=profile)
        model = classes()[page](config, (3, 64, 64)).to(device)
        step, _ = training_step(model, torch.rand(100, 3, 64, 64, device=device), bf16, device)

        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        for _ in range(2):
            step()
        if gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if gpu:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
        rate = flops / seconds
        fraction = f"{100 * rate / peak:.1f}% of {peak / 1e12:.1f} TFLOP/s ({peak_note})" if peak else "peak unknown"
        print(f"{page:6s} {'bf16' if bf16 else 'fp32':4s} {100 / seconds:9.1f} images/s  {flops / 100 / 1e9:7.2f} GFLOP/image/step  {rate / 1e12:7.3f} TFLOP/s = {fraction}")


if __name__ == "__main__":
    main()
