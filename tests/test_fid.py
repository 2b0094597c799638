import hashlib
from unittest import mock

import numpy as np
import pytest
import torch
import torchvision
from torch.nn import functional as F

from hebae import data, fid


# ----------------------------------------------------------------------------- the distance


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3.0, size=5), rng.uniform(0.1, 3.0, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert fid.frechet_distance((mu1, np.diag(s1)), (mu2, np.diag(s2))) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_is_invariant_to_a_common_rotation():
    # Rotating both Gaussians by the same orthogonal Q leaves the distance unchanged, which
    # checks the full-covariance path against the diagonal closed form.
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    s1, s2 = rng.uniform(0.5, 2.0, size=4), rng.uniform(0.5, 2.0, size=4)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    rotated = fid.frechet_distance((q @ mu1, q @ np.diag(s1) @ q.T), (q @ mu2, q @ np.diag(s2) @ q.T))
    assert rotated == pytest.approx(fid.frechet_distance((mu1, np.diag(s1)), (mu2, np.diag(s2))), rel=1e-8)


def test_frechet_distance_rejects_mismatched_stats():
    with pytest.raises(ValueError, match="stats_a and stats_b"):
        fid.frechet_distance((np.zeros(2), np.eye(2)), (np.zeros(3), np.eye(3)))
    with pytest.raises(ValueError, match="stats_b must be mu of shape"):
        fid.frechet_distance((np.zeros(2), np.eye(2)), (np.zeros(2), np.eye(3)))


# --------------------------------------------------------------------- the project network


@pytest.fixture(scope="module")
def faces(shared_data, tmp_path_factory) -> torch.Tensor:
    """300 CelebA test faces, decoded into a temporary cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("hebae.data.staging_root", lambda: tmp_path_factory.mktemp("stage"))
        try:
            return data.load("celeba", "test", root=shared_data, limit=300).images
        except data.DataError as err:
            pytest.skip(f"no CelebA in the shared data: {err}")


@pytest.fixture(scope="module")
def project():
    return fid.project_extractor("cpu")


def test_project_extractor_is_named_and_not_comparable(project):
    assert project.name.startswith(fid.PROJECT_NAME)
    assert not project.comparable_to_published
    assert project.dim == 256
    assert fid.label(project) == f"FD on {project.name.split(' (')[0]} features — not comparable to published FID"
    features = project(torch.rand(3, 3, 64, 64))
    assert features.shape == (3, 256)
    # Inputs of another size are resized to the 64x64 the network was trained on.
    assert project(torch.rand(2, 3, 128, 128)).shape == (2, 256)


def test_distances_on_project_features_order_sets_of_faces(faces, project):
    half_a, half_b = faces[:150], faces[150:]
    real = fid.feature_stats(half_a, project)
    scale = np.trace(real[1])
    assert abs(fid.frechet_distance(real, real)) < 1e-6 * scale

    other_faces = fid.fid(half_a, half_b, project)
    blurred = fid.fid(half_a, F.avg_pool2d(half_b, 5, stride=1, padding=2, count_include_pad=False), project)
    darker = fid.fid(half_a, half_b * 0.6, project)
    noise = fid.fid(half_a, torch.rand(150, 3, 64, 64, generator=torch.Generator().manual_seed(0)), project)
    # Other faces from the same distribution are closer than degraded faces, and faces are far
    # closer to each other than to noise.
    assert 0 < other_faces < blurred
    assert other_faces < darker
    assert noise > 5 * max(blurred, darker)


def test_feature_stats_checks_its_input(project):
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        fid.feature_stats(torch.full((2, 3, 8, 8), 2.0), project)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        fid.feature_stats(torch.rand(2, 1, 8, 8), project)
    with pytest.raises(TypeError, match="floating point"):
        fid.feature_stats(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), project)
    with pytest.raises(ValueError, match="batch_size"):
        fid.feature_stats(torch.rand(2, 3, 8, 8), project, batch_size=0)


def test_feature_stats_do_not_depend_on_batching(project):
    images = torch.rand(10, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    mu1, sigma1 = fid.feature_stats(images, project, batch_size=3)
    mu2, sigma2 = fid.feature_stats(images, project, batch_size=10)
    np.testing.assert_allclose(mu1, mu2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sigma1, sigma2, rtol=1e-4, atol=1e-8)


def test_project_extractor_names_the_training_script_when_the_asset_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="tools/train_fid_features.py"):
        fid.project_extractor(weights=tmp_path / "none.safetensors")


# -------------------------------------------------------------------------------- Inception


@pytest.fixture
def no_inception_weights(tmp_path, monkeypatch):
    """$HEBAE_FID_WEIGHTS names a missing file and the hub cache is empty."""
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path


def test_inception_extractor_says_where_to_put_the_weights(no_inception_weights):
    with pytest.raises(fid.FIDWeightsMissing) as err:
        fid.inception_extractor()
    message = str(err.value)
    assert fid.FID_WEIGHTS_NAME in message and fid.WEIGHTS_ENV in message
    assert str(no_inception_weights / "hub" / "checkpoints" / fid.FID_WEIGHTS_NAME) in message


def test_a_missing_env_path_falls_back_to_the_hub_cache_with_a_warning(no_inception_weights):
    cached = no_inception_weights / "hub" / "checkpoints" / fid.FID_WEIGHTS_NAME
    cached.parent.mkdir(parents=True)
    cached.touch()
    with pytest.warns(UserWarning, match=fid.WEIGHTS_ENV):
        assert fid.inception_weights_path() == cached


def test_default_extractor_falls_back_to_the_project_network(no_inception_weights):
    extractor = fid.default_extractor("cpu")
    assert extractor.name.startswith(fid.PROJECT_NAME)
    assert extractor.comparable_to_published is False


@pytest.fixture(scope="module")
def fake_inception_weights(tmp_path_factory):
    """A randomly initialised FID Inception state dict, saved like the real file, with its sha256."""
    from pytorch_fid import inception as pfi

    captured = []

    def capture(self, state_dict, *args, **kwargs):
        captured.append({k: v.clone() for k, v in self.state_dict().items()})

    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: {}), mock.patch.object(
        torchvision.models.Inception3, "load_state_dict", capture
    ):
        pfi.fid_inception_v3()
    path = tmp_path_factory.mktemp("inception") / fid.FID_WEIGHTS_NAME
    torch.save(captured[0], path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), captured[0]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Any attempt to download fails the test; the hub cache is empty."""

    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def test_inception_extractor_loads_the_local_file_without_the_network(fake_inception_weights, offline, monkeypatch):
    path, sha256, state = fake_inception_weights
    monkeypatch.setattr(fid, "FID_WEIGHTS_SHA256_PREFIX", sha256[:8])
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(path))
    extractor = fid.default_extractor("cpu")
    assert extractor.comparable_to_published and extractor.dim == 2048
    assert fid.label(extractor) == "FID (Inception, pytorch-fid)"
    first_conv = extractor.network.net.blocks[0][0].conv.weight
    torch.testing.assert_close(first_conv, state["Conv2d_1a_3x3.conv.weight"], rtol=0, atol=0)
    assert extractor(torch.rand(2, 3, 64, 64)).shape == (2, 2048)


def test_inception_extractor_rejects_a_file_that_is_not_the_published_one(fake_inception_weights, offline):
    path, _, _ = fake_inception_weights
    with pytest.raises(ValueError, match="sha256"):
        fid.inception_extractor(weights=path)
