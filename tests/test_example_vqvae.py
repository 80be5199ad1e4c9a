"""examples/vqvae_prior: the VQ-VAE writes a codes data set a spatially conditioned prior
trains on, and decodes sampled codes into a PNG with their conditions above them (a tiny
run; the example's README has the real one)."""

import importlib.util
import json
import os
import sys

import imageio.v3 as iio
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example(monkeypatch, *argv):
    spec = importlib.util.spec_from_file_location(
        "vqvae_example", os.path.join(ROOT, "examples", "vqvae_prior", "vqvae.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["vqvae.py", *argv])
    module.main()
    return module


def test_vqvae_codes_prior_and_decoded_samples(tmp_path, monkeypatch, capsys):
    from pixelcnn_pp import checkpoint
    from pixelcnn_pp.cli.sample_files import sample_to_files
    from pixelcnn_pp.training import TrainConfig, train

    out = str(tmp_path / "vqvae")
    vq = _example(monkeypatch, "train", "--out", out, "--steps", "3", "--num_codes", "8",
                  "--code_dim", "4", "--batch_size", "8")
    with open(os.path.join(out, "vqvae.json")) as f:
        report = json.load(f)
    assert report["num_codes"] == 8 and 1 <= report["codes_used"] <= 8
    assert report["test_psnr_db"] == pytest.approx(-10 * np.log10(report["test_mse"]))
    with np.load(os.path.join(out, "codes.npz")) as f:
        arrays = {k: f[k] for k in f}
    assert arrays["train_codes"].shape[1:] == (8, 8) and int(arrays["num_categories"]) == 8
    assert arrays["test_spatial"].shape == (len(arrays["test_codes"]), 4, 4, 3)
    assert np.abs(arrays["test_spatial"]).max() <= 1
    assert len(arrays["test_labels"]) == len(arrays["test_codes"])
    assert iio.imread(os.path.join(out, "reconstructions.png")).shape == (65, 329, 3)
    # A second run onto the same folder is refused: the VQ-VAE is never replaced unasked.
    with pytest.raises(SystemExit, match="exists already"):
        vq.main()

    run = str(tmp_path / "prior")
    train(TrainConfig(data_set="codes", data_dir=os.path.join(out, "codes.npz"),
                      spatial_conditioning=True, nr_resnet=1, nr_filters=8, batch_size=8,
                      init_batch_size=8, max_steps=1, num_samples=0, nr_gpu=1, save_dir=run,
                      quiet=True))
    model, config = checkpoint.load_for_inference(run)
    assert config.num_categories == 8 and config.spatial_channels == 3
    maps = arrays["test_spatial"][:3]
    sample_to_files(model, str(tmp_path / "s.png"), 3, 3, (8, 8), spatial=maps)
    with np.load(tmp_path / "s.npz") as f:
        np.testing.assert_array_equal(f["spatial"], maps)

    capsys.readouterr()
    _example(monkeypatch, "decode", "--out", out, "--codes", str(tmp_path / "s.npz"),
             "--png", str(tmp_path / "d.png"), "--scale", "1")
    assert "3 code maps" in capsys.readouterr().out
    picture = iio.imread(tmp_path / "d.png")
    assert picture.shape == (2 * 32 + 1, 3 * 32 + 2, 3)   # conditions above, samples below
    first = np.clip(np.round((maps[0] + 1) * 127.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(picture[:32, :32], np.kron(first, np.ones((8, 8, 1), np.uint8)))
