"""A tiny labelled data set for training tests, and an example of a custom DataLoader:
``--data_set tinyset:DataLoader`` with this file's folder on PYTHONPATH."""

import numpy as np

from pixelcnn_pp.data import loader


def make_images(n, seed):
    """(n, 8, 8, 3) uint8 smooth gradients with noise (learnable), labels 0..2."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 3, size=n)
    yy, xx = np.mgrid[0:8, 0:8]
    base = np.stack([yy * 30, xx * 30, (yy + xx) * 15], -1)[None]           # (1, 8, 8, 3)
    x = base + labels[:, None, None, None] * 20 + rng.randint(0, 25, size=(n, 8, 8, 3))
    return np.clip(x, 0, 255).astype(np.uint8), labels


class DataLoader(loader.DataLoader):
    def __init__(self, data_dir, subset, batch_size, rng=None, shuffle=False,
                 return_labels=False):
        x, y = make_images(64 if subset == "train" else 16, 0 if subset == "train" else 1)
        super().__init__(x, y, batch_size, rng=rng, shuffle=shuffle,
                         return_labels=return_labels, num_labels=3)


class DataLoader16(loader.DataLoader):
    """16x16 images (the golden configuration's size), unlabelled."""

    def __init__(self, data_dir, subset, batch_size, rng=None, shuffle=False,
                 return_labels=False):
        x, _ = make_images(32 if subset == "train" else 8, 2 if subset == "train" else 3)
        x = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)                      # (n, 16, 16, 3)
        super().__init__(x, None, batch_size, rng=rng, shuffle=shuffle,
                         return_labels=return_labels)
