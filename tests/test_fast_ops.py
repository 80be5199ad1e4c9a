"""pixelcnn_pp/fast_ops.py: each fast version equals the plain formula it replaces; each
model, optimiser and average uses them only if it was built to (default: not), and then a
training step built from plain objects holds none of them."""

import gc
import os

import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp import PixelCNNPP, fast_ops
from pixelcnn_pp import layers as L
from pixelcnn_pp import optim
from pixelcnn_pp.baseline import PixelCNN
from pixelcnn_pp.errors import InvalidInputError


def _fast_paths(model):
    """fast_ops of every layer of a PixelCNNPP that has a fast path (convolutions, blocks)."""
    convs = [l for l in model.weight_norm_layers() if isinstance(l, L._WNConvBase)]
    return {l.fast_ops for l in convs + model.blocks()}


@pytest.mark.parametrize("fast", [False, True])
def test_the_choice_is_made_per_object_and_defaults_to_the_plain_ops(fast):
    assert PixelCNNPP(1, 4, 2).fast_ops is False and PixelCNN(1, 8).fast_ops is False
    v = tf.Variable(tf.ones([3]))
    assert optim.Adam().fused is False and optim.PolyakAverage([v]).fused is False
    assert _fast_paths(PixelCNNPP(1, 4, 2)) == {False}
    # A model passes its choice to every layer with a fast path; other objects keep theirs.
    model = PixelCNNPP(1, 4, 2, fast_ops=fast)
    assert model.fast_ops is fast and _fast_paths(model) == {fast}
    assert PixelCNN(1, 8, fast_ops=fast).fast_ops is fast
    assert optim.Adam(fused=fast).fused is fast
    assert optim.PolyakAverage([v], fused=fast).fused is fast
    assert optim.Adam.from_config(optim.Adam(fused=fast).get_config()).fused is fast


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
        with tf.GradientTape() as tape:
            tape.watch([V, g])
            W = L.weight_normalize(V, g, axes, g_shape, fast)
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
    plain = L.dropout(x, 0.5, seed).numpy()
    fast = L.dropout(x, 0.5, seed, fast_ops=True).numpy()
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


def test_the_gated_resnet_fuses_its_gate_in_evaluation_only_and_only_when_built_to(
        monkeypatch):
    fast_blk, plain_blk = (L.GatedResnet(6, L.DownRightShiftedConv2D, has_a=True, fast_ops=f)
                           for f in (True, False))
    rng = np.random.RandomState(4)
    x, a = (tf.constant(rng.randn(2, 4, 4, 6), tf.float32) for _ in range(2))
    fast_blk(x, a=a)
    plain_blk(x, a=a)
    plain_blk.set_weights(fast_blk.get_weights())
    calls = []
    fused = fast_ops.fused(L.gate)
    monkeypatch.setattr(L, "gate", lambda *args, fn=L.gate: calls.append("gate") or fn(*args))
    monkeypatch.setattr(fast_ops, "fused",
                        lambda fn: lambda *args: calls.append("fused") or fused(*args))
    on_eval = fast_blk(x, a=a, training=False)
    fast_blk(x, a=a, training=True)
    off_eval = plain_blk(x, a=a, training=False)
    plain_blk(x, a=a, training=True)
    assert calls == ["fused", "gate", "gate", "gate"]
    np.testing.assert_allclose(on_eval.numpy(), off_eval.numpy(), rtol=1e-6, atol=1e-6)


def _onednn_on():
    from tensorflow.python.util import _pywrap_util_port
    return _pywrap_util_port.IsMklEnabled()


@pytest.mark.parametrize("cls, stride", [(L.DownShiftedConv2D, 1), (L.DownRightShiftedConv2D, 1),
                                         (L.DownShiftedConv2D, 2), (L.DownRightShiftedConv2D, 2)])
