"""Image completion: ``sampling.complete`` keeps the given pixels bitwise and draws the rest as
``sample`` draws (fast equals naive for one seed), and ``sample.py --complete`` writes the
grid and the .npz of the completions.

Tiny models as in test_sampling.py (8x8 or 8x12, nr_resnet 1, nr_filters 8, 2 mixtures),
each built once for the module; a sampler's compiled functions are reused across calls with
other num_given, so most tests cost only their sampling.
"""

import os
import subprocess
import sys

import imageio.v2 as imageio
import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import random_images
from pixelcnn_pp import batches, checkpoint, completion, plotting
from pixelcnn_pp.model import PixelCNNPP
from pixelcnn_pp.sampling import complete, sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")

_MODELS = {}


def tiny(nonlinearity="concat_elu", num_classes=None, energy_distance=False, channels=3,
         shape=(8, 8)):
    """A tiny data-initialised model, built once per configuration for the whole module."""
    key = (nonlinearity, num_classes, energy_distance, channels, shape)
    if key not in _MODELS:
        # V's initial draws come from Keras's global generator: seed it, so that the model is
        # the same whichever tests ran before in this process.
        keras.utils.set_random_seed(0)
        model = PixelCNNPP(nr_resnet=1, nr_filters=8, nr_logistic_mix=2,
                           resnet_nonlinearity=nonlinearity, dropout_p=0.0,
                           num_classes=num_classes, energy_distance=energy_distance,
                           num_channels=channels, seed=0)
        x = tf.random.stateless_uniform((4,) + shape + (channels,), (1, 2), -1.0, 1.0)
        h = tf.one_hot(np.arange(4) % num_classes, num_classes) if num_classes else None
        model.initialize(x, h=h, training=False)
        _MODELS[key] = model
    return _MODELS[key]


def labels(batch_size, num_classes):
    if not num_classes:
        return None
    return np.eye(num_classes, dtype=np.float32)[np.arange(batch_size) % num_classes]


def flat(x):
    """(B, H, W, C) -> (B, H·W, C): positions in raster order."""
    return np.asarray(x).reshape(x.shape[0], -1, x.shape[-1])


def assert_keeps(out, images, num_given):
    """The first num_given positions are the input's, bitwise; the rest were drawn."""
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_array_equal(flat(out)[:, :num_given], flat(images)[:, :num_given])
    drawn = flat(out)[:, num_given:]
    if drawn.size:
        assert np.all(np.abs(drawn) <= 1.0)
        assert np.mean(drawn != flat(images)[:, num_given:]) > 0.9


def assert_same_images(naive, fast):
    """As test_sampling.py: floats equal to round-off, 8-bit values equal except where the
    round-off straddles a rounding boundary."""
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-4)
    differ = plotting.images_to_uint8(fast) != plotting.images_to_uint8(naive)
    v = (naive.astype(np.float64) + 1.0) * 127.5
    at_boundary = np.abs(v - np.floor(v) - 0.5) < 0.01
    assert np.all(~differ | at_boundary), np.argwhere(differ & ~at_boundary)[:5]


# Each nonlinearity, a conditional non-square model and a grayscale one; the partly given row
# falls on each kind of row (i mod 4 = 0, 1, 2, 3), which the fast sampler computes apart.
CONFIGS = [
    # nonlinearity, num_classes, channels, (H, W), batch, partial num_given (row, column)
    ("concat_elu", None, 3, (8, 8), 2, (2, 3)),
    ("elu", None, 3, (8, 8), 2, (5, 6)),
    ("relu", None, 3, (8, 8), 2, (4, 1)),
    ("concat_elu", 3, 3, (8, 12), 3, (3, 7)),
    ("concat_elu", None, 1, (8, 8), 2, (6, 2)),
]


