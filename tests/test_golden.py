"""Equivalence with outputs of the original TF1 code (tests/data/golden, see its README)."""

import os

import numpy as np
import pytest
import tensorflow as tf

import pixelcnn_pp
from pixelcnn_pp.convert import (assign_tf1_variables, export_tf1_variables, load_tf1_checkpoint,
                                  tf1_variables)
from pixelcnn_pp.optim import PolyakAverage

from helpers import GOLDEN_CKPT, GOLDEN_DIR, golden, golden_group, golden_model

D = golden()
GOLDEN_ORDERED_NPZ = os.path.join(GOLDEN_DIR, "shared_small_ordered.npz")
LR0, LR_DECAY, POLYAK = 1e-3, 0.999995, 0.9995


def rel_err(a, b):
    """max |a - b| / max |b|: relative error at the scale of the array."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))


def test_variable_names_and_shapes_match_the_original():
    model = golden_model()
    ours = {n: tuple(v.shape) for n, v in tf1_variables(model).items()}
    theirs = {n: tuple(a.shape) for n, a in golden_group(D, "ddi/").items()}
    assert ours == theirs


def test_forward_and_loss_from_ddi_weights():
    model = golden_model()
    assign_tf1_variables(model, golden_group(D, "ddi/"))
    out = model(D["x"]).numpy()
    assert out.shape == D["out"].shape == (3, 16, 16, 40)
    assert rel_err(out, D["out"]) <= 1e-5
    # The loss carries its own float32 round-off, which inputs differing in their last bits
    # (another machine's convolutions) draw anew: an inner bin's mass is cdf_plus - cdf_min, a
    # difference of two sigmoids near 1 that float32 rounds to ~u = 6e-8 absolute, relative
    # u / cdf_delta: up to 6e-3 nats for the thinnest bins the original keeps (> 1e-5). Summed
    # over an image's 768 channel terms (responsibility-weighted), these bounds add up to
    # ~1.5e-5 of its ~5,000 nats if all aligned and to ~2e-6 as a random walk; the first-order
    # effect of the output error (3e-7 of the output's scale) adds ~2e-7. Per image: 1e-5,
    # under the aligned bound; the sum of 3 images averages: 5e-6.
    loss = float(pixelcnn_pp.discretized_mix_logistic_loss(D["x"], out))
    assert abs(loss - float(D["loss"])) / abs(float(D["loss"])) <= 5e-6
    per_image = pixelcnn_pp.nll_per_image(D["x"], out).numpy()
    np.testing.assert_allclose(per_image, D["loss_per_image"], rtol=1e-5)
    # The loss of the golden output itself is the original's loss to the last float.
    assert float(pixelcnn_pp.discretized_mix_logistic_loss(D["x"], D["out"])) == pytest.approx(
        float(D["loss"]), rel=1e-7)


def test_data_dependent_init_reproduces_the_original():
    model = golden_model()
    assign_tf1_variables(model, golden_group(D, "init/"))
    model.initialize(D["x_init"])
    ours = export_tf1_variables(model)
    for name, theirs in golden_group(D, "ddi/").items():
        assert rel_err(ours[name], theirs) <= 1e-4, name


def test_initialize_works_on_an_unbuilt_model():
    model = pixelcnn_pp.PixelCNNPP(dropout_p=0.0, nr_resnet=2, nr_filters=16, nr_logistic_mix=4,
                                   seed=0)
    model.initialize(D["x_init"])  # builds, then each layer initialises itself in order
    assert set(tf1_variables(model)) == set(golden_group(D, "ddi/"))


def _train_three_steps(model):
    opt = pixelcnn_pp.optim.Adam(learning_rate=LR0)
    opt.build(model.trainable_variables)
    lr, snapshots = LR0, []
    for k in range(3):
        lr *= LR_DECAY  # decayed before every step, the first included
        opt.learning_rate = lr
        x = tf.cast(D[f"train_x_{k}"], model.compute_dtype)
        with tf.GradientTape() as tape:
            loss = pixelcnn_pp.discretized_mix_logistic_loss(x, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        snapshots.append(export_tf1_variables(model))
    return snapshots


def _fractions_within(ours, theirs, tol):
    diffs = np.concatenate([np.abs(ours[n].astype(np.float64) - theirs[n]).ravel()
                            for n in theirs])
    return np.mean(diffs <= tol)


def _summed_lr(k):
    return sum(LR0 * LR_DECAY ** (j + 1) for j in range(k))


def assert_adam_steps_agree(ours, ref, k, slr, what=""):
    """Two computations of the same k Adam steps (dicts name -> array) agree up to float32
    round-off as Adam propagates it (slr: the summed learning rate of the k steps).

    Adam divides each gradient by its own scale, so the error analysis is per element:
    - a weight is a float32 near |p| <= 1, rounded after each step: 2^-24 |p| each, a few
      1e-5 of slr; from step 2 on, m / sqrt(v) mixes two gradients, so their relative
      float32 error (~1e-5..1e-4 for sums over thousands of terms) moves every step by that
      share of lr. The median element is thus within 2e-4 of slr (a wrong formula moves it
      by its own relative error, a wrong beta by ~(1 - beta) or more).
    - at step 1 the update is lr g / sqrt(g^2 + eps), ~lr sign(g) unless |g| is within a
      few sqrt(eps) = 1e-4 of zero; there a gradient error dg moves it by ~lr dg / 1e-4 and
      a sign flip by 2 lr. Few elements lie there: at most 0.5% may be off by more than
      1e-3 of slr (a misplaced epsilon moves every element with |g| < 2e-3 by more).
    - from step 2 on, elements whose gradient is itself small against its array's float32
      noise (relative error >~ 1e-2) can also be off: at most 0.5% beyond 1e-2 of slr.
    - no element can move by more than lr per step: all within 2 slr.
    """
    assert set(ours) == set(ref), what
    d = np.concatenate([np.abs(np.asarray(ours[n], np.float64) - ref[n]).ravel()
                        for n in ref]) / slr
    far = 1e-3 if k == 1 else 1e-2
    stats = (what, k, float(np.median(d)), float(np.mean(d > far)), float(d.max()))
    assert np.median(d) <= 2e-4, stats
    assert np.mean(d > far) <= 0.005, stats
    assert d.max() <= 2.0 + 1e-7 / slr, stats


@pytest.fixture(scope="module")
def our_steps():
    model = golden_model()
    assign_tf1_variables(model, golden_group(D, "ddi/"))
    return _train_three_steps(model)


def test_three_adam_steps_agree_with_the_original(our_steps):
    # The original's step-1 update is lr*sign(g) up to epsilon for all but the smallest
    # gradients; ours must agree for nearly all elements.
    assert _fractions_within(our_steps[0], golden_group(D, "step1/"), 1e-3 * _summed_lr(1)) >= 0.98
    # Measured: the original's gradients carry a noise of ~1% of each layer's gradient scale
    # that neither our float32 nor float64 computations have (both agree with each other to
    # 1e-3 of the summed lr, see the next test), so from step 2 the agreement is looser.
    for k in (1, 2, 3):
        theirs = golden_group(D, f"step{k}/")
        slr = _summed_lr(k)
        assert _fractions_within(our_steps[k - 1], theirs, 5e-2 * slr) >= 0.99, k
        assert _fractions_within(our_steps[k - 1], theirs, 1e-2 * slr) >= 0.88, k
        assert _fractions_within(our_steps[k - 1], theirs, 2.0 * slr + 1e-7) == 1.0, k


def test_three_adam_steps_equal_a_float64_computation(our_steps):
    import keras
    keras.config.set_dtype_policy("float64")
    try:
        model = pixelcnn_pp.PixelCNNPP(dropout_p=0.0, nr_resnet=2, nr_filters=16,
                                       nr_logistic_mix=4, seed=0)
        model(tf.zeros((1, 16, 16, 3), tf.float64))
        assign_tf1_variables(model, golden_group(D, "ddi/"))
        ref = _train_three_steps(model)
    finally:
        keras.config.set_dtype_policy("float32")
    for k in (1, 2, 3):
        assert_adam_steps_agree(our_steps[k - 1], ref[k - 1], k, _summed_lr(k), "float64")


def test_three_adam_steps_agree_with_the_original_computed_without_its_race(our_steps):
    """shared_small_ordered.npz: the original's own steps with the gradients computed before
    its Adam assignments (its train op leaves them unordered, see the README there)."""
    ordered = np.load(GOLDEN_ORDERED_NPZ)
    for k in (1, 2, 3):
        assert_adam_steps_agree(our_steps[k - 1], golden_group(ordered, f"ordered_step{k}/"), k,
                                _summed_lr(k), "the original, ordered")


def test_adam_alone_equals_the_originals_adam_updates():
    """The original's nn.py: adam_updates fed the same float32 gradients (1e-7..1)."""
    import keras
    ordered = np.load(GOLDEN_ORDERED_NPZ)
    for i in range(3):
        p0 = ordered[f"adam_p0_{i}"]
        var = keras.Variable(p0)
        opt = pixelcnn_pp.optim.Adam(learning_rate=LR0)
        opt.build([var])
        for t in (1, 2, 3):
            opt.learning_rate = LR0 * LR_DECAY ** t
            opt.apply_gradients([(tf.constant(ordered[f"adam_g{t}_{i}"]), var)])
            theirs = ordered[f"adam_step{t}_{i}"]
            # The distance moved agrees to 1e-6 relative (the same float32 operations, maybe
            # contracted differently); beyond that each computation rounds the weight to its
            # float32 spacing after each of the t steps: up to t spacings apart.
            moved = np.abs(theirs.astype(np.float64) - p0)
            tol = 1e-6 * moved + t * np.spacing(np.abs(theirs))
            err = np.abs(var.numpy().astype(np.float64) - theirs)
            assert np.all(err <= tol), (i, t, float(np.max(err / tol)))


