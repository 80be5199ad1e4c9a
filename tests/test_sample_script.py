"""sample.py end to end (a tiny checkpoint of ours, the golden TF1 checkpoint) and the pieces
it is made of: labels, seeds per batch, the PNG tile and the uint8 mapping."""

import os
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp import batches, checkpoint, plotting, sampling
from pixelcnn_pp.cli import sample_files
from pixelcnn_pp.config import ModelConfig
from pixelcnn_pp.optim import PolyakAverage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_CKPT = os.path.join(ROOT, "tests", "data", "golden", "shared_small_tf1ckpt",
                           "params_cifar.ckpt")
GOLDEN_FLAGS = ["--nr_resnet=2", "--nr_filters=16", "--nr_logistic_mix=4",
                "--image_shape=16,16,3"]


def run_sample_py(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory):
    """A tiny class-conditional run of ours, written as train.py writes it, whose Polyak
    averages differ from its weights."""
    d = str(tmp_path_factory.mktemp("run"))
    config = ModelConfig(image_shape=(8, 8, 3), nr_resnet=1, nr_filters=8, nr_logistic_mix=2,
                         dropout_p=0.0, num_classes=3)
    model = config.build(seed=0)
    x = tf.random.stateless_uniform((6, 8, 8, 3), (1, 2), -1.0, 1.0)
    model.initialize(x, h=tf.one_hot(np.arange(6) % 3, 3), training=False)
    averages = PolyakAverage(model.trainable_variables)
    rng = np.random.RandomState(0)
    averages.reset([v.numpy() * (1 + 0.3 * rng.randn(*v.shape)).astype(np.float32)
                    for v in model.trainable_variables])
    checkpoint.write_config(d, config, {})
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model, averages=averages),
                               os.path.join(d, "ckpt"), max_to_keep=3).save()
    return d


