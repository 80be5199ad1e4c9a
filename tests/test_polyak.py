"""The Polyak averages' warm-up (TF's ExponentialMovingAverage with num_updates), its count in
checkpoints (old checkpoints without it included), the flag that turns it off, and what it is
for: averages that are worth evaluating after a few dozen steps."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp import checkpoint as ckpt_lib
from pixelcnn_pp import training
from pixelcnn_pp.optim import PolyakAverage
from pixelcnn_pp.training import train
from test_training import assert_same_weights, checkpoint_values, tiny_cfg


def reference_averages(avg0, values, decay, warmup):
    """float64: avg -= (1 - decay_t)(avg - var), decay_t = min(decay, (1 + t) / (10 + t))."""
    avg = np.array(avg0, np.float64)
    for t, v in enumerate(values, start=1):
        d = min(decay, (1.0 + t) / (10.0 + t)) if warmup else decay
        avg = avg - (1.0 - d) * (avg - v)
    return avg


def test_warmup_follows_the_formula_for_hundreds_of_updates():
    rng = np.random.RandomState(0)
    values = [rng.normal(size=7) for _ in range(300)]
    var = tf.Variable(np.zeros(7), dtype=tf.float64)
    for warmup in (True, False):
        var.assign(np.zeros(7))
        avg = PolyakAverage([var], decay=0.9995, warmup=warmup)
        for k, v in enumerate(values, start=1):
            var.assign(v)
            avg.update()
            if k in (1, 2, 10, 100, 300):
                ref = reference_averages(np.zeros(7), values[:k], 0.9995, warmup)
                np.testing.assert_allclose(avg.averages[0].numpy(), ref, rtol=1e-12,
                                           atol=1e-15, err_msg=f"update {k}, warmup {warmup}")
        assert int(avg.num_updates.numpy()) == 300
    # The first update (t = 1) weighs the new value by 1 - 2/11; the constant decay by 5e-4.
    assert reference_averages([0.0], [[1.0]], 0.9995, True)[0] == pytest.approx(9 / 11)


def _one_minus_decay_at(avg, t):
    """The weight the t-th update gives the new value, read off an update from 0 towards 1."""
    var = avg._variables()[0]
    var.assign(tf.ones_like(var))
    avg.averages[0].assign(tf.zeros_like(var))
    avg.num_updates.assign(t - 1)
    avg.update()
    return float(avg.averages[0].numpy()[0])


def test_warmup_meets_the_constant_decay_at_the_formulas_crossover():
    # (1 + t) / (10 + t) = decay at t* = (10 decay - 1) / (1 - decay): 17,990 for 0.9995.
    decay = 0.9995
    t_star = round((10 * decay - 1) / (1 - decay))
    assert t_star == 17990
    avg = PolyakAverage([tf.Variable(np.zeros(1), dtype=tf.float64)], decay=decay)
    for t in (1, 2, 100, t_star - 10, t_star - 1):
        assert _one_minus_decay_at(avg, t) == pytest.approx(9.0 / (10.0 + t), rel=1e-12), t
        assert _one_minus_decay_at(avg, t) > 1.0 - decay
    for t in (t_star, t_star + 1, 20000, 10 ** 6):  # from the crossover on: the constant
        assert _one_minus_decay_at(avg, t) == pytest.approx(1.0 - decay, rel=1e-12), t
    constant = PolyakAverage([tf.Variable(np.zeros(1), dtype=tf.float64)], decay=decay,
                             warmup=False)
    for t in (1, 100, 20000):
        assert _one_minus_decay_at(constant, t) == pytest.approx(1.0 - decay, rel=1e-12), t
    # float32 averages, past the crossover: the constant decay's update to the last bit
    v = tf.Variable([3.0, -1.0])
    warm, const = PolyakAverage([v]), PolyakAverage([v], warmup=False)
    warm.num_updates.assign(20000)
    v.assign([1.0, 2.0])
    warm.update()
    const.update()
    np.testing.assert_array_equal(warm.averages[0].numpy(), const.averages[0].numpy())


def test_reset_restarts_the_warmup():
    v = tf.Variable([1.0])
    avg = PolyakAverage([v])
    for _ in range(5):
        avg.update()
    avg.reset()
    assert int(avg.num_updates.numpy()) == 0


def test_the_count_round_trips_through_a_checkpoint(tmp_path):
    rng = np.random.RandomState(1)
    values = [rng.normal(size=4).astype(np.float32) for _ in range(10)]
    v = tf.Variable(np.zeros(4, np.float32))
    avg = PolyakAverage([v])
    for x in values[:7]:
        v.assign(x)
        avg.update()
    path = tf.train.Checkpoint(averages=avg).save(str(tmp_path / "ckpt"))
    assert PolyakAverage.counter_in_checkpoint(path)
    w = tf.Variable(np.zeros(4, np.float32))
    restored = PolyakAverage([w])
    tf.train.Checkpoint(averages=restored).restore(path).assert_consumed()
    assert int(restored.num_updates.numpy()) == 7
    for x in values[7:]:  # both continue with t = 8, 9, 10
        v.assign(x)
        w.assign(x)
        avg.update()
        restored.update()
    np.testing.assert_array_equal(restored.averages[0].numpy(), avg.averages[0].numpy())
    # A checkpoint written before the count existed (the averages alone) has no counter.
    old = tf.train.Checkpoint(averages=avg.without_counter()).save(str(tmp_path / "old"))
    assert not PolyakAverage.counter_in_checkpoint(old)
    assert {n for n, _ in tf.train.list_variables(old) if n.startswith("averages/")} == {
        "averages/averages/0/.ATTRIBUTES/VARIABLE_VALUE"}


class _WithoutCounter(PolyakAverage):
    """Checkpoints as train.py wrote them before the averages counted their updates."""

    def _trackable_children(self, *args, **kwargs):
        children = dict(super()._trackable_children(*args, **kwargs))
        children.pop("num_updates", None)
        return children


def test_a_checkpoint_without_the_count_loads_and_resumes(tmp_path, monkeypatch):
    # 11 steps straight vs 5 steps saved without the count + 6 resumed: the resumed count
    # starts at the restored step, so the averages are the uninterrupted run's.
    train(tiny_cfg(tmp_path / "straight", max_steps=11))
    with monkeypatch.context() as m:
        m.setattr(training.run, "PolyakAverage", _WithoutCounter)   # what setup builds
        train(tiny_cfg(tmp_path / "old", max_steps=5))
    old = ckpt_lib.latest_checkpoint(str(tmp_path / "old"))
    assert not PolyakAverage.counter_in_checkpoint(old)
    model, _ = ckpt_lib.load_for_inference(str(tmp_path / "old"))  # inference: loads as before
    saved = checkpoint_values(tmp_path / "old", prefixes=("averages/",))
    for i, var in enumerate(model.trainable_variables):
        np.testing.assert_array_equal(var.numpy(),
                                      saved[f"averages/averages/{i}/.ATTRIBUTES/VARIABLE_VALUE"])
    train(tiny_cfg(tmp_path / "old", max_steps=11, load_params=True))
    resumed = checkpoint_values(tmp_path / "old")
    assert int(resumed["averages/num_updates/.ATTRIBUTES/VARIABLE_VALUE"]) == 11
    # (round-off as in test_training's resume test)
    assert_same_weights(checkpoint_values(tmp_path / "straight"), resumed, atol=2e-5)


def test_warm_averages_are_worth_evaluating_after_a_few_dozen_steps(tmp_path):
    # One run through training's phases, with a second set of averages beside the run's: the
    # original's constant decay, started from the same data-initialised weights and updated
    # after every step from the same weights.
    steps = 32  # 4 epochs of the tiny set
    run = training.setup(tiny_cfg(tmp_path, max_steps=steps))
    training.resume_or_initialise(run)
    constant = PolyakAverage(run.model.trainable_variables, decay=0.9995, warmup=False)
    step = run.train_step

    def step_and_average(*args):
        loss = step(*args)
        constant.update()
        return loss

    run = dataclasses.replace(run, train_step=step_and_average)
    while run.step_now() < steps:
        training.train_epoch(run)
    assert int(constant.num_updates.numpy()) == int(run.averages.num_updates.numpy()) == steps
    warm = training.evaluate(run)
    raw = training.evaluate(dataclasses.replace(
        run, averages=PolyakAverage(run.model.trainable_variables)))  # averages = the weights
    constant = training.evaluate(dataclasses.replace(run, averages=constant))
    # Warm-up weights update s by about 9 / (10 + s) and damps it by ((s + 1) / (t + 1))^9
    # afterwards, so at t the averages sit ~t / 10 = 3 updates behind the weights: in this
    # steep start (bits/dim falling by a few hundredths per step) within 0.15 of the raw
    # weights' figure. The constant decay's averages have moved 1 - 0.9995^32 = 1.6% of the
    # way from the initial weights and score nearly as the untrained model.
    assert warm <= raw + 0.15, (warm, raw)
    assert constant >= raw + 0.5, (constant, raw)


def test_inference_loads_the_averages_or_the_raw_weights_exactly(tmp_path):
    # load_for_inference builds on a 1x1 input with zeros and reads the averages straight into
    # the weights: the same values, and the same outputs at the image size, as a model built
    # the usual way and restored from the checkpoint.
    train(tiny_cfg(tmp_path, max_steps=5))
    path = ckpt_lib.latest_checkpoint(str(tmp_path))
    saved = checkpoint_values(tmp_path, prefixes=("averages/",))
    avg_model, config = ckpt_lib.load_for_inference(str(tmp_path))
    raw_model, _ = ckpt_lib.load_for_inference(str(tmp_path), use_averages=False)
    ref = ckpt_lib.build_model(config)
    tf.train.Checkpoint(model=ref).restore(path).expect_partial()
    differ = 0
    for i, (a, r, w) in enumerate(zip(avg_model.trainable_variables,
                                      raw_model.trainable_variables, ref.trainable_variables)):
        np.testing.assert_array_equal(
            a.numpy(), saved[f"averages/averages/{i}/.ATTRIBUTES/VARIABLE_VALUE"])
        np.testing.assert_array_equal(r.numpy(), w.numpy())
        differ += not np.array_equal(a.numpy(), r.numpy())
    assert differ > 0
    x = tf.random.uniform((2,) + config.image_shape, -1, 1, seed=1)
    np.testing.assert_array_equal(raw_model(x).numpy(), ref(x).numpy())
