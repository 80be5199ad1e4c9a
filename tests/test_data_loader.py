"""The DataLoader contract (data/loader.py): batches, epochs, shuffling, resume."""

import numpy as np
import pytest

from pixelcnn_pp import data
from pixelcnn_pp.data.loader import DataLoader

N, B = 103, 10   # 10 full batches; the last 3 images of an epoch are dropped


def images(n=N):
    """(n, 4, 4, 3) uint8 images whose id (0..n-1) is readable back by ids()."""
    x = np.zeros((n, 4, 4, 3), np.uint8)
    x[:, 0, 0, 0] = np.arange(n) // 256
    x[:, 0, 0, 1] = np.arange(n) % 256
    x[:, 1:] = 7
    return x


def ids(x):
    return x[:, 0, 0, 0].astype(int) * 256 + x[:, 0, 0, 1]


def epochs(loader, k):
    """The image ids of each batch of k epochs: a list of k lists of arrays."""
    return [[ids(x) for x in loader] for _ in range(k)]


def test_batches_are_uint8_nhwc_and_the_last_partial_batch_is_dropped():
    loader = DataLoader(images(), None, B)
    batches = list(loader)
    assert len(batches) == len(loader) == N // B
    for x in batches:
        assert x.dtype == np.uint8 and x.shape == (B, 4, 4, 3)
    # Without shuffling: the file order, the tail dropped.
    np.testing.assert_array_equal(np.concatenate([ids(x) for x in batches]), np.arange(100))
    assert loader.get_observation_size() == (4, 4, 3)
    assert loader.get_num_labels() is None


def test_an_epoch_ends_and_the_next_begins():
    loader = DataLoader(images(), None, B)
    first, second = epochs(loader, 2)
    assert len(first) == len(second) == N // B
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(second))


def test_shuffle_reshuffles_every_epoch_and_is_reproducible_from_the_rng():
    e = epochs(DataLoader(images(), None, B, np.random.RandomState(5), shuffle=True), 3)
    again = epochs(DataLoader(images(), None, B, np.random.RandomState(5), shuffle=True), 3)
    other = epochs(DataLoader(images(), None, B, np.random.RandomState(6), shuffle=True), 3)
    flat = [np.concatenate(epoch) for epoch in e]
    for f in flat:
        assert len(set(f)) == 100               # no image twice in an epoch
        assert not np.array_equal(f, np.arange(100))
    assert not np.array_equal(flat[0], flat[1]) and not np.array_equal(flat[1], flat[2])
    for a, b in zip(e, again):
        np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
    assert not np.array_equal(flat[0], np.concatenate(other[0]))


def test_default_rng_is_randomstate_1():
    a = epochs(DataLoader(images(), None, B, shuffle=True), 2)
    b = epochs(DataLoader(images(), None, B, np.random.RandomState(1), shuffle=True), 2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.concatenate(x), np.concatenate(y))


def test_shuffled_order_is_the_original_codes():
    """The original permutes its data array in place at the start of every epoch."""
    rng = np.random.RandomState(3)
    reference = images()
    expected = []
    for _ in range(3):
        reference = reference[rng.permutation(N)]
        expected.append([ids(reference[i:i + B]) for i in range(0, N - B + 1, B)])
    got = epochs(DataLoader(images(), None, B, np.random.RandomState(3), shuffle=True), 3)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(np.concatenate(e), np.concatenate(g))


def test_labels_travel_with_their_images():
    y = (np.arange(N) * 7) % 5
    loader = DataLoader(images(), y, B, np.random.RandomState(0), shuffle=True,
                        return_labels=True)
    assert loader.get_num_labels() == 5
    for x, labels in loader:
        assert labels.shape == (B,) and np.issubdtype(labels.dtype, np.integer)
        np.testing.assert_array_equal(labels, (ids(x) * 7) % 5)
    assert DataLoader(images(), y, B, num_labels=10).get_num_labels() == 10


