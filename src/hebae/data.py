"""Datasets as tensors: MNIST, CelebA (64x64 crops) and a synthetic set of known latent dimension.

Every loader returns a :class:`Split`: float32 images in [0, 1] of shape (N, C, H, W), small
enough to sit on a GPU whole, plus labels where the data has them. Nothing here knows about
training, storage or metrics.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .paths import data_root, staging_root

# The synthetic data sets by name, and the dimension n of the code each is generated from. The
# names fix n, so a run's config (which names its data set) says which data it was trained on;
# plain "synthetic" keeps the n = 4 of the runs and tests made before the others existed.
SYNTHETIC = {"synthetic": 4, "synthetic8": 8, "synthetic16": 16}
DATASETS = ("mnist", "fashion", "celeba", *SYNTHETIC)
SPLITS = ("train", "test")


class DataError(RuntimeError):
    """Data is missing or corrupt; the message says where the root is and how to fill it."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # float32, (N, C, H, W), values in [0, 1]
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one image, (C, H, W)."""
        return tuple(self.images.shape[1:])

    def subset(self, n: int | None) -> "Split":
        """The first ``n`` examples (all of them when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        labels = None if self.labels is None else self.labels[:n]
        return Split(self.images[:n], labels)


def load(name: str, split: str = "train", *, root: Path | None = None, limit: int | None = None, **kwargs) -> Split:
    """Load ``split`` of dataset ``name`` (one of ``DATASETS``); its first ``limit`` examples."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if name in SYNTHETIC:
        if name != "synthetic" and kwargs.get("latent_dim", SYNTHETIC[name]) != SYNTHETIC[name]:
            raise ValueError(f"latent_dim of {name} must be {SYNTHETIC[name]} (its name fixes it); got {kwargs['latent_dim']!r}")
        return synthetic(split, **{"latent_dim": SYNTHETIC[name], **kwargs}).subset(limit)
    if name == "celeba":  # decode only the images asked for
        return celeba(split, root=root, limit=limit, **kwargs)
    if name == "fashion":
        return fashion_mnist(split, root=root, **kwargs).subset(limit)
    return mnist(split, root=root, **kwargs).subset(limit)


# --------------------------------------------------------------------------------------- MNIST


def mnist(split: str = "train", *, root: Path | None = None, download: bool = False) -> Split:
    """MNIST through ``torchvision.datasets.MNIST``, with its md5 checksums verified.

    The four original ``.gz`` files are read from ``<root>/MNIST/raw``. They are linked into the
    project's ``data/`` folder, where torchvision verifies them and extracts them, so the root
    itself is never written to. With ``download=True`` torchvision may fetch missing files.
    """
    from torchvision.datasets import MNIST

    return _idx_dataset(MNIST, split, root, download)


def fashion_mnist(split: str = "train", *, root: Path | None = None, download: bool = False) -> Split:
    """Fashion-MNIST (Zalando's 28×28 grey clothing images, a drop-in for MNIST) through
    ``torchvision.datasets.FashionMNIST``, read from ``<root>/FashionMNIST/raw`` like MNIST."""
    from torchvision.datasets import FashionMNIST

    return _idx_dataset(FashionMNIST, split, root, download)


def _idx_dataset(cls, split: str, root: Path | None, download: bool) -> Split:
    from torchvision.datasets.utils import check_integrity

    name = cls.__name__
    root = Path(root) if root is not None else data_root()
    stage = staging_root()
    raw_src, raw_dst = root / name / "raw", stage / name / "raw"
    files = [(Path(url).name, md5) for url, md5 in cls.resources]
    missing = [f for f, _ in files if not (raw_src / f).exists()]
    if missing and not download:
        raise DataError(
            f"{name} is missing from data root {root} (looked in {raw_src}): {', '.join(missing)}. "
            f"Put the four original files {', '.join(f for f, _ in files)} there, or point "
            "$HEBAE_DATA_DIR at a folder that has them, or call with download=True on a "
            "machine with internet."
        )
    corrupt = [f for f, md5 in files if (raw_src / f).exists() and not check_integrity(str(raw_src / f), md5)]
    if corrupt:
        raise DataError(
            f"{name} files in data root {root} fail their md5 checksum: {', '.join(corrupt)} "
            f"(in {raw_src}). Replace them with the original files; torchvision's md5s are "
            f"listed in torchvision.datasets.{name}.resources."
        )
    if raw_src.resolve() != raw_dst.resolve():
        raw_dst.mkdir(parents=True, exist_ok=True)
        for f, _ in files:
            if (raw_src / f).exists():
                _link_or_copy(raw_src / f, raw_dst / f)
    ds = cls(str(stage), train=(split == "train"), download=True)
    images = ds.data.unsqueeze(1).to(torch.float32).div_(255.0)
    return Split(images, ds.targets.clone())


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` refer to ``src`` (a symlink, or a copy where links are not allowed)."""
    if dst.exists() and dst.samefile(src):
        return
    dst.unlink(missing_ok=True)
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


# -------------------------------------------------------------------------------------- CelebA

CELEBA_SIZE = 64
# The WAE setup crops the 178x218 aligned faces to a central 140x140 square, then resizes.
CELEBA_CROP = 140
_PARTITION = {"train": 0, "test": 2}


def celeba(split: str = "train", *, root: Path | None = None, limit: int | None = None) -> Split:
    """CelebA aligned faces, center-cropped to 140x140 and resized to 64x64.

    Reads ``<root>/celeba/img_align_celeba/*.jpg`` and ``list_eval_partition.txt``; takes every
    image of the requested partition that is present (a subset works as well as the full set).
    Decoded images are cached in ``data/celeba_cache/`` as one uint8 tensor file per split.
    """
    root = Path(root) if root is not None else data_root()
    files = celeba_files(split, root)
    files = files[:limit] if limit else files
    folder = root / "celeba" / "img_align_celeba"

    cache = staging_root() / "celeba_cache" / f"{split}-{len(files)}-{_digest(files)}.pt"
    if cache.exists():
        images = torch.load(cache, weights_only=True)
    else:
        images = torch.stack([_decode_face(folder / f) for f in _progress(files, f"decode CelebA {split}")])
        _atomic_torch_save(images, cache)
    return Split(images.to(torch.float32).div_(255.0))


def celeba_files(split: str, root: Path | None = None) -> list[str]:
    """Names of the images of ``split`` that the partition file lists and the folder holds."""
    root = Path(root) if root is not None else data_root()
    folder = root / "celeba" / "img_align_celeba"
    partition_file = root / "celeba" / "list_eval_partition.txt"
    if not folder.is_dir() or not partition_file.exists():
        raise DataError(
            f"CelebA is missing from data root {root}: expected {folder} (aligned JPGs) and "
            f"{partition_file}. Download img_align_celeba and list_eval_partition.txt from the "
            "CelebA project page into <root>/celeba/, or point $HEBAE_DATA_DIR at a folder "
            "that has them."
        )
    present = {p.name for p in folder.glob("*.jpg")}
    wanted = str(_PARTITION[split])
    files = []
    for line in partition_file.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == wanted and parts[0] in present:
            files.append(parts[0])
    if not files:
        raise DataError(f"no CelebA {split} images listed in {partition_file} were found in {folder}")
    return files


def _decode_face(path: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            left, top = (w - CELEBA_CROP) // 2, (h - CELEBA_CROP) // 2
            im = im.crop((left, top, left + CELEBA_CROP, top + CELEBA_CROP))
            im = im.resize((CELEBA_SIZE, CELEBA_SIZE), Image.BICUBIC)
            return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"CelebA image {path} cannot be decoded ({err}); replace the file") from err


def _digest(names: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:10]


def _atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _progress(items, desc):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


# ----------------------------------------------------------------------------------- Synthetic


def synthetic(
    split: str = "train",
    *,
    n: int | None = None,
    latent_dim: int = 4,
    side: int = 8,
    seed: int = 0,
) -> Split:
    """Images generated from a known ``latent_dim``-dimensional Gaussian code.

    The data-generation hypothesis made concrete: z ~ N(0, I_d) is pushed through a fixed random
    two-layer network (:func:`synthetic_generator`) into ``side x side`` pixel intensities in
    (0, 1). The generator depends only on ``latent_dim``, ``side`` and ``seed``, so train and test
    come from the same distribution; the split picks disjoint draws of z. ``n`` is the number of
    examples (4096 for train, 1024 for test by default), not the code's dimension. Labels hold
    the true codes, so a test can check what an encoder recovers.
    """
    generate = synthetic_generator(latent_dim, side=side, seed=seed)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    n = n if n is not None else (4096 if split == "train" else 1024)
    code_gen = torch.Generator().manual_seed(seed * 2 + 1 + SPLITS.index(split))
    z = torch.randn(n, latent_dim, generator=code_gen)
    return Split(generate(z), z)


def synthetic_generator(latent_dim: int, *, side: int = 8, seed: int = 0):
    """The fixed map f from codes (N, latent_dim) to images (N, 1, side, side) behind
    :func:`synthetic`: sigmoid(tanh(z W1) W2), with Gaussian weights drawn under ``seed``.

    W1 is scaled by 1/sqrt(latent_dim), so every hidden unit sees a unit-variance input whatever
    the dimension; the hidden layer (64 units) is at least as wide as any code used here, so f is
    generically an immersion and the images fill a manifold of exactly ``latent_dim`` dimensions
    (the rank of f's Jacobian, which a test checks).
    """
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be an integer >= 1; got {latent_dim!r}")
    gen = torch.Generator().manual_seed(seed)
    pixels, hidden = side * side, 64
    w1 = torch.randn(latent_dim, hidden, generator=gen) / latent_dim**0.5
    w2 = torch.randn(hidden, pixels, generator=gen) * (2.0 / hidden**0.5)

    def generate(z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != latent_dim:
            raise ValueError(f"z must have shape (N, {latent_dim}); got {tuple(z.shape)}")
        return torch.sigmoid(torch.tanh(z @ w1) @ w2).reshape(len(z), 1, side, side)

    return generate
