"""Sampling speed of a PixelCNN++ prior over codes: fast against naive.

A small prior (random weights after the data-dependent init on random codes) draws a batch
of code maps. The fast sampler runs whole, twice (the first call includes tracing). The naive
one is one full network pass per position, every pass the same computation, so it is
estimated from a few timed rows: the mean time of a row's W passes (after a first, traced,
row) times H.

    python benchmarks/prior_sample_speed.py --num_categories 512 --size 32 --batch_size 16
"""

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tensorflow as tf  # noqa: E402

from pixelcnn_pp import sampling  # noqa: E402
from pixelcnn_pp.model import PixelCNNPP  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_categories", 512, "K, codes per position")
flags.DEFINE_integer("size", 32, "H = W of the code maps")
flags.DEFINE_integer("batch_size", 16, "code maps per batch")
flags.DEFINE_integer("nr_resnet", 1, "gated resnets per stage")
flags.DEFINE_integer("nr_filters", 64, "channels of both streams")
flags.DEFINE_integer("naive_rows", 2, "timed rows of the naive sampler (after a traced one)")
flags.DEFINE_string("out", None, "write the results as JSON here")


def main(_):
    B, S, K = FLAGS.batch_size, FLAGS.size, FLAGS.num_categories
    model = PixelCNNPP(nr_resnet=FLAGS.nr_resnet, nr_filters=FLAGS.nr_filters, dropout_p=0.0,
                       num_categories=K, seed=0)
    codes = tf.random.stateless_uniform((B, S, S), (1, 2), 0, K, dtype=tf.int32)
    model.initialize(codes, training=False)
    out = {"model": dict(nr_resnet=FLAGS.nr_resnet, nr_filters=FLAGS.nr_filters,
                         num_categories=K), "batch_size": B, "size": S}

    t = time.perf_counter()
    sampling.sample(model, B, (S, S), seed=0)
    out["fast_first_call_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sampling.sample(model, B, (S, S), seed=1)
    out["fast_s"] = time.perf_counter() - t

    naive = sampling._get_sampler(model, "naive", B, S, S, False, False)
    x, seed, j0 = tf.zeros((B, S, S, 1)), tf.constant(0, tf.int64), tf.constant(0)
    times = []
    for i in range(FLAGS.naive_rows + 1):
        noise = [n[0] for n in naive.head.noise(seed, tf.constant(i), 1, S, B)]
        t = time.perf_counter()
        x = naive._row(x, tf.constant(i), j0, noise, None, None)
        x.numpy()
        times.append(time.perf_counter() - t)
    out["naive_first_row_s"] = times[0]
    out["naive_row_s"] = sum(times[1:]) / FLAGS.naive_rows
    out["naive_pass_s"] = out["naive_row_s"] / S
    out["naive_estimated_s"] = out["naive_row_s"] * S
    out["speedup"] = out["naive_estimated_s"] / out["fast_s"]
    print(json.dumps(out, indent=1))
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    app.run(main)
