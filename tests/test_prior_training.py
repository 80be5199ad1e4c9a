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
    # with dropout and, as a background model for likelihood ratios, mutated codes
    cfg = dict(dropout_p=0.5, input_mutation_rate=0.2)
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
    # (one device in this process; two replicas in a process of their own)
    train(prior_cfg(codes_file, tmp_path / "one", max_steps=4, polyak_warmup=False,
                    learning_rate=0.001))
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


@pytest.fixture(scope="module")
def trained_prior(codes_file, tmp_path_factory):
    """The save_dir of a conditional prior (labels and spatial maps) trained for 2 steps,
    shared by the tests that only read it."""
    run = tmp_path_factory.mktemp("prior") / "run"
    train(prior_cfg(codes_file, run, max_steps=2))
    return str(run)


def test_sample_py_writes_code_maps_of_a_conditional_prior(trained_prior, tmp_path):
    out = tmp_path / "s.png"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), "--save_dir",
                        trained_prior, "--num_samples", "3", "--batch_size", "2",
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
                          trained_prior, "--temperature", "0", "--out", str(out)],
                         env=env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--temperature must be a number > 0" in bad.stderr


def test_score_py_scores_code_maps_under_their_maps_and_labels(trained_prior, codes_file,
                                                                tmp_path):
    import csv

    import imageio.v3 as iio

    from pixelcnn_pp import scoring
    from pixelcnn_pp.cli.score_files import ScoreRequest, score_to_files
    from pixelcnn_pp.errors import UsageError
    summary, result = score_to_files(ScoreRequest(
        save_dir=trained_prior, out=str(tmp_path / "s.csv"), batch_size=5,
        heatmaps=str(tmp_path / "maps"), num_heatmaps=2))
    assert "mean bits/code" in summary and result["images"] == 16
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["index", "label", "nll_nats", "bits_per_code"]
    bpc = np.array([float(r["bits_per_code"]) for r in rows])
    nats = np.array([float(r["nll_nats"]) for r in rows])
    np.testing.assert_allclose(bpc, nats / (np.log(2) * 6 * 5), rtol=1e-12)
    # The scores are those of evaluation (the same averages, labels and maps)...
    res = evaluate_checkpoint(save_dir=trained_prior, batch_size=8)
    assert bpc.mean() == pytest.approx(res["test_bits_per_code"], rel=1e-5)
    # ... and the per-code terms add up to them.
    model, config = ckpt_lib.load_for_inference(trained_prior)
    with np.load(codes_file) as f:
        codes, labels, spatial = f["test_codes"], f["test_labels"], f["test_spatial"]
    per_code = scoring.subpixel_nll(model, codes, labels, batch_size=7, spatial=spatial)
    assert per_code.shape == (16, 6, 5)
    np.testing.assert_allclose(per_code.sum((1, 2)), nats, rtol=1e-5)
    # The maps are used: other maps give other scores.
    moved = scoring.score_images(model, codes, labels, spatial=spatial[::-1])["nll_nats"]
    assert np.abs(moved - nats).max() > 1e-4
    picture = iio.imread(tmp_path / "maps" / "heatmap_00000.png")
    assert picture.ndim == 3 and picture.shape[-1] == 3 and picture.std() > 0
    assert sorted(os.listdir(tmp_path / "maps")) == ["heatmap_00000.png", "heatmap_00001.png"]

    # Against another set of code maps: AUROCs over code maps.
    rng = np.random.RandomState(1)
    other = tmp_path / "other.npz"
    np.savez(other, num_categories=np.int64(K),
             train_codes=rng.randint(0, K, (6, 6, 5)), test_codes=rng.randint(0, K, (4, 6, 5)),
             train_labels=np.zeros(6, np.int64), test_labels=np.ones(4, np.int64),
             train_spatial=rng.randn(6, 3, 5, 2), test_spatial=rng.randn(4, 3, 5, 2))
    summary, result = score_to_files(ScoreRequest(
        save_dir=trained_prior, out=str(tmp_path / "ood.csv"), ood_data_set="codes",
        ood_data_dir=str(other)))
    assert "AUROC, 16 in-distribution against 10 out-of-distribution code maps" in summary
    assert set(result["auroc"]) == {"bits_per_code"}

    # What a prior over codes cannot be asked: one line each.
    with pytest.raises(UsageError, match="--input_complexity measures images"):
        score_to_files(ScoreRequest(save_dir=trained_prior, out=str(tmp_path / "x.csv"),
                                    input_complexity=True))
    with pytest.raises(UsageError, match="scores code maps but 'demo'"):
        score_to_files(ScoreRequest(save_dir=trained_prior, out=str(tmp_path / "x.csv"),
                                    data_set="demo", data_dir=""))
    with pytest.raises(ValueError, match="needs each input's map"):
        scoring.score_images(model, codes, labels)
    with pytest.raises(ValueError, match="outside \\[0, 5\\)"):
        scoring.score_images(model, codes + 1, labels, spatial=spatial)
