"""Start-up latency of sample, eval, score and train: where the time goes between starting a
command and its first useful result, phase by phase.

    python benchmarks/latency.py --save_dir runs/cifar                  # a trained run
    python benchmarks/latency.py                     # trains a full-size run for 1 step first
    python benchmarks/latency.py --save_dir runs/cifar --commands sample,score --rounds 3
    python benchmarks/latency.py --smoke                                # seconds: a tiny model

Without --save_dir a run is made first in a temporary folder (train.py on the demo set for
one step, with the model flags). Each command is then run --rounds times in a fresh process
(this script again), so imports and tracing are really paid, timing its phases:

    import           TensorFlow and the pixelcnn_pp modules the command needs
    build            the model, as checkpoint.load_for_inference builds it (eval and score:
                     and the test split's loader); train: training.setup (data, model,
                     optimiser, averages, the steps of training.make_steps) and the
                     data-dependent init
    checkpoint_read  finding the newest intact checkpoint (the averages read back) and reading
                     the averages into the weights (train: none)
    first_call       the first unit of work: tracing + the work
    second_call      the same work again: the work alone
    process_total    the child process's wall time, as its parent sees it; outside the
                     phases above it also holds ``startup`` (from starting the process to
                     the child's timing: the interpreter, absl, the flags) and ``exit`` (from
                     the child's last phase until its parent sees it end), shown too

The units of work: sample, one image with the fast sampler (``sampling.sample``) in a first
run (it traces the sampler and keeps the traces, as sample.py does with a save_dir);
sample_kept, the same in a later run, which loads the kept traces; eval, one
batch of 16 test images through ``evaluation.test_bits_per_dim`` (its traced step is kept
per model, so the second call is the work alone);
score, ``scoring.score_images`` of 16 test images; train, one training step. The real
commands are also timed end to end once each (sample.py of one image: with --nokeep_traces
for sample, and after a run that kept them for sample_kept; eval.py of one batch,
score.py of 16 images; train.py has none: its first result is an epoch; --noend_to_end
skips them). Printed: a table (median over the rounds, seconds), then one line of JSON with
every figure (each round's too), the settings (model sizes, TensorFlow's version, CPU count)
and, for a run made here, the seconds train.py took to make it. The sample children also
report how many kept traces they loaded and wrote (``traces_loaded``, ``traces_written``).
With --end_to_end, sample_kept's real runs keep their traces in the save_dir's ``traces/``, as
sample.py does (delete it to reclaim the space).
"""

import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from model_flags import define_model_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

COMMANDS = ("sample", "sample_kept", "eval", "score", "train")
PHASES = ("import", "build", "checkpoint_read", "first_call", "second_call", "process_total")
IMPORTS = {
    "sample": ["pixelcnn_pp.checkpoint", "pixelcnn_pp.optim", "pixelcnn_pp.sampling"],
    "sample_kept": ["pixelcnn_pp.checkpoint", "pixelcnn_pp.optim", "pixelcnn_pp.sampling"],
    "eval": ["pixelcnn_pp.checkpoint", "pixelcnn_pp.optim", "pixelcnn_pp.data",
             "pixelcnn_pp.evaluation"],
    "score": ["pixelcnn_pp.checkpoint", "pixelcnn_pp.optim", "pixelcnn_pp.data",
              "pixelcnn_pp.scoring"],
    "train": ["keras", "pixelcnn_pp.checkpoint", "pixelcnn_pp.fast_ops",
              "pixelcnn_pp.training"],
}
EVAL_IMAGES = 16

F = flags.FLAGS
define_model_flags(image_size=None, batch_size=None)   # of the run made without --save_dir
flags.DEFINE_string("save_dir", None, "A trained run (default: make one in a temporary "
                    "folder with train.py --max_steps 1 and the model flags)")