def test_sample_py_from_save_dir(save_dir):
    out = os.path.join(save_dir, "samples.png")
    r = run_sample_py(f"--save_dir={save_dir}", "--num_samples=5", "--batch_size=3",
                      "--seed=4", f"--out={out}")
    assert r.returncode == 0, r.stderr
    assert "rows 16/16" in r.stderr and "images/s" in r.stderr        # the progress bar
    data = np.load(os.path.join(save_dir, "samples.npz"))
    images = data["images"]
    assert images.shape == (5, 8, 8, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(data["labels"], [0, 1, 2, 0, 1])      # cycled, as the original
    # The tile: a 3x3 grid of 8x8 images with 1-pixel white borders, the first 5 filled.
    tile = imageio.imread(out)
    assert tile.shape == (26, 26, 3)
    np.testing.assert_array_equal(tile[:8, :8], images[0])
    np.testing.assert_array_equal(tile[9:17, :8], images[3])
    assert np.all(tile[8] == 255) and np.all(tile[:, 17] == 255)
    # Run again onto the same --out: refused, the samples untouched; --overwrite replaces.
    before = open(out, "rb").read()
    again = run_sample_py(f"--save_dir={save_dir}", "--num_samples=1", f"--out={out}")
    last = again.stderr.strip().splitlines()[-1]
    assert again.returncode == 2 and last.startswith("sample.py: error: "), again.stderr
    assert "samples.png and " in last and "pass --overwrite" in last
    assert open(out, "rb").read() == before
    # The fast sampler's traced functions were kept beside the checkpoint (one group of 4
    # rows at batch 3); a later run loads them (the same entries, not written again) and
    # draws the same images.
    kept = sorted(os.listdir(os.path.join(save_dir, "traces")))
    stamps = [os.stat(os.path.join(save_dir, "traces", k)).st_mtime_ns
              for k in kept]
    assert kept and not [k for k in kept if k.startswith(".")]
    again = run_sample_py(f"--save_dir={save_dir}", "--num_samples=5", "--batch_size=3",
                          "--seed=4", f"--out={out}", "--overwrite")
    assert again.returncode == 0, again.stderr
    np.testing.assert_array_equal(np.load(os.path.join(save_dir, "samples.npz"))["images"],
                                  images)
    assert sorted(os.listdir(os.path.join(save_dir, "traces"))) == kept
    assert stamps == [os.stat(os.path.join(save_dir, "traces", k)).st_mtime_ns
                      for k in kept]
    # The same images in process, from the Polyak-averaged weights: batch b has its own seed,
    # and the last batch is filled up with the first labels.
    model, _ = checkpoint.load_for_inference(save_dir, use_averages=True)
    onehot = np.eye(3, dtype=np.float32)
    first = sampling.sample(model, 3, (8, 8, 3), h=onehot[[0, 1, 2]],
                            seed=batches.batch_seed(4, 0))
    second = sampling.sample(model, 3, (8, 8, 3), h=onehot[[0, 1, 0]],
                             seed=batches.batch_seed(4, 1))
    np.testing.assert_array_equal(images, plotting.images_to_uint8(
        np.concatenate([first, second[:2]])))
    raw, _ = checkpoint.load_for_inference(save_dir, use_averages=False)
    for v, r in zip(model.trainable_variables, raw.trainable_variables):
        v.assign(r)                               # same model object: no new tracing
    assert not np.array_equal(first, sampling.sample(model, 3, (8, 8, 3), h=onehot[[0, 1, 2]],
                                                     seed=batches.batch_seed(4, 0)))


def test_sample_py_from_golden_tf1_checkpoint(tmp_path):
    out = str(tmp_path / "golden.png")
    r = run_sample_py(f"--tf1_checkpoint={GOLDEN_CKPT}", *GOLDEN_FLAGS, "--num_samples=2",
                      "--batch_size=2", "--seed=1", f"--out={out}")
    assert r.returncode == 0, r.stderr
    images = np.load(str(tmp_path / "golden.npz"))["images"]
    assert images.shape == (2, 16, 16, 3) and "labels" not in np.load(str(tmp_path /
                                                                         "golden.npz"))
    assert imageio.imread(out).shape == (33, 33, 3)      # a 2x2 grid, as the original's
    # In process: the checkpoint's Polyak averages (ExponentialMovingAverage), not its raw
    # values, with the fast sampler.
    config = ModelConfig(image_shape=(16, 16, 3), nr_resnet=2, nr_filters=16,
                         nr_logistic_mix=4, dropout_p=0.0)
    model, _ = checkpoint.load_for_inference(tf1_checkpoint=GOLDEN_CKPT,
                                                model_config=config)
    x = sampling.sample(model, 2, (16, 16, 3), seed=1)
    np.testing.assert_array_equal(images, plotting.images_to_uint8(x))
    from pixelcnn_pp import convert
    convert.load_tf1_checkpoint(model, GOLDEN_CKPT, use_ema=False)
    assert not np.array_equal(x, sampling.sample(model, 2, (16, 16, 3), seed=1))


def test_sample_py_reports_a_missing_checkpoint_in_one_line(tmp_path):
    r = run_sample_py(f"--save_dir={tmp_path / 'nowhere'}")
    assert r.returncode != 0
    assert "sample.py: error:" in r.stderr and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_loading_errors(tmp_path, save_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.load_for_inference(save_dir=str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        checkpoint.load_for_inference(save_dir=str(empty))
    checkpoint.write_config(str(empty), ModelConfig(image_shape=(8, 8, 3)), {})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.load_for_inference(save_dir=str(empty))
    with pytest.raises(ValueError, match="exactly one"):
        checkpoint.load_for_inference()
    with pytest.raises(ValueError, match="exactly one"):
        checkpoint.load_for_inference(save_dir=save_dir, tf1_checkpoint=GOLDEN_CKPT)
    with pytest.raises(ValueError, match="model flags"):
        checkpoint.load_for_inference(tf1_checkpoint=GOLDEN_CKPT)
    with pytest.raises(FileNotFoundError, match="no TF1 checkpoint"):
        checkpoint.load_for_inference(tf1_checkpoint=str(tmp_path / "x.ckpt"),
                                         model_config=ModelConfig(image_shape=(16, 16, 3)))
    wrong = ModelConfig(image_shape=(16, 16, 3), nr_resnet=2, nr_filters=32,
                        nr_logistic_mix=4, dropout_p=0.0)
    with pytest.raises(ValueError, match="do not match"):
        checkpoint.load_for_inference(tf1_checkpoint=GOLDEN_CKPT, model_config=wrong)


def test_sample_to_files_argument_errors(tmp_path, save_dir):
    model, _ = checkpoint.load_for_inference(save_dir)
    with pytest.raises(ValueError, match=".png"):
        sample_files.sample_to_files(model, str(tmp_path / "s.jpg"), 2, 2, (8, 8, 3))
    with pytest.raises(ValueError, match="out of range"):
        sample_files.sample_to_files(model, str(tmp_path / "s.png"), 2, 2, (8, 8, 3),
                                 labels=[1, 3])
    with pytest.raises(ValueError, match=">= 1"):
        sample_files.sample_to_files(model, str(tmp_path / "s.png"), 0, 2, (8, 8, 3))


def test_sample_labels():
    np.testing.assert_array_equal(batches.sample_labels(None, 7, 3), [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(batches.sample_labels("cycle", 4, 10), [0, 1, 2, 3])
    np.testing.assert_array_equal(batches.sample_labels(["5"], 3, 10), [5, 5, 5])
    np.testing.assert_array_equal(batches.sample_labels([1, 2], 5, 10), [1, 2, 1, 2, 1])
    assert batches.sample_labels(None, 4, None) is None
    with pytest.raises(ValueError, match="unconditional"):
        batches.sample_labels([1], 4, None)
    with pytest.raises(ValueError, match="out of range"):
        batches.sample_labels([-1], 4, 10)


def test_batch_seeds():
    assert batches.batch_seed(7, 0) == 7
    seeds = [batches.batch_seed(7, b) for b in range(1, 50)]
    assert len(set(seeds) | {7}) == 50
    assert seeds == [batches.batch_seed(7, b) for b in range(1, 50)]
    assert batches.batch_seed(8, 1) != batches.batch_seed(7, 1)
    assert all(0 <= s < 2**63 for s in seeds)


def test_run_in_batches_fills_up_the_last_batch_and_reports_progress():
    """The batches of sample.py, completion and scoring: every call gets batch_size items,
    the last batch its own items cycled; the extra outputs are dropped; progress counts
    items after each batch, or steps inside a batch (image rows) over the padded batches."""
    seen, items, steps = [], [], []

    def run(idx, b, report):
        seen.append((b, idx.tolist()))
        if report is not None:
            for s in (2, 4):
                report(s, 4)
        return idx * 10

    out = batches.run_in_batches(run, 7, 3, progress=lambda d, t: items.append((d, t)))
    assert seen == [(0, [0, 1, 2]), (1, [3, 4, 5]), (2, [6, 6, 6])]
    np.testing.assert_array_equal(out, np.arange(7) * 10)
    assert items == [(3, 7), (6, 7), (7, 7)]
    seen.clear()
    out = batches.run_in_batches(run, 5, 4, progress=lambda d, t: steps.append((d, t)),
                                 steps_per_batch=4)
    assert seen == [(0, [0, 1, 2, 3]), (1, [4, 4, 4, 4])]
    assert steps == [(2, 8), (4, 8), (6, 8), (8, 8)]
    seen.clear()
    batches.run_in_batches(run, 5, 3, steps_per_batch=4)        # no progress: report is None
    assert seen[1] == (1, [3, 4, 3])


def test_images_to_uint8_inverts_the_data_scaling():
    v = np.arange(256)
    x = ((v - 127.5) / 127.5).astype(np.float32)
    np.testing.assert_array_equal(plotting.images_to_uint8(x), v)
    np.testing.assert_array_equal(plotting.images_to_uint8([-1.5, 1.5, -0.999, 0.999]),
                                  [0, 255, 0, 255])


def test_img_tile_and_save_tile(tmp_path):
    imgs = np.arange(5 * 2 * 3 * 1).reshape(5, 2, 3, 1).astype(np.uint8)
    tile = plotting.img_tile(imgs, border=1, border_color=255)
    # As the original: wide images give more rows than columns (3 x 2 here), row by row.
    assert tile.shape == (3 * 3 - 1, 2 * 4 - 1, 1)
    np.testing.assert_array_equal(tile[3:5, 4:7], imgs[3])
    np.testing.assert_array_equal(tile[6:8, :3], imgs[4])
    np.testing.assert_array_equal(tile[6:8, 3:], 255)        # border and the empty cell
    assert plotting.img_tile(imgs, tile_shape=(1, 2)).shape == (2, 7, 1)
    path = str(tmp_path / "gray.png")
    plotting.save_tile(path, imgs)
    np.testing.assert_array_equal(imageio.imread(path), tile[..., 0])
    rgb = np.random.RandomState(0).uniform(-1, 1, (3, 4, 4, 3)).astype(np.float32)
    plotting.save_tile(str(tmp_path / "rgb.png"), rgb)
    read = imageio.imread(str(tmp_path / "rgb.png"))
    np.testing.assert_array_equal(read[:4, 5:9], plotting.images_to_uint8(rgb[1]))
    with pytest.raises(ValueError, match="images"):
        plotting.save_tile(str(tmp_path / "bad.png"), rgb[0])


@pytest.mark.parametrize("method", ["fast", "naive"])
def test_sample_py_in_bfloat16(save_dir, tmp_path, method):
    """--precision mixed_bfloat16: either sampler computes in bf16 (float32 weights)."""
    out = str(tmp_path / "bf16.png")
    r = run_sample_py(f"--save_dir={save_dir}", "--num_samples=2", "--batch_size=2",
                      f"--method={method}", "--precision=mixed_bfloat16", f"--out={out}")
    assert r.returncode == 0, r.stderr
    images = np.load(str(tmp_path / "bf16.npz"))["images"]
    assert images.shape == (2, 8, 8, 3) and images.dtype == np.uint8
