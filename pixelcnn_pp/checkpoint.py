"""What a run leaves in ``save_dir`` and how to read it back.

    save_dir/config.json      {"model": ModelConfig, "training": {flag: value}}
    save_dir/ckpt/            tf.train.CheckpointManager: ckpt-N.index / .data-*, checkpoint

A training checkpoint holds ``model``, ``averages`` (PolyakAverage), ``optimizer``, the step
and epoch counters, the dropout RNG and the data loader's position (see train.py). For
inference only the model and its averages are read.
"""

import json
import os
import tempfile

import tensorflow as tf

from pixelcnn_pp.config import ModelConfig
from pixelcnn_pp.optim import PolyakAverage

__all__ = ["CONFIG_FILE", "CKPT_SUBDIR", "write_json_atomic", "write_config", "read_config",
           "latest_checkpoint", "build_model", "load_model"]

CONFIG_FILE = "config.json"
CKPT_SUBDIR = "ckpt"


def write_json_atomic(path, obj):
    """Write JSON to a temporary file and rename it over ``path``: never a half-written file."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_config(save_dir, model_config, training=None):
    write_json_atomic(os.path.join(save_dir, CONFIG_FILE),
                      {"model": model_config.to_dict(), "training": dict(training or {})})


def read_config(save_dir):
    """(ModelConfig, training dict) from ``save_dir/config.json``."""
    path = os.path.join(save_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {save_dir!r} is not a save_dir written by train.py (for an "
            "original TF1 checkpoint use --tf1_checkpoint with the model flags)")
    with open(path) as f:
        d = json.load(f)
    return ModelConfig.from_dict(d["model"]), d.get("training", {})


def latest_checkpoint(save_dir):
    """Path prefix of the newest checkpoint in ``save_dir/ckpt``, or None."""
    return tf.train.latest_checkpoint(os.path.join(save_dir, CKPT_SUBDIR))


def build_model(config, seed=None):
    """A model of ``config`` with its weights created (called once on zeros)."""
    model = config.build(seed=seed)
    H, W, C = config.image_shape
    h = None
    if config.model == "pixelcnn_pp" and config.num_classes:
        h = tf.zeros((1, config.num_classes))
    model(tf.zeros((1, H, W, C)), h=h)
    return model


def load_model(save_dir, use_averages=True):
    """Rebuild the model of a save_dir and load its newest checkpoint.

    use_averages: put the Polyak-averaged weights into the model (what evaluation and
    sampling use, as in the original); False keeps the raw trained weights.
    Returns (model, ModelConfig).
    """
    config, _ = read_config(save_dir)
    path = latest_checkpoint(save_dir)
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(save_dir, CKPT_SUBDIR)!r}: "
                                "train first, or point at the save_dir of a finished run")
    model = build_model(config)
    averages = PolyakAverage(model.trainable_variables)
    tf.train.Checkpoint(model=model, averages=averages).restore(path).expect_partial()
    if use_averages:
        for var, avg in zip(model.trainable_variables, averages.averages):
            var.assign(avg)
    return model, config

