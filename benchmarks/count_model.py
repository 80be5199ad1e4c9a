"""A counting yardstick for priors over codes: p(code | up neighbour, left neighbour).

    table = CountModel.fit(train_codes, num_categories=K)     # alpha = 0.5
    table.bits_per_code(test_codes)

Each code is predicted from the code above it and the code to its left, by counting on the
training maps with add-alpha smoothing:

    p(c | u, l) = (n(u, l, c) + alpha) / (n(u, l) + alpha K)

Positions in the first row have no code above and those in the first column none to the
left: there the neighbour is a symbol of its own, K ("outside"), so the table has
(K + 1)^2 contexts. The product over positions in raster order is a proper distribution over
whole maps (each factor conditions on earlier codes only), so its held-out bits per code
compare directly with an autoregressive network's. alpha is fixed, not tuned on any split.
"""

import math

import numpy as np

__all__ = ["CountModel", "neighbours"]


def neighbours(codes, num_categories):
    """(up, left), each (N, H, W) int64: the code above and to the left of every position of
    codes (N, H, W), or num_categories where there is none."""
    codes = np.asarray(codes, np.int64)
    K = int(num_categories)
    up = np.full_like(codes, K)
    left = np.full_like(codes, K)
    up[:, 1:] = codes[:, :-1]
    left[:, :, 1:] = codes[:, :, :-1]
    return up, left


class CountModel:
    """p(code | up, left) from counts; ``probs`` (K + 1, K + 1, K) [up, left, code]."""

    def __init__(self, counts, alpha=0.5):
        self.counts = np.asarray(counts, np.float64)             # (K + 1, K + 1, K)
        self.num_categories = K = self.counts.shape[-1]
        assert self.counts.shape == (K + 1, K + 1, K), self.counts.shape
        self.alpha = float(alpha)
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0 (unseen codes need probability); got {alpha}")
        smoothed = self.counts + self.alpha
        self.probs = smoothed / smoothed.sum(axis=-1, keepdims=True)

    @classmethod
    def fit(cls, codes, num_categories, alpha=0.5):
        """Count the (up, left, code) triples of codes (N, H, W) ints in [0, K)."""
        codes = np.asarray(codes, np.int64)
        K = int(num_categories)
        if codes.ndim != 3 or (codes.size and (codes.min() < 0 or codes.max() >= K)):
            raise ValueError(f"codes must be (N, H, W) ints in [0, {K}); got {codes.shape}")
        up, left = neighbours(codes, K)
        flat = (up * (K + 1) + left) * K + codes
        counts = np.bincount(flat.ravel(), minlength=(K + 1) ** 2 * K)
        return cls(counts.reshape(K + 1, K + 1, K), alpha)

    def log_prob(self, codes):
        """(N, H, W) log p (nats) of every code given its up and left neighbours."""
        codes = np.asarray(codes, np.int64)
        up, left = neighbours(codes, self.num_categories)
        return np.log(self.probs[up, left, codes])

    def bits_per_code(self, codes):
        """The mean negative log2-likelihood of codes (N, H, W) per code."""
        return float(-self.log_prob(codes).mean() / math.log(2.0))
