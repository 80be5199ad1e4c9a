"""Priors over discrete codes: PixelCNN++, the masked PixelCNN and counting, on the same codes.

    python benchmarks/prior_codes.py --data_dir codes.npz --make_data   # synthetic codes first
    python benchmarks/prior_codes.py --data_dir codes.npz --steps 2000
    python benchmarks/prior_codes.py --data_dir vqvae_codes.npz         # any codes .npz
    python benchmarks/prior_codes.py --smoke                            # seconds: checks it runs
    python benchmarks/prior_codes.py --sampling_only --height 32 --width 32 \
        --num_categories 512 --nr_resnet 1                              # the samplers alone

On the codes of ``--data_dir`` (a codes .npz, ``pixelcnn_pp/data/codes_data.py``), held-out
bits per code of

  (a) PixelCNN++ with the K-way head (``PixelCNNPP(num_categories=K)``),
  (b) the masked PixelCNN of van den Oord et al. 2016 made K-way
      (``baseline.PixelCNN(num_categories=K)``, the model class of keras.io's VQ-VAE prior),
  (c) p(code | up neighbour, left neighbour) by counting on the training maps
      (``count_model.py``, add-0.5 smoothing),

and, as a reference, the uniform K-way model (log2 K). (a) and (b) see the same batches, in
the same order, for the same number of steps: the project's Adam (the original's) at a
constant learning rate, in a plain tf.function step loop; then every test map is scored with
the trained weights (``training=False``; no Polyak averages).

Then the time to sample ``--sample_maps`` code maps from (a): the fast sampler, timed after
one warm-up call (the first call's time, tracing included, is reported too), and the naive
one estimated as H·W times the median of ``--naive_positions`` timed full network passes on
a batch of that many maps (one pass per position is what naive sampling runs; the few
categorical draws besides are left out). ``--naive_full`` runs the naive sampler instead.
``--sampling_only`` times the samplers alone, no data and no training: a prior of
--height x --width maps of --num_categories codes with random weights after the data-dependent
init on random codes (sampling time does not depend on what the weights learned).

``--make_data`` writes ``--data_dir`` first (refusing to overwrite it): smoothed Gaussian
random fields quantised to K equally likely levels, so that the benchmark runs offline,
without the VQ-VAE example. A readable table, then one JSON line, last.
"""

import json
import math
import os
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

F = flags.FLAGS
flags.DEFINE_string("data_dir", "prior_codes.npz", "Codes .npz (written by --make_data)")
flags.DEFINE_boolean("make_data", False, "Write --data_dir with synthetic codes first")
flags.DEFINE_integer("num_categories", 32, "K of the synthetic codes (--make_data)")
flags.DEFINE_integer("height", 16, "H of the synthetic code maps (--make_data)")
flags.DEFINE_integer("width", 16, "W of the synthetic code maps (--make_data)")
flags.DEFINE_integer("train_maps", 10000, "Synthetic training maps (--make_data)")
flags.DEFINE_integer("test_maps", 1000, "Synthetic test maps (--make_data)")
flags.DEFINE_float("length_scale", 2.0, "Smoothing of the synthetic fields, in positions")
flags.DEFINE_integer("nr_resnet", 2, "PixelCNN++: gated resnet blocks per stage")
flags.DEFINE_integer("nr_filters", 64, "PixelCNN++: filters")
flags.DEFINE_float("dropout_p", 0.5, "PixelCNN++: dropout rate in training (the original's)")
flags.DEFINE_boolean("fast_ops", True, "PixelCNN++: pixelcnn_pp/fast_ops.py's computations")
flags.DEFINE_integer("num_layers", 8, "Baseline: residual blocks after the mask-A conv")
flags.DEFINE_integer("num_filters", 64, "Baseline: feature maps")
flags.DEFINE_integer("steps", 2000, "Training steps of each network")
flags.DEFINE_integer("batch_size", 32, "Code maps per step (and per scoring pass)")
flags.DEFINE_float("learning_rate", 1e-3, "Adam's learning rate (constant)")
flags.DEFINE_float("alpha", 0.5, "The count model's add-alpha smoothing")
flags.DEFINE_integer("seed", 1, "Seeds the data, the weights, the batch order, the samples")
flags.DEFINE_integer("sample_maps", 16, "Code maps sampled at once")
flags.DEFINE_integer("naive_positions", 5, "Timed full passes behind the naive estimate")
flags.DEFINE_boolean("naive_full", False, "Run the naive sampler instead of estimating it")
flags.DEFINE_boolean("smoke", False, "Tiny data, models and step count: checks that it runs")
flags.DEFINE_boolean("sampling_only", False, "Time the samplers alone on an untrained prior of "
                     "--height x --width maps of --num_categories codes (no data, no training)")