flags.DEFINE_list("commands", list(COMMANDS), "Commands to time")
flags.DEFINE_integer("rounds", 1, "Fresh processes per command (the table shows the median)")
flags.DEFINE_boolean("end_to_end", True, "Also time the real sample.py, eval.py and score.py "
                     "once each")
flags.DEFINE_boolean("smoke", False, "A tiny model (1/8/2): checks that it runs")
flags.DEFINE_enum("_child", None, list(COMMANDS), "internal: time this command's phases in "
                  "this process")
flags.DEFINE_string("_traces", None, "internal: the folder the sample children keep the "
                    "sampler's traces in")


# ------------------------------------------------------------------- the child process
class _Clock:
    """Seconds between successive laps, by phase name."""

    def __init__(self):
        self.phases = {}
        self._t = time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        self.phases[name] = now - self._t
        self._t = now


def _load(save_dir, clock, data=None):
    """(model, config, data) as checkpoint.load_for_inference loads a save_dir (Polyak
    averages, fast_ops as the commands' default), with its build and its checkpoint read timed
    apart; data(save_dir, config) (test images) is made in the build phase."""
    from pixelcnn_pp import checkpoint
    config, _ = checkpoint.read_config(save_dir)
    model = checkpoint.build_model(config, fast_ops=True, restoring=True)
    made = data(save_dir, config) if data else None
    clock.lap("build")
    path = checkpoint.find_intact_checkpoint(save_dir, only=checkpoint.INFERENCE_TENSORS[True])
    if path is None:
        raise SystemExit(f"no checkpoint in {save_dir}")
    checkpoint.restore_weights(model, path)
    clock.lap("checkpoint_read")
    return model, config, made


def _test_loader(save_dir, config):
    from pixelcnn_pp import checkpoint
    from pixelcnn_pp.data import make_loader
    data_set, data_dir = checkpoint.data_source(save_dir)
    return make_loader(data_set, data_dir, "test", EVAL_IMAGES,
                       return_labels=bool(config.num_classes))


def _test_images(save_dir, config):
    """(images, labels or None): the first EVAL_IMAGES test images, as score.py reads them."""
    batch = next(iter(_test_loader(save_dir, config)))
    return (batch[0], batch[1]) if config.num_classes else (batch, None)


def _sample_work(save_dir, clock):
    import numpy as np
    from pixelcnn_pp import fast_ops, sampling
    from pixelcnn_pp.sampling import traces
    fast_ops.skip_graph_optimizer()             # as sample.py does
    model, config, _ = _load(save_dir, clock)
    sampling.keep_traces(model, F._traces)      # as sample.py does, in the benchmark's folder
    _COUNTED.append(traces.store_for(model))
    k = config.num_classes
    h = np.eye(k, dtype=np.float32)[:1] if k else None
    return lambda: np.asarray(sampling.sample(model, 1, config.image_shape, h=h, seed=0))


def _eval_work(save_dir, clock):
    from pixelcnn_pp import evaluation
    model, config, loader = _load(save_dir, clock, _test_loader)
    return lambda: evaluation.test_bits_per_dim(model, config, loader, max_batches=1)


def _score_work(save_dir, clock):
    from pixelcnn_pp import scoring
    model, _, (x, y) = _load(save_dir, clock, _test_images)
    return lambda: scoring.score_images(model, x, labels=y, batch_size=EVAL_IMAGES)


def _train_config(save_dir, scratch):
    """The save_dir's TrainConfig, saving into ``scratch`` (the run itself is not touched)."""
    import dataclasses
    from pixelcnn_pp import checkpoint
    from pixelcnn_pp.training import TrainConfig
    _, saved = checkpoint.read_config(save_dir)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    return dataclasses.replace(cfg, save_dir=scratch, load_params=False, quiet=True)