def test_polyak_averages_reproduce_the_originals():
    """The original's averages start from the pre-init values (ours: from the data-initialised
    ones), and its averaging op ran in one tf.group with the Adam update, unordered: the golden
    ema3 shows that it read the weights *before* each update (ddi, step1, step2). Fed those,
    our update rule reproduces it."""
    model = golden_model()
    variables = tf1_variables(model)
    names = sorted(variables)
    # The original's constant decay (no warm-up).
    avg = PolyakAverage([variables[n] for n in names], decay=POLYAK, warmup=False)
    avg.reset([golden_group(D, "init/")[n] for n in names])
    for prefix in ("ddi/", "step1/", "step2/"):
        assign_tf1_variables(model, golden_group(D, prefix))
        avg.update()
    ema3 = golden_group(D, "ema3/")
    for n, a in zip(names, avg.averages):
        assert rel_err(a.numpy(), ema3[n]) <= 1e-4, n


def test_tf1_checkpoint_loads_raw_and_averaged_values_exactly():
    model = golden_model()
    load_tf1_checkpoint(model, GOLDEN_CKPT, use_ema=False)
    step3 = golden_group(D, "step3/")
    for n, a in export_tf1_variables(model).items():
        np.testing.assert_array_equal(a, step3[n])
    load_tf1_checkpoint(model, GOLDEN_CKPT)  # averages by default, as the original evaluated
    ema3 = golden_group(D, "ema3/")
    for n, a in export_tf1_variables(model).items():
        np.testing.assert_array_equal(a, ema3[n])