def test_shifted_convolutions_padding_inside_equal_the_pad_op(monkeypatch, cls, stride):
    monkeypatch.setattr(fast_ops, "pads_inside_convolution", lambda: True)
    rng = np.random.RandomState(5)
    x = tf.constant(rng.randn(2, 6, 7, 4), tf.float32)
    plain, fast = cls(5, stride=(stride, stride)), cls(5, stride=(stride, stride), fast_ops=True)
    plain(x)
    fast(x)
    fast.set_weights([w * 3 for w in plain.get_weights()])
    plain.set_weights(fast.get_weights())
    probe = tf.constant(rng.randn(*plain(x).shape), tf.float32)

    def value_and_grads(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * probe)
        return [y] + tape.gradient(loss, [x] + layer.trainable_variables)

    want, got = value_and_grads(plain), value_and_grads(fast)
    if not _onednn_on():     # TensorFlow's own convolution: the same sums, bit for bit
        np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
    # The gradients (of the input, the kernel's V and g, the bias) to float32 round-off: the
    # kernel's gradient sums its products in another order.
    for a, b in zip(got, want):
        a, b = a.numpy(), b.numpy()
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-6 * np.abs(b).max()

    def ops(layer):
        return {o.type for o in tf.function(layer).get_concrete_function(x).graph.get_operations()}
    assert "Pad" in ops(plain) and not {"Pad", "PadV2"} & ops(fast)
    monkeypatch.setattr(fast_ops, "pads_inside_convolution", lambda: False)
    assert "Pad" in ops(fast)


def test_the_padding_goes_inside_the_convolution_only_without_onednn():
    # TensorFlow decides oneDNN once per process (TF_ENABLE_ONEDNN_OPTS, else by the CPU):
    # this process, and a fresh one with the other setting.
    import subprocess
    import sys
    assert fast_ops.pads_inside_convolution() is (not _onednn_on())
    other = "0" if _onednn_on() else "1"
    code = ("import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
            "from pixelcnn_pp import fast_ops\nprint(fast_ops.pads_inside_convolution())")
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=other)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    assert out[-1] == str(other == "0")


@pytest.mark.parametrize("nonlinearity", ["concat_elu", "elu"])
def test_the_split_short_cut_equals_the_nin_of_the_concatenation(nonlinearity):
    """A block given a = [u, s] (the down pass's ul blocks): the fast one multiplies nl(u)
    and nl(s) by their rows of nin_a's V and sums, instead of nl(concat([u, s])) by all of
    V; the same values and gradients to float32 round-off, in training and evaluation."""
    fast_blk, plain_blk = (L.GatedResnet(6, L.DownRightShiftedConv2D, nonlinearity, has_a=True,
                                         fast_ops=f) for f in (True, False))
    rng = np.random.RandomState(5)
    x, u = (tf.constant(rng.randn(2, 4, 4, 6), tf.float32) for _ in range(2))
    s = tf.constant(rng.randn(2, 4, 4, 3), tf.float32)      # parts of unequal widths
    plain_blk(x, a=[u, s])
    fast_blk(x, a=[u, s])
    fast_blk.set_weights(plain_blk.get_weights())
    parts = {}
    split = fast_blk.nin_a.apply_parts
    fast_blk.nin_a.apply_parts = lambda p, rows: split(p, parts.setdefault("rows", rows))
    for training in (False, True):
        out = []
        for blk in (fast_blk, plain_blk):
            with tf.GradientTape() as tape:
                tape.watch([x, u, s])
                y = blk(x, a=[u, s], training=training)
                loss = tf.reduce_sum(y * tf.sin(y))
            out.append((y, tape.gradient(loss, [x, u, s] + blk.trainable_variables)))
        (y1, g1), (y0, g0) = out
        np.testing.assert_allclose(y1.numpy(), y0.numpy(), rtol=1e-6, atol=1e-6)
        for a, b in zip(g1, g0):
            assert np.abs(a.numpy() - b.numpy()).max() <= 1e-5 * np.abs(b.numpy()).max()
    want = ([[(0, 6), (9, 15)], [(6, 9), (15, 18)]] if nonlinearity == "concat_elu"
            else [[(0, 6)], [(6, 9)]])
    assert parts["rows"] == want


