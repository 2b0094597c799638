"""Fréchet distances between image sets, with the feature extractor always named.

FID (Heusel et al., 2017) is the Fréchet distance between Gaussians fitted to Inception-v3
pool3 features of two image sets. It is only comparable to published numbers when those
features come from the exact network pytorch-fid ports from TensorFlow
(``pt_inception-2015-12-05-6726825d.pth``). pytorch-fid downloads that file on first use,
which machines without internet cannot do, so this module

* loads the file from ``$HEBAE_FID_WEIGHTS`` or the torch hub cache, never from the network;
* otherwise falls back to a small CNN trained on CelebA by ``tools/train_fid_features.py``
  and shipped with the package. Distances on its features rank generated sets, but are on a
  different scale from every published FID: :func:`label` says so next to every number.

Typical use::

    extractor = default_extractor("cuda")
    score = fid(generated, test_images, extractor)
    print(f"{label(extractor)}: {score:.1f}")
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_NAME
# torch hub names checkpoints <name>-<first hex digits of the file's sha256>.pth; checking the
# prefix catches truncated or substituted files, which would otherwise give plausible numbers.
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
WEIGHTS_ENV = "HEBAE_FID_WEIGHTS"

ASSETS = Path(__file__).resolve().parent / "assets"
PROJECT_WEIGHTS = ASSETS / "celeba_features.safetensors"
PROJECT_NAME = "hebae-celeba-rotnet"
PROJECT_FORMAT = "hebae-rotnet-v1"

Stats = tuple[np.ndarray, np.ndarray]


class FIDWeightsMissing(FileNotFoundError):
    """No copy of pytorch-fid's Inception weights was found; the message says where to put one."""


# ------------------------------------------------------------------------------- the distance


def frechet_distance(stats_a: Stats, stats_b: Stats) -> float:
    """Fréchet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b), as pytorch-fid computes it:

    ||mu_a - mu_b||² + tr(sigma_a + sigma_b - 2 (sigma_a sigma_b)^½).
    """
    from pytorch_fid.fid_score import calculate_frechet_distance

    (mu_a, sigma_a), (mu_b, sigma_b) = _checked_stats(stats_a, "stats_a"), _checked_stats(stats_b, "stats_b")
    if mu_a.shape != mu_b.shape:
        raise ValueError(
            f"stats_a and stats_b must come from the same extractor; their dimensions differ "
            f"({mu_a.shape[0]} vs {mu_b.shape[0]})"
        )
    with warnings.catch_warnings():
        # pytorch-fid 0.3.0 passes sqrtm's deprecated `disp` argument; the result is unaffected.
        warnings.filterwarnings("ignore", message=".*`disp` argument is deprecated.*", category=DeprecationWarning)
        return float(calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b))


def _checked_stats(stats: Stats, name: str) -> Stats:
    try:
        mu, sigma = stats
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (mu, sigma); got {type(stats).__name__}") from None
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    d = mu.shape[0] if mu.ndim == 1 else -1
    if d < 1 or sigma.shape != (d, d):
        raise ValueError(f"{name} must be mu of shape (d,) and sigma of shape (d, d); got {mu.shape} and {sigma.shape}")
    return mu, sigma


# ------------------------------------------------------------------------------ the features


