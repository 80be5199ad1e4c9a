"""train.py end to end on tiny models: outputs, exact resume, replicas, signals, crashes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp import checkpoint as ckpt_lib
from pixelcnn_pp.training import NonFiniteLossError, TrainConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
TINY = ["--data_set", "tinyset:DataLoader", "--nr_resnet", "1", "--nr_filters", "8",
        "--nr_logistic_mix", "2", "--batch_size", "8", "--init_batch_size", "8",
        "--num_samples", "0", "--quiet"]


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([TESTS, ROOT, e.get("PYTHONPATH", "")])
    e["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return e


def run_train(*args, check=True, **kw):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], env=env(),
                       cwd=ROOT, capture_output=True, text=True, timeout=600, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"train.py failed ({p.returncode}):\n{p.stdout}\n{p.stderr[-3000:]}")
    return p


def tiny_cfg(save_dir, **kw):
    base = dict(data_set="tinyset:DataLoader", nr_resnet=1, nr_filters=8, nr_logistic_mix=2,
                batch_size=8, init_batch_size=8, num_samples=0, nr_gpu=1, save_dir=str(save_dir),
                quiet=True, dropout_p=0.0)
    base.update(kw)
    return TrainConfig(**base)


def checkpoint_values(save_dir, prefixes=("model/", "averages/", "optimizer/")):
    path = ckpt_lib.latest_checkpoint(str(save_dir))
    reader = tf.train.load_checkpoint(path)
    return {n: reader.get_tensor(n) for n, _ in tf.train.list_variables(path)
            if n.startswith(prefixes)}


def assert_same_weights(a, b, atol=1e-6):
    assert set(a) == set(b)
    for n in a:
        if n.startswith("optimizer/") and a[n].size > 1:
            # Adam's moments hold raw gradients, whose last bits vary between runs of the
            # multi-threaded kernels: compare at the scale of each array.
            assert np.max(np.abs(a[n] - b[n])) <= 1e-2 * np.max(np.abs(b[n])) + atol, n
        else:
            np.testing.assert_allclose(a[n], b[n], atol=atol, rtol=1e-5, err_msg=n)


def test_a_run_leaves_checkpoint_metrics_samples_and_bpd(tmp_path):
    metrics = train(tiny_cfg(tmp_path, max_epochs=2, save_interval=1, num_samples=1))
    files = set(os.listdir(tmp_path))
    assert {"config.json", "metrics.jsonl", "test_bpd_tinyset_DataLoader.npz", "ckpt",
            "tensorboard"} <= files
    assert {"tinyset_DataLoader_sample0.png", "tinyset_DataLoader_sample1.npz"} <= files
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert [l["epoch"] for l in lines] == [0, 1] and lines == metrics
    assert {"epoch", "step", "train_bpd", "test_bpd", "seconds", "lr"} <= set(lines[0])
    assert lines[1]["step"] == 15  # 64 images / batch 8: 7 batches after the init batch, then 8
    assert lines[1]["train_bpd"] < lines[0]["train_bpd"]
    bpd = np.load(tmp_path / "test_bpd_tinyset_DataLoader.npz")["test_bpd"]
    np.testing.assert_allclose(bpd, [l["test_bpd"] for l in lines])
    samples = np.load(tmp_path / "tinyset_DataLoader_sample1.npz")["images"]
    assert samples.shape == (8, 8, 8, 3) and samples.dtype == np.uint8
    # eval.py's number is the loop's test bits/dim (averaged weights).
    from pixelcnn_pp.evaluation import evaluate_checkpoint
    res = evaluate_checkpoint(save_dir=str(tmp_path), batch_size=8)
    assert res["test_bpd"] == pytest.approx(lines[-1]["test_bpd"], rel=1e-5)


def test_init_batch_and_first_batches_are_the_originals_for_the_seed(tmp_path):
    # The original's train.py: RandomState(seed) permutes the training set once; the init batch
    # is its first init_batch_size images and training goes on from position batch_size of the
    # same order (no second permutation before epoch 0).
    train(tiny_cfg(tmp_path, max_steps=2, seed=3))
    reader = tf.train.load_checkpoint(ckpt_lib.latest_checkpoint(str(tmp_path)))
    value = lambda name: reader.get_tensor(f"data/{name}/.ATTRIBUTES/VARIABLE_VALUE")  # noqa
    np.testing.assert_array_equal(value("order"), np.random.RandomState(3).permutation(64))
    assert int(value("position")) == 8 and int(value("batches_done")) == 2


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    # 11 steps straight vs 5 + 6 (the stop falls mid-epoch: 8 steps per epoch), with dropout
    # (its generator's state is resumed too)
    dropout_p = 0.5
    train(tiny_cfg(tmp_path / "straight", max_steps=11, dropout_p=dropout_p))
    train(tiny_cfg(tmp_path / "resumed", max_steps=5, dropout_p=dropout_p))
    train(tiny_cfg(tmp_path / "resumed", max_steps=11, dropout_p=dropout_p, load_params=True))
    # Equal to float round-off: multi-threaded CPU kernels do not sum in a fixed order, and
    # Adam's first steps amplify last-bit differences of tiny gradients to ~1e-6.
    assert_same_weights(checkpoint_values(tmp_path / "straight"),
                        checkpoint_values(tmp_path / "resumed"), atol=2e-5)


def test_resume_refuses_a_changed_model_and_a_run_never_overwrites(tmp_path):
    train(tiny_cfg(tmp_path, max_steps=2))
    with pytest.raises(ValueError, match="nr_filters: saved 8 vs now 16"):
        train(tiny_cfg(tmp_path, max_steps=4, nr_filters=16, load_params=True))
    with pytest.raises(FileExistsError, match="--load_params"):
        train(tiny_cfg(tmp_path, max_steps=4))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_cfg(tmp_path / "empty", max_steps=4, load_params=True))


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    train(tiny_cfg(tmp_path, max_steps=2))
    before = checkpoint_values(tmp_path)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train(tiny_cfg(tmp_path, max_steps=50, learning_rate=1e30, load_params=True))
    assert_same_weights(before, checkpoint_values(tmp_path), atol=0)


def test_class_conditional_training_runs(tmp_path):
    metrics = train(tiny_cfg(tmp_path, max_steps=3, class_conditional=True, num_samples=1))
    assert metrics[-1]["step"] == 3
    cfg, _ = ckpt_lib.read_config(str(tmp_path))
    assert cfg.num_classes == 3


def test_two_replicas_equal_one_device_with_twice_the_batch(tmp_path):
    # (with the original's constant Polyak decay, which train.py's flag records in config.json)
    # (one device in this process; two replicas need their logical devices set up before
    # TensorFlow starts, so in a process of their own)
    common = TINY + ["--dropout_p", "0", "--max_steps", "4", "--init_batch_size", "8",
                     "--nopolyak_warmup"]
    train(tiny_cfg(tmp_path / "one", max_steps=4, polyak_warmup=False))
    p = run_train(*common, "--nr_gpu", "2", "--batch_size", "4", "--save_dir",
                  str(tmp_path / "two"), "--noquiet")
    assert "2 replica(s) on logical CPU devices" in p.stdout
    for d in ("one", "two"):
        assert json.load(open(tmp_path / d / "config.json"))["training"]["polyak_warmup"] is False
    assert_same_weights(checkpoint_values(tmp_path / "one"), checkpoint_values(tmp_path / "two"),
                        atol=2e-6)
    # The evaluation pass too: each replica normalises its weights once and uses them.
    rows = [[json.loads(l) for l in open(tmp_path / d / "metrics.jsonl")] for d in ("one", "two")]
    assert rows[0] and len(rows[0]) == len(rows[1])
    for a, b in zip(*rows):
        assert b["test_bpd"] == pytest.approx(a["test_bpd"], rel=1e-5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint(tmp_path, sig):
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), *TINY, "--noquiet", "--nr_gpu", "1",
         "--save_dir", str(tmp_path), "--max_epochs", "100000", "--save_interval", "100000"],
        env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        for line in proc.stdout:
            if line.startswith("Iteration 0"):
                break
            assert time.time() < deadline
        time.sleep(1.0)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert "saving a checkpoint" in out
    path = ckpt_lib.latest_checkpoint(str(tmp_path))
    step = int(path.rsplit("-", 1)[1])
    assert step > 7  # epoch 0 ends at step 7 (8 batches less the init batch): saved later
    model, _ = ckpt_lib.load_for_inference(str(tmp_path))  # loadable


def test_kill_9_at_any_moment_leaves_a_loadable_checkpoint(tmp_path):
    args = [sys.executable, os.path.join(ROOT, "train.py"), *TINY, "--nr_gpu", "1",
            "--save_dir", str(tmp_path), "--max_epochs", "100000", "--save_interval", "1"]
    rng = np.random.RandomState(0)
    steps_seen = []
    for attempt in range(3):
        a = args + (["--load_params"] if ckpt_lib.latest_checkpoint(str(tmp_path)) else [])
        proc = subprocess.Popen(a, env=env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # wait for a first checkpoint, then kill at a random moment (saves happen every epoch)
        deadline = time.time() + 120
        while ckpt_lib.latest_checkpoint(str(tmp_path)) is None and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(rng.uniform(0.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        path = ckpt_lib.latest_checkpoint(str(tmp_path))
        assert path is not None
        ckpt_lib.load_for_inference(str(tmp_path))  # restores without error
        steps_seen.append(int(path.rsplit("-", 1)[1]))
    assert steps_seen == sorted(steps_seen)


def _free_ports(n):
    import socket
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_multi_worker_processes_train_together(tmp_path):
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    procs = []
    for i in range(2):
        e = env()
        e["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers},
                                     "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "train.py"), *TINY, "--strategy", "multi_worker",
             "--batch_size", "4", "--max_steps", "3", "--dropout_p", "0",
             "--save_dir", str(tmp_path), "--noquiet"],
            env=e, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=400)[0])
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert "Iteration 0" in outs[0] and "Iteration 0" not in outs[1]  # the chief reports
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert len(lines) == 1 and lines[0]["step"] == 3
    path = ckpt_lib.latest_checkpoint(str(tmp_path))
    assert path is not None and path.endswith("ckpt-3")