def test_the_split_short_cut_rows_and_a_nonlinearity_they_do_not_know():
    assert L.concat_rows("relu", [2, 3]) == [[(0, 2)], [(2, 5)]]
    assert L.concat_rows("concat_elu", [2, 3, 1]) == [[(0, 2), (6, 8)], [(2, 5), (8, 11)],
                                                      [(5, 6), (11, 12)]]
    with pytest.raises(InvalidInputError, match="unknown nonlinearity 'gelu'"):
        L.concat_rows("gelu", [2, 2])


def test_the_data_dependent_init_of_a_fast_model_is_the_plain_ones():
    """The split short-cut stays off while the layers set their g and b from the init batch
    (a nin called on parts would skip its own init): from the same V, a fast and a plain
    model end the init with the same weights, the down pass's short-cut nins' included."""
    from helpers import random_images
    x = random_images((2, 8, 8, 3), seed=3)
    plain = PixelCNNPP(1, 4, 2, dropout_p=0.0, seed=0)
    fast = PixelCNNPP(1, 4, 2, dropout_p=0.0, seed=0, fast_ops=True)
    plain(x)
    fast(x)          # built: only the init flag keeps the short-cut concatenated
    fast.set_weights(plain.get_weights())
    plain.initialize(x)
    fast.initialize(x)
    nins = [ul.nin_a for level in fast.down for _, ul in level]
    assert nins and all(n.built for n in nins)
    assert not any(np.allclose(n.g.numpy(), 1.0) for n in nins)    # the init set them
    for v0, v1 in zip(plain.weights, fast.weights):
        np.testing.assert_allclose(v1.numpy(), v0.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=v0.path)


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


def test_the_optimiser_and_averages_use_the_fused_steps_only_when_built_to(monkeypatch):
    made = []
    real = fast_ops.fused
    monkeypatch.setattr(fast_ops, "fused", lambda fn: made.append(fn.__name__) or real(fn))
    v = tf.Variable(tf.ones([5]))
    for on in (False, True):
        opt = optim.Adam(1e-3, fused=on)
        avg = optim.PolyakAverage([v], fused=on)
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


def test_skip_graph_optimizer_turns_grappler_off_for_the_process_only_when_called():
    # Process-wide, so checked in fresh processes: off after the call, on without it.
    import subprocess
    import sys
    code = ("import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
            "import tensorflow as tf\nfrom pixelcnn_pp import fast_ops, sampling\n"
            "{}print(bool(tf.config.optimizer.get_experimental_options()"
            ".get('disable_meta_optimizer')))")
    for call, want in (("fast_ops.skip_graph_optimizer()\n", "True"), ("", "False")):
        out = subprocess.run([sys.executable, "-c", code.format(call)], capture_output=True,
                             text=True, check=True).stdout.split()
        assert out[-1] == want


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


