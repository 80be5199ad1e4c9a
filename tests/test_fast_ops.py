"""pixelcnn_pp/fast_ops.py: each fast version equals the plain formula it replaces, the switch
decides which one is traced, and with it off a training step holds none of them."""

import gc
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp import fast_ops
from pixelcnn_pp import layers as L
from pixelcnn_pp import optim


def test_the_switch_is_off_on_import_and_use_restores_it():
    code = "from pixelcnn_pp import fast_ops; print(fast_ops.enabled())"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert p.stdout.strip() == "False", p.stderr[-2000:]
    with fast_ops.use(True):
        assert fast_ops.enabled()
        with fast_ops.use(False):
            assert not fast_ops.enabled()
        assert fast_ops.enabled()
    assert fast_ops.enable(True) is False and fast_ops.enable(False) is True
    with pytest.raises(RuntimeError):
        with fast_ops.use(True):
            raise RuntimeError
    assert not fast_ops.enabled()


@pytest.mark.parametrize("axes, v_shape, g_shape", [
    ((0, 1, 2), (2, 3, 6, 5), [1, 1, 1, 5]),     # conv kernels: (fh, fw, Cin, F)
    ((0, 1, 3), (2, 2, 5, 6), [1, 1, 5, 1])])    # transposed conv kernels: (fh, fw, F, Cin)
def test_weight_normalize_value_and_gradients_equal_the_plain_ops(axes, v_shape, g_shape):
    V = (tf.random.stateless_normal(v_shape, (5, 6)) * 0.05).numpy()
    g = tf.random.stateless_normal([5], (7, 8))
    # One direction with norm 0: the epsilon branch (gradient of V: g r dW only).
    first_filter = [slice(None)] * 4
    first_filter[({0, 1, 2, 3} - set(axes)).pop()] = 0   # the filter axis, not normalised
    V[tuple(first_filter)] = 0.0
    V = tf.constant(V)
    up = tf.random.stateless_normal(v_shape, (9, 10))

    def both(fast):
        with fast_ops.use(fast), tf.GradientTape() as tape:
            tape.watch([V, g])
            W = L.weight_normalize(V, g, axes, g_shape)
        return W, tape.gradient(W, [V, g], output_gradients=up)

    W, (dV, dg) = both(True)
    W0, (dV0, dg0) = both(False)
    np.testing.assert_array_equal(W.numpy(), W0.numpy())  # the forward is the same ops
    np.testing.assert_allclose(dV.numpy(), dV0.numpy(), rtol=2e-6, atol=2e-6 * np.abs(dV0).max())
    np.testing.assert_allclose(dg.numpy(), dg0.numpy(), rtol=2e-6, atol=1e-7)
    assert np.abs(dV0.numpy()).max() > 0 and np.abs(dg0.numpy()).max() > 0


def test_dropout_keep_uses_8_or_16_bits_where_the_rate_allows_and_none_otherwise():
    seed = tf.constant([1, 2])
    for rate in (0.5, 0.25, 3 / 65536):
        keep = fast_ops.dropout_keep(tf.constant([7, 9, 11]), rate, seed)
        assert keep.dtype == tf.bool and keep.shape == (7, 9, 11)
    assert fast_ops.dropout_keep(tf.constant([4, 4]), 0.3, seed) is None
    # 8-bit draws: the threshold is exact, element k of the mask is byte k of the words
    words = tf.random.stateless_uniform([4], seed, minval=None, maxval=None, dtype=tf.uint32)
    draws = tf.bitcast(words, tf.uint8).numpy().reshape(-1)
    keep = fast_ops.dropout_keep(tf.constant([16]), 0.25, seed).numpy()
    np.testing.assert_array_equal(keep, draws >= 64)


def test_dropout_masks_differ_between_the_paths_but_not_their_rule():
    x = tf.fill((32, 32, 32, 8), 2.0)
    seed = tf.constant([3, 4])
    with fast_ops.use(False):
        plain = L.dropout(x, 0.5, seed).numpy()
    with fast_ops.use(True):
        fast = L.dropout(x, 0.5, seed).numpy()
    assert set(np.unique(plain)) == set(np.unique(fast)) == {0.0, 4.0}
    assert not np.array_equal(plain, fast)
    assert abs((plain != 0).mean() - (fast != 0).mean()) < 0.01


