"""Time scoring images (``scoring.score_images``: one network pass per image, training=False).

    python benchmarks/score_speed.py                    # full model, 32x32, batch 16, 160 images
    python benchmarks/score_speed.py --smoke            # seconds: a tiny model

Builds the model with data-dependent init on random images (the weights' values do not change
the arithmetic), scores one untimed batch (tracing), then ``--images`` images, and prints JSON:
images per second and the time 10,000 images would take at that rate.
"""

import json
import os
import sys
import time

from absl import app, flags

from model_flags import define_model_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

F = flags.FLAGS
define_model_flags(batch_help="Images per network pass")
flags.DEFINE_integer("images", 160, "Timed images")
flags.DEFINE_boolean("fast_ops", True, "pixelcnn_pp/fast_ops.py's faster computations")
flags.DEFINE_boolean("smoke", False, "A tiny model and two batches: checks that it runs")


def main(argv):
    del argv
    if F.smoke:
        F.nr_resnet, F.nr_filters, F.nr_logistic_mix, F.image_size = 1, 8, 2, 8
        F.batch_size, F.images = 2, 4
    import numpy as np
    import tensorflow as tf

    import keras

    from pixelcnn_pp import PixelCNNPP, scoring
    keras.utils.set_random_seed(0)   # the same untrained weights every run
    rng = np.random.RandomState(0)
    shape = (F.image_size, F.image_size, 3)
    images = rng.randint(0, 256, (F.images,) + shape).astype(np.uint8)
    model = PixelCNNPP(F.nr_resnet, F.nr_filters, F.nr_logistic_mix, dropout_p=0.5, seed=0,
                       fast_ops=F.fast_ops)
    model.initialize(tf.constant((images[:F.batch_size] - 127.5) / 127.5, tf.float32))
    t = time.perf_counter()
    scoring.score_images(model, images[:F.batch_size], batch_size=F.batch_size)
    first = time.perf_counter() - t
    t = time.perf_counter()
    scores = scoring.score_images(model, images, batch_size=F.batch_size)
    seconds = time.perf_counter() - t
    rate = F.images / seconds
    print(json.dumps({
        "images": F.images, "seconds": round(seconds, 2), "images_per_second": round(rate, 3),
        "first_batch_seconds": round(first, 2),
        "minutes_for_10000_images": round(10000 / rate / 60, 1),
        "mean_bits_per_dim": round(float(np.mean(scores["bits_per_dim"])), 4),
        "nr_resnet": F.nr_resnet, "nr_filters": F.nr_filters,
        "nr_logistic_mix": F.nr_logistic_mix, "image_size": F.image_size,
        "batch_size": F.batch_size, "fast_ops": F.fast_ops, "tensorflow": tf.__version__,
        "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
    app.run(main)
