"""Downsampled ImageNet loader on files the test writes: the original code's PNG folders (and
their .npz cache) and Chrabaszcz et al.'s pickled / .npz batches with one-based labels."""

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from pixelcnn_pp.data import imagenet_data
from pixelcnn_pp.data.loader import CorruptDatasetError, DatasetNotFoundError


def write_pngs(folder, n, size=32, seed=0, names=None):
    """n random PNGs; returns the images in sorted-file-name order."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    names = names or [f"{i:08d}.png" for i in rng.permutation(1000)[:n]]   # not written in order
    imgs = {}
    for name in names:
        imgs[name] = rng.randint(0, 256, (size, size, 3)).astype(np.uint8)
        Image.fromarray(imgs[name]).save(os.path.join(folder, name))
    return np.stack([imgs[k] for k in sorted(imgs)])


def test_png_folders_load_in_file_name_order_without_labels(tmp_path):
    train = write_pngs(tmp_path / "train_32x32", 7, seed=1)
    valid = write_pngs(tmp_path / "valid_32x32", 5, seed=2)
    x, y = imagenet_data.load(str(tmp_path), "train")
    assert y is None and x.dtype == np.uint8
    np.testing.assert_array_equal(x, train)
    np.testing.assert_array_equal(imagenet_data.load(str(tmp_path), "test")[0], valid)
    loader = imagenet_data.DataLoader(str(tmp_path), "train", 3)
    assert loader.get_num_labels() is None
    assert loader.get_observation_size() == (32, 32, 3)
    assert [b.shape for b in loader] == [(3, 32, 32, 3)] * 2
    with pytest.raises(ValueError, match="no labels"):
        imagenet_data.DataLoader(str(tmp_path), "train", 3, return_labels=True)


def test_png_cache_is_written_once_and_reused(tmp_path):
    folder = tmp_path / "small_imagenet" / "train_64x64"   # the original's nesting, 64x64
    first = write_pngs(folder, 4, size=64, seed=3, names=["a.png", "b.png", "c.png", "d.png"])
    x, _ = imagenet_data.load(str(tmp_path), "train", size=64)
    np.testing.assert_array_equal(x, first)
    cache = tmp_path / "small_imagenet" / "train_64x64.npz"
    assert cache.is_file()
    # Same number of PNGs, different pixels: the cache is what is read.
    write_pngs(folder, 4, size=64, seed=4, names=["a.png", "b.png", "c.png", "d.png"])
    np.testing.assert_array_equal(imagenet_data.load(str(tmp_path), "train", size=64)[0], first)
    # The PNGs deleted: the cache alone suffices.
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    np.testing.assert_array_equal(imagenet_data.load(str(tmp_path), "train", size=64)[0], first)


def test_png_cache_is_rebuilt_when_images_are_added(tmp_path):
    folder = tmp_path / "valid_32x32"
    write_pngs(folder, 3, seed=5, names=["a.png", "b.png", "c.png"])
    imagenet_data.load(str(tmp_path), "test")
    both = write_pngs(folder, 4, seed=6, names=["a.png", "b.png", "c.png", "d.png"])
    np.testing.assert_array_equal(imagenet_data.load(str(tmp_path), "test")[0], both)


def test_png_of_the_wrong_size_is_a_clear_error(tmp_path):
    write_pngs(tmp_path / "train_32x32", 2, size=32)
    Image.fromarray(np.zeros((30, 32, 3), np.uint8)).save(tmp_path / "train_32x32" / "odd.png")
    with pytest.raises(CorruptDatasetError, match="odd.png"):
        imagenet_data.load(str(tmp_path), "train")
    assert not (tmp_path / "train_32x32.npz").exists()


def fake_batch(n, size, seed):
    """(x (n, S, S, 3), labels 1..1000 one-based incl. both ends, the release's dict)."""
    rng = np.random.RandomState(seed)
    x = rng.randint(0, 256, (n, size, size, 3)).astype(np.uint8)
    labels = rng.randint(1, 1001, n)
    labels[0], labels[-1] = 1, 1000
    planes = np.concatenate([x[..., c].reshape(n, -1) for c in range(3)], axis=1)  # R, G, B
    d = {"data": planes, "labels": [int(v) for v in labels],
         "mean": planes.mean(0)}
    return x, labels, d


def write_release(data_dir, size=32, fmt="pickle", per_batch=3):
    """Imagenet{S}_train(/_npz)/train_data_batch_1..10 and Imagenet{S}_val(/_npz)/val_data as
    the release lays them out; returns {subset: (x, zero-based labels)}."""
    suffix = "_npz" if fmt == "npz" else ""
    out = {}
    train_names = [f"train_data_batch_{i}" for i in range(1, 11)]
    for subset, folder, names in (
            ("train", f"Imagenet{size}_train{suffix}", train_names),
            ("test", f"Imagenet{size}_val{suffix}", ["val_data"])):
        os.makedirs(os.path.join(data_dir, folder), exist_ok=True)
        xs, ys = [], []
        for i, name in enumerate(names):
            x, labels, d = fake_batch(per_batch + i % 2, size, seed=i + 100 * (subset == "test"))
            path = os.path.join(data_dir, folder, name)
            if fmt == "npz":
                np.savez(path + ".npz", **{k: np.asarray(v) for k, v in d.items()})
            else:
                with open(path, "wb") as f:
                    pickle.dump(d, f)
            xs.append(x)
            ys.append(labels - 1)
        out[subset] = (np.concatenate(xs), np.concatenate(ys))
    return out


@pytest.mark.parametrize("fmt", ["pickle", "npz"])
@pytest.mark.parametrize("size", [32, 64])
def test_downsampled_imagenet_batches_with_labels_made_zero_based(tmp_path, fmt, size):
    expected = write_release(str(tmp_path), size, fmt)
    for subset in ("train", "test"):
        x, y = imagenet_data.load(str(tmp_path), subset, size)
        ex, ey = expected[subset]
        assert x.shape == ex.shape == (len(ey), size, size, 3) and x.dtype == np.uint8
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)
        assert y.min() == 0 and y.max() == 999
    loader = imagenet_data.DataLoader(str(tmp_path), "train", 8, return_labels=True, size=size)
    assert loader.get_num_labels() == 1000
    xb, yb = next(loader)
    assert xb.shape == (8, size, size, 3) and yb.shape == (8,)