def _train_work(save_dir, clock):
    """train.py's first steps: training.setup (its steps are training.make_steps'), the
    data-dependent init, then one step per call as training.train_epoch runs them."""
    import keras
    import tensorflow as tf
    from pixelcnn_pp import fast_ops, training
    scratch = tempfile.mkdtemp(prefix="latency-train-")
    atexit.register(shutil.rmtree, scratch, True)
    cfg = _train_config(save_dir, scratch)
    cfg.validate()
    keras.mixed_precision.set_global_policy(cfg.precision)
    run = training.setup(cfg)
    training.resume_or_initialise(run)
    clock.lap("build")
    batches = iter(run.distributed(run.train_data))

    def step():
        batch = next(batches)
        lr = training.learning_rate_at(cfg, run.step_now() + 1)
        loss = float(run.train_step(*batch[:2], tf.constant(lr, tf.float32), *batch[2:]))
        run.step.assign_add(1)
        if run.step_now() == 1 and cfg.fast_ops:
            fast_ops.freeze_gc()   # as train_epoch does after its first step
        return loss

    return step


_COUNTED = []     # the sample children's TraceStore: its loads and writes are reported

WORK = {"sample": _sample_work, "sample_kept": _sample_work, "eval": _eval_work,
        "score": _score_work, "train": _train_work}


def _child(command, save_dir):
    """Time the command's phases in this (fresh) process; print them as a JSON line."""
    import importlib
    started = time.time()
    clock = _Clock()
    importlib.import_module("tensorflow")
    for name in IMPORTS[command]:
        importlib.import_module(name)
    clock.lap("import")
    work = WORK[command](save_dir, clock)
    work()
    clock.lap("first_call")
    work()
    clock.lap("second_call")
    import tensorflow as tf
    counts = {"traces_loaded": _COUNTED[0].loaded,
              "traces_written": _COUNTED[0].written} if _COUNTED else {}
    print(json.dumps({"phases": clock.phases, "started": started, "ended": time.time(),
                      "tensorflow": tf.__version__, **counts}), flush=True)


