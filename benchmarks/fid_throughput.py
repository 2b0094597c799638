"""Images per second through the FID feature network, on the device it runs on.

    .venv/bin/python benchmarks/fid_throughput.py [--device auto|cpu|cuda] [--batch-size B] [--batches N]

Times ``--batches`` batches of CelebA test faces, 64x64 (random images where CelebA is not
found; resized to 299x299 inside the network, as ``hebae.fid`` does), after one warm-up batch, in four settings: float32 in the default memory
layout, float32 channels-last (what ``Extractor.features`` uses), and bf16 autocast with and
without channels-last. For each it prints the relative change of the features against float32
in the default layout, median and largest over the images: bf16 is faster but moves features,
and FIDs from features computed two ways must not be compared.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hebae import data, fid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (default 16 on CPU, 256 on GPU)")
    parser.add_argument("--batches", type=int, default=None, help="timed batches (default 2 on CPU, 20 on GPU)")
    args = parser.parse_args()
    extractor = fid.inception(args.device)
    device = extractor.device
    gpu = device.type == "cuda"
    batch_size = args.batch_size or (256 if gpu else 16)
    batches = args.batches or (20 if gpu else 2)
    for name, value in (("--batch-size", batch_size), ("--batches", batches)):
        if value < 1:
            parser.error(f"{name} must be a positive integer; got {value}")
    where = torch.cuda.get_device_name(0) if gpu else f"cpu, {torch.get_num_threads()} threads"
    try:
        images, source = data.load("celeba", "test", limit=batch_size).images, "CelebA test faces"
    except data.DataError:
        images, source = torch.rand(batch_size, 3, 64, 64, generator=torch.Generator().manual_seed(0)), "random images"
    if len(images) < batch_size:
        parser.error(f"--batch-size must be at most {len(images)}, the number of {source} found; got {batch_size}")
    images = images.to(device)
    print(f"{extractor.name} on {where}; batches of {batch_size} {source} (64x64), {batches} timed")
    network = extractor.network

    def run(dtype, channels_last):
        layout = torch.channels_last if channels_last else torch.contiguous_format
        network.to(memory_format=layout)
        x = images.contiguous(memory_format=layout)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            out = network(x).float()  # warm-up; also the features compared below
            if gpu:
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(batches):
                network(x)
            if gpu:
                torch.cuda.synchronize()
        return batches * batch_size / (time.perf_counter() - start), out.double().cpu().numpy()

    settings = [("float32", False), ("float32", True), ("bf16", False), ("bf16", True)]
    reference = None
    for dtype, channels_last in settings:
        rate, features = run(dtype, channels_last)
        if reference is None:
            reference = features
        shift = np.linalg.norm(features - reference, axis=1) / np.linalg.norm(reference, axis=1)
        layout = "channels-last" if channels_last else "default layout"
        autocast = "bf16 autocast" if dtype == "bf16" else "float32"
        print(
            f"{autocast:>14}, {layout:<14} {rate:8.1f} images/s   feature change vs float32: "
            f"median {np.median(shift):.1e}, max {shift.max():.1e}"
        )
    network.to(memory_format=torch.channels_last)


if __name__ == "__main__":
    main()
