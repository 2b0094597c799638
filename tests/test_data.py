import gzip
import shutil

import pytest
import torch

from hebae import data
from hebae.data import DataError


def _tree(root):
    return sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_mnist_shapes_range_labels(shared_data):
    before = _tree(shared_data / "MNIST")
    train, test = data.load("mnist", "train", root=shared_data), data.load("mnist", "test", root=shared_data)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.float32
    assert train.images.min() == 0.0 and train.images.max() == 1.0
    assert set(train.labels.unique().tolist()) == set(range(10))
    # The shared root was read, not written.
    assert _tree(shared_data / "MNIST") == before


def test_mnist_missing_names_root_and_files(tmp_path, staging):
    with pytest.raises(DataError) as err:
        data.mnist("train", root=tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "train-images-idx3-ubyte.gz" in message
    assert "HEBAE_DATA_DIR" in message


def test_mnist_corrupt_file_fails_checksum(shared_data, tmp_path, staging):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(shared_data / "MNIST" / "raw", raw)
    target = raw / "t10k-labels-idx1-ubyte.gz"
    target.chmod(0o644)
    with gzip.open(target, "wb") as f:
        f.write(b"not mnist")
    with pytest.raises(DataError, match=r"md5.*t10k-labels-idx1-ubyte\.gz|t10k-labels-idx1-ubyte\.gz.*md5"):
        data.mnist("test", root=tmp_path)


def test_celeba_split_sizes_follow_partition_file(shared_data):
    if not (shared_data / "celeba").is_dir():
        pytest.skip("no CelebA in the shared data")
    train, test = data.celeba_files("train", shared_data), data.celeba_files("test", shared_data)
    assert (len(train), len(test)) == (15360, 4640)
    assert not set(train) & set(test)


def test_celeba_images_are_cropped_64px_in_unit_range(shared_data, staging):
    if not (shared_data / "celeba").is_dir():
        pytest.skip("no CelebA in the shared data")
    faces = data.load("celeba", "test", root=shared_data, limit=8)
    assert faces.images.shape == (8, 3, 64, 64)
    assert 0.0 <= faces.images.min() < faces.images.max() <= 1.0
    # Second load comes from the uint8 cache and is identical.
    again = data.load("celeba", "test", root=shared_data, limit=8)
    assert torch.equal(faces.images, again.images)
    assert len(list((staging / "celeba_cache").glob("*.pt"))) == 1


def test_celeba_missing_and_corrupt(tmp_path, staging):
    with pytest.raises(DataError, match="CelebA is missing from data root"):
        data.celeba("train", root=tmp_path)
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    (folder / "000001.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(DataError, match="000001.jpg cannot be decoded"):
        data.celeba("train", root=tmp_path)


def test_synthetic_is_deterministic_with_known_latent_dim():
    a, b = data.synthetic("train", n=64, latent_dim=3), data.synthetic("train", n=64, latent_dim=3)
    assert torch.equal(a.images, b.images)
    assert a.images.shape == (64, 1, 8, 8) and a.labels.shape == (64, 3)
    assert ((a.images > 0) & (a.images < 1)).all()
    test = data.synthetic("test", n=64, latent_dim=3)
    assert not torch.equal(a.labels, test.labels)
    # The map from code to pixels is non-linear, so the pixels are not exactly rank 3, but three
    # principal components carry most of their variance.
    x = data.synthetic("train", n=2048, latent_dim=3).images.flatten(1)
    s = torch.linalg.svdvals(x - x.mean(0))
    assert (s[:3].pow(2).sum() / s.pow(2).sum()) > 0.8


def test_bad_dataset_and_split_names():
    with pytest.raises(ValueError, match="dataset must be one of mnist, fashion, celeba, synthetic"):
        data.load("cifar")
    with pytest.raises(ValueError, match="split must be one of train, test"):
        data.load("synthetic", "valid")


def test_limit_takes_the_first_examples(shared_data):
    full = data.load("mnist", "test", root=shared_data)
    few = data.load("mnist", "test", root=shared_data, limit=5)
    assert torch.equal(few.images, full.images[:5]) and torch.equal(few.labels, full.labels[:5])
    assert len(data.load("synthetic", "test", limit=7)) == 7