def _steps(model, opt, avg, x):
    """The concrete train step (forward with dropout, backward, Adam, Polyak averages: the
    training loop's step on one replica) and evaluation step of these objects."""
    @tf.function(autograph=False)
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = model.objective(x, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        avg.update()
        return loss

    @tf.function(autograph=False)
    def eval_step(x):
        return model.objective(x, model(x, training=False))

    return train_step.get_concrete_function(x), eval_step.get_concrete_function(x)


@pytest.fixture(scope="module")
def tiny_steps():
    """Both kinds of objects in one process, the fast ones built and traced first: each
    traces its own choice, whatever was built before it."""
    from pixelcnn_pp.likelihood import scale_images
    x = scale_images(tf.constant(np.random.RandomState(0).randint(0, 256, (2, 8, 8, 3)),
                                 tf.uint8))
    out = {}
    for fast in (True, False):
        model = PixelCNNPP(1, 4, 2, dropout_p=0.5, seed=0, fast_ops=fast)
        model.initialize(x)
        opt = optim.Adam(1e-3, fused=fast)
        opt.build(model.trainable_variables)
        avg = optim.PolyakAverage(model.trainable_variables, fused=fast)
        out[fast] = _steps(model, opt, avg, x)
    return out


@pytest.mark.parametrize("fast", [False, True])
def test_plain_objects_trace_the_originals_ops_only_and_fast_ones_the_fast_versions(
        tiny_steps, fast):
    for concrete in tiny_steps[fast]:
        nodes, fn_attrs = _graph_ops(concrete)
        xla = any("_XlaMustCompile" in a and a["_XlaMustCompile"].b for a in fn_attrs)
        assert xla == fast
    train_nodes, _ = _graph_ops(tiny_steps[fast][0])
    assert _draws_bytes(train_nodes) == fast       # the 8-bit dropout draw: training only
    eval_nodes, _ = _graph_ops(tiny_steps[fast][1])
    assert not _draws_bytes(eval_nodes)


def test_a_fast_model_computes_what_the_plain_one_does():
    """Same weights: the same outputs and, through the hand-written weight-norm gradient, the
    same gradients (to float32 round-off); dropout off, whose masks differ by design."""
    from helpers import random_images
    x = random_images((2, 8, 8, 3), seed=1)
    plain = PixelCNNPP(1, 4, 2, dropout_p=0.0, seed=0)
    fast = PixelCNNPP(1, 4, 2, dropout_p=0.0, seed=0, fast_ops=True)
    plain.initialize(x)
    fast(x)
    fast.set_weights(plain.get_weights())

    probe = tf.constant(np.random.RandomState(2).randn(2, 8, 8, 20), tf.float32)

    def value_and_grads(model, training):
        with tf.GradientTape() as tape:
            out = model(x, training=training)
            smooth = tf.reduce_sum(out * probe)
        return model.objective(x, out), tape.gradient(smooth, model.trainable_variables)

    # The forward passes differ by float32 round-off: the down pass's split short-cut
    # products (both modes) and XLA's fused gate, which rounds its sigmoid differently
    # (evaluation); the loss to ~1e-6 relative. The gradients are those of a smooth function
    # of the output (a fixed random projection), at the scale of each array: the loss's own
    # branches (a sub-pixel's bin mass above or below 1e-5) would turn round-off into
    # gradient differences of ~1e-4 wherever a sub-pixel sits at a threshold.
    for training, loss_tol in ((True, 2e-6), (False, 1e-5)):
        (l0, g0), (l1, g1) = value_and_grads(plain, training), value_and_grads(fast, training)
        np.testing.assert_allclose(float(l1), float(l0), rtol=loss_tol)
        for v, a, b in zip(plain.trainable_variables, g1, g0):
            a, b = a.numpy(), b.numpy()
            assert np.abs(a - b).max() <= 2e-5 * np.abs(b).max(), (training, v.path)


def test_the_input_pipeline_leaves_large_freed_buffers_reused(monkeypatch):
    """Making an iterator of the pipeline runs tf.data's generator op, which (under Python
    3.11) sets glibc to map every buffer above 128 KiB afresh and unmap it when freed; the
    pipeline sets reuse back. Then an op whose 4 MiB output is freed each time costs almost
    no page faults, where without it each costs about a thousand."""
    import resource
    from pixelcnn_pp.training import distribute_batches, steps
    if not fast_ops.reuse_freed_buffers():
        pytest.skip("the C library is not glibc")
    x = tf.ones([1 << 20])

    def faults_after_a_new_pipeline(n=20):
        batches = distribute_batches(tf.distribute.get_strategy(),
                                     iter([np.zeros((2, 4, 4, 3), np.uint8)]), (4, 4, 3), 2,
                                     False)
        next(iter(batches))
        for _ in range(3):
            x * 2.0
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(n):
            y = x * 2.0
            del y
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0

    with monkeypatch.context() as m:
        m.setattr(steps, "reuse_freed_buffers", lambda: False)
        without = faults_after_a_new_pipeline()
    with_reuse = faults_after_a_new_pipeline()
    assert with_reuse < 5000, (with_reuse, without)
    if without > 20000:         # tf.data still switches reuse off: the switch back mattered
        assert with_reuse < without / 4