@pytest.mark.parametrize("nonlinearity,num_classes,channels,shape,batch_size,partial", CONFIGS)
def test_fast_equals_naive_and_keeps_the_given_pixels(nonlinearity, num_classes, channels,
                                                      shape, batch_size, partial):
    model = tiny(nonlinearity, num_classes, channels=channels, shape=shape)
    H, W = shape
    images = random_images((batch_size, H, W, channels), seed=1)
    h = labels(batch_size, num_classes)
    for num_given in (partial[0] * W + partial[1], (H // 2) * W):    # a partial row, whole rows
        naive = complete(model, images, num_given, h=h, seed=7, method="naive")
        fast = complete(model, images, num_given, h=h, seed=7, method="fast")
        assert_keeps(naive, images, num_given)
        assert_keeps(fast, images, num_given)
        assert_same_images(naive, fast)


def test_energy_distance_fast_equals_naive():
    model = tiny(energy_distance=True)
    images = random_images((1, 8, 8, 3), seed=2)
    naive = complete(model, images, 27, seed=3, method="naive")
    fast = complete(model, images, 27, seed=3, method="fast")
    assert_keeps(fast, images, 27)
    assert_same_images(naive, fast)


@pytest.mark.parametrize("method", ["fast", "naive"])
def test_nothing_given_is_sample_and_everything_given_is_the_input(method):
    model = tiny("concat_elu", 3, shape=(8, 12))
    h = labels(3, 3)
    images = random_images((3, 8, 12, 3), seed=3)
    np.testing.assert_array_equal(complete(model, images, 0, h=h, seed=5, method=method),
                                  sample(model, 3, (8, 12, 3), h=h, seed=5, method=method))
    # Off the 8-bit grid, and the ends of the range: still returned bitwise.
    off_grid = np.random.RandomState(0).uniform(-1, 1, (3, 8, 12, 3)).astype(np.float32)
    off_grid[0, 0, 0] = [-1.0, 1.0, 0.0]
    out = complete(model, off_grid, 8 * 12, h=h, seed=5, method=method)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, off_grid)


@pytest.mark.parametrize("method", ["fast", "naive"])
def test_the_given_pixels_condition_the_drawn_ones(method):
    """Same seed: changing a given pixel changes the completion (the one just before the
    first drawn position, read through the right shift; or one in the row above), while the
    pixels from num_given on are ignored, whatever they hold."""
    model = tiny()
    images = random_images((2, 8, 8, 3), seed=4)
    for num_given, changed in ((3 * 8 + 5, 3 * 8 + 4), (4 * 8, 3 * 8 + 1)):
        base = complete(model, images, num_given, seed=9, method=method)
        other = flat(images).copy()
        other[:, changed] *= -0.9                 # on the grid, never 0
        other = other.reshape(images.shape)
        moved = complete(model, other, num_given, seed=9, method=method)
        a, b = flat(moved)[:, num_given:], flat(base)[:, num_given:]
        assert np.any(a[:, 0] != b[:, 0])                  # the first drawn pixel
        # The rest of each image, where a draw is not clipped to -1 or 1 in both (the tiny
        # model's draws often are, and then agree).
        inside = (np.abs(a) < 1) | (np.abs(b) < 1)
        for n in range(len(a)):
            assert np.mean(a[n][inside[n]] != b[n][inside[n]]) > 0.9
        ignored = flat(images).copy()
        ignored[:, num_given:] = np.nan
        np.testing.assert_array_equal(
            complete(model, ignored.reshape(images.shape), num_given, seed=9,
                     method=method), base)


def test_bfloat16_completion_keeps_the_given_pixels_and_follows_naive():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = PixelCNNPP(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, dropout_p=0.0,
                           seed=0)
        model.initialize(tf.random.stateless_uniform((4, 8, 8, 3), (1, 2), -1.0, 1.0),
                         training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.up[0][0][0].conv1.compute_dtype == "bfloat16"
    images = random_images((2, 8, 8, 3), seed=5)
    fast = complete(model, images, 29, seed=1, method="fast")
    naive = complete(model, images, 29, seed=1, method="naive")
    assert_keeps(fast, images, 29)
    assert_keeps(naive, images, 29)
    # bf16 round-off, not divergence (two seeds differ by about 0.9, see test_speed_options).
    assert np.mean(np.abs(fast - naive)) < 0.05


def test_argument_errors():
    model, conditional = tiny(), tiny("concat_elu", 3, shape=(8, 12))
    images = random_images((2, 8, 8, 3))
    with pytest.raises(ValueError, match="3-channel"):
        complete(model, images[..., :1], 10)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        complete(model, images[0], 10)
    with pytest.raises(ValueError, match=">= 1"):              # any H, W >= 1 (odd too)
        complete(model, random_images((2, 0, 8, 3)), 0)
    for bad in (-1, 65):
        with pytest.raises(ValueError, match=r"between 0 and H\*W = 64"):
            complete(model, images, bad)
    with pytest.raises(ValueError, match="must be an int"):
        complete(model, images, 8.0)
    with pytest.raises(ValueError, match="floats"):
        complete(model, plotting.images_to_uint8(images), 10)
    outside = images.copy()
    outside[1, 1, 1, 2] = 1.5                        # position 9: given when num_given > 9
    with pytest.raises(ValueError,
                       match=r"lie in \[-1, 1\].* 1 of 60 values are outside it \(e\.g\. 1\.5\)"):
        complete(model, outside, 10)
    with pytest.raises(ValueError, match="class-conditional"):
        complete(conditional, random_images((2, 8, 12, 3)), 10)
    with pytest.raises(ValueError, match="method"):
        complete(model, images, 10, method="slow")


# ---------------------------------------------------------------------------- files and grid
def test_load_images(tmp_path):
    x = np.random.RandomState(0).randint(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    np.savez(tmp_path / "named.npz", images=x, labels=np.arange(3))
    np.savez(tmp_path / "only.npz", faces=x)
    np.testing.assert_array_equal(completion.load_images(tmp_path / "named.npz", (8, 8, 3)), x)
    np.testing.assert_array_equal(completion.load_images(tmp_path / "only.npz", (8, 8, 3)), x)
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, name in enumerate(["b.png", "a.png", "c.png"]):
        imageio.imwrite(folder / name, x[i])
    (folder / "notes.txt").write_text("not an image")
    np.testing.assert_array_equal(completion.load_images(folder, (8, 8, 3)), x[[1, 0, 2]])
    np.testing.assert_array_equal(completion.load_images(folder / "c.png", (8, 8, 3)),
                                  x[2:3])
    imageio.imwrite(tmp_path / "gray.png", x[0, ..., 0])
    np.testing.assert_array_equal(completion.load_images(tmp_path / "gray.png", (8, 8, 1)),
                                  x[:1, ..., :1])
    with pytest.raises(ValueError, match=r"has images of 8x8x3 \(HxWxC\); the model takes "
                                         r"16x16x3"):
        completion.load_images(tmp_path / "named.npz", (16, 16, 3))
    with pytest.raises(ValueError, match="model takes 8x8x3"):
        completion.load_images(tmp_path / "gray.png", (8, 8, 3))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        completion.load_images(tmp_path / "nowhere.npz", (8, 8, 3))
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(ValueError, match="name the images 'images'"):
        completion.load_images(tmp_path / "two.npz", (8, 8, 3))
    np.savez(tmp_path / "floats.npz", images=x.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        completion.load_images(tmp_path / "floats.npz", (8, 8, 3))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        completion.load_images(tmp_path / "empty", (8, 8, 3))
    with pytest.raises(ValueError, match="neither"):
        completion.load_images(folder / "notes.txt", (8, 8, 3))


def test_completion_grid_layout():
    rng = np.random.RandomState(1)
    originals = rng.randint(0, 256, (2, 4, 8, 3)).astype(np.uint8)
    completions = rng.randint(0, 256, (2, 3, 4, 8, 3)).astype(np.uint8)
    tile = completion.completion_grid(originals, completions, num_given=8 + 3)
    assert tile.shape == (2 * 5 - 1, 5 * 9 - 1, 3) and tile.dtype == np.uint8
    cell = lambda r, c: tile[5 * r:5 * r + 4, 9 * c:9 * c + 8]
    for n in range(2):
        np.testing.assert_array_equal(cell(n, 0), originals[n])
        kept = cell(n, 1).reshape(-1, 3)
        np.testing.assert_array_equal(kept[:11], originals[n].reshape(-1, 3)[:11])
        assert np.all(kept[11:] == completion.FILL)
        for s in range(3):
            np.testing.assert_array_equal(cell(n, 2 + s), completions[n, s])
    assert np.all(tile[4] == 255) and np.all(tile[:, 8] == 255)


# ---------------------------------------------------------------------------- sample.py
def run(script, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([TESTS, ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory):
    """A tiny class-conditional run of train.py (two steps on the tiny labelled set)."""
    d = str(tmp_path_factory.mktemp("run"))
    r = run("train.py", "--data_set", "tinyset:DataLoader", "--class_conditional",
            "--nr_resnet", "1", "--nr_filters", "8", "--nr_logistic_mix", "2",
            "--batch_size", "8", "--init_batch_size", "8", "--nr_gpu", "1",
            "--num_samples", "0", "--max_steps", "2", "--quiet", "--save_dir", d)
    assert r.returncode == 0, r.stderr[-3000:]
    return d


@pytest.fixture(scope="module")
def originals():
    from tinyset import make_images
    return make_images(3, seed=5)[0]                 # (3, 8, 8, 3) uint8


def test_sample_py_completes_an_npz(save_dir, originals, tmp_path):
    np.savez(tmp_path / "in.npz", images=originals)
    out = str(tmp_path / "grid.png")
    r = run("sample.py", f"--save_dir={save_dir}", f"--complete={tmp_path / 'in.npz'}",
            "--given_rows=3", "--num_samples=2", "--batch_size=4", "--seed=4", f"--out={out}")
    assert r.returncode == 0, r.stderr
    assert "2 completions of each of 3 images" in r.stdout
    data = np.load(str(tmp_path / "grid.npz"))
    images = data["images"]
    assert images.shape == (6, 8, 8, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(data["originals"], originals)
    assert int(data["num_given"]) == 24 and int(data["seed"]) == 4
    np.testing.assert_array_equal(data["labels"], [0, 0, 1, 1, 2, 2])   # cycled per image
    np.testing.assert_array_equal(images[:, :3], np.repeat(originals[:, :3], 2, axis=0))
    assert not np.array_equal(images[0, 3:], images[1, 3:])   # two different completions
    # The grid: per image, the original, the kept part (grey below), the two completions.
    tile = imageio.imread(out)
    assert tile.shape == (3 * 9 - 1, 4 * 9 - 1, 3)
    np.testing.assert_array_equal(tile[9:17, :8], originals[1])
    np.testing.assert_array_equal(tile[9:12, 9:17], originals[1, :3])
    assert np.all(tile[12:17, 9:17] == completion.FILL)
    np.testing.assert_array_equal(tile[9:17, 27:35], images[3])
    # The same completions in process: batch b seeded with batch_seed(4, b), the Polyak
    # averages loaded, the last batch filled up with its own entries.
    model, _ = checkpoint.load_for_inference(save_dir, use_averages=True)
    onehot = np.eye(3, dtype=np.float32)
    x = completion.to_model_range(originals)
    first = complete(model, x[[0, 0, 1, 1]], 24, h=onehot[[0, 0, 1, 1]],
                     seed=batches.batch_seed(4, 0))
    second = complete(model, x[[2, 2, 2, 2]], 24, h=onehot[[2, 2, 2, 2]],
                      seed=batches.batch_seed(4, 1))
    np.testing.assert_array_equal(images, plotting.images_to_uint8(
        np.concatenate([first, second[:2]])))


def test_sample_py_completes_a_png_and_a_folder(save_dir, originals, tmp_path):
    imageio.imwrite(tmp_path / "one.png", originals[0])
    out = str(tmp_path / "one_grid.png")
    r = run("sample.py", f"--save_dir={save_dir}", f"--complete={tmp_path / 'one.png'}",
            "--num_samples=1", "--labels=2", f"--out={out}")
    assert r.returncode == 0, r.stderr
    data = np.load(str(tmp_path / "one_grid.npz"))
    assert data["images"].shape == (1, 8, 8, 3) and int(data["num_given"]) == 32  # half
    np.testing.assert_array_equal(data["labels"], [2])
    np.testing.assert_array_equal(data["images"][0, :4], originals[0, :4])
    assert imageio.imread(out).shape == (8, 3 * 9 - 1, 3)

    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(2):
        imageio.imwrite(folder / f"{i}.png", originals[i])
    out = str(tmp_path / "folder_grid.png")
    r = run("sample.py", f"--save_dir={save_dir}", f"--complete={folder}", "--given_rows=6",
            "--num_samples=2", "--batch_size=4", "--method=naive", f"--out={out}")
    assert r.returncode == 0, r.stderr
    data = np.load(str(tmp_path / "folder_grid.npz"))
    np.testing.assert_array_equal(data["originals"], originals[:2])
    assert data["images"].shape == (4, 8, 8, 3) and int(data["num_given"]) == 48
    np.testing.assert_array_equal(data["images"][:, :6],
                                  np.repeat(originals[:2, :6], 2, axis=0))
    assert imageio.imread(out).shape == (2 * 9 - 1, 4 * 9 - 1, 3)


def test_sample_py_reports_a_shape_mismatch_in_one_line(save_dir, tmp_path):
    np.savez(tmp_path / "big.npz", images=np.zeros((2, 16, 16, 3), np.uint8))
    r = run("sample.py", f"--save_dir={save_dir}", f"--complete={tmp_path / 'big.npz'}",
            f"--out={tmp_path / 'x.png'}")
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.startswith("sample.py:")]
    assert len(lines) == 1 and lines[0].startswith("sample.py: error:"), r.stderr
    assert "16x16x3" in lines[0] and "the model takes 8x8x3" in lines[0]
    assert "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "x.png")


def test_complete_to_files_argument_errors(save_dir, originals, tmp_path):
    model, _ = checkpoint.load_for_inference(save_dir)
    np.savez(tmp_path / "in.npz", images=originals)
    src = str(tmp_path / "in.npz")
    with pytest.raises(ValueError, match="between 0 and the image height 8"):
        completion.complete_to_files(model, str(tmp_path / "c.png"), src, 1, 1, (8, 8, 3),
                                     given_rows=9)
    with pytest.raises(ValueError, match=".png"):
        completion.complete_to_files(model, str(tmp_path / "c.jpg"), src, 1, 1, (8, 8, 3))
    with pytest.raises(ValueError, match="out of range"):
        completion.complete_to_files(model, str(tmp_path / "c.png"), src, 1, 1, (8, 8, 3),
                                     labels=[3])
