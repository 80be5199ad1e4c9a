"""The fast sampler's traced functions kept on disk (``sampling.keep_traces``): a later sampler
loads them instead of tracing and draws the same images; a new shape or a damaged kept
function is traced afresh; a failed write costs only speed."""

import os

import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp import PixelCNNPP, sampling
from pixelcnn_pp.sampling import fast, traces


@pytest.fixture(scope="module")
def model():
    m = PixelCNNPP(nr_resnet=1, nr_filters=4, nr_logistic_mix=2, dropout_p=0.0, seed=0)
    m.initialize(tf.random.stateless_uniform((2, 8, 8, 3), (1, 2), -1.0, 1.0), training=False)
    return m


@pytest.fixture
def keeping(model, tmp_path):
    """The module's model keeping its traces in tmp_path (returned), with no sampler yet."""
    _fresh_samplers(model)
    sampling.keep_traces(model, str(tmp_path))
    yield tmp_path
    sampling.keep_traces(model, None)
    _fresh_samplers(model)


def _fresh_samplers(model):
    """Forget the model's samplers (and their traced functions), as a new process would."""
    sampling._SAMPLERS.pop(model, None)


def _kept(directory):
    """The keys kept in directory (its files ``<key>.pb``)."""
    names = [d for d in os.listdir(directory) if not d.startswith(".")]
    assert all(n.endswith(".pb") for n in names), names
    return sorted(n[:-3] for n in names)


def _no_tracing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("traced although a kept function was there")
    monkeypatch.setattr(fast.FastSampler, "_row_group", refuse)


def test_a_kept_trace_is_loaded_instead_of_traced_and_samples_the_same(model, keeping,
                                                                       monkeypatch):
    first = sampling.sample(model, 2, (8, 8, 3), seed=3)
    kept = _kept(keeping)
    assert len(kept) == 1                       # one group of 4 rows: one function
    assert os.path.isfile(keeping / f"{kept[0]}.pb")
    _fresh_samplers(model)
    with monkeypatch.context() as m:
        _no_tracing(m)
        again = sampling.sample(model, 2, (8, 8, 3), seed=3)
        other_seed = sampling.sample(model, 2, (8, 8, 3), seed=4)
    np.testing.assert_array_equal(again, first)
    assert not np.array_equal(other_seed, first)
    # The weights are inputs, not part of the trace: new weights, new images, same trace.
    old = [v.numpy() for v in model.trainable_variables]
    for v in model.trainable_variables:
        v.assign(v * 1.5)
    try:
        _fresh_samplers(model)
        with monkeypatch.context() as m:
            _no_tracing(m)
            scaled = sampling.sample(model, 2, (8, 8, 3), seed=3)
        sampling.keep_traces(model, None)
        _fresh_samplers(model)
        traced = sampling.sample(model, 2, (8, 8, 3), seed=3)
    finally:
        for v, o in zip(model.trainable_variables, old):
            v.assign(o)
        _fresh_samplers(model)
    np.testing.assert_array_equal(scaled, traced)
    assert not np.array_equal(scaled, first)
    assert _kept(keeping) == kept


