"""The codes data set (--data_set codes): maps of discrete codes in one .npz, with optional
labels and spatial maps, and one clear error for each way such a file can be wrong."""

import numpy as np
import pytest

from pixelcnn_pp.data import CorruptDatasetError, DatasetNotFoundError, make_loader

K = 7


def write(path, **over):
    rng = np.random.RandomState(0)
    arrays = dict(train_codes=rng.randint(0, K, (12, 6, 4)),
                  test_codes=rng.randint(0, K, (4, 6, 4)), num_categories=np.int64(K))
    arrays.update(over)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


def test_batches_of_codes_labels_and_spatial_maps(tmp_path):
    rng = np.random.RandomState(1)
    path = write(tmp_path / "c.npz", train_labels=np.arange(12) % 3,
                 test_labels=np.arange(4) % 3,
                 train_spatial=rng.randn(12, 3, 2, 5), test_spatial=rng.randn(4, 3, 2, 5))
    plain = make_loader("codes", path, "train", 4)
    x = next(plain)
    assert x.shape == (4, 6, 4) and x.dtype == np.int32 and x.max() < K
    assert plain.get_observation_size() == (6, 4) and plain.get_num_categories() == K
    assert plain.get_spatial_shape() == (3, 2, 5) and plain.get_num_labels() == 3
    both = make_loader("codes", path, "test", 2, return_labels=True, return_spatial=True)
    x, y, s = next(both)
    with np.load(path) as f:
        np.testing.assert_array_equal(x, f["test_codes"][:2])
        np.testing.assert_array_equal(y, f["test_labels"][:2])
        np.testing.assert_allclose(s, f["test_spatial"][:2].astype(np.float32))
    x, s = next(make_loader("codes", path, "test", 2, return_spatial=True))
    assert s.shape == (2, 3, 2, 5) and s.dtype == np.float32
    # An epoch is every full batch once, shuffled by the rng; the state round-trips.
    shuffled = make_loader("codes", path, "train", 4, rng=np.random.RandomState(3),
                           shuffle=True, return_labels=True, return_spatial=True)
    seen = [b for b in shuffled]
    assert len(seen) == 3
    assert sorted(np.concatenate([y for _, y, _ in seen]).tolist()) == sorted(
        (np.arange(12) % 3).tolist())


@pytest.mark.parametrize("over, words", [
    (dict(train_codes=np.full((12, 6, 4), K)), ["train_codes", f"code {K}", f"[0, {K})"]),
    (dict(test_codes=-np.ones((4, 6, 4), np.int64)), ["test_codes", "code -1"]),
    (dict(test_codes=np.zeros((4, 6, 5), np.int64)), ["test_codes", "(6, 5)", "(6, 4)"]),
    (dict(train_codes=np.zeros((12, 6, 4), np.float32)), ["train_codes", "integer codes"]),
    (dict(test_codes=None), ["test_codes is missing", "train_codes"]),
    (dict(num_categories=None), ["num_categories is missing"]),
    (dict(num_categories=np.array([K, K])), ["num_categories", "one integer"]),
    (dict(train_labels=np.zeros(12, np.int64)), ["test_labels is missing",
                                                 "train_labels is there"]),
    (dict(train_labels=np.zeros(11, np.int64), test_labels=np.zeros(4, np.int64)),
     ["train_labels", "(12,)", "one per code map"]),
    (dict(train_spatial=np.zeros((12, 4, 4, 2)), test_spatial=np.zeros((4, 4, 4, 2))),
     ["train_spatial", "4x4", "6x4", "whole multiples"]),
    (dict(train_spatial=np.zeros((12, 3, 2, 2)), test_spatial=np.zeros((4, 3, 2, 3))),
     ["test_spatial", "(3, 2, 3)", "(3, 2, 2)"]),
    (dict(train_spatial=np.full((12, 3, 2, 2), np.nan), test_spatial=np.zeros((4, 3, 2, 2))),
     ["train_spatial", "NaN"]),
    (dict(train_spatial=np.zeros((10, 3, 2, 2)), test_spatial=np.zeros((4, 3, 2, 2))),
     ["train_spatial", "(12, Hs, Ws, D)"]),
])
def test_a_bad_file_gets_one_line_naming_the_array(tmp_path, over, words):
    path = write(tmp_path / "bad.npz", **over)
    with pytest.raises(CorruptDatasetError) as e:
        make_loader("codes", path, "train", 2)
    message = str(e.value)
    assert "\n" not in message and path in message
    for w in words:
        assert w in message, (w, message)


def test_a_missing_or_unreadable_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="train_codes, test_codes and num_categories"):
        make_loader("codes", str(tmp_path / "none.npz"), "train", 2)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CorruptDatasetError, match="not a readable .npz"):
        make_loader("codes", str(tmp_path / "junk.npz"), "train", 2)
    with pytest.raises(ValueError, match="no spatial maps"):
        make_loader("codes", write(tmp_path / "c.npz"), "train", 2, return_spatial=True)