# ---------------------------------------------------------------------------- data
def make_codes(n, H, W, K, length_scale, rng):
    """(n, H, W) int32 codes in [0, K): white noise smoothed by a Gaussian of standard
    deviation ``length_scale`` positions (through the FFT, on a canvas larger by
    4 length_scale on each side so that nothing wraps around), cut into K levels at the
    quantiles of the field's distribution (a fixed normal, so every map uses one scale)."""
    import numpy as np
    pad = int(math.ceil(4 * length_scale))
    Hc, Wc = H + 2 * pad, W + 2 * pad
    noise = rng.normal(size=(n, Hc, Wc))
    fy, fx = np.fft.fftfreq(Hc)[:, None], np.fft.rfftfreq(Wc)[None, :]
    gain = np.exp(-2 * (math.pi * length_scale) ** 2 * (fy ** 2 + fx ** 2))
    field = np.fft.irfft2(np.fft.rfft2(noise) * gain, s=(Hc, Wc))[:, pad:pad + H, pad:pad + W]
    field /= np.sqrt(np.sum(np.abs(np.fft.irfft2(gain, s=(Hc, Wc))) ** 2))   # unit variance
    edges = [statistics.NormalDist().inv_cdf(k / K) for k in range(1, K)]   # N(0, 1) quantiles
    return np.digitize(field, edges).astype(np.int32)


def synthetic_arrays(n_train, n_test, H, W, K, length_scale, seed):
    """The arrays of a codes .npz (``codes_data.load``'s keys)."""
    import numpy as np
    rng = np.random.RandomState(seed)
    return {"train_codes": make_codes(n_train, H, W, K, length_scale, rng),
            "test_codes": make_codes(n_test, H, W, K, length_scale, rng),
            "num_categories": K}


def write_codes(path, arrays):
    import numpy as np
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists already: use it without --make_data, or give "
                              "another --data_dir")
    np.savez_compressed(path, train_codes=arrays["train_codes"],
                        test_codes=arrays["test_codes"],
                        num_categories=np.int64(arrays["num_categories"]))


