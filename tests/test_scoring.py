"""Scoring: per-sub-pixel log-probabilities, score_images, AUROC, input complexity, the
background-model training options (input mutation, L2) and score.py end to end."""

import csv
import json
import math
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf

import pixelcnn_pp
from pixelcnn_pp import plotting, scoring
from pixelcnn_pp.likelihood import discretized_mix_logistic_log_prob, subpixel_log_prob

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import random_images, tiny_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUES = ((np.arange(256) - 127.5) / 127.5).astype(np.float32)


def to_uint8(x):
    return np.rint(np.asarray(x) * 127.5 + 127.5).astype(np.uint8)


@pytest.fixture(scope="module")
def rgb():
    """A tiny initialised RGB model and 8x8 images (dropout off: deterministic)."""
    x = random_images((6, 8, 8, 3), seed=1)
    model = tiny_model()
    model.initialize(x, training=False)
    return model, x


@pytest.fixture(scope="module")
def gray():
    x = random_images((4, 8, 8, 1), seed=2)
    model = tiny_model(num_channels=1)
    model.initialize(x, training=False)
    return model, x


# --------------------------------------------------------------------- subpixel_log_prob
@pytest.mark.parametrize("which", ["rgb", "gray"])
def test_subpixel_terms_sum_to_the_pixel_and_image_log_probability(which, request):
    model, x = request.getfixturevalue(which)
    l = model(x)
    sp = subpixel_log_prob(x, l).numpy().astype(np.float64)
    assert sp.shape == x.shape
    assert np.all(sp <= 1e-5)
    np.testing.assert_allclose(sp.sum(axis=(1, 2, 3)), -pixelcnn_pp.nll_per_image(x, l).numpy(),
                               rtol=2e-6)
    np.testing.assert_allclose(sp.sum(axis=-1), discretized_mix_logistic_log_prob(x, l).numpy(),
                               rtol=1e-5, atol=2e-5)


def _random_pixel_params(M, seed):
    """One pixel's mixture parameters (10M,) with strong channel couplings."""
    rng = np.random.RandomState(seed)
    rest = np.concatenate([rng.uniform(-1, 1, (3, M)), rng.uniform(-4, -1.5, (3, M)),
                           rng.normal(size=(3, M)) * 2], axis=1)
    return np.concatenate([rng.normal(size=M) * 2, rest.reshape(-1)]).astype(np.float32)


def test_subpixel_terms_are_the_marginals_of_the_pixel_mixture():
    """exp(R term) = sum over g, b of p(r, g, b); exp(G term) = sum_b p(r, g, b) / p(r); the B
    term is the rest: checked against the joint over all 256 x 256 (g, b) for some r."""
    M = 3
    params = _random_pixel_params(M, 0)
    g, b = np.meshgrid(VALUES, VALUES, indexing="ij")
    for r in (0, 97, 130, 255):
        x = np.stack([np.full_like(g, VALUES[r]), g, b], axis=-1)[None]      # (1, 256, 256, 3)
        l = np.broadcast_to(params, (1, 256, 256, params.size))
        joint = np.exp(discretized_mix_logistic_log_prob(x, l).numpy()[0].astype(np.float64))
        sp = subpixel_log_prob(x, l).numpy()[0].astype(np.float64)           # (256, 256, 3)
        p_r = joint.sum()
        # The R term is the same for every (g, b) and is the marginal of r.
        assert np.ptp(sp[..., 0]) == 0.0
        assert math.exp(sp[0, 0, 0]) == pytest.approx(p_r, rel=1e-4, abs=1e-9)
        p_g_given_r = joint.sum(axis=1) / p_r                               # (256,) over g
        np.testing.assert_allclose(np.exp(sp[:, 0, 1]), p_g_given_r, rtol=1e-3, atol=1e-9)
        assert np.ptp(sp[:, :, 1], axis=1).max() == 0.0                     # not on b
        # The B conditionals of each (r, g) are normalised.
        p_b = np.exp(sp[..., 2]).sum(axis=1)
        np.testing.assert_allclose(p_b[p_g_given_r > 1e-6], 1.0, atol=2e-3)