@pytest.mark.parametrize("dtype, tol", [(tf.float32, 2e-6), (tf.bfloat16, 2e-2)])
def test_fused_gate_equals_the_plain_gate(dtype, tol):
    rng = np.random.RandomState(3)
    x = tf.constant(rng.randn(2, 5, 6, 7), dtype)
    c2 = tf.constant(rng.randn(2, 5, 6, 14) * 4, dtype)
    a, b = c2[..., :7].numpy().astype(np.float64), c2[..., 7:].numpy().astype(np.float64)
    want = x.numpy().astype(np.float64) + a / (1 + np.exp(-b))
    for fn in (L.gate, fast_ops.fused(L.gate)):
        y = fn(x, c2)
        assert y.dtype == dtype and y.shape == x.shape
        np.testing.assert_allclose(y.numpy().astype(np.float64), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(fast_ops.fused(L.gate)(x, c2).numpy().astype(np.float32),
                               L.gate(x, c2).numpy().astype(np.float32), rtol=tol, atol=tol)
    assert fast_ops.fused(L.gate) is fast_ops.fused(L.gate)    # compiled once


def test_the_gated_resnet_fuses_its_gate_in_evaluation_only_and_only_when_switched_on(
        monkeypatch):
    names = iter(f"model/layer_{i}" for i in range(10))
    blk = L.GatedResnet(6, L.DownRightShiftedConv2D, lambda kind: next(names), has_a=True)
    rng = np.random.RandomState(4)
    x, a = (tf.constant(rng.randn(2, 4, 4, 6), tf.float32) for _ in range(2))
    blk(x, a=a)
    calls = []
    fused = fast_ops.fused(L.gate)
    monkeypatch.setattr(L, "gate", lambda *args, fn=L.gate: calls.append("gate") or fn(*args))
    monkeypatch.setattr(fast_ops, "fused",
                        lambda fn: lambda *args: calls.append("fused") or fused(*args))
    with fast_ops.use(True):
        on_eval = blk(x, a=a, training=False)
        blk(x, a=a, training=True)
    with fast_ops.use(False):
        off_eval = blk(x, a=a, training=False)
        blk(x, a=a, training=True)
    assert calls == ["fused", "gate", "gate", "gate"]
    np.testing.assert_allclose(on_eval.numpy(), off_eval.numpy(), rtol=1e-6, atol=1e-6)


def _adam_args(rng, n=4096):
    g = rng.randn(n).astype(np.float32) * np.exp(rng.uniform(-16, 0, n)).astype(np.float32)
    p, m = rng.randn(n).astype(np.float32), rng.randn(n).astype(np.float32) * 1e-3
    v = np.abs(rng.randn(n)).astype(np.float32) * 1e-6
    c = lambda x: tf.constant(x, tf.float32)  # noqa: E731
    return [c(p), c(m), c(v), c(g), c(1e-3), c(0.95), c(1 - 0.95), c(0.9995), c(1 - 0.9995),
            c(1 - 0.95 ** 3), c(1 - 0.9995 ** 3), c(1e-8)]


def test_fused_adam_and_polyak_steps_equal_the_plain_ones():
    args = _adam_args(np.random.RandomState(0))
    # To float32 round-off (XLA may contract a * b + c into one rounding) of the terms: of
    # p and the step lr * ... for p_t, of beta * m and (1 - beta) * g for m_t (and v_t),
    # which cancel where they have opposite signs.
    fast, plain = fast_ops.fused(optim.adam_step)(*args), optim.adam_step(*args)
    for a, b, scale in zip(fast, plain, (1e-3, np.abs(args[1]).max(), np.abs(args[2]).max())):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6 * scale)
    p_new = optim.adam_step(*args)[0].numpy()
    assert np.abs(p_new - args[0].numpy()).max() > 1e-4         # the step moved the weights
    avg, var = args[0], args[0] + tf.random.stateless_normal(args[0].shape, (1, 2))
    for d in (0.0005, 0.5):
        a = fast_ops.fused(optim.ema_step)(avg, var, tf.constant(d, tf.float32)).numpy()
        b = optim.ema_step(avg, var, tf.constant(d, tf.float32)).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_the_optimiser_and_averages_use_the_fused_steps_only_when_switched_on(monkeypatch):
    made = []
    real = fast_ops.fused
    monkeypatch.setattr(fast_ops, "fused", lambda fn: made.append(fn.__name__) or real(fn))
    v = tf.Variable(tf.ones([5]))
    for on in (False, True):
        opt = optim.Adam(1e-3)
        avg = optim.PolyakAverage([v])
        with fast_ops.use(on):
            opt.apply_gradients([(tf.fill([5], 0.5), v)])
            avg.update()
    assert made == ["adam_step", "ema_step"]


