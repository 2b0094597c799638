"""Train the project's FID feature network on CelebA, without labels, and ship it as an asset.

pytorch-fid's Inception weights cannot be downloaded on machines without internet. As a
fallback, hebae.fid measures Fréchet distances on the features of a small CNN trained here on
a self-supervised task: predict which of four rotations (0, 90, 180, 270 degrees) was applied
to a face. Telling upright faces from rotated ones needs the layout of eyes, nose, mouth and
hair, which is what a distance between sets of faces should be sensitive to.

Writes src/hebae/assets/celeba_features.safetensors (the network, read by
hebae.fid.project_extractor) and celeba_features.json (a card saying how it was made).

    HEBAE_DATA_DIR=/path/to/data python tools/train_fid_features.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from hebae import data
from hebae.fid import PROJECT_WEIGHTS, RotNet, load_project_network, save_project_network
from hebae.paths import PROJECT_ROOT, data_root

ROTATIONS = 4


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images (quick checks)")
    p.add_argument("--out", type=Path, default=PROJECT_WEIGHTS, help="weights file; the card is written beside it")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(args, name)}")
    if args.lr <= 0:
        p.error(f"--lr must be positive; got {args.lr}")
    return args


def rotate(images: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate image i by k[i] quarter turns; rot90 is exact, so no resampling cue gives k away."""
    out = images.clone()
    for turns in range(1, ROTATIONS):
        idx = (k == turns).nonzero(as_tuple=True)[0]
        if idx.numel():
            out[idx] = torch.rot90(images[idx], turns, dims=(2, 3))
    return out


def augment(images: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random horizontal flip (it leaves the rotation label unchanged), then a random rotation."""
    flip = torch.rand(images.shape[0], generator=gen) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(3), images)
    k = torch.randint(0, ROTATIONS, (images.shape[0],), generator=gen)
    return rotate(images, k), k


def train(net: RotNet, images: torch.Tensor, args: argparse.Namespace) -> float:
    """Train in place; returns the seconds spent."""
    gen = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = -(-images.shape[0] // args.batch_size)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    start = time.perf_counter()
    net.train()
    for epoch in range(args.epochs):
        order = torch.randperm(images.shape[0], generator=gen)
        total = correct = 0
        for step in range(steps_per_epoch):
            x, y = augment(images[order[step * args.batch_size : (step + 1) * args.batch_size]], gen)
            logits = net(x.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            if step % 20 == 0:
                print(f"epoch {epoch + 1}/{args.epochs} step {step}/{steps_per_epoch} loss {loss.item():.3f}", flush=True)
        print(f"epoch {epoch + 1}: train rotation accuracy {correct / total:.3f} ({time.perf_counter() - start:.0f}s)", flush=True)
    return time.perf_counter() - start


@torch.no_grad()
def rotation_accuracy(net: RotNet, images: torch.Tensor, batch_size: int = 500) -> float:
    """Accuracy with image i turned i mod 4 times: every image used once, rotations balanced."""
    net.eval()
    k = torch.arange(images.shape[0]) % ROTATIONS
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        x = rotate(images[start : start + batch_size], k[start : start + batch_size])
        correct += (net(x).argmax(1) == k[start : start + batch_size]).sum().item()
    return correct / images.shape[0]


def git_state() -> dict[str, object]:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "git_dirty": None}


def write_card(path: Path, card: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    train_split = data.load("celeba", "train").subset(args.limit)
    test_split = data.load("celeba", "test")
    print(f"CelebA: {len(train_split)} train, {len(test_split)} test images; {torch.get_num_threads()} threads", flush=True)

    net = RotNet().to(memory_format=torch.channels_last)
    seconds = train(net, train_split.images, args)
    net = net.to(memory_format=torch.contiguous_format).eval()
    accuracy = rotation_accuracy(net, test_split.images)
    print(f"test rotation accuracy {accuracy:.4f} (chance {1 / ROTATIONS:.2f}); trained in {seconds:.0f}s", flush=True)

    out = Path(args.out)
    save_project_network(net, out)
    # Reload what was written and score it again, so the card describes the file, not the memory.
    reloaded = rotation_accuracy(load_project_network(out), test_split.images)
    if abs(reloaded - accuracy) > 1e-9:
        raise RuntimeError(f"reloaded network scores {reloaded:.4f}, not {accuracy:.4f}; {out} is not what was trained")

    card = {
        "task": f"self-supervised rotation prediction: which of {ROTATIONS} quarter turns (0/90/180/270 degrees) "
        "was applied; random horizontal flips as augmentation",
        "use": "feature extractor for Fréchet distances (hebae.fid.project_extractor); features are the "
        f"{net.dim}-d global-average-pooled output before the linear head. Not comparable to published FID.",
        "architecture": {
            "class": "hebae.fid.RotNet",
            "blocks": "conv 3x3 stride 2 (no bias) + BatchNorm + ReLU",
            "widths": list(net.widths),
            "feature_dim": net.dim,
            "head": f"linear {net.dim} -> {ROTATIONS}",
            "input": "3x64x64 in [0, 1], scaled to [-1, 1] inside the network",
            "parameters": sum(p.numel() for p in net.parameters()),
        },
        "data": {
            "dataset": "celeba (aligned, center crop 140x140, resized to 64x64)",
            "train_split": "train",
            "train_images": len(train_split),
            "test_split": "test",
            "test_images": len(test_split),
            "data_root": data_root().name,
        },
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": "Adam, one-cycle learning-rate schedule",
        "lr": args.lr,
        "seed": args.seed,
        "test_rotation_accuracy": round(accuracy, 4),
        "chance_accuracy": 1 / ROTATIONS,
        "training_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        **git_state(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "weights_file": out.name,
        "weights_bytes": out.stat().st_size,
    }
    write_card(out.with_suffix(".json"), card)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
