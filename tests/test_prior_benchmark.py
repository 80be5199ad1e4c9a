"""The code-prior benchmark's smoke mode: it runs, and its JSON holds finite, positive bits."""

import json
import math
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import prior_codes  # noqa: E402
from count_model import CountModel  # noqa: E402


def test_synthetic_codes_have_neighbour_structure():
    arrays = prior_codes.synthetic_arrays(200, 50, 8, 9, 6, 2.0, seed=0)
    train, test = arrays["train_codes"], arrays["test_codes"]
    assert train.shape == (200, 8, 9) and test.shape == (50, 8, 9) and train.dtype == np.int32
    # Every level is used, about equally often (cut at the field's quantiles).
    freq = np.bincount(train.ravel(), minlength=6) / train.size
    assert freq.min() > 0.1 and freq.max() < 0.25, freq
    # Neighbours agree far more often than chance (1/6), and counting sees it.
    assert (train[:, :, 1:] == train[:, :, :-1]).mean() > 0.4
    assert CountModel.fit(train, 6).bits_per_code(test) < 0.7 * math.log2(6)


def test_batch_order_covers_epochs():
    order = prior_codes.batch_order(10, 7, 3, seed=0)
    assert order.shape == (7, 3)
    np.testing.assert_array_equal(np.sort(order.ravel()[:10]), np.arange(10))
    np.testing.assert_array_equal(order, prior_codes.batch_order(10, 7, 3, seed=0))


def test_prior_codes_benchmark_smoke():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "prior_codes.py"),
                        "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert any(line.startswith("(a) PixelCNN++") for line in lines)        # the table
    r = json.loads(lines[-1])
    for name in ("pixelcnn_pp", "pixelcnn", "count"):
        for split in ("test", "train"):
            bits = r[f"{split}_bits_per_code_{name}"]
            assert math.isfinite(bits) and bits > 0, (name, split, bits)
    assert math.isclose(r["uniform_bits_per_code"], math.log2(r["num_categories"]))
    # Counting on strongly structured synthetic codes beats the uniform model.
    assert r["test_bits_per_code_count"] < r["uniform_bits_per_code"]
    assert r["steps"] == 5 and r["params_pixelcnn_pp"] > 0 and r["params_pixelcnn"] > 0
    assert r["naive_seconds_per_position"] > 0 and r["naive_timed_positions"] == 2
    assert math.isclose(r["sample_seconds_naive_estimated"],
                        r["naive_seconds_per_position"] * r["height"] * r["width"])
    assert r["sample_seconds_fast"] > 0 and r["sample_seconds_fast_first_call"] > 0


def test_prior_codes_benchmark_times_the_samplers_alone():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "prior_codes.py"),
                        "--sampling_only", "--height", "5", "--width", "7",
                        "--num_categories", "9", "--nr_resnet", "1", "--nr_filters", "8",
                        "--sample_maps", "2", "--naive_positions", "2"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert lines[0] == "sampling 2 maps of 5x7 (K = 9) from PixelCNN++:"
    r = json.loads(lines[-1])
    assert (r["sampling_only"], r["height"], r["width"], r["num_categories"]) == (True, 5, 7, 9)
    assert r["sample_seconds_fast"] > 0 and r["sample_seconds_fast_first_call"] > 0
    assert math.isclose(r["sample_seconds_naive_estimated"],
                        r["naive_seconds_per_position"] * 35)
    assert math.isclose(r["speedup_estimated"],
                        r["sample_seconds_naive_estimated"] / r["sample_seconds_fast"])