def test_labelled_batches_are_preferred_to_png_folders(tmp_path):
    expected = write_release(str(tmp_path))
    write_pngs(tmp_path / "valid_32x32", 2)
    x, y = imagenet_data.load(str(tmp_path), "test")
    np.testing.assert_array_equal(y, expected["test"][1])


def test_batches_straight_in_data_dir(tmp_path):
    x, labels, d = fake_batch(4, 32, 0)
    with open(tmp_path / "val_data", "wb") as f:
        pickle.dump(d, f)
    got_x, got_y = imagenet_data.load(str(tmp_path), "test")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, labels - 1)


def test_a_missing_training_batch_is_named(tmp_path):
    write_release(str(tmp_path))
    os.remove(tmp_path / "Imagenet32_train" / "train_data_batch_7")
    with pytest.raises(DatasetNotFoundError, match="train_data_batch_7"):
        imagenet_data.load(str(tmp_path), "train")


def test_bad_batches_are_clear_errors(tmp_path):
    folder = tmp_path / "Imagenet32_val"
    folder.mkdir()
    x, labels, d = fake_batch(4, 32, 0)
    d["labels"] = [0, 1, 2, 3]                      # zero-based: not the release
    with open(folder / "val_data", "wb") as f:
        pickle.dump(d, f)
    with pytest.raises(CorruptDatasetError, match="1..1000"):
        imagenet_data.load(str(tmp_path), "test")
    d["labels"] = [1, 2, 3, 4]
    with open(tmp_path / "val_data", "wb") as f:       # a 32x32 batch where 64x64 is asked for
        pickle.dump(d, f)
    with pytest.raises(CorruptDatasetError, match=r"\(N, 12288\)"):
        imagenet_data.load(str(tmp_path), "test", size=64)
    os.remove(tmp_path / "val_data")
    (folder / "val_data").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CorruptDatasetError, match="val_data"):
        imagenet_data.load(str(tmp_path), "test")


def test_absent_is_one_clear_error_saying_where_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        imagenet_data.load(str(tmp_path), "train", size=64)
    message = str(e.value)
    for needed in ("image-net.org", "Downsampled ImageNet 64x64", "Imagenet64_train",
                   "train_data_batch_1", "train_64x64", str(tmp_path)):
        assert needed in message


def test_bad_size(tmp_path):
    with pytest.raises(ValueError, match="sizes"):
        imagenet_data.load(str(tmp_path), "train", size=128)
