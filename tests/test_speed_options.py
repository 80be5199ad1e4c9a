"""Speed and memory options: recompute (gradient checkpointing), mixed precision, XLA, and the
training benchmark's smoke mode."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import one_hot, random_images, tiny_model
from pixelcnn_pp import checkpoint as ckpt_lib
from pixelcnn_pp.likelihood import discretized_mix_logistic_loss
from pixelcnn_pp.sampling import sample
from pixelcnn_pp.training import train
from test_golden import assert_adam_steps_agree
from test_training import ROOT, checkpoint_values, env, tiny_cfg


def _grads(model, x, h, seed_state):
    model.rng.state.assign(seed_state)  # the same dropout masks for every call

    @tf.function(autograph=False)
    def step():
        with tf.GradientTape() as tape:
            loss = discretized_mix_logistic_loss(x, model(x, h=h, training=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    return step()


def _worst_relative(a, b):
    return max(float(tf.reduce_max(tf.abs(u - v)) / (tf.reduce_max(tf.abs(v)) + 1e-12))
               for u, v in zip(a, b))


def test_recompute_gives_the_plain_gradients_with_dropout():
    x, h = tf.constant(random_images((2, 8, 8, 3))), one_hot([0, 2], 3)
    model = tiny_model(num_classes=3, dropout_p=0.5)
    model.initialize(x, h)
    state = model.rng.state.numpy()
    loss0, g0 = _grads(model, x, h, state)
    model.recompute = True
    loss1, g1 = _grads(model, x, h, state)
    assert all(g is not None for g in g1)
    np.testing.assert_allclose(float(loss1), float(loss0), rtol=1e-5)
    assert _worst_relative(g1, g0) < 1e-3
    # Other dropout masks give other gradients: the comparison above can fail.
    other = state.copy()
    other[0] += 12345
    _, g2 = _grads(model, x, h, other)
    assert _worst_relative(g2, g0) > 1e-2


def initial_values(cfg, where):
    """The weights a run of ``cfg`` starts from: its setup and data-dependent init (the first
    two phases of training.train), written to ``where`` and read back by checkpoint name."""
    from pixelcnn_pp.training import resume_or_initialise, setup
    run = setup(dataclasses.replace(cfg, save_dir=str(where)))
    resume_or_initialise(run)
    path = run.checkpoint.write(str(where / "initial"))
    reader = tf.train.load_checkpoint(path)
    return {n: reader.get_tensor(n) for n, _ in tf.train.list_variables(path)
            if n.startswith("model/")}


def assert_same_training(dir_a, dir_b, init, steps=3, lr=1e-3):
    """The weights of two runs agree to round-off, as Adam propagates it: Adam divides each
    gradient by its own scale, so elements with tiny gradients turn round-off into a visible
    share of a step, up to 2 lr for a sign flip (the criterion and its derivation:
    test_golden.assert_adam_steps_agree). ``init``: the weights both started from."""
    a = checkpoint_values(dir_a, prefixes=("model/",))
    b = checkpoint_values(dir_b, prefixes=("model/",))
    assert set(a) == set(b) == set(init)
    assert_adam_steps_agree(a, b, steps, steps * lr, "two runs")
    diff = max(np.abs(a[k] - b[k]).max() for k in a)
    # ... and they did train: the runs moved the weights from where they started by far more
    # than they differ, and by about what Adam's steps can (at most lr per step, per weight)
    moved = max(np.abs(a[k] - init[k]).max() for k in a)
    assert moved > 100 * diff and 0.5 * lr < moved <= 1.5 * steps * lr


def test_recompute_training_equals_plain_training(tmp_path):
    init = initial_values(tiny_cfg(tmp_path, dropout_p=0.5), tmp_path / "init")
    train(tiny_cfg(tmp_path / "plain", max_steps=3, dropout_p=0.5))
    train(tiny_cfg(tmp_path / "recompute", max_steps=3, dropout_p=0.5, recompute=True))
    assert_same_training(tmp_path / "plain", tmp_path / "recompute", init)


def test_recompute_is_refused_for_the_baseline(tmp_path):
    with pytest.raises(ValueError, match="--recompute is for PixelCNN"):
        train(tiny_cfg(tmp_path, max_steps=1, model="pixelcnn", num_layers=2, num_filters=8,
                       recompute=True))


def test_xla_training_equals_plain_training(tmp_path):
    init = initial_values(tiny_cfg(tmp_path), tmp_path / "init")
    train(tiny_cfg(tmp_path / "plain", max_steps=3))
    train(tiny_cfg(tmp_path / "xla", max_steps=3, jit_compile=True))
    assert_same_training(tmp_path / "plain", tmp_path / "xla", init)


@pytest.fixture
def bf16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mixed_bfloat16_model_keeps_float32_weights_loss_and_init(bf16_policy):
    x = tf.constant(random_images((8, 8, 8, 3)))
    model = tiny_model(dropout_p=0.5)
    model(x[:1])
    keras.mixed_precision.set_global_policy("float32")
    ref = tiny_model(dropout_p=0.5)
    ref(x[:1])
    for a, b in zip(model.trainable_variables, ref.trainable_variables):
        a.assign(b)                               # the same initial weights
    out = model.initialize(x, training=False)
    ref.initialize(x, training=False)
    assert out.dtype == tf.float32  # the mixture parameters reach the likelihood in float32
    assert all(v.dtype == tf.float32 for v in model.trainable_variables)
    assert model.up[0][0][0].conv1.compute_dtype == "bfloat16"
    # The data-dependent init computes its statistics in float32 from bf16 activations: the
    # scales and biases it sets are the float32 model's to bf16 accuracy.
    for a, b in zip(model.weight_norm_layers(), ref.weight_norm_layers()):
        np.testing.assert_allclose(a.g.numpy(), b.g.numpy(), rtol=0.05, err_msg=a.name)
        np.testing.assert_allclose(a.b.numpy(), b.b.numpy(), rtol=0.05, atol=0.05,
                                   err_msg=a.name)
    # Its loss is the float32 model's to bf16 accuracy, and its gradients are finite float32.
    l32 = float(discretized_mix_logistic_loss(x, ref(x)))
    l16 = float(discretized_mix_logistic_loss(x, model(x)))
    # bf16 keeps 8 significant bits through every layer and the mixture head: measured
    # 0.02-0.3% on random weights and 1.4% on the weights this suite's seeding gives.
    assert abs(l16 - l32) < 0.03 * abs(l32)
    with tf.GradientTape() as tape:   # training: dropout on
        loss = discretized_mix_logistic_loss(x, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g.dtype == tf.float32 and bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads)
    # Both samplers take the mixed-precision model.
    for method in ("fast", "naive"):
        img = sample(model, 2, (8, 8, 3), seed=1, method=method)
        assert img.dtype == tf.float32 and float(tf.reduce_max(tf.abs(img))) <= 1.0


def test_fast_sampler_runs_in_bfloat16_and_matches_naive(bf16_policy):
    """Under mixed_bfloat16 the fast sampler computes in bf16 (its caches are bf16, and its
    images differ from the float32 sampler's at bf16 round-off, not at float32's), and it
    follows the bf16 naive sampler: the same seed gives nearly the same images, another seed
    entirely different ones."""
    from pixelcnn_pp.sampling import _get_sampler
    x = tf.random.stateless_uniform((4, 16, 16, 3), (1, 2), -1.0, 1.0)
    model = tiny_model(nr_filters=16)
    model(x[:1])
    keras.mixed_precision.set_global_policy("float32")
    ref = tiny_model(nr_filters=16)
    ref.initialize(x, training=False)
    for a, b in zip(model.trainable_variables, ref.trainable_variables):
        a.assign(b)
    shape = (16, 16, 3)
    fast = sample(model, 3, shape, seed=7, method="fast")
    naive = sample(model, 3, shape, seed=7, method="naive")
    fast_f32 = sample(ref, 3, shape, seed=7, method="fast")
    other_seed = sample(model, 3, shape, seed=8, method="fast")
    sampler = _get_sampler(model, "fast", 3, 16, 16, False, False)
    assert sampler.dtype == tf.bfloat16
    assert all(v.dtype == tf.bfloat16 for v in tf.nest.flatten(sampler._initial_state())
               if v.shape.rank == 3)
    assert fast.dtype == np.float32 and np.abs(fast).max() <= 1.0
    # Measured: mean |difference| 0.006-0.014 (bf16 fast vs bf16 naive, and bf16 vs float32)
    # against 0.95 between two seeds.
    mean_diff = lambda a, b: float(np.mean(np.abs(a - b)))
    assert mean_diff(fast, naive) < 0.05
    assert 1e-4 < mean_diff(fast, fast_f32) < 0.05
    assert mean_diff(fast, other_seed) > 0.5


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_training_runs_and_restores_the_policy(tmp_path, precision):
    metrics = train(tiny_cfg(tmp_path, max_steps=4, precision=precision, dropout_p=0.5))
    assert keras.mixed_precision.global_policy().name == "float32"
    assert np.isfinite(metrics[-1]["train_bpd"]) and np.isfinite(metrics[-1]["test_bpd"])
    values = checkpoint_values(tmp_path, prefixes=("model/",))
    assert values and all(v.dtype == np.float32 for v in values.values())
    model, _ = ckpt_lib.load_for_inference(str(tmp_path))  # loads in float32 for sampling and eval
    assert all(v.dtype == tf.float32 for v in model.trainable_variables)


def _bench(*args):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "train_speed.py"),
                        "--smoke", *args], env=env(), cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_train_speed_benchmark_smoke_and_profiles(tmp_path):
    # one run for both (each run of the benchmark pays TensorFlow's start-up and the tracing)
    r = _bench("--recompute", "--profile_dir", str(tmp_path), "--profile_top", "200")
    for key in ("train_img_per_s", "eval_img_per_s", "peak_memory_mb",
                "train_img_per_s_median_step", "eval_img_per_s_median_step"):
        assert r[key] > 0, key
    for key, steps in (("train", r["train_step_seconds"]), ("eval", r["eval_step_seconds"])):
        # the median step lies between the fastest and the slowest (rounded to 1 ms)
        fastest, slowest = max(min(steps) - 5e-4, 1e-6), max(steps) + 5e-4
        rate = r[f"{key}_img_per_s_median_step"]
        assert r["global_batch"] / slowest <= rate <= r["global_batch"] / fastest, key
    assert r["recompute"] and r["replicas"] == 1 and np.isfinite(r["bits_per_dim_last_step"])
    names = {key: [name for name, _, _ in r[key]["top_op_types"]]
             for key in ("profile", "eval_profile")}
    for key, ops in names.items():
        assert r[key]["op_seconds_total"] > 0 and r[key]["wall_seconds"] > 0, key
        assert any("Conv2D" in name for name in ops), (key, ops)
        assert "(XLA-compiled functions)" in ops, (key, ops)   # Adam; evaluation's gate
    # The filter gradients are computed in training only.
    assert any("BackpropFilter" in name for name in names["profile"])
    assert not any("BackpropFilter" in name for name in names["eval_profile"])
    for sub in ("train", "eval"):
        assert list((tmp_path / sub / "plugins" / "profile").glob("*/*.xplane.pb")), sub


def test_train_speed_benchmark_two_workers():
    r = _bench("--workers", "2")
    assert r["workers"] == 2 and r["replicas"] == 2 and r["global_batch"] == 4
    assert len(r["peak_memory_mb_per_worker"]) == 2 and r["train_img_per_s"] > 0


def _in_git_checkout():
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _in_git_checkout(), reason="needs the repository's git history")
@pytest.mark.parametrize("eval_only", [False, True])
def test_paired_speed_benchmark_smoke(eval_only):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "paired_speed.py"),
                        "--smoke", "--revs", "HEAD,WORKTREE"] + ["--eval_only"] * eval_only,
                       env=env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert [v["rev"] for v in r["versions"]] == ["HEAD", "WORKTREE"] and r["rounds"] == 2
    assert r["eval_only"] == eval_only
    for v in r["versions"]:
        assert len(v["eval_step_seconds"]) == 2 and v["eval_img_per_s"] > 0
        if eval_only:
            assert v["train_step_seconds"] == [] and v["train_img_per_s"] is None
        else:
            assert len(v["train_step_seconds"]) == 2 and v["train_img_per_s"] > 0
    assert r["versions"][0]["eval_speedup"] == 1.0
    assert r["versions"][0]["train_speedup"] == (None if eval_only else 1.0)


def test_paired_speed_benchmark_refuses_an_unknown_revision():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "paired_speed.py"),
                        "--smoke", "--revs", "no-such-revision-xyz,WORKTREE"], env=env(),
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode != 0 and "cannot read pixelcnn_pp/ at 'no-such-revision-xyz'" in p.stderr