def test_other_shapes_get_their_own_trace_and_a_damaged_one_is_traced_again(model, keeping):
    sampling.sample(model, 1, (8, 8, 3), seed=0)
    (one,) = _kept(keeping)
    # 6 rows: a group of 4 and one of 2, both new (the image's size is in the key).
    sampling.sample(model, 1, (6, 8, 3), seed=0)
    assert len(_kept(keeping)) == 3 and one in _kept(keeping)
    # Damage the first: it is traced again, samples the same, and is written anew.
    want = sampling.sample(model, 1, (8, 8, 3), seed=5)
    path = keeping / f"{one}.pb"
    for damage in ("cut_short", "overwritten"):    # (zeros in the middle still parse)
        if damage == "cut_short":
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
        else:
            data = bytearray(path.read_bytes())
            data[len(data) // 2:len(data) // 2 + 16] = bytes(16)
            path.write_bytes(bytes(data))
        assert traces.TraceStore(str(keeping)).load(one) is None
        _fresh_samplers(model)
        np.testing.assert_array_equal(sampling.sample(model, 1, (8, 8, 3), seed=5), want)
        assert traces.TraceStore(str(keeping)).load(one) is not None


def test_a_write_that_fails_costs_only_speed(model, keeping, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    want = sampling.sample(model, 1, (4, 4, 3), seed=1)
    _fresh_samplers(model)
    for entry in _kept(keeping):
        os.rename(keeping / f"{entry}.pb", keeping / f".gone{entry}")
    monkeypatch.setattr(traces.os, "fdopen", full_disk)
    np.testing.assert_array_equal(sampling.sample(model, 1, (4, 4, 3), seed=1), want)
    assert _kept(keeping) == []
    assert not [d for d in os.listdir(keeping) if not d.startswith(".gone")]    # no debris


def test_the_key_follows_what_shapes_the_trace():
    a = (tf.zeros((1, 4)), [tf.zeros((2,)), None], {"x": tf.zeros((), tf.int32)})
    key = traces.input_key(("s", 1), a)
    assert traces.input_key(("s", 1), a) == key
    assert traces.input_key(("s", 2), a) != key                       # a setting
    b = (tf.zeros((2, 4)), [tf.zeros((2,)), None], {"x": tf.zeros((), tf.int32)})
    assert traces.input_key(("s", 1), b) != key                       # a shape
    c = (tf.zeros((1, 4)), [tf.zeros((2,)), tf.zeros(())], {"x": tf.zeros((), tf.int32)})
    assert traces.input_key(("s", 1), c) != key                       # the structure
    tensors, pack = traces.flat_inputs(a)
    assert len(tensors) == 3
    back = pack(tensors)
    assert back[1][1] is None and back[2]["x"] is tensors[2]


def _variant(kind):
    """(model, sampling call) of a tiny model of one kind."""
    if kind == "codes":
        m = PixelCNNPP(1, 4, 2, dropout_p=0.0, seed=0, num_categories=5)
        m.initialize(tf.constant(np.arange(2 * 16).reshape(2, 4, 4) % 5, tf.int32),
                     training=False)
        return m, lambda: sampling.sample(m, 2, (4, 4), seed=1, temperature=0.7)
    if kind == "labels":
        m = PixelCNNPP(1, 4, 2, dropout_p=0.0, seed=0, num_classes=3)
        m.initialize(tf.random.stateless_uniform((3, 4, 4, 3), (1, 2), -1.0, 1.0),
                     h=tf.one_hot([0, 1, 2], 3), training=False)
        return m, lambda: sampling.sample(m, 3, (4, 4, 3), h=np.eye(3, dtype=np.float32),
                                          seed=1)
    m = PixelCNNPP(1, 4, 2, dropout_p=0.0, seed=0)
    m.initialize(tf.random.stateless_uniform((2, 4, 4, 3), (1, 2), -1.0, 1.0), training=False)
    if kind == "padded_completion":    # width 6: two padded columns; 9 positions given
        images = np.asarray(tf.random.stateless_uniform((2, 5, 6, 3), (3, 4), -1.0, 1.0))
        return m, lambda: sampling.complete(m, images, 9, seed=2)
    return m, lambda: sampling.sample(m, 1, (4, 4, 3), seed=1, jit_compile=True)     # xla


@pytest.mark.parametrize("kind", ["codes", "labels", "padded_completion", "xla"])
def test_every_kind_of_sampler_loads_its_kept_trace_and_samples_the_same(kind, tmp_path,
                                                                         monkeypatch):
    m, draw = _variant(kind)
    sampling.keep_traces(m, str(tmp_path))
    traced = draw()
    store = traces.store_for(m)
    assert store.written >= 1 and store.loaded == 0
    _fresh_samplers(m)
    with monkeypatch.context() as patch:
        _no_tracing(patch)
        loaded = draw()
    np.testing.assert_array_equal(loaded, traced)
    assert store.loaded == store.written


def test_a_kept_trace_that_loads_is_not_replaced(model, keeping):
    sampling.sample(model, 1, (4, 4, 3), seed=1)
    (key,) = _kept(keeping)
    stamp = os.stat(keeping / f"{key}.pb").st_mtime_ns
    # Another process that traced the same function writes it too: the first one stays.
    store = traces.TraceStore(str(keeping))
    assert store.save(key, store.load(key)) is False
    assert os.stat(keeping / f"{key}.pb").st_mtime_ns == stamp
    assert os.listdir(keeping) == [f"{key}.pb"]         # no temporary file left


def test_the_unpacking_function_holds_no_tensors():
    """The traced function keeps it as long as the sampler lives: it must not keep the first
    call's weights and caches alive."""
    args = ({"a": tf.zeros((3, 3))}, [tf.ones((2,)), None])
    tensors, pack = traces.flat_inputs(args)
    held = tf.nest.flatten([c.cell_contents for c in pack.__closure__])
    assert not [x for x in held if isinstance(x, tf.Tensor)]
    back = pack(tensors)
    assert back[0]["a"] is tensors[0] and back[1][1] is None


def test_keep_traces_refuses_a_directory_it_cannot_make(model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        sampling.keep_traces(model, str(blocker / "traces"))
    assert traces.store_for(model) is None


def test_only_stale_temporaries_of_its_own_are_removed(model, tmp_path):
    """keep_traces removes what writes killed midway left (its hidden temporaries over an
    hour old), and nothing else of the folder's."""
    names = [".0123456789abcdef01234567.x1y2", ".0123456789abcdef01234567.new", ".gitkeep",
             ".cache", "notes.txt"]
    for n in names:
        (tmp_path / n).write_text("")
    old = os.stat(tmp_path / "notes.txt").st_mtime - 7200
    for n in names:
        if n != ".0123456789abcdef01234567.new":
            os.utime(tmp_path / n, (old, old))
    sampling.keep_traces(model, str(tmp_path))
    sampling.keep_traces(model, None)
    assert sorted(os.listdir(tmp_path)) == sorted(n for n in names if not n.endswith("x1y2"))