# ---------------------------------------------------------------------------- networks
def batch_order(n, steps, batch_size, seed):
    """(steps, batch_size) indices into n training maps: shuffled epochs, one after another;
    both networks train on this same order."""
    import numpy as np
    rng = np.random.RandomState(seed)
    epochs = -(-steps * batch_size // n)
    return np.concatenate([rng.permutation(n) for _ in range(epochs)])[
        :steps * batch_size].reshape(steps, batch_size)


def train(model, train_codes, order, learning_rate):
    """Initialise on the first batch, then one Adam step per row of order. Returns
    {"seconds", "step_ms_median", "train_bits_last"} (the last steps' mean bits per code)."""
    import numpy as np
    import tensorflow as tf
    from pixelcnn_pp.optim import Adam
    from pixelcnn_pp.likelihood import bits_per_dim

    model.initialize(tf.constant(train_codes[order[0]]))
    opt = Adam(learning_rate)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = model.objective(x, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses, times = [], []
    t0 = time.perf_counter()
    for idx in order:
        t = time.perf_counter()
        losses.append(float(step(tf.constant(train_codes[idx]))))
        times.append(time.perf_counter() - t)
    seconds = time.perf_counter() - t0
    last = losses[-max(1, min(100, len(losses) // 10)):]
    B, H, W = len(order[0]), train_codes.shape[1], train_codes.shape[2]
    return {"seconds": seconds,
            "step_ms_median": 1000 * float(np.median(times[1:] or times)),
            "train_bits_last": float(bits_per_dim(np.mean(last), B, (H, W))),
            "params": int(sum(np.prod(v.shape) for v in model.trainable_variables))}


def test_bits(model, codes, batch_size):
    """Bits per code of all of codes (N, H, W) under the model (``training=False``)."""
    import tensorflow as tf
    from pixelcnn_pp.likelihood import bits_per_dim

    @tf.function
    def nats(x):
        return model.objective(x, model(x, training=False))

    total = sum(float(nats(tf.constant(codes[i:i + batch_size])))
                for i in range(0, len(codes), batch_size))
    return float(bits_per_dim(total, len(codes), codes.shape[1:]))


# ---------------------------------------------------------------------------- sampling
def time_sampling(model, n, H, W, K, seed, naive_positions, naive_full):
    """The fast sampler's time for n maps (first and second call) and the naive estimate."""
    import numpy as np
    import tensorflow as tf

    from pixelcnn_pp import sampling
    out = {"sample_seconds_naive": None}
    t = time.perf_counter()
    drawn = np.asarray(sampling.sample(model, n, (H, W), method="fast", seed=seed))
    out["sample_seconds_fast_first_call"] = time.perf_counter() - t
    assert drawn.shape == (n, H, W) and drawn.min() >= 0 and drawn.max() < K, drawn.shape
    t = time.perf_counter()
    sampling.sample(model, n, (H, W), method="fast", seed=seed + 1)
    out["sample_seconds_fast"] = time.perf_counter() - t
    if naive_full:
        t = time.perf_counter()
        sampling.sample(model, n, (H, W), method="naive", seed=seed)
        out["sample_seconds_naive"] = time.perf_counter() - t

    @tf.function
    def full_pass(x):
        return model(x, training=False)

    x = tf.zeros((n, H, W), tf.int32)
    full_pass(x)                                             # traced, not timed
    times = []
    for _ in range(max(1, naive_positions)):
        t = time.perf_counter()
        full_pass(x).numpy()
        times.append(time.perf_counter() - t)
    out["naive_seconds_per_position"] = float(np.median(times))
    out["sample_seconds_naive_estimated"] = out["naive_seconds_per_position"] * H * W
    out["naive_timed_positions"] = len(times)
    return out


def sampling_only(n, H, W, K):
    """Time the samplers on an untrained prior (data-dependent init on random codes)."""
    import tensorflow as tf
    from pixelcnn_pp.model import PixelCNNPP
    model = PixelCNNPP(F.nr_resnet, F.nr_filters, dropout_p=0.0, seed=F.seed,
                       fast_ops=F.fast_ops, num_categories=K)
    model.initialize(tf.random.stateless_uniform((n, H, W), (1, 2), 0, K, dtype=tf.int32),
                     training=False)
    r = {"sampling_only": True, "num_categories": K, "height": H, "width": W,
         "sample_maps": n, "nr_resnet": F.nr_resnet, "nr_filters": F.nr_filters,
         **time_sampling(model, n, H, W, K, F.seed, F.naive_positions, F.naive_full),
         "tensorflow": tf.__version__, "cpu_cores": os.cpu_count()}
    r["speedup_estimated"] = r["sample_seconds_naive_estimated"] / r["sample_seconds_fast"]
    print("\n".join(sampling_lines(r)))
    print(json.dumps(r), flush=True)


# ---------------------------------------------------------------------------- main
def sampling_lines(r):
    """The sampling figures as lines of text."""
    n, H, W = r["sample_maps"], r["height"], r["width"]
    lines = [f"sampling {n} maps of {H}x{W} (K = {r['num_categories']}) from PixelCNN++:",
             f"  fast: {r['sample_seconds_fast']:.2f} s (first call, tracing included: "
             f"{r['sample_seconds_fast_first_call']:.2f} s)"]
    if r["sample_seconds_naive"] is not None:
        lines.append(f"  naive: {r['sample_seconds_naive']:.2f} s (run once, tracing included)")
    lines.append(f"  naive, estimated: {r['sample_seconds_naive_estimated']:.2f} s "
                 f"({H * W} positions x {r['naive_seconds_per_position'] * 1000:.1f} ms, the "
                 f"median of {r['naive_timed_positions']} timed full passes)")
    return lines


def table(r):
    """The results as aligned text."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    rows = [("model", "test bits/code", "train bits/code", "params", "train s", "step ms")]
    for label, name in (("(a) PixelCNN++, K-way head", "pixelcnn_pp"),
                        ("(b) masked PixelCNN, K-way", "pixelcnn")):
        rows.append((label, f(r[f"test_bits_per_code_{name}"], ".4f"),
                     f(r[f"train_bits_per_code_{name}"], ".4f"), str(r[f"params_{name}"]),
                     f(r[f"train_seconds_{name}"], ".1f"), f(r[f"step_ms_median_{name}"], ".1f")))
    rows += [("(c) counts p(c | up, left)", f(r["test_bits_per_code_count"], ".4f"),
              f(r["train_bits_per_code_count"], ".4f"), str(r["params_count"]), "-", "-"),
             ("uniform over K", f(r["uniform_bits_per_code"], ".4f"), "-", "0", "-", "-")]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("train bits/code: the mean of the last steps' batches (raw weights, dropout "
                 "on); train s: tracing included; step ms: the median step")
    lines += [""] + sampling_lines(r)
    return "\n".join(lines)


def main(argv):
    del argv
    if F.smoke:
        F.num_categories, F.height, F.width, F.train_maps, F.test_maps = 5, 8, 8, 64, 16
        F.nr_resnet, F.nr_filters, F.num_layers, F.num_filters = 1, 8, 1, 8
        F.steps, F.batch_size, F.sample_maps, F.naive_positions = 5, 4, 2, 2
    import tensorflow as tf

    import keras

    if F.sampling_only:
        return sampling_only(F.sample_maps, F.height, F.width, F.num_categories)

    from count_model import CountModel
    from pixelcnn_pp.baseline import PixelCNN
    from pixelcnn_pp.data import codes_data
    from pixelcnn_pp.model import PixelCNNPP

    if F.smoke:
        arrays = synthetic_arrays(F.train_maps, F.test_maps, F.height, F.width,
                                  F.num_categories, F.length_scale, F.seed)
    else:
        if F.make_data:
            write_codes(F.data_dir, synthetic_arrays(
                F.train_maps, F.test_maps, F.height, F.width, F.num_categories,
                F.length_scale, F.seed))
            print("wrote", F.data_dir, file=sys.stderr)
        arrays = codes_data.load(F.data_dir)
    train_codes, test_codes = arrays["train_codes"], arrays["test_codes"]
    K = int(arrays["num_categories"])
    H, W = train_codes.shape[1:]
    order = batch_order(len(train_codes), F.steps, F.batch_size, F.seed)

    r = {"num_categories": K, "height": H, "width": W, "train_maps": len(train_codes),
         "test_maps": len(test_codes), "steps": F.steps, "batch_size": F.batch_size,
         "learning_rate": F.learning_rate, "seed": F.seed, "smoke": F.smoke,
         "uniform_bits_per_code": math.log2(K)}
    keras.utils.set_random_seed(F.seed)
    pp = PixelCNNPP(F.nr_resnet, F.nr_filters, dropout_p=F.dropout_p, seed=F.seed,
                    fast_ops=F.fast_ops, num_categories=K)
    keras.utils.set_random_seed(F.seed)
    masked = PixelCNN(num_layers=F.num_layers, num_filters=F.num_filters, num_categories=K)
    for name, model in (("pixelcnn_pp", pp), ("pixelcnn", masked)):
        t = train(model, train_codes, order, F.learning_rate)
        r[f"train_bits_per_code_{name}"] = t["train_bits_last"]
        r[f"train_seconds_{name}"] = t["seconds"]
        r[f"step_ms_median_{name}"] = t["step_ms_median"]
        r[f"params_{name}"] = t["params"]
        r[f"test_bits_per_code_{name}"] = test_bits(model, test_codes, F.batch_size)
    counts = CountModel.fit(train_codes, K, alpha=F.alpha)
    r["train_bits_per_code_count"] = counts.bits_per_code(train_codes)
    r["test_bits_per_code_count"] = counts.bits_per_code(test_codes)
    r["params_count"] = int(counts.counts.size)
    r["count_alpha"] = F.alpha
    r.update(time_sampling(pp, F.sample_maps, H, W, K, F.seed, F.naive_positions,
                           F.naive_full))
    r["sample_maps"] = F.sample_maps
    r.update(nr_resnet=F.nr_resnet, nr_filters=F.nr_filters, dropout_p=F.dropout_p,
             fast_ops=F.fast_ops, num_layers=F.num_layers, num_filters=F.num_filters,
             tensorflow=tf.__version__, cpu_cores=os.cpu_count())
    print(table(r))
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    app.run(main)