# ------------------------------------------------------------------- the parent process
def _python(args, what):
    """Run ``python args`` from the repository root: (wall seconds, stdout)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    t = time.perf_counter()
    p = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                       text=True)
    seconds = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"{what} failed (exit code {p.returncode}):\n{p.stderr[-3000:]}")
    return seconds, p.stdout


def _make_save_dir(folder):
    """A run of train.py on the demo set for one step, with the model flags: (its folder, the
    train.py process's seconds)."""
    save_dir = os.path.join(folder, "run")
    seconds, _ = _python([
        os.path.join(ROOT, "train.py"), "--data_set=demo", "--nr_gpu=1", "--max_steps=1",
        "--num_samples=0", f"--nr_resnet={F.nr_resnet}", f"--nr_filters={F.nr_filters}",
        f"--nr_logistic_mix={F.nr_logistic_mix}", f"--save_dir={save_dir}", "--quiet"],
        "train.py (making a run to time)")
    return save_dir, seconds


def _phases(command, save_dir, traces):
    """One fresh process timing ``command``: (its phases, with process_total and the child's
    startup (interpreter, flags) and exit outside them; TensorFlow's version). traces: the
    folder the sampler keeps its traces in (sample: emptied first)."""
    if command == "sample":
        shutil.rmtree(traces, ignore_errors=True)
    t = time.time()
    seconds, out = _python([os.path.abspath(__file__), f"--_child={command}",
                            f"--save_dir={save_dir}", f"--_traces={traces}"], f"timing {command}")
    ended = time.time()
    child = json.loads(out.strip().splitlines()[-1])
    phases = dict(child["phases"], process_total=seconds,
                  startup=child["started"] - t, exit=ended - child["ended"],
                  **{k: v for k, v in child.items() if k.startswith("traces_")})
    return phases, child["tensorflow"]


def _end_to_end_args(command, save_dir, folder):
    """The real command's arguments, or None (train.py's first result is an epoch)."""
    sample = ["sample.py", "--num_samples=1", "--batch_size=1",
              f"--out={os.path.join(folder, 'latency.png')}", "--overwrite"]
    scripts = {
        "sample": sample + ["--nokeep_traces"],
        "sample_kept": sample,       # after a run that kept them in the save_dir (see _measure)
        "eval": ["eval.py", "--max_batches=1", f"--batch_size={EVAL_IMAGES}"],
        "score": ["score.py", f"--max_images={EVAL_IMAGES}",
                  f"--out={os.path.join(folder, 'latency.csv')}", "--overwrite"],
    }
    if command not in scripts:
        return None
    script, *rest = scripts[command]
    return [os.path.join(ROOT, script), f"--save_dir={save_dir}"] + rest


def _median(rounds):
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def _table(results):
    cols = list(PHASES) + ["startup", "exit", "end_to_end"]
    width = max(map(len, cols)) + 2
    lines = ["command".ljust(12) + "".join(c.rjust(width) for c in cols)]
    for command, r in results.items():
        row = dict(r["phases"], end_to_end=r["end_to_end"])
        lines.append(command.ljust(12) + "".join(
            ("-" if row.get(c) is None else f"{row[c]:.2f}").rjust(width) for c in cols))
    return "\n".join(lines)


def _settings(save_dir, versions):
    with open(os.path.join(save_dir, "config.json")) as f:
        model = json.load(f)["model"]
    return {"nr_resnet": model["nr_resnet"], "nr_filters": model["nr_filters"],
            "nr_logistic_mix": model["nr_logistic_mix"], "image_shape": model["image_shape"],
            "tensorflow": ",".join(sorted(versions)), "cpu_count": os.cpu_count(),
            "rounds": F.rounds, "smoke": F.smoke, "eval_images": EVAL_IMAGES}


def _shown(args):
    return "python " + " ".join(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a
                                for a in args)


def _measure(command, save_dir, folder, versions):
    """The command's phases in F.rounds fresh processes (median and each), and the real
    command's wall time."""
    traces = os.path.join(folder, "traces")
    if command == "sample_kept" and not os.path.isdir(traces):
        _phases("sample", save_dir, traces)          # a first run keeps them (not timed)
    rounds = []
    for _ in range(F.rounds):
        phases, version = _phases(command, save_dir, traces)
        rounds.append(phases)
        versions.add(version)
    median = _median(rounds)
    if command == "train":
        median["checkpoint_read"] = None   # a new run reads none
    args = _end_to_end_args(command, save_dir, folder) if F.end_to_end else None
    if args and command == "sample_kept":   # the save_dir's traces kept by a run before
        _python(args, "sample.py keeping the sampler's traces")
    return {"phases": median, "rounds": rounds,
            "end_to_end": _python(args, f"the real {command} command")[0] if args else None,
            "end_to_end_command": _shown(args) if args else None}


def main(argv):
    del argv
    if F._child:
        return _child(F._child, F.save_dir)
    if F.smoke:
        F.nr_resnet, F.nr_filters, F.nr_logistic_mix = 1, 8, 2
    commands = [c for c in F.commands if c]
    unknown = sorted(set(commands) - set(COMMANDS))
    if unknown or not commands or F.rounds < 1:
        raise app.UsageError(f"--commands: some of {', '.join(COMMANDS)} (got "
                             f"{','.join(F.commands)}); --rounds: >= 1")
    versions = set()
    with tempfile.TemporaryDirectory(prefix="latency-") as folder:
        save_dir, made = F.save_dir, None
        if save_dir is None:
            save_dir, made = _make_save_dir(folder)
        results = {c: _measure(c, save_dir, folder, versions) for c in commands}
        settings = _settings(save_dir, versions)
    print(_table(results))
    print(json.dumps({"commands": results, "settings": settings,
                      "make_save_dir_seconds": made}))


if __name__ == "__main__":
    app.run(main)
