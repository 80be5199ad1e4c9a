"""train.py with the PixelCNN baseline and with grayscale MNIST (IDX files the test writes)."""

import os
import subprocess
import sys

import numpy as np

from pixelcnn_pp import baseline, batches, plotting
from pixelcnn_pp import checkpoint as ckpt_lib
from pixelcnn_pp.evaluation import evaluate_checkpoint
from pixelcnn_pp.training import train

from test_data_mnist import write_mnist
from test_training import ROOT, env, tiny_cfg


def test_the_pixelcnn_baseline_trains_samples_and_evaluates(tmp_path):
    metrics = train(tiny_cfg(tmp_path, model="pixelcnn", num_layers=2, num_filters=12,
                             max_epochs=2, save_interval=1, num_samples=1))
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert metrics[1]["train_bpd"] < metrics[0]["train_bpd"]
    cfg, _ = ckpt_lib.read_config(str(tmp_path))
    assert cfg.model == "pixelcnn"
    samples = np.load(tmp_path / "tinyset_DataLoader_sample1.npz")["images"]
    assert samples.shape == (8, 8, 8, 3)
    res = evaluate_checkpoint(save_dir=str(tmp_path), batch_size=8)
    assert abs(res["test_bpd"] - metrics[-1]["test_bpd"]) < 1e-4
    # sample.py on the baseline's save_dir: its own exact sampler, with the averaged weights.
    out = tmp_path / "s.png"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), f"--save_dir={tmp_path}",
                        "--num_samples=3", "--batch_size=3", "--seed=5", f"--out={out}"],
                       env=env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    images = np.load(tmp_path / "s.npz")["images"]
    model, _ = ckpt_lib.load_for_inference(str(tmp_path), use_averages=True)
    expected = baseline.sample(model, 3, (8, 8, 3), seed=batches.batch_seed(5, 0))
    np.testing.assert_array_equal(images, plotting.images_to_uint8(np.asarray(expected)))
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"),
                          f"--save_dir={tmp_path}", "--labels=1", f"--out={out}"],
                         env=env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "error" in bad.stderr


def test_grayscale_pixelcnn_pp_trains_on_mnist_files(tmp_path):
    write_mnist(str(tmp_path / "mnist"), n_train=24, n_test=8)
    metrics = train(tiny_cfg(tmp_path / "run", data_set="mnist", data_dir=str(tmp_path / "mnist"),
                             batch_size=4, init_batch_size=4, max_steps=3, num_samples=1))
    assert metrics[-1]["step"] == 3
    cfg, _ = ckpt_lib.read_config(str(tmp_path / "run"))
    assert cfg.image_shape == (28, 28, 1)
    samples = np.load(tmp_path / "run" / "mnist_sample0.npz")["images"]
    assert samples.shape == (4, 28, 28, 1)


def test_eval_of_the_original_tf1_checkpoint_uses_its_averages():
    import pixelcnn_pp
    from helpers import GOLDEN_CKPT, golden_model
    from pixelcnn_pp.convert import load_tf1_checkpoint
    from tinyset import DataLoader16
    res = evaluate_checkpoint(tf1_checkpoint=GOLDEN_CKPT, data_set="tinyset:DataLoader16",
                              batch_size=4, tf1_model=dict(nr_resnet=2, nr_filters=16,
                                                           nr_logistic_mix=4))
    model = golden_model()
    load_tf1_checkpoint(model, GOLDEN_CKPT, use_ema=True)
    x = (DataLoader16(None, "test", 8).data.astype(np.float32) - 127.5) / 127.5
    nats = float(pixelcnn_pp.discretized_mix_logistic_loss(x, model(x)))
    assert res["images"] == 8
    assert abs(res["test_bpd"] - pixelcnn_pp.bits_per_dim(nats, 8, (16, 16, 3))) < 1e-5


def test_energy_distance_training_runs_and_samples(tmp_path):
    metrics = train(tiny_cfg(tmp_path, energy_distance=True, max_steps=2, num_samples=1))
    assert metrics[-1]["step"] == 2 and np.isfinite(metrics[-1]["train_bpd"])
    samples = np.load(tmp_path / "tinyset_DataLoader_sample0.npz")["images"]
    assert samples.shape == (8, 8, 8, 3)
