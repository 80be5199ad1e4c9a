"""MNIST loader on IDX files the test writes (gzipped and raw), their download, and errors."""

import gzip
import hashlib
import os
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest

from pixelcnn_pp.data import mnist_data
from pixelcnn_pp.data.loader import CorruptDatasetError, DatasetNotFoundError


def idx_bytes(array, magic=None):
    """The IDX encoding: big-endian magic (0x08 = uint8, then the number of dimensions), the
    dimensions as big-endian int32, then the bytes."""
    magic = (0x0800 | array.ndim) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=11, n_test=7, gz_train=True, gz_test=False, seed=0):
    """Train files gzipped and test files raw by default; returns the arrays written."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    out = {}
    for prefix, n, gz in (("train", n_train, gz_train), ("t10k", n_test, gz_test)):
        x = rng.randint(0, 256, (n, 28, 28)).astype(np.uint8)
        y = rng.randint(0, 10, n).astype(np.uint8)
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
                    f.write(idx_bytes(arr))
            else:
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(idx_bytes(arr))
        out["train" if prefix == "train" else "test"] = (x, y)
    return out


@pytest.fixture
def offline(monkeypatch):
    attempts = []

    def urlopen(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return attempts


@pytest.mark.parametrize("subset", ["train", "test"])   # train gzipped, test raw
def test_idx_files_load_as_nhwc(tmp_path, offline, subset):
    expected = write_mnist(tmp_path)
    x, y = mnist_data.load(str(tmp_path), subset)
    ex, ey = expected[subset]
    assert x.dtype == np.uint8 and x.shape == (len(ex), 28, 28, 1)
    np.testing.assert_array_equal(x[..., 0], ex)
    np.testing.assert_array_equal(y, ey)
    assert not offline


def test_dataloader_and_torchvision_layout(tmp_path, offline):
    expected = write_mnist(tmp_path / "MNIST" / "raw", gz_test=True)
    loader = mnist_data.DataLoader(str(tmp_path), "test", 3, return_labels=True)
    assert loader.get_num_labels() == 10 and loader.get_observation_size() == (28, 28, 1)
    batches = list(loader)
    assert len(batches) == 2
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), expected["test"][1][:6])


def test_pad_to_32_pads_with_zeros_around_the_digit(tmp_path, offline):
    expected = write_mnist(tmp_path)
    x, _ = mnist_data.load(str(tmp_path), "train", pad_to=32)
    assert x.shape == (11, 32, 32, 1)
    np.testing.assert_array_equal(x[:, 2:30, 2:30, 0], expected["train"][0])
    inner = np.zeros((32, 32), bool)
    inner[2:30, 2:30] = True
    assert not x[:, ~inner].any()
    with pytest.raises(ValueError, match="at least 28"):
        mnist_data.load(str(tmp_path), "train", pad_to=24)


def test_bad_magic_is_a_clear_error(tmp_path, offline):
    write_mnist(tmp_path)
    labels = np.zeros(7, np.uint8)
    # A label file where the image file should be (magic 0x801, not 0x803).
    with open(tmp_path / "t10k-images-idx3-ubyte", "wb") as f:
        f.write(idx_bytes(labels))
    with pytest.raises(CorruptDatasetError, match="magic number is 0x801, expected 0x803"):
        mnist_data.load(str(tmp_path), "test")


def test_truncated_files_are_clear_errors(tmp_path, offline):
    write_mnist(tmp_path)
    raw = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(CorruptDatasetError, match="truncated"):
        mnist_data.load(str(tmp_path), "test")
    gz = (tmp_path / "train-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gz[:len(gz) // 2])
    with pytest.raises(CorruptDatasetError, match="train-images-idx3-ubyte.gz"):
        mnist_data.load(str(tmp_path), "train")


def test_images_and_labels_must_agree_in_number(tmp_path, offline):
    write_mnist(tmp_path)
    with open(tmp_path / "t10k-labels-idx1-ubyte", "wb") as f:
        f.write(idx_bytes(np.zeros(6, np.uint8)))
    with pytest.raises(CorruptDatasetError, match="7 images but 6 labels"):
        mnist_data.load(str(tmp_path), "test")


def test_absent_and_offline_is_one_clear_error(tmp_path, offline):
    with pytest.raises(DatasetNotFoundError) as e:
        mnist_data.load(str(tmp_path / "mnist"), "train")
    message = str(e.value)
    name = "train-images-idx3-ubyte.gz"
    for needed in (name, mnist_data.URL + name, str(tmp_path / "mnist" / name),
                   mnist_data.FILES[name][1]):
        assert needed in message
    assert offline == [mnist_data.URL + name]


def test_download_checks_and_keeps_the_files(tmp_path, monkeypatch):
    server = tmp_path / "server"
    expected = write_mnist(server, gz_test=True)
    files = {name: ((server / name).stat().st_size,
                    hashlib.md5((server / name).read_bytes()).hexdigest())
             for name in mnist_data.FILES}
    monkeypatch.setattr(mnist_data, "FILES", files)
    monkeypatch.setattr(mnist_data, "URL", server.as_uri() + "/")
    x, y = mnist_data.load(str(tmp_path / "data"), "test")
    np.testing.assert_array_equal(x[..., 0], expected["test"][0])
    assert sorted(os.listdir(tmp_path / "data")) == ["t10k-images-idx3-ubyte.gz",
                                                     "t10k-labels-idx1-ubyte.gz"]
    # A corrupt download is refused and leaves nothing.
    files["train-images-idx3-ubyte.gz"] = (files["train-images-idx3-ubyte.gz"][0], "0" * 32)
    with pytest.raises(CorruptDatasetError, match="md5"):
        mnist_data.load(str(tmp_path / "data"), "train")
    assert "train-images-idx3-ubyte.gz" not in os.listdir(tmp_path / "data")
