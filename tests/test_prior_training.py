"""Training a PixelCNN++ prior on a codes data set (--data_set codes) with labels and spatial
maps: the run's files and bits per code, eval, exact resume and two replicas."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pixelcnn_pp import checkpoint as ckpt_lib
from pixelcnn_pp.evaluation import evaluate_checkpoint
from pixelcnn_pp.training import TrainConfig, train
from test_training import ROOT, assert_same_weights, checkpoint_values, env, run_train

K = 5


@pytest.fixture(scope="module")
def codes_file(tmp_path_factory):
    """64 + 16 code maps of 6x5 (an odd size), 2 classes, 3x5x2 spatial maps: the map's first
    channel tells the code of each row band, so there is something to learn."""
    rng = np.random.RandomState(0)
    arrays = {"num_categories": np.int64(K)}
    for split, n in (("train", 64), ("test", 16)):
        spatial = rng.randn(n, 3, 5, 2).astype(np.float32)
        bands = np.clip(np.round(spatial[..., 0] + 2), 0, K - 1).astype(np.int64)
        codes = np.repeat(bands, 2, axis=1)                            # (n, 6, 5)
        noise = rng.rand(n, 6, 5) < 0.2
        codes[noise] = rng.randint(0, K, noise.sum())
        arrays.update({f"{split}_codes": codes, f"{split}_labels": np.arange(n) % 2,
                       f"{split}_spatial": spatial})
    path = tmp_path_factory.mktemp("codes") / "codes.npz"
    np.savez(path, **arrays)
    return str(path)


def prior_cfg(codes_file, save_dir, **kw):
    base = dict(data_set="codes", data_dir=codes_file, nr_resnet=1, nr_filters=8,
                batch_size=8, init_batch_size=8, num_samples=0, nr_gpu=1,
                save_dir=str(save_dir), quiet=True, dropout_p=0.0, class_conditional=True,
                spatial_conditioning=True, learning_rate=3e-3)
    base.update(kw)
    return TrainConfig(**base)


def test_a_conditional_prior_trains_and_reports_bits_per_code(codes_file, tmp_path):
    metrics = train(prior_cfg(codes_file, tmp_path, max_epochs=3, save_interval=1))
    config, training = ckpt_lib.read_config(str(tmp_path))
    assert config.num_categories == K and config.image_shape == (6, 5)
    assert config.spatial_channels == 2 and config.num_classes == 2
    assert training["spatial_conditioning"] is True
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert metrics[-1]["train_bpd"] < metrics[0]["train_bpd"] < np.log2(K) + 0.5
    res = evaluate_checkpoint(save_dir=str(tmp_path), batch_size=8)
    assert set(res) == {"test_bits_per_code", "code_maps", "data_set"}
    assert res["code_maps"] == 16
    assert res["test_bits_per_code"] == pytest.approx(metrics[-1]["test_bpd"], rel=1e-5)


def test_a_conditional_prior_resumes_exactly(codes_file, tmp_path):
    cfg = dict(dropout_p=0.5)
    train(prior_cfg(codes_file, tmp_path / "straight", max_steps=11, **cfg))
    train(prior_cfg(codes_file, tmp_path / "resumed", max_steps=5, **cfg))
    train(prior_cfg(codes_file, tmp_path / "resumed", max_steps=11, load_params=True, **cfg))
    assert_same_weights(checkpoint_values(tmp_path / "straight"),
                        checkpoint_values(tmp_path / "resumed"), atol=2e-5)


def test_two_replicas_of_a_conditional_prior_equal_one_device(codes_file, tmp_path):
    common = ["--data_set", "codes", "--data_dir", codes_file, "--nr_resnet", "1",
              "--nr_filters", "8", "--init_batch_size", "8", "--num_samples", "0", "--quiet",
              "--dropout_p", "0", "--max_steps", "4", "--nopolyak_warmup",
              "--class_conditional", "--spatial_conditioning"]
    run_train(*common, "--nr_gpu", "1", "--batch_size", "8", "--save_dir", str(tmp_path / "one"))
    run_train(*common, "--nr_gpu", "2", "--batch_size", "4", "--save_dir", str(tmp_path / "two"))
    assert_same_weights(checkpoint_values(tmp_path / "one"), checkpoint_values(tmp_path / "two"),
                        atol=2e-6)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), "--save_dir",
                        str(tmp_path / "one"), "--batch_size", "8"], env=env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert "test_bits_per_code" in out and out["code_maps"] == 16


def test_spatial_conditioning_needs_maps(codes_file, tmp_path):
    np.savez(tmp_path / "plain.npz", num_categories=np.int64(K),
             train_codes=np.zeros((16, 4, 4), np.int64), test_codes=np.zeros((8, 4, 4), np.int64))
    with pytest.raises(ValueError, match="spatial maps"):
        train(prior_cfg(str(tmp_path / "plain.npz"), tmp_path / "run", max_steps=1,
                        class_conditional=False))


def test_sample_py_writes_code_maps_of_a_conditional_prior(codes_file, tmp_path):
    train(prior_cfg(codes_file, tmp_path / "run", max_steps=2))
    out = tmp_path / "s.png"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), "--save_dir",
                        str(tmp_path / "run"), "--num_samples", "3", "--batch_size", "2",
                        "--temperature", "0.8", "--out", str(out)], env=env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "conditioning on 3 spatial map(s) of the test split of 'codes'" in p.stdout
    assert "3 code maps 6x5" in p.stdout
    with np.load(tmp_path / "s.npz") as f:
        codes, labels = f["codes"], f["labels"]
    assert codes.shape == (3, 6, 5) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < K and labels.tolist() == [0, 1, 0]
    import imageio.v3 as iio
    picture = iio.imread(out)
    assert picture.ndim == 3 and picture.shape[-1] == 3   # each code drawn as its colour
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), "--save_dir",
                          str(tmp_path / "run"), "--temperature", "0", "--out", str(out)],
                         env=env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--temperature must be a number > 0" in bad.stderr