def test_earlier_channel_terms_do_not_depend_on_later_values(rgb):
    """With the parameters l fixed: changing B leaves the R and G terms, changing G leaves the
    R terms; the later terms do change."""
    model, x = rgb
    l = model(x)
    base = subpixel_log_prob(x, l).numpy()
    rng = np.random.RandomState(5)
    x_b = x.copy()
    x_b[..., 2] = VALUES[rng.randint(0, 256, size=x[..., 2].shape)]
    x_g = x.copy()
    x_g[..., 1] = VALUES[rng.randint(0, 256, size=x[..., 1].shape)]
    sb = subpixel_log_prob(x_b, l).numpy()
    sg = subpixel_log_prob(x_g, l).numpy()
    np.testing.assert_array_equal(sb[..., :2], base[..., :2])
    np.testing.assert_array_equal(sg[..., 0], base[..., 0])
    assert np.abs(sb[..., 2] - base[..., 2]).max() > 1e-2
    assert np.abs(sg[..., 1] - base[..., 1]).max() > 1e-2
    assert np.abs(sg[..., 2] - base[..., 2]).max() > 1e-2    # B's mean is coupled to G


def test_through_the_network_a_subpixel_term_sees_only_what_came_before(rgb):
    """Change the B value of one pixel: every term before it (earlier pixels, its own R and G)
    is unchanged; its B term and later pixels' terms change."""
    model, x = rgb
    i, j = 3, 4
    x2 = x.copy()
    x2[:, i, j, 2] = np.where(x[:, i, j, 2] > 0, -0.9, 0.9)
    a = subpixel_log_prob(x, model(x)).numpy()
    b = subpixel_log_prob(x2, model(x2)).numpy()
    flat_a = a.reshape(len(x), -1)
    flat_b = b.reshape(len(x), -1)
    k = (i * 8 + j) * 3 + 2                      # raster position of (i, j, B)
    np.testing.assert_allclose(flat_b[:, :k], flat_a[:, :k], rtol=1e-5, atol=1e-5)
    assert np.abs(flat_b[:, k] - flat_a[:, k]).min() > 1e-3
    assert np.abs(flat_b[:, k + 1:] - flat_a[:, k + 1:]).max() > 1e-3