@dataclass(frozen=True)
class Extractor:
    """A named map from images in [0, 1], (N, 3, H, W), to features (N, dim).

    ``comparable_to_published`` is True only for pytorch-fid's own Inception weights.
    """

    name: str
    comparable_to_published: bool
    dim: int
    network: nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: str | torch.device) -> "Extractor":
        """This extractor with its network moved to ``device`` (the module is moved in place)."""
        self.network.to(device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.network(images.to(self.device, torch.float32))


def feature_stats(
    images,
    extractor: Extractor,
    *,
    batch_size: int = 200,
    device: str | torch.device | None = None,
    quantize: bool = True,
    progress: bool | None = None,
) -> Stats:
    """Mean and covariance (float64) of ``extractor``'s features over ``images``.

    ``images``: a tensor or array, (N, 3, H, W), float values in [0, 1], N >= 2; it may stay
    on the CPU, batches are moved to ``device`` (default: where the extractor already is).
    ``quantize`` rounds to 8-bit levels first: pytorch-fid's usual route reads PNG/JPG files,
    and the test images are decoded JPGs, so generated samples are put on the same footing.
    ``progress`` shows a bar; by default only for inputs of more than ten batches.
    """
    images = _checked_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size}")
    if device is not None:
        extractor = extractor.to(device)
    starts = range(0, images.shape[0], batch_size)
    show = len(starts) > 10 if progress is None else progress
    features = np.empty((images.shape[0], extractor.dim), dtype=np.float64)
    for start in _progress(starts, "FID features", show):
        batch = images[start : start + batch_size].to(extractor.device, torch.float32)
        if quantize:
            batch = torch.round(batch * 255.0) / 255.0
        features[start : start + batch.shape[0]] = extractor(batch).double().cpu().numpy()
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid(images_a, images_b, extractor: Extractor, **kwargs) -> float:
    """Fréchet distance between the feature statistics of two image sets (see :func:`label`).

    Keyword arguments go to :func:`feature_stats`. The value is biased upwards for small sets,
    so compare only distances computed from the same numbers of images.
    """
    return frechet_distance(feature_stats(images_a, extractor, **kwargs), feature_stats(images_b, extractor, **kwargs))


def label(extractor: Extractor) -> str:
    """What to print next to a distance computed with ``extractor``."""
    return label_for(extractor.name, extractor.comparable_to_published)


def label_for(name: str, comparable_to_published: bool) -> str:
    """The same label from what a run stores (its ``fid_extractor`` and comparability)."""
    if comparable_to_published:
        return "FID (Inception, pytorch-fid)"
    return f"FD on {name.split(' (')[0]} features — not comparable to published FID"


def _checked_images(images) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor or numpy array; got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must have shape (N, 3, H, W); got {tuple(images.shape)} "
            "(for grayscale, repeat the channel: images.expand(-1, 3, -1, -1))"
        )
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point with values in [0, 1]; got dtype {images.dtype}")
    if images.shape[0] < 2:
        raise ValueError(f"images must hold at least 2 images to estimate a covariance; got {images.shape[0]}")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"images must have values in [0, 1]; got min {lo:.4g}, max {hi:.4g}")
    return images


def _progress(items, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False, disable=not show)


# --------------------------------------------------------------------------------- Inception


def inception_weights_path() -> Path:
    """Where pytorch-fid's Inception weights are: ``$HEBAE_FID_WEIGHTS``, else the hub cache."""
    candidates = []
    env = os.environ.get(WEIGHTS_ENV, "").strip()
    if env:
        candidates.append(Path(env).expanduser())
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_NAME)
    for path in candidates:
        if path.is_file():
            if env and path != candidates[0]:
                warnings.warn(f"${WEIGHTS_ENV}={env} does not exist; using {path} instead", stacklevel=2)
            return path
    raise FIDWeightsMissing(
        f"pytorch-fid's Inception weights ({FID_WEIGHTS_NAME}, about 95 MB) were not found; looked at "
        + ", ".join(str(p) for p in candidates)
        + f". Download {FID_WEIGHTS_URL} on a machine with internet and either put it at "
        f"{candidates[-1]} or set ${WEIGHTS_ENV} to its path."
    )


def inception_extractor(device: str | torch.device = "cpu", *, weights: str | Path | None = None) -> Extractor:
    """pytorch-fid's InceptionV3, pool3 features (2048-d), from a local copy of its weights.

    ``weights`` overrides :func:`inception_weights_path`. Raises :class:`FIDWeightsMissing`
    when no copy is found, and ValueError when the file is not the published one.
    """
    from pytorch_fid import inception as pfi

    path = Path(weights) if weights is not None else inception_weights_path()
    if not path.is_file():
        raise FIDWeightsMissing(f"weights file {path} does not exist; expected a copy of {FID_WEIGHTS_URL}")
    _verify_sha256_prefix(path)
    state = torch.load(path, map_location="cpu", weights_only=True)

    def local_copy(url, *args, **kwargs):
        # fid_inception_v3() asks for its weights by URL; answer from the file in hand so that
        # building the network can never reach for the network.
        if not str(url).endswith(FID_WEIGHTS_NAME):
            raise RuntimeError(f"pytorch-fid asked for unexpected weights {url}; refusing to download")
        return state

    with mock.patch.object(pfi, "load_state_dict_from_url", local_copy):
        # resize_input/normalize_input reproduce pytorch-fid's own preprocessing: bilinear
        # resize to 299x299 and [0, 1] -> [-1, 1].
        net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
    network = _Pool3(net).eval().to(device)
    return Extractor("inception-v3 (pytorch-fid, pool3 2048-d)", True, 2048, network)


