"""A new user's mistakes and damaged files, through the real entry points: one line on stderr,
the right exit status, no traceback; damaged checkpoints fallen back past (renamed, kept);
a failed save that leaves the previous checkpoint; metrics that never hold an epoch twice."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp import checkpoint as ckpt_lib
from pixelcnn_pp import cli
from pixelcnn_pp.training import NonFiniteLossError, TrainConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
TINY = ["--data_set", "tinyset:DataLoader", "--nr_resnet", "1", "--nr_filters", "8",
        "--nr_logistic_mix", "2", "--batch_size", "8", "--init_batch_size", "8",
        "--num_samples", "0", "--nr_gpu", "1", "--quiet"]


def tiny_cfg(save_dir, **kw):
    base = dict(data_set="tinyset:DataLoader", nr_resnet=1, nr_filters=8, nr_logistic_mix=2,
                batch_size=8, init_batch_size=8, num_samples=0, nr_gpu=1, save_dir=str(save_dir),
                quiet=True, dropout_p=0.0)
    base.update(kw)
    return TrainConfig(**base)


def closed_port_url():
    """A URL on a local port nothing listens on: a download from it fails at once, offline."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


def env(**extra):
    e = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "PIXELCNN_TRACEBACK", "PIXELCNN_QUIET_TF")}
    e["PYTHONPATH"] = os.pathsep.join([TESTS, ROOT, e.get("PYTHONPATH", "")])
    e["PIXELCNN_CIFAR10_URL"] = closed_port_url()    # never the network
    e.update(extra)
    return e


