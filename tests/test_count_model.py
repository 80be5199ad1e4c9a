"""The count model of the code-prior benchmark: p(code | up, left) by add-alpha counting."""

import itertools
import math

import numpy as np
import pytest

from benchmarks.count_model import CountModel, neighbours


def left_copy_codes(n, H, W, K, p_copy, seed):
    """Code maps where each code repeats its left neighbour with probability p_copy and is
    uniform otherwise (uniform in the first column)."""
    rng = np.random.RandomState(seed)
    x = rng.randint(0, K, (n, H, W))
    for j in range(1, W):
        keep = rng.rand(n, H) < p_copy
        x[:, :, j] = np.where(keep, x[:, :, j - 1], x[:, :, j])
    return x


def test_neighbours_and_outside_symbol():
    codes = np.array([[[0, 1], [2, 0]]])
    up, left = neighbours(codes, 3)
    np.testing.assert_array_equal(up, [[[3, 3], [0, 1]]])
    np.testing.assert_array_equal(left, [[[3, 0], [3, 2]]])


def test_probabilities_normalise_and_are_the_smoothed_counts():
    K = 4
    train = left_copy_codes(50, 5, 6, K, 0.8, seed=0)
    m = CountModel.fit(train, K, alpha=0.5)
    assert m.probs.shape == (K + 1, K + 1, K)
    np.testing.assert_allclose(m.probs.sum(-1), 1.0, rtol=1e-12)
    assert m.counts.sum() == train.size
    # The first position's context is (outside, outside): its probabilities are the
    # first codes' frequencies, smoothed.
    first = np.bincount(train[:, 0, 0], minlength=K)
    np.testing.assert_allclose(m.probs[K, K], (first + 0.5) / (first.sum() + 0.5 * K))
    # Contexts never seen in training are uniform.
    zeros = CountModel.fit(np.zeros((3, 2, 2), int), K)
    np.testing.assert_allclose(zeros.probs[1, 2], 1.0 / K)
    np.testing.assert_allclose(zeros.probs[0, 0], [3.5 / 5, 0.5 / 5, 0.5 / 5, 0.5 / 5])


def test_joint_over_all_small_maps_sums_to_one():
    K = 3
    m = CountModel.fit(left_copy_codes(20, 2, 2, K, 0.7, seed=1), K)
    maps = np.array(list(itertools.product(range(K), repeat=4))).reshape(-1, 2, 2)
    total = np.exp(m.log_prob(maps).sum(axis=(1, 2))).sum()
    assert total == pytest.approx(1.0, rel=1e-12)


def test_beats_uniform_on_neighbour_structure_and_not_on_noise():
    K = 8
    train = left_copy_codes(400, 8, 8, K, 0.9, seed=2)
    test = left_copy_codes(100, 8, 8, K, 0.9, seed=3)
    bits = CountModel.fit(train, K).bits_per_code(test)
    # Held-out: far under the uniform model's log2(K) = 3 bits, and near the entropy of the
    # process (about 0.7 bits per code away from the first column).
    assert bits < 0.5 * math.log2(K), bits
    noise = np.random.RandomState(4).randint(0, K, (100, 8, 8))
    noise_bits = CountModel.fit(np.random.RandomState(5).randint(0, K, (400, 8, 8)),
                                K).bits_per_code(noise)
    assert math.log2(K) - 0.1 < noise_bits < math.log2(K) + 0.2, noise_bits


def test_bad_arguments():
    with pytest.raises(ValueError):
        CountModel.fit(np.full((1, 2, 2), 3), 3)
    with pytest.raises(ValueError):
        CountModel.fit(np.zeros((1, 2, 2), int), 3, alpha=0.0)
