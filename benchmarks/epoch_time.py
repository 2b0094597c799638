"""Seconds per MNIST training epoch for each model at k = 20, on the machine it runs on.

    .venv/bin/python benchmarks/epoch_time.py [--device auto|cpu|cuda] [--batches N]

Times ``--batches`` optimiser steps at the paper's batch size (128) after a short warm-up and
scales to one epoch of 60,000 images (468 full batches), twice: as a bare step (forward,
backward, Adam) and through the training loop (``hebae.train.fit``: data order, NaN guard,
loss sums), whose difference is the loop's own cost. Prints one line per model.
"""

from __future__ import annotations

import argparse
import time

import torch

from hebae import data, experiment, train
from pages import classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=train.DEVICES)
    parser.add_argument("--batches", type=int, default=50, help="timed optimiser steps per model")
    args = parser.parse_args()
    device = train.pick_device(args.device)
    images = data.load("mnist", "train").images
    per_epoch = images.shape[0] // 128
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; MNIST, k = 20, batch 128, {per_epoch} batches per epoch")
    for page, cls in classes().items():
        config, _ = experiment.configure(cls, dataset="mnist", latent_dim=20, profile="paper")
        torch.manual_seed(0)
        model = cls(config, images.shape[1:]).to(device)
        optimizer = torch.optim.Adam(model.param_groups(), lr=1e-3)
        x_all = images[: 128 * (args.batches + 5)].to(device)

        def step(b):
            loss = model.loss(x_all[b * 128 : (b + 1) * 128])["objective"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for b in range(5):  # warm-up
            step(b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for b in range(args.batches):
            step(5 + b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / args.batches * per_epoch
        print(f"{page:9s} bare step {seconds:7.2f} s per epoch   training loop {loop_epoch(cls, config, images, args.batches, device):7.2f} s per epoch")


def loop_epoch(cls, config, images, batches: int, device) -> float:
    """Seconds per 468-batch epoch through ``train.fit``, from the second of two short epochs."""
    torch.manual_seed(0)
    model = cls(config, images.shape[1:])
    tc = train.TrainConfig(epochs=2, batch_size=128, lr=1e-3, schedule=config["schedule"], seed=0)
    history = train.fit(model, images[: 128 * batches], tc, device=device, progress=False)
    return history[-1]["seconds"] / batches * (images.shape[0] // 128)


if __name__ == "__main__":
    main()
