"""The GPU checks of the training path, for the first minutes of a GPU window (``make gpu-check``).

    python tools/gpu_check.py [--json PATH]

1. The mixed grid that once crashed on an H200 (``linalg.cholesky: the leading minor of order 1
   is not positive-definite``): a batched MNIST group of HEBAE runs, then CelebA HEBAE at the
   paper's widths under bf16 autocast and channels-last, in one process, with the caching
   allocator's free blocks filled with NaN first (:func:`hebae.diagnose.poison_device_cache`), so
   that a kernel reading memory it never wrote fails every time instead of sometimes. Forward
   hooks name the first module whose output is not finite.
2. Where that fails: the CelebA step alone after poisoning, in float32 and bf16, with and
   without channels-last, to say which setting carries the fault.
3. One short (smoke-scale) training of every model page on the GPU, stored in a scratch folder.

Without CUDA it says so and exits 0 (the CPU half of these checks is ``tests/test_gpu_path.py``).
Exit status 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from hebae import diagnose, experiment, train
from pages import classes


def isolate(device) -> list[dict]:
    """The CelebA HEBAE step alone, in each precision and memory layout, after poisoning."""
    from celeba_throughput import training_step

    hebae = classes()["hebae"]
    config, _ = experiment.configure(hebae, dataset="celeba", profile="paper", batch_size=100, epochs=1)
    out = []
    for bf16 in (False, True):
        for channels_last in (False, True):
            diagnose.poison_device_cache(device)
            train.seed_everything(0)
            model = hebae(config, (3, 64, 64)).to(device)
            x = torch.rand(100, 3, 64, 64, device=device) * 2 - 1
            if channels_last:
                model.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            step, _ = training_step(model, x, bf16, device)
            with diagnose.watch_non_finite(model) as watch:
                try:
                    for _ in range(3):
                        step()
                    error = None
                except Exception as failure:  # the Cholesky error of old, or any other
                    error = f"{type(failure).__name__}: {failure}"
            out.append({"bf16": bf16, "channels_last": channels_last, "error": error, "report": watch.report(),
                        "ok": error is None and watch.first is None})
    return out


def every_page(device: str) -> list[dict]:
    """One smoke-scale training of every model page on ``device``, stored in a scratch folder."""
    out = []
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["HEBAE_RESULTS_DIR"] = scratch
        for name, cls in classes().items():
            start = time.perf_counter()
            try:
                config, _ = experiment.configure(cls, dataset="mnist", profile="smoke", device=device)
                run = experiment.run(config, cls, device=device, progress=False)
                objective = run.history[-1]["objective"]
                out.append({"model": name, "ok": bool(torch.isfinite(torch.tensor(objective))), "objective": objective,
                            "seconds": round(time.perf_counter() - start, 1)})
            except Exception:
                out.append({"model": name, "ok": False, "error": traceback.format_exc(limit=3)})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None, help="also write the findings here")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: try this script itself at small widths (no GPU checked)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: skipped, no CUDA device here (tests/test_gpu_path.py checks the CPU half)")
        return 0
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if gpu else "cpu"
    print(f"gpu-check on {name}, torch {torch.__version__}")
    findings: dict = {"device": name, "torch": torch.__version__}
    mixed = diagnose.mixed_grid(classes(), device, paper_widths=gpu, mnist_runs=27 if gpu else 3, mnist_steps=20 if gpu else 2)
    mixed_ok = mixed["celeba_error"] is None and mixed["first_non_finite"] is None
    print(f"1. mixed grid ({len(mixed['mnist_objectives'])} batched MNIST runs, then CelebA HEBAE bf16={mixed['celeba_bf16']}, "
          f"{mixed['poisoned_bytes'] / 2**30:.1f} GiB poisoned): {'ok' if mixed_ok else 'FAILED'}; {mixed['report']}")
    if mixed["celeba_error"]:
        print(f"   {mixed['celeba_error']}")
    findings["mixed_grid"] = mixed
    if not mixed_ok and gpu:
        findings["isolate"] = isolate(device)
        for row in findings["isolate"]:
            print(f"2. CelebA step alone, bf16={row['bf16']}, channels_last={row['channels_last']}: "
                  f"{'ok' if row['ok'] else 'FAILED'}; {row['error'] or row['report']}")
    findings["pages"] = every_page(args.device)
    for row in findings["pages"]:
        print(f"3. {row['model']:9s} smoke training on {args.device}: {'ok' if row['ok'] else 'FAILED'}"
              + (f" ({row['seconds']} s)" if row["ok"] else f"\n{row.get('error', '')}"))
    if args.json:
        args.json.write_text(json.dumps(findings, indent=1, default=str))
    failed = not mixed_ok or not all(r["ok"] for r in findings["pages"])
    print("gpu-check:", "FAILED" if failed else "all checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sys.exit(main())