def run_all(commands):
    """Run [(script, args, extra_env)] two at a time (TensorFlow's start-up dominates)."""
    results, running = [None] * len(commands), []
    for i, (script, args, extra) in enumerate(commands):
        p = subprocess.Popen([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                             env=env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        running.append((i, p))
        if len(running) == 2 or i == len(commands) - 1:
            for j, q in running:
                out, err = q.communicate(timeout=600)
                results[j] = (q.returncode, out, err)
            running = []
    return results


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run with two checkpoints (after epochs 0 and 1) and two metrics rows. Tests copy
    it before damaging anything."""
    d = tmp_path_factory.mktemp("trained")
    train(tiny_cfg(d, max_epochs=2, save_interval=1))
    steps = [s for s, _ in ckpt_lib.list_checkpoints(str(d))]
    assert len(steps) == 2 and steps[0] > steps[1]
    return d


def copy_run(trained, where):
    shutil.copytree(trained, where)
    return where


def steps_of(save_dir):
    return [s for s, _ in ckpt_lib.list_checkpoints(str(save_dir))]


def damage(prefix, how, tensors="averages/"):
    """Damage a checkpoint: cut short in the middle of, or overwrite the start of, the largest
    tensor whose name starts with ``tensors`` (by default among the Polyak averages, which
    inference reads: what a damaged file looks like to every reader), or delete its .index."""
    data = prefix + ".data-00000-of-00001"
    if how in ("cut_short", "overwritten"):
        reader = tf.train.load_checkpoint(prefix)
        name = max((n for n in reader.get_variable_to_shape_map() if n.startswith(tensors)),
                   key=lambda n: reader.get_tensor(n).nbytes)
        raw = reader.get_tensor(name).tobytes()
        b = bytearray(open(data, "rb").read())
        at = b.find(raw)
        assert at >= 0 and b.find(raw, at + 1) < 0, name        # found, and only there
    if how == "cut_short":
        with open(data, "r+b") as f:
            f.truncate(at + len(raw) // 2)
    elif how == "overwritten":
        b[at:at + 64] = bytes(64)
        open(data, "wb").write(bytes(b))
    elif how == "missing_index":
        os.remove(prefix + ".index")
    else:
        raise AssertionError(how)


# ------------------------------------------------------------------- the scripted session
def test_a_new_users_mistakes_each_end_in_one_line(trained, tmp_path):
    empty = tmp_path / "no_data"
    empty.mkdir()
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b" + bytes(998))
    exists = copy_run(trained, tmp_path / "exists")
    changed = copy_run(trained, tmp_path / "changed")
    missing = str(tmp_path / "nowhere")
    S = lambda name: ["--save_dir", str(tmp_path / name)]   # noqa: E731
    mistakes = [   # (script, args, env, exit status, what the line must say)
        ("train.py", TINY + ["--batch_size", "0"] + S("a"), {}, 2,
         ["--batch_size must be an integer >= 1; got 0"]),
        ("train.py", TINY + ["--nr_filters", "-4"] + S("b"), {}, 2, ["--nr_filters", "got -4"]),
        ("train.py", ["--data_set", "cifra"] + S("c"), {}, 2,
         ["unknown --data_set 'cifra'", "did you mean 'cifar'", "demo", "folder", "mnist"]),
        ("train.py", ["--batch_size", "abc"], {}, 2, ["batch_size", "train.py --help"]),
        ("train.py", ["--no_such_flag"], {}, 2, ["no_such_flag", "train.py --help"]),
        ("train.py", ["--data_set", "cifar", "--data_dir", str(empty), "--nr_gpu", "1"]
         + S("d"), {}, 1,
         ["CIFAR-10 is not in", str(empty), "could not be downloaded",
          str(empty / "cifar-10-python.tar.gz"), "--data_dir"]),
        ("train.py", ["--data_set", "cifar", "--data_dir", str(truncated), "--nr_gpu", "1"]
         + S("e"), {}, 1, [str(truncated / "cifar-10-python.tar.gz"), "truncated", "delete it"]),
        ("train.py", TINY + ["--save_dir", str(exists)], {}, 1,
         ["already holds a checkpoint", f"ckpt-{steps_of(exists)[0]}", "--load_params"]),
        ("train.py", TINY + ["--save_dir", str(changed), "--load_params", "--nr_filters", "16"],
         {}, 2, ["nr_filters: saved 8 vs now 16"]),
        ("train.py", TINY + ["--learning_rate", "1e30", "--max_epochs", "1"] + S("f"), {}, 1,
         ["training loss became", "No checkpoint exists yet", "lower --learning_rate"]),
        ("eval.py", ["--save_dir", missing], {}, 1, [f"save_dir {missing!r} does not exist"]),
        ("sample.py", ["--save_dir", missing], {}, 1, [f"save_dir {missing!r} does not exist"]),
        ("eval.py", ["--save_dir", str(trained), "--nr_filters", "8"], {}, 2,
         ["--nr_filters: the model flags are for --tf1_checkpoint"]),
    ]
    results = run_all([(s, a, e) for s, a, e, _, _ in mistakes])
    for (script, args, _, status, needed), (code, out, err) in zip(mistakes, results):
        what = f"{script} {' '.join(args)}:\nstdout: {out[-2000:]}\nstderr: {err[-3000:]}"
        lines = err.strip().splitlines()
        assert code == status, what
        assert len(lines) == 1, what                      # TensorFlow's start-up lines too
        assert lines[0].startswith(f"{script}: error: "), what
        assert "Traceback" not in err, what
        for n in needed:
            assert n in lines[0], (n, what)
    assert not os.path.exists(tmp_path / "f" / "ckpt")    # "no checkpoint exists yet": true
    assert (tmp_path / "f" / "config.json").exists()


def test_quick_exit_ends_the_process_at_once_and_only_when_asked():
    """The scripts' ``command()`` ends the process when main returns (no atexit handlers: no
    interpreter teardown); ``main()`` called from Python returns through SystemExit."""
    code = ("import atexit, sys; from pixelcnn_pp import cli; "
            "atexit.register(lambda: print('teardown', flush=True)); "
            "cli.run('x.py', lambda argv: print('ran', flush=True), "
            "quick_exit=sys.argv[1] == 'quick')")
    for how, want in (("quick", ["ran"]), ("plain", ["ran", "teardown"])):
        p = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True,
                           cwd=ROOT, timeout=300)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == want, (how, p.stdout, p.stderr)


def test_verbose_shows_the_traceback_and_internal_errors_keep_theirs(tmp_path):
    code, _, err = run_all([("train.py", TINY + ["--batch_size", "0", "--verbose"]
                             + ["--save_dir", str(tmp_path)], {})])[0]
    assert code != 0 and "Traceback" in err and "UsageError" in err
    # In process: a ValueError raised inside a library is internal, ours is the user's.
    try:
        np.zeros(3).reshape(2)
    except ValueError as e:
        assert not cli.is_user_error(e)
    try:
        tiny_cfg(tmp_path, batch_size=0).validate()
    except ValueError as e:
        assert cli.is_user_error(e) and isinstance(e, cli.UsageError)
    assert cli.is_user_error(OSError(28, "No space left on device"))


# ------------------------------------------------------------------ damaged checkpoints
@pytest.mark.parametrize("how", ["cut_short", "overwritten", "missing_index"])
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_older_one_used(trained, tmp_path,
                                                                         how):
    d = copy_run(trained, tmp_path / "run")
    new, old = ckpt_lib.list_checkpoints(str(d))
    damage(new[1], how)
    warnings = []
    model, _ = ckpt_lib.load_for_inference(save_dir=str(d), warn=warnings.append)
    assert len(warnings) == 1
    assert f"ckpt-{new[0]} is damaged" in warnings[0] and f"using ckpt-{old[0]}" in warnings[0]
    files = os.listdir(d / "ckpt")
    assert not any(f.startswith(f"ckpt-{new[0]}.") and ".damaged" not in f for f in files)
    renamed = [f for f in files if f.startswith(f"ckpt-{new[0]}.damaged.")]
    assert renamed and all(f in warnings[0] for f in renamed)     # kept, and named
    assert tf.train.latest_checkpoint(str(d / "ckpt")) == old[1]  # TF's own view agrees
    # The weights are the older checkpoint's averages.
    reader = tf.train.load_checkpoint(old[1])
    names = [n for n in reader.get_variable_to_dtype_map()
             if n.startswith("averages/") and reader.get_tensor(n).ndim >= 1]
    assert names
    values = sorted(float(np.sum(reader.get_tensor(n))) for n in names)
    got = sorted(float(np.sum(v.numpy())) for v in model.trainable_variables)
    np.testing.assert_allclose(got, values, rtol=1e-5, atol=1e-5)
    # A second load finds the intact one at once, without warnings.
    ckpt_lib.load_for_inference(str(d), warn=warnings.append)
    assert len(warnings) == 1


def test_inference_uses_a_checkpoint_whose_averages_are_whole_training_does_not(trained,
                                                                                tmp_path):
    """Inference reads (and so verifies) the averages only: damage elsewhere (an optimizer
    slot) leaves the newest checkpoint usable for sampling; resuming training sets it aside."""
    d = copy_run(trained, tmp_path / "run")
    (new, pnew), (old, pold) = ckpt_lib.list_checkpoints(str(d))
    damage(pnew, "overwritten", tensors="optimizer/")
    warnings = []
    model, _ = ckpt_lib.load_for_inference(save_dir=str(d), warn=warnings.append)
    assert warnings == [] and os.path.exists(pnew + ".index")
    assert not any(layer.creating_only for layer in model.weight_norm_layers())
    reader = tf.train.load_checkpoint(pnew)       # each weight gets its own average
    for i, v in enumerate(model.trainable_variables):
        np.testing.assert_array_equal(
            v.numpy(), reader.get_tensor(f"averages/averages/{i}/.ATTRIBUTES/VARIABLE_VALUE"))
    raw, _ = ckpt_lib.load_for_inference(save_dir=str(d), use_averages=False)
    assert not np.array_equal(raw.trainable_variables[0].numpy(),
                              model.trainable_variables[0].numpy())
    assert ckpt_lib.find_intact_checkpoint(str(d), warn=warnings.append) == pold
    assert len(warnings) == 1 and f"ckpt-{new} is damaged" in warnings[0]


def test_a_checkpoint_of_another_model_is_one_clear_error(trained, tmp_path):
    d = copy_run(trained, tmp_path / "run")
    config = json.loads((d / "config.json").read_text())
    config["model"]["nr_filters"] += 1
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ckpt_lib.CheckpointError, match="belongs to another run") as e:
        ckpt_lib.load_for_inference(str(d))
    assert cli.is_user_error(e.value) and "\n" not in cli.error_line("eval.py", e.value)


def test_no_intact_checkpoint_is_one_clear_error_naming_them(trained, tmp_path):
    d = copy_run(trained, tmp_path / "run")
    (new, pnew), (old, pold) = ckpt_lib.list_checkpoints(str(d))
    damage(pnew, "overwritten")
    damage(pold, "cut_short")
    with pytest.raises(ckpt_lib.CheckpointError) as e:
        ckpt_lib.load_for_inference(str(d))
    msg = str(e.value)
    assert f"no intact checkpoint in {d / 'ckpt'}" in msg
    for step in (new, old):
        assert f"ckpt-{step} is damaged" in msg and f"ckpt-{step}.damaged.index" in msg
        assert os.path.exists(d / "ckpt" / f"ckpt-{step}.damaged.index")   # named: exists
    assert cli.is_user_error(e.value) and "\n" not in cli.error_line("sample.py", e.value)


def test_entry_points_fall_back_past_a_damaged_checkpoint(trained, tmp_path):
    fallback = copy_run(trained, tmp_path / "fallback")
    (new, pnew), (old, _) = ckpt_lib.list_checkpoints(str(fallback))
    damage(pnew, "cut_short")
    broken = copy_run(trained, tmp_path / "broken")
    for _, p in ckpt_lib.list_checkpoints(str(broken)):
        damage(p, "overwritten")
    out_png = str(tmp_path / "s.png")
    (c1, o1, e1), (c2, _, e2) = run_all([
        ("eval.py", ["--save_dir", str(fallback), "--batch_size", "8"], {}),
        ("sample.py", ["--save_dir", str(broken), "--num_samples", "1", "--out", out_png], {})])
    assert c1 == 0, e1
    assert json.loads(o1.strip().splitlines()[-1])["images"] == 16
    warn = [l for l in e1.splitlines() if l.startswith("warning:")]
    assert len(warn) == 1 and f"ckpt-{new} is damaged" in warn[0] and f"ckpt-{old}" in warn[0]
    lines = e2.strip().splitlines()
    assert c2 == 1 and len(lines) == 1 and "Traceback" not in e2, e2
    assert lines[0].startswith("sample.py: error: no intact checkpoint in")


def test_resume_falls_back_and_sets_aside_later_metrics(trained, tmp_path, capsys):
    d = copy_run(trained, tmp_path / "run")
    (new, pnew), (old, _) = ckpt_lib.list_checkpoints(str(d))
    rows = [json.loads(l) for l in open(d / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [0, 1] and rows[1]["step"] == new
    damage(pnew, "overwritten")
    train(tiny_cfg(d, max_epochs=2, save_interval=1, load_params=True, quiet=False))
    captured = capsys.readouterr()
    assert f"resuming from ckpt-{old}" in captured.err and f"ckpt-{new} is damaged" in captured.err
    assert f"resumed from {d / 'ckpt' / f'ckpt-{old}'}" in captured.out
    after = [json.loads(l) for l in open(d / "metrics.jsonl")]
    assert [r["epoch"] for r in after] == [0, 1]                  # no epoch twice
    assert after[0] == rows[0] and after[1]["step"] == new
    aside = [json.loads(l) for l in open(d / f"metrics.jsonl.after-step-{old}")]
    assert aside == [rows[1]]                                     # kept, not lost
    bpd = np.load(d / "test_bpd_tinyset_DataLoader.npz")["test_bpd"]
    assert len(bpd) == 2
    np.testing.assert_allclose(bpd, [r["test_bpd"] for r in after])
    side = np.load(d / f"test_bpd_tinyset_DataLoader.after-step-{old}.npz")["test_bpd"]
    np.testing.assert_allclose(side, [rows[1]["test_bpd"]])
    assert os.path.exists(d / "ckpt" / f"ckpt-{new}.damaged.index")   # still there
    assert ckpt_lib.find_intact_checkpoint(str(d)).endswith(f"ckpt-{new}")


def test_resume_after_max_steps_mid_epoch_keeps_one_row_per_epoch(tmp_path):
    train(tiny_cfg(tmp_path, max_steps=3))                      # stops mid-epoch 0: a row
    train(tiny_cfg(tmp_path, max_epochs=1, load_params=True))   # epoch 0 finished
    rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [0] and rows[0]["step"] > 3
    aside = [json.loads(l) for l in open(tmp_path / "metrics.jsonl.after-step-3")]
    assert [(r["epoch"], r["step"]) for r in aside] == [(0, 3)]


# ------------------------------------------------------------------ a save that fails
def test_a_failed_save_stops_with_one_line_and_keeps_the_previous_checkpoint(tmp_path,
                                                                             monkeypatch):
    error = "disk_full"
    real_write = tf.train.Checkpoint.write
    calls = []

    def failing_write(self, file_prefix, options=None):
        calls.append(file_prefix)
        if len(calls) == 1:
            return real_write(self, file_prefix, options=options)
        # Part way: TensorFlow's temporary shard folder and half a data file, then the error.
        os.makedirs(file_prefix + "_temp", exist_ok=True)
        with open(os.path.join(file_prefix + "_temp", "part-00000-of-00001.data-00000-of-00001"),
                  "wb") as f:
            f.write(b"\0" * 100)
        with open(file_prefix + ".data-00000-of-00001", "wb") as f:
            f.write(b"\0" * 100)
        if error == "disk_full":
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tf.train.Checkpoint, "write", failing_write)
    with pytest.raises(ckpt_lib.CheckpointSaveError) as e:
        train(tiny_cfg(tmp_path, max_epochs=3, save_interval=1))
    first = steps_of(tmp_path)
    assert len(first) == 1 and len(calls) == 2
    line = cli.error_line("train.py", e.value)
    assert "\n" not in line and cli.is_user_error(e.value)
    cause = "No space left on device" if error == "disk_full" else "Permission denied"
    for needed in (cause, str(tmp_path / "ckpt"), f"ckpt-{first[0]}", "--load_params"):
        assert needed in line, (needed, line)
    assert os.path.exists(tmp_path / "ckpt" / f"ckpt-{first[0]}.index")   # named: exists
    assert sorted(os.listdir(tmp_path / "ckpt")) == sorted(
        ["checkpoint", f"ckpt-{first[0]}.index", f"ckpt-{first[0]}.data-00000-of-00001"])
    monkeypatch.undo()
    ckpt_lib.load_for_inference(str(tmp_path))                          # the previous one loads
    assert ckpt_lib.verify_checkpoint(ckpt_lib.latest_checkpoint(str(tmp_path))) is None


def test_a_save_without_permission_says_so_and_a_first_one_that_nothing_is_to_resume(
        tmp_path, monkeypatch):
    ck = tf.train.Checkpoint(v=tf.Variable(np.arange(10, dtype=np.float32)))
    d = str(tmp_path / "ckpt")

    def failing_write(self, file_prefix, options=None):
        os.makedirs(file_prefix + "_temp")
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tf.train.Checkpoint, "write", failing_write)
    with pytest.raises(ckpt_lib.CheckpointSaveError, match="none to resume from") as e:
        ckpt_lib.save_checkpoint(ck, d, 1)
    assert "Permission denied" in str(e.value) and os.listdir(d) == []
    monkeypatch.undo()
    ckpt_lib.save_checkpoint(ck, d, 1)
    monkeypatch.setattr(tf.train.Checkpoint, "write", failing_write)
    with pytest.raises(ckpt_lib.CheckpointSaveError) as e:
        ckpt_lib.save_checkpoint(ck, d, 2)
    assert f"the newest intact checkpoint, {os.path.join(d, 'ckpt-1')}, is kept" in str(e.value)
    assert sorted(os.listdir(d)) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]


def test_saves_are_verified_before_older_ones_go(tmp_path, monkeypatch):
    v = tf.Variable(np.arange(1000, dtype=np.float32))
    ck = tf.train.Checkpoint(v=v)
    d = str(tmp_path / "ckpt")
    for step in (1, 2, 3, 4):
        ckpt_lib.save_checkpoint(ck, d, step, max_to_keep=2)
    assert steps_of(d) == [4, 3]
    assert tf.train.latest_checkpoint(d).endswith("ckpt-4")
    # A save that does not read back whole is not given its name, and deletes nothing.
    monkeypatch.setattr(ckpt_lib, "verify_checkpoint",
                        lambda p: "Checksum does not match" if p.endswith(".partial") else None)
    with pytest.raises(ckpt_lib.CheckpointSaveError, match="does not read back whole"):
        ckpt_lib.save_checkpoint(ck, d, 5, max_to_keep=2)
    assert steps_of(d) == [4, 3] and tf.train.latest_checkpoint(d).endswith("ckpt-4")
    assert sorted(os.listdir(d)) == ["checkpoint"] + sorted(
        f"ckpt-{s}.{e}" for s in (3, 4) for e in ("index", "data-00000-of-00001"))


def test_a_non_finite_loss_after_a_checkpoint_names_it(trained, tmp_path):
    d = copy_run(trained, tmp_path / "run")
    with pytest.raises(NonFiniteLossError) as e:
        train(tiny_cfg(d, max_epochs=4, learning_rate=1e30, load_params=True))
    newest = ckpt_lib.latest_checkpoint(str(d))
    assert f"the last good checkpoint, {newest}, is kept" in str(e.value)
    assert os.path.exists(newest + ".index") and "--learning_rate" in str(e.value)