# --------------------------------------------------------------------------- score_images
def test_score_images_equals_nll_per_image_and_the_evaluations_bits_per_dim(rgb):
    from pixelcnn_pp.data.loader import DataLoader
    from pixelcnn_pp.config import ModelConfig
    from pixelcnn_pp.evaluation import test_bits_per_dim
    model, _ = rgb
    images = to_uint8(random_images((10, 8, 8, 3), seed=3))
    s = scoring.score_images(model, images, batch_size=4)          # 4 + 4 + 2 (padded)
    assert set(s) == {"nll_nats", "bits_per_dim"}
    assert s["nll_nats"].dtype == np.float64 and s["nll_nats"].shape == (10,)
    x = (images.astype(np.float32) - 127.5) / 127.5
    # float32 round-off: the network's convolutions differ a little with the batch size
    np.testing.assert_allclose(s["nll_nats"], pixelcnn_pp.nll_per_image(x, model(x)).numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(s["bits_per_dim"], s["nll_nats"] / (math.log(2) * 192))
    config = ModelConfig(image_shape=(8, 8, 3), nr_resnet=1, nr_filters=8, nr_logistic_mix=2,
                         dropout_p=0.0)
    bpd, n = test_bits_per_dim(model, config, DataLoader(images, None, 5))
    assert n == 10
    assert s["bits_per_dim"].mean() == pytest.approx(bpd, rel=1e-5)
    # A second call reuses the model's traced step: no new tracing, the same figure.
    from pixelcnn_pp.evaluation import _eval_step
    traced = [f.experimental_get_tracing_count() for f in _eval_step(model)]
    assert test_bits_per_dim(model, config, DataLoader(images, None, 5)) == (bpd, n)
    assert [f.experimental_get_tracing_count() for f in _eval_step(model)] == traced
    # batch size does not matter; one image at a time neither
    s1 = scoring.score_images(model, images, batch_size=16)
    np.testing.assert_allclose(s1["nll_nats"], s["nll_nats"], rtol=1e-5)


def test_background_gives_the_likelihood_ratio_in_bits_per_dim(rgb, gray):
    model, x = rgb
    images = to_uint8(x)
    other = tiny_model(seed=7)
    other.initialize(random_images((6, 8, 8, 3), seed=9), training=False)
    s = scoring.score_images(model, images, batch_size=4, background=other)
    bg = scoring.score_images(other, images, batch_size=4)
    np.testing.assert_allclose(s["llr"], bg["bits_per_dim"] - s["bits_per_dim"], atol=1e-12)
    assert np.abs(s["llr"]).max() > 0
    same = scoring.score_images(model, images, batch_size=3, background=model)
    np.testing.assert_allclose(same["llr"], 0.0, atol=1e-5)
    gmodel, gx = gray
    g = scoring.score_images(gmodel, to_uint8(gx), batch_size=3)
    np.testing.assert_allclose(g["nll_nats"], pixelcnn_pp.nll_per_image(gx, gmodel(gx)).numpy(),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="channel"):
        scoring.score_images(gmodel, images)


def test_conditional_baseline_and_energy_distance_models():
    from pixelcnn_pp.baseline import PixelCNN
    x = random_images((5, 8, 8, 3), seed=4)
    images = to_uint8(x)
    cond = tiny_model(num_classes=3)
    y = np.array([0, 1, 2, 1, 0])
    cond.initialize(x, h=tf.one_hot(y, 3), training=False)
    s = scoring.score_images(cond, images, labels=y, batch_size=2)
    want = pixelcnn_pp.nll_per_image(x, cond(x, h=tf.one_hot(y, 3))).numpy()
    np.testing.assert_allclose(s["nll_nats"], want, rtol=1e-5)
    with pytest.raises(ValueError, match="class-conditional"):
        scoring.score_images(cond, images)
    with pytest.raises(ValueError, match="out of range"):
        scoring.score_images(cond, images, labels=[0, 1, 2, 3, 0])
    base = PixelCNN(num_layers=1, num_filters=12)
    base(x)
    s = scoring.score_images(base, images, batch_size=2)
    np.testing.assert_allclose(s["nll_nats"], base.nll_per_image(x, base(x)).numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(scoring.subpixel_nll(base, images).sum(axis=(1, 2, 3)),
                               s["nll_nats"], rtol=1e-5)
    ed = tiny_model(energy_distance=True)
    with pytest.raises(ValueError, match="energy-distance"):
        scoring.score_images(ed, images)


# ------------------------------------------------------------------------------- auroc
def test_auroc_by_hand_and_its_symmetries():
    # pairs (out > in): 0.9 beats all 4; 0.4 beats 0.1 and 0.35 and ties 0.4; 0.7 beats 3
    assert scoring.auroc([0.1, 0.4, 0.35, 0.8], [0.9, 0.4, 0.7]) == pytest.approx(9.5 / 12)
    assert scoring.auroc([1, 2], [3, 4]) == 1.0
    assert scoring.auroc([3, 4], [1, 2]) == 0.0
    assert scoring.auroc([5, 5, 5], [5, 5]) == 0.5
    rng = np.random.RandomState(0)
    a, b = rng.randint(0, 5, 50), rng.randint(1, 6, 40)              # many ties
    brute = np.mean([(o > i) + 0.5 * (o == i) for i in a for o in b])
    assert scoring.auroc(a, b) == pytest.approx(brute, abs=1e-12)
    assert scoring.auroc(a, b) + scoring.auroc(b, a) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        scoring.auroc([], [1.0])


def test_auroc_agrees_with_keras_auc():
    import keras
    rng = np.random.RandomState(1)
    for a, b in [(rng.normal(0, 1, 500), rng.normal(0.7, 1.3, 400)),
                 (rng.randint(0, 8, 300).astype(float), rng.randint(2, 10, 200).astype(float))]:
        both = np.concatenate([a, b])
        p = (both - both.min()) / (both.max() - both.min())
        m = keras.metrics.AUC(num_thresholds=20001)
        m.update_state(np.r_[np.zeros(len(a)), np.ones(len(b))], p)
        assert scoring.auroc(a, b) == pytest.approx(float(m.result()), abs=2e-3)


# ---------------------------------------------------------------------- input complexity
def test_input_complexity_orders_constant_below_noise_and_is_the_png_size():
    rng = np.random.RandomState(0)
    const = np.full((1, 16, 16, 3), 77, np.uint8)
    noise = rng.randint(0, 256, (1, 16, 16, 3)).astype(np.uint8)
    smooth = (np.arange(16)[None, None, :, None] * 8 + rng.randint(0, 4, (1, 16, 16, 3)))
    smooth = smooth.astype(np.uint8)                 # a ramp with a little noise
    c = scoring.input_complexity(np.concatenate([const, smooth, noise]))
    assert c[0] < c[1] < c[2]
    assert c[2] > 8.0                       # noise does not compress: 8 bits and the format
    data = scoring.png_bytes(noise[0])
    np.testing.assert_array_equal(iio.imread(data), noise[0])     # lossless
    assert c[2] == 8.0 * len(data) / (16 * 16 * 3)
    gray = noise[..., :1]
    assert scoring.input_complexity(gray)[0] == 8.0 * len(scoring.png_bytes(gray[0])) / 256
    np.testing.assert_array_equal(iio.imread(scoring.png_bytes(gray[0])), gray[0, ..., 0])


# ------------------------------------------------------------- mutation and L2 in training
_START = {}


def _setup(x, optimizer_fn):
    """A tiny model initialised on x (the same weights at every call), its optimizer (built)
    and averages."""
    from pixelcnn_pp.optim import PolyakAverage
    key = x.tobytes()
    if key not in _START:          # every model of a test goes the same way: set from these
        first = tiny_model()
        first.initialize(x, training=False)
        _START[key] = first.get_weights()
    model = tiny_model()
    model.initialize(x, training=False)
    model.set_weights(_START[key])
    optimizer = optimizer_fn()
    optimizer.build(model.trainable_variables)
    return model, optimizer, PolyakAverage(model.trainable_variables)


def _batch(seed, n=4):
    return to_uint8(random_images((n, 8, 8, 3), seed=seed))


def test_mutate_inputs_replaces_the_given_fraction_with_uniform_values():
    from pixelcnn_pp.scoring import mutate_inputs
    x = np.full((64, 16, 16, 3), 100, np.uint8)
    same = mutate_inputs(tf.constant(x), 0.0, [1, 2]).numpy()
    np.testing.assert_array_equal(same, x)
    for rate in (0.1, 0.3):
        y = mutate_inputs(tf.constant(x), rate, [1, 2]).numpy()
        changed = y != x
        # a replacement draws the original value with probability 1/256
        assert changed.mean() == pytest.approx(rate * 255 / 256, abs=0.01)
        assert y[changed].min() < 10 and y[changed].max() > 245
        assert y[changed].astype(float).mean() == pytest.approx(127.5, abs=4)
    np.testing.assert_array_equal(mutate_inputs(tf.constant(x), 0.3, [1, 2]).numpy(), y)
    assert (mutate_inputs(tf.constant(x), 0.3, [1, 3]).numpy() != y).any()
    # Code maps: a replacement is a code in [0, num_values), each as likely.
    codes = np.full((64, 16, 16), 2, np.int32)
    y = mutate_inputs(tf.constant(codes), 0.5, [1, 2], num_values=5).numpy()
    assert y.dtype == np.int32 and y.min() == 0 and y.max() == 4
    assert np.bincount(y[y != 2], minlength=5)[[0, 1, 3, 4]].min() > 0.2 * (y != 2).sum()


def _op_types(step):
    """Counter of the op types in a train step's graph and the functions it calls."""
    import collections
    g = step.get_concrete_function(tf.TensorSpec((4, 8, 8, 3), tf.uint8),
                                   tf.TensorSpec((4,), tf.int32),
                                   tf.TensorSpec((), tf.float32)).graph.as_graph_def()
    ops = [n.op for n in g.node] + [n.op for f in g.library.function for n in f.node_def]
    return collections.Counter(ops)


def test_mutation_rate_zero_changes_nothing_in_the_steps():
    """Rate 0 and L2 0 trace the very graph of the default steps (no random ops, no extra
    terms) and give its numbers (to the round-off of TensorFlow's multi-threaded CPU
    kernels, which differ from run to run in the last bits)."""
    from pixelcnn_pp.likelihood import discretized_mix_logistic_loss
    from pixelcnn_pp.optim import Adam
    from pixelcnn_pp.training import make_steps
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    x0 = random_images((4, 8, 8, 3), seed=11)
    results, graphs = [], []
    for kw in ({}, {"input_mutation_rate": 0.0, "l2_weight": 0.0, "mutation_seed": 5},
               {"input_mutation_rate": 0.1, "l2_weight": 0.5}):
        model, opt, avg = _setup(x0, lambda: Adam(1e-3))
        train_step, eval_step = make_steps(strategy, model, opt, avg,
                                           discretized_mix_logistic_loss, **kw)
        graphs.append(_op_types(train_step))
        if kw.get("input_mutation_rate"):
            continue
        losses = [float(train_step(tf.constant(_batch(s)), tf.zeros(4, tf.int32),
                                   tf.constant(1e-3))) for s in (1, 2)]
        ev = float(eval_step(tf.constant(_batch(3)), tf.zeros(4, tf.int32)))
        results.append((losses, ev, [w.numpy() for w in model.trainable_variables]))
    assert graphs[0] == graphs[1]
    random_ops = {op for op in graphs[2] if "Random" in op}
    assert random_ops and not random_ops & set(graphs[0])
    assert graphs[2]["Square"] > graphs[0]["Square"]         # the L2 term
    assert results[0][0][0] == results[1][0][0]              # the first step: bitwise
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-5)
    for a, b in zip(results[0][2], results[1][2]):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_mutation_in_the_train_step_fresh_each_step_seeded_and_not_in_evaluation():
    import keras

    from pixelcnn_pp.training import make_steps
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    x = np.full((8, 8, 8, 3), 60, np.uint8)
    seen = tf.Variable(tf.zeros((8, 8, 8, 3)))
    ref = tf.constant((x.astype(np.float32) - 127.5) / 127.5)

    def objective(xs, out):          # records the images the step trained on
        seen.assign(xs)
        return tf.reduce_sum(tf.cast(tf.not_equal(xs, ref), tf.float32)) + \
            0.0 * tf.reduce_sum(out)

    def run(rate, n_steps):
        model, opt, avg = _setup(random_images((8, 8, 8, 3), 1),
                                 lambda: keras.optimizers.SGD(0.0))
        train_step, eval_step = make_steps(strategy, model, opt, avg, objective,
                                           input_mutation_rate=rate, mutation_seed=3)
        masks = []
        for _ in range(n_steps):
            train_step(tf.constant(x), tf.zeros(8, tf.int32), tf.constant(0.0))
            masks.append(seen.numpy() != ref.numpy())
        eval_changed = float(eval_step(tf.constant(x), tf.zeros(8, tf.int32)))
        return masks, eval_changed

    masks, eval_changed = run(0.25, 3)
    assert eval_changed == 0.0
    for m in masks:
        assert m.mean() == pytest.approx(0.25 * 255 / 256, abs=0.04)
    assert (masks[0] != masks[1]).any() and (masks[1] != masks[2]).any()
    again, _ = run(0.25, 2)          # a new run from the same state: the same mutations
    np.testing.assert_array_equal(again[0], masks[0])
    np.testing.assert_array_equal(again[1], masks[1])


def test_l2_weight_adds_two_w_times_the_weights_to_the_gradient():
    import keras

    from pixelcnn_pp.likelihood import discretized_mix_logistic_loss
    from pixelcnn_pp.training import make_steps
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    x0 = random_images((4, 8, 8, 3), seed=12)
    lr, W = 1e-3, 50.0

    def no_gradient(x, out):          # loss 0 with gradient exactly 0: the step is L2 alone
        return 0.0 * tf.reduce_sum(out)

    def step(objective, w):
        model, opt, avg = _setup(x0, lambda: keras.optimizers.SGD(lr))
        before = [v.numpy() for v in model.trainable_variables]
        train_step, _ = make_steps(strategy, model, opt, avg, objective, l2_weight=w)
        loss = float(train_step(tf.constant(_batch(1)), tf.zeros(4, tf.int32),
                                tf.constant(lr, tf.float32)))
        return loss, before, [v.numpy() for v in model.trainable_variables]

    # the reported loss is the NLL alone, whatever the L2 weight
    assert step(discretized_mix_logistic_loss, 0.0)[0] == \
        step(discretized_mix_logistic_loss, W)[0]
    # SGD: after = before - lr * 2W * before, to float32 rounding of the product and the sum
    loss, before, after = step(no_gradient, W)
    assert loss == 0.0
    for b, a in zip(before, after):
        expected = (lr * 2 * W) * b.astype(np.float64)
        np.testing.assert_allclose(b.astype(np.float64) - a, expected,
                                   rtol=1e-5, atol=4 * float(np.spacing(np.abs(b).max())))
    assert max(np.abs(v).max() for v in before) > 0.1


# ---------------------------------------------------------------------- score.py end to end
def _run(script, *args, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _write_pngs(folder, n, seed, noise=False):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(n):
        if noise:
            im = rng.randint(0, 256, (32, 32, 3))
        else:
            base = np.stack([yy * 6, xx * 6, (yy + xx) * 3], -1) + rng.randint(0, 30, (32, 32, 3))
            im = np.clip(base + (i % 5) * 10, 0, 255)
        iio.imwrite(os.path.join(folder, f"img{i:03d}.png"), im.astype(np.uint8))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny model trained 2 steps by train.py (with mutation and L2) on a folder of PNGs."""
    root = tmp_path_factory.mktemp("scoring")
    # as a user runs them: the entry points quieten TensorFlow themselves
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "PIXELCNN_TRACEBACK", "PIXELCNN_QUIET_TF")}
    env["PIXELCNN_CACHE_DIR"] = str(root / "cache")
    _write_pngs(root / "imgs", 40, 0)              # 36 train, 4 test (every 10th)
    _write_pngs(root / "noise", 20, 1, noise=True)  # 2 test images
    save = root / "run"
    p = _run("train.py", "--data_set", "folder", "--data_dir", root / "imgs", "--nr_resnet", 1,
             "--nr_filters", 8, "--nr_logistic_mix", 2, "--batch_size", 4,
             "--init_batch_size", 4, "--nr_gpu", 1, "--max_steps", 2, "--num_samples", 0,
             "--input_mutation_rate", 0.1, "--l2_weight", 0.01, "--save_dir", save, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return root, save, env


def test_score_py_end_to_end(trained_run):
    root, save, env = trained_run
    training = json.load(open(save / "config.json"))["training"]
    assert training["input_mutation_rate"] == 0.1 and training["l2_weight"] == 0.01
    out = root / "scores.csv"
    hm = root / "heatmaps"
    args = ["--save_dir", save, "--out", out, "--input_complexity", "--background_save_dir",
            save, "--ood_data_set", "folder", "--ood_data_dir", root / "noise",
            "--ood_subset", "test", "--heatmaps", hm, "--num_heatmaps", 2, "--batch_size", 3]
    p = _run("score.py", *args, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["in"] == 4 and result["out"] == 2
    assert set(result["auroc"]) == {"bits_per_dim", "llr", "ic_score"}
    assert all(0.0 <= v <= 1.0 for v in result["auroc"].values())
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["set", "index", "file", "label", "nll_nats", "bits_per_dim", "llr",
                             "input_complexity", "ic_score"]
    ins = [r for r in rows if r["set"] == "in"]
    outs = [r for r in rows if r["set"] == "out"]
    assert [os.path.basename(r["file"]) for r in ins] == [f"img{i:03d}.png"
                                                          for i in (9, 19, 29, 39)]
    assert [os.path.basename(r["file"]) for r in outs] == ["img009.png", "img019.png"]
    assert [int(r["index"]) for r in ins] == [0, 1, 2, 3]
    for r in rows:
        bpd, nll = float(r["bits_per_dim"]), float(r["nll_nats"])
        assert bpd == pytest.approx(nll / (math.log(2) * 32 * 32 * 3), rel=1e-9)
        assert abs(float(r["llr"])) < 1e-5                # its own background
        assert float(r["ic_score"]) == pytest.approx(bpd - float(r["input_complexity"]))
    # mean bits/dim = eval.py's test bits/dim on the same images
    e = _run("eval.py", "--save_dir", save, "--batch_size", 4, env=env)
    assert e.returncode == 0, e.stderr[-3000:]
    test_bpd = json.loads(e.stdout.strip().splitlines()[-1])["test_bpd"]
    assert np.mean([float(r["bits_per_dim"]) for r in ins]) == pytest.approx(test_bpd, rel=1e-5)
    # auroc of bits/dim from the CSV's own columns
    assert result["auroc"]["bits_per_dim"] == pytest.approx(scoring.auroc(
        [float(r["bits_per_dim"]) for r in ins], [float(r["bits_per_dim"]) for r in outs]))
    # heatmaps: readable PNGs of the documented layout
    names = sorted(os.listdir(hm))
    assert names == ["heatmap_00000.png", "heatmap_00001.png", "heatmap_out_00000.png",
                     "heatmap_out_00001.png"]
    want = plotting.heatmap_image(np.zeros((32, 32, 3), np.uint8),
                                  np.arange(1024.0).reshape(32, 32), 1.0).shape
    for n in names:
        im = iio.imread(hm / n)
        assert im.shape == want and im.dtype == np.uint8
        assert len(np.unique(im.reshape(-1, 3), axis=0)) > 50    # image, map and colour bar
    # an existing --out is never overwritten without --overwrite
    before = open(out).read()
    p = _run("score.py", *args, env=env)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [p.stderr.strip()]
    assert p.stderr.startswith("score.py: error:") and "--overwrite" in p.stderr
    assert open(out).read() == before


def test_score_py_scores_an_ood_folder_whole_and_says_how_many_images(trained_run, tmp_path):
    """By default an out-of-distribution folder is scored whole (not its test split), and the
    AUROC line names the number of images of both sets."""
    root, save, env = trained_run
    _write_pngs(tmp_path / "ood", 64, 2, noise=True)
    out = tmp_path / "ood.csv"
    p = _run("score.py", "--save_dir", save, "--ood_data_set", "folder", "--ood_data_dir",
             tmp_path / "ood", "--out", out, "--batch_size", 16, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["in"] == 4 and result["out"] == 64
    outs = [r for r in csv.DictReader(open(out)) if r["set"] == "out"]
    assert sorted(os.path.basename(r["file"]) for r in outs) == [f"img{i:03d}.png"
                                                                 for i in range(64)]
    lines = [l for l in p.stdout.splitlines() if "AUROC" in l]
    assert lines == [f"AUROC, 4 in-distribution against 64 out-of-distribution images: "
                     f"bits_per_dim {result['auroc']['bits_per_dim']:.4f}"]


def test_all_of_a_data_set_is_both_splits_each_image_once(tmp_path):
    """--ood_subset all: train then test; a loader serving the same images for both splits
    (tools/ood_sets.py's) gives them once."""
    from pixelcnn_pp.cli.score_files import ScoreRequest, _load_set
    x = np.random.RandomState(0).randint(0, 256, (5, 8, 8, 3)).astype(np.uint8)
    np.savez(tmp_path / "set.npz", x=x)
    s = _load_set(ScoreRequest(), "tools.ood_sets:DataLoader", str(tmp_path / "set.npz"), "all")
    np.testing.assert_array_equal(s["images"], x)
    assert "train+test" in s["name"]
    demo = _load_set(ScoreRequest(), "demo", None, "all")
    train, test = (_load_set(ScoreRequest(), "demo", None, k)["images"] for k in ("train", "test"))
    np.testing.assert_array_equal(demo["images"], np.concatenate([train, test]))
    assert len(demo["labels"]) == len(demo["images"])
    # A folder of fewer than 10 images has an empty test split: all of it is its train split.
    _write_pngs(tmp_path / "small", 7, 3)
    small = _load_set(ScoreRequest(), "folder", str(tmp_path / "small"), "all")
    assert len(small["images"]) == 7 and len(small["files"]) == 7
    os.makedirs(tmp_path / "none")
    (tmp_path / "none" / "notes.txt").write_text("no images here")
    with pytest.raises(OSError):
        _load_set(ScoreRequest(), "folder", str(tmp_path / "none"), "all")


def test_score_py_one_line_errors(trained_run, tmp_path):
    root, save, env = trained_run
    # missing data folder: exit 1
    p = _run("score.py", "--save_dir", save, "--data_set", "folder", "--data_dir",
             tmp_path / "absent", "--out", tmp_path / "a.csv", env=env)
    assert p.returncode == 1 and p.stderr.strip().count("\n") == 0, p.stderr
    assert p.stderr.startswith("score.py: error:") and "absent" in p.stderr
    # channel mismatch: grayscale images for an RGB model: exit 2
    gray = tmp_path / "gray.npz"
    np.savez(gray, x=np.zeros((3, 32, 32, 1), np.uint8))
    p = _run("score.py", "--save_dir", save, "--data_set", "tools.ood_sets:DataLoader",
             "--data_dir", gray, "--out", tmp_path / "b.csv", env=env)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
    assert "32x32x3" in p.stderr and "32x32x1" in p.stderr
    assert not os.path.exists(tmp_path / "a.csv") and not os.path.exists(tmp_path / "b.csv")


def test_score_speed_benchmark_smoke():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "score_speed.py"),
                        "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["images"] == 4 and r["images_per_second"] > 0 and r["fast_ops"] is True
    assert r["minutes_for_10000_images"] == pytest.approx(10000 / r["images_per_second"] / 60,
                                                          rel=0.01, abs=0.1)
    # Uniformly random 8-bit images cost any model at least their entropy, 8 bits per
    # sub-pixel, in expectation (4 images: a little less is possible, far less is not). The
    # untrained model's own figure depends on its (seeded) initial weights: it is only finite.
    assert 7.5 < r["mean_bits_per_dim"] < float("inf")


def test_an_evaluation_pass_normalises_the_weights_once_with_the_same_figures():
    """Inside ``eval_step.fixed_weights()`` the step runs no weight normalisation (its weights
    were normalised on entry) and gives the model's own figure; outside, every call reads the
    weights as they are now."""
    import collections
    from pixelcnn_pp.likelihood import discretized_mix_logistic_loss, model_inputs
    from pixelcnn_pp.optim import Adam
    from pixelcnn_pp.training import make_steps
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    model, opt, avg = _setup(random_images((4, 8, 8, 3), seed=11), lambda: Adam(1e-3))
    train_step, eval_step = make_steps(strategy, model, opt, avg, discretized_mix_logistic_loss)
    x, y = tf.constant(_batch(3)), tf.zeros(4, tf.int32)
    xf = model_inputs(x)
    want = float(discretized_mix_logistic_loss(xf, model(xf, training=False)))
    with eval_step.fixed_weights():
        inside = [float(eval_step(x, y)) for _ in range(2)]
        w = eval_step._fixed
    # (to the round-off of TensorFlow's multi-threaded CPU kernels, which varies run to run)
    assert inside[0] == pytest.approx(inside[1], rel=1e-6)
    assert inside[0] == pytest.approx(want, rel=1e-5)

    def ops(graph_def):
        return collections.Counter([n.op for n in graph_def.node] + [
            n.op for f in graph_def.library.function for n in f.node_def])

    step_ops = ops(eval_step._step_fn.get_concrete_function(w, x, y).graph.as_graph_def())
    weight_ops = ops(eval_step._weights_fn.get_concrete_function().graph.as_graph_def())
    assert step_ops["Conv2D"] and not step_ops["Rsqrt"] and not step_ops["Sqrt"]
    assert weight_ops["Rsqrt"] and weight_ops["Sqrt"] and not weight_ops["Conv2D"]
    float(train_step(x, y, tf.constant(1e-3)))                   # the weights change
    after = float(eval_step(x, y))
    assert abs(after - inside[0]) > 1e-4 * abs(after)
    assert after == pytest.approx(float(discretized_mix_logistic_loss(
        xf, model(xf, training=False))), rel=1e-5)
    with eval_step.fixed_weights():
        assert float(eval_step(x, y)) == pytest.approx(after, rel=1e-6)