class _Pool3(nn.Module):
    """pytorch-fid's InceptionV3 returns a list of (N, 2048, 1, 1) maps; keep the one we asked for."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0].flatten(1)


def _verify_sha256_prefix(path: Path) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(FID_WEIGHTS_SHA256_PREFIX):
        raise ValueError(
            f"{path} is not pytorch-fid's {FID_WEIGHTS_NAME}: its sha256 is {digest.hexdigest()}, which "
            f"should start with {FID_WEIGHTS_SHA256_PREFIX}. The file may be truncated; download it "
            f"again from {FID_WEIGHTS_URL}."
        )


# --------------------------------------------------------------------- the project's network


class RotNet(nn.Module):
    """A small CNN trained to tell which of four rotations was applied to a 64x64 face.

    ``features`` ends in global average pooling; its output is what distances are taken on.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), num_classes: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        self.widths, self.num_classes = tuple(widths), num_classes
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, num_classes)

    @property
    def dim(self) -> int:
        return self.widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(2.0 * x - 1.0))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features of images in [0, 1]."""
        return self.features(2.0 * x - 1.0)


def save_project_network(net: RotNet, path: Path = PROJECT_WEIGHTS) -> None:
    """Write ``net`` as safetensors, atomically, with the architecture in the file's metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    metadata = {
        "format": PROJECT_FORMAT,
        "widths": ",".join(map(str, net.widths)),
        "num_classes": str(net.num_classes),
        "input_size": "64",
    }
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(state, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o644)  # safetensors creates the file owner-only; an asset is for everyone to read
    os.replace(tmp, path)


def load_project_network(path: Path = PROJECT_WEIGHTS) -> RotNet:
    """The network :func:`save_project_network` wrote, in eval mode on the CPU."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"the project's FID feature network {path} is missing; create it with "
            "`HEBAE_DATA_DIR=<data root> python tools/train_fid_features.py` (a few minutes on a CPU), "
            "or reinstall the package, which ships it"
        )
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != PROJECT_FORMAT:
        raise ValueError(f"{path} is not a {PROJECT_FORMAT} file (metadata format {meta.get('format')!r})")
    net = RotNet(tuple(int(w) for w in meta["widths"].split(",")), int(meta["num_classes"]))
    net.load_state_dict(load_file(str(path)))
    return net.eval()


def project_extractor(device: str | torch.device = "cpu", *, weights: str | Path = PROJECT_WEIGHTS) -> Extractor:
    """Features of the project's rotation network (trained on CelebA train, 64x64 inputs)."""
    path = Path(weights)
    net = load_project_network(path)
    # Retraining changes the features; the digest in the name keeps scores of two versions apart.
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    name = f"{PROJECT_NAME}@{digest} (project-trained, {net.dim}-d)"
    return Extractor(name, False, net.dim, _Embed64(net).eval().to(device))


class _Embed64(nn.Module):
    """Resize to the 64x64 the network was trained on, then take its penultimate features."""

    def __init__(self, net: RotNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (64, 64):
            x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        return self.net.embed(x)


def default_extractor(device: str | torch.device = "cpu") -> Extractor:
    """Inception when its weights are on this machine, else the project network.

    Which one was used is in ``.name`` and ``.comparable_to_published``; print :func:`label`.
    """
    try:
        return inception_extractor(device)
    except FIDWeightsMissing:
        return project_extractor(device)