def test_freeze_gc_moves_live_objects_out_of_the_collectors_reach():
    try:
        gc.unfreeze()
        fast_ops.freeze_gc()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def _graph_ops(concrete):
    """Every node of a traced function and of the functions it calls, and those functions'
    attributes."""
    gd = concrete.graph.as_graph_def()
    nodes = list(gd.node) + [n for f in gd.library.function for n in f.node_def]
    return nodes, [f.attr for f in gd.library.function]


def _draws_bytes(nodes):
    """Whether random words are cut into 8- or 16-bit draws (fast_ops.dropout_keep)."""
    small = {tf.uint8.as_datatype_enum, tf.uint16.as_datatype_enum}
    return any(n.op == "Bitcast" and n.attr["type"].type in small for n in nodes)


@pytest.fixture(scope="module")
def tiny_steps():
    from pixelcnn_pp import PixelCNNPP
    from pixelcnn_pp.likelihood import scale_images
    from pixelcnn_pp.training import make_steps
    x = tf.constant(np.random.RandomState(0).randint(0, 256, (2, 8, 8, 3)), tf.uint8)
    y, lr = tf.zeros([2], tf.int32), tf.constant(1e-3)
    out = {}
    for fast in (False, True):
        model = PixelCNNPP(1, 4, 2, dropout_p=0.5, seed=0)
        model.initialize(scale_images(x))
        opt = optim.Adam(1e-3)
        opt.build(model.trainable_variables)
        avg = optim.PolyakAverage(model.trainable_variables)
        train_step, eval_step = make_steps(tf.distribute.get_strategy(), model, opt, avg,
                                           model.objective, fast=fast)
        out[fast] = (train_step.get_concrete_function(x, y, lr),
                     eval_step.get_concrete_function(x, y))
    return out


@pytest.mark.parametrize("fast", [False, True])
def test_with_the_switch_off_the_steps_hold_the_originals_ops_only(tiny_steps, fast):
    with fast_ops.use(not fast):    # make_steps' own setting wins over the caller's switch
        for concrete in tiny_steps[fast]:
            nodes, fn_attrs = _graph_ops(concrete)
            xla = any("_XlaMustCompile" in a and a["_XlaMustCompile"].b for a in fn_attrs)
            assert xla == fast
    train_nodes, _ = _graph_ops(tiny_steps[fast][0])
    assert _draws_bytes(train_nodes) == fast       # the 8-bit dropout draw: training only


def test_scoring_and_sampling_trace_again_when_the_switch_changes():
    from helpers import tiny_model
    from pixelcnn_pp import sampling, scoring
    model = tiny_model()
    images = np.random.RandomState(0).randint(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    model(tf.zeros((1, 8, 8, 3)))
    with fast_ops.use(False):
        off = scoring.score_images(model, images, batch_size=2)["nll_nats"]
        a = sampling.sample(model, 1, (8, 8, 3), seed=3, method="naive")
    with fast_ops.use(True):
        on = scoring.score_images(model, images, batch_size=2)["nll_nats"]
        b = sampling.sample(model, 1, (8, 8, 3), seed=3, method="naive")
    assert set(scoring._FUNCTIONS[model]) == {False, True}
    assert {key[-1] for key in sampling._SAMPLERS[model]} == {False, True}
    np.testing.assert_allclose(on, off, rtol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-4)
