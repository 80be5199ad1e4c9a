"""train.py's input pipeline (``training.distribute_batches``): what a step receives."""

import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp.training import distribute_batches


def _batches(n, shape, labels=True, spatial=None, seed=0):
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        x = rng.randint(0, 256, shape).astype(np.uint8 if len(shape) == 4 else np.int64)
        b = [x]
        if labels:
            b.append(rng.randint(0, 3, shape[0]).astype(np.int64))
        if spatial is not None:
            b.append(rng.randn(shape[0], *spatial).astype(np.float64))
        out.append(tuple(b) if len(b) > 1 else x)
    return out


@pytest.mark.parametrize("strategy", [tf.distribute.get_strategy,
                                      lambda: tf.distribute.OneDeviceStrategy("/cpu:0")],
                         ids=["default", "one_device"])
def test_one_cpu_replica_gets_the_batches_as_plain_tensors(strategy):
    strategy = strategy()
    images = _batches(3, (4, 6, 6, 3))
    got = list(distribute_batches(strategy, images, (6, 6, 3), 4, with_labels=True))
    assert len(got) == 3
    for (x, y), (xs, ys) in zip(got, images):
        assert type(x) is type(tf.constant(0)) and type(y) is type(tf.constant(0))
        assert x.dtype == tf.uint8 and y.dtype == tf.int32
        np.testing.assert_array_equal(x.numpy(), xs)
        np.testing.assert_array_equal(y.numpy(), ys)
    # code maps with spatial maps, without labels: zeros for y, int32 codes, float32 maps
    codes = _batches(2, (4, 5, 7), labels=False, spatial=(3, 4, 2))
    got = list(distribute_batches(strategy, codes, (5, 7), 4, with_labels=False,
                                  spatial_shape=(3, 4, 2)))
    for (x, y, s), (xs, ss) in zip(got, codes):
        assert (x.dtype, y.dtype, s.dtype) == (tf.int32, tf.int32, tf.float32)
        np.testing.assert_array_equal(x.numpy(), xs)
        np.testing.assert_array_equal(y.numpy(), np.zeros(4))
        np.testing.assert_array_equal(s.numpy(), ss.astype(np.float32))
    # every iter() is a new pass over what the iterable yields
    pipeline = distribute_batches(strategy, images, (6, 6, 3), 4, with_labels=True)
    assert len(list(pipeline)) == len(list(pipeline)) == 3