def test_next_with_a_count_as_the_original_train_py_uses_for_init():
    loader = DataLoader(images(), None, B)
    assert loader.next(16).shape == (16, 4, 4, 3)
    loader.reset()
    np.testing.assert_array_equal(ids(next(loader)), np.arange(B))


@pytest.mark.parametrize("init_batch_size", [B, 2 * B, 3])
def test_init_batch_then_training_follow_the_originals_order(init_batch_size):
    # The original's train.py: init batch = first init_batch_size images of the first
    # permutation; the pointer then moves by batch_size (whatever the count) and training goes
    # on in that permutation, so epoch 0 has one batch fewer.
    loader = DataLoader(images(), None, B, np.random.RandomState(5), shuffle=True)
    perm = np.random.RandomState(5).permutation(N)
    np.testing.assert_array_equal(ids(loader.next(init_batch_size)), perm[:init_batch_size])
    epoch0 = [ids(x) for x in loader]
    assert len(epoch0) == N // B - 1
    np.testing.assert_array_equal(np.concatenate(epoch0), perm[B:B * (N // B)])


@pytest.mark.parametrize("kwargs, message", [
    (dict(data=images(), labels=None, batch_size=B, return_labels=True), "no labels"),
    (dict(data=images(), labels=None, batch_size=N + 1), "batch_size"),
    (dict(data=images().astype(np.float32), labels=None, batch_size=B), "uint8"),
    (dict(data=images(), labels=np.zeros(N - 1), batch_size=B), "labels"),
])
def test_misuse_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataLoader(**kwargs)


def _state_roundtrip(state, tmp_path):
    """What a training loop does with the state: write it to disk, read it back."""
    np.savez(tmp_path / "state.npz", **state)
    with np.load(tmp_path / "state.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("batches_into_epoch", [0, 4])
def test_resume_from_state_yields_exactly_the_remaining_batches(tmp_path, batches_into_epoch):
    y = np.arange(N) % 4
    run = DataLoader(images(), y, B, np.random.RandomState(11), shuffle=True, return_labels=True)
    for _ in range(2):                              # two epochs done
        list(run)
    for _ in range(batches_into_epoch):
        next(run)
    state = _state_roundtrip(run.get_state(), tmp_path)
    assert state["order"].shape == (N,)

    def rest(loader):   # the rest of this epoch and two more
        return [(ids(x), lab) for x, lab in loader] + \
            [(ids(x), lab) for _ in range(2) for x, lab in loader]

    expected = rest(run)
    resumed = DataLoader(images(), y, B, np.random.RandomState(999), shuffle=True,
                         return_labels=True)
    resumed.set_state(state)
    got = rest(resumed)
    assert len(got) == len(expected) == 3 * (N // B) - batches_into_epoch
    for (ex, ey), (gx, gy) in zip(expected, got):
        np.testing.assert_array_equal(ex, gx)
        np.testing.assert_array_equal(ey, gy)
    # Without the state, a fresh loader would not have given these batches.
    fresh = DataLoader(images(), y, B, np.random.RandomState(11), shuffle=True,
                       return_labels=True)
    assert not np.array_equal(np.concatenate([i for i, _ in rest(fresh)]),
                              np.concatenate([i for i, _ in expected]))


def test_set_state_rejects_a_state_of_other_data():
    state = DataLoader(images(), None, B).get_state()
    with pytest.raises(ValueError, match="permutation"):
        DataLoader(images(N + 1), None, B).set_state(state)


def test_loader_class_by_name_and_by_module():
    cls, extra = data.loader_class("imagenet64")
    assert cls.__module__ == "pixelcnn_pp.data.imagenet_data" and extra == {"size": 64}
    cls, extra = data.loader_class("pixelcnn_pp.data.demo_data:DataLoader")
    assert cls.__module__ == "pixelcnn_pp.data.demo_data" and extra == {}
    with pytest.raises(ValueError, match="did you mean 'cifar'"):
        data.loader_class("cifra")
