"""Paired A/B timing of two or more versions of this package, step by step in one process.

    python benchmarks/paired_speed.py --revs HEAD~1,HEAD             # full model, batch 16
    python benchmarks/paired_speed.py --revs v1,HEAD,WORKTREE --rounds 10
    python benchmarks/paired_speed.py --revs HEAD,WORKTREE --smoke   # seconds: a tiny model
    python benchmarks/paired_speed.py --revs HEAD,HEAD:plain          # fast_ops on and off

On a shared machine the speed drifts by ±10% within minutes, so separate benchmark runs cannot
resolve differences of a few percent. This script loads each version (a git revision of this
repository, or WORKTREE for the files as they are) as its own copy of the package, builds the
same model, optimizer and averages with each (train.py's compiled steps from
``training.make_steps``, dropout on, same inputs), and then times one training step of every
version in turn, round after round (the order rotates), and one evaluation step likewise. Drift
hits all versions alike; the figure to read is the median over rounds of the per-round time
ratio against the first version. The last line printed is JSON.
"""

import contextlib
import gc
import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from model_flags import define_model_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "pixelcnn_pp"

F = flags.FLAGS
flags.DEFINE_list("revs", ["HEAD", "WORKTREE"], "Versions to compare: git revisions of this "
                  "repository, or WORKTREE (the files as they are); the first is the reference; "
                  "REV:plain builds REV with its fast_ops off")
flags.DEFINE_integer("rounds", 8, "Timed rounds (one training and one evaluation step of "
                     "every version each)")
define_model_flags()
flags.DEFINE_boolean("eval_only", False, "Time evaluation steps only (the training steps, "
                     "~3.5x longer, are then run for warm-up only)")
flags.DEFINE_boolean("smoke", False, "A tiny model and two rounds: checks that it runs")


def _copy_version(rev, dest, index):
    """The package as of rev, importable as pixelcnn_pp_v<index> from dest."""
    name = f"{PACKAGE}_v{index}"
    target = os.path.join(dest, name)
    if rev == "WORKTREE":
        shutil.copytree(os.path.join(ROOT, PACKAGE), target,
                        ignore=shutil.ignore_patterns("__pycache__"))
    else:
        archive = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", rev, PACKAGE],
                                 capture_output=True)
        if archive.returncode:
            raise SystemExit(f"--revs: cannot read {PACKAGE}/ at {rev!r} from git: "
                             f"{archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)
        os.rename(os.path.join(dest, PACKAGE), target)
    for folder, _, files in os.walk(target):   # the copy imports itself, not the original
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                with open(path) as fh:
                    text = fh.read()
                with open(path, "w") as fh:
                    fh.write(text.replace(PACKAGE, name))
    return name


def _takes(fn, **kwargs):
    """The keyword arguments that ``fn`` accepts (versions differ in their constructors)."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in params}


def main(argv):
    del argv
    if F.smoke:
        F.nr_resnet, F.nr_filters, F.nr_logistic_mix, F.image_size = 1, 8, 2, 8
        F.batch_size, F.rounds = 2, 2
    if len(F.revs) < 2:
        raise SystemExit("--revs: name at least two versions to compare")
    import numpy as np
    import tensorflow as tf

    dest = tempfile.mkdtemp(prefix="paired_speed_")
    sys.path.insert(0, dest)
    rng = np.random.RandomState(0)
    shape = (F.batch_size, F.image_size, F.image_size, 3)
    pool = [tf.constant(rng.randint(0, 256, shape).astype(np.uint8)) for _ in range(4)]
    labels = tf.zeros([F.batch_size], tf.int32)
    lr = tf.constant(1e-3, tf.float32)
    steps, warmup = [], []
    try:
        for i, spec in enumerate(F.revs):
            rev, _, variant = spec.partition(":")
            if variant not in ("", "plain"):
                raise SystemExit(f"--revs: {spec!r}: the only variant is REV:plain")
            name = _copy_version(rev, dest, i)
            pkg = importlib.import_module(name)
            training = importlib.import_module(f"{name}.training")
            optim = importlib.import_module(f"{name}.optim")
            likelihood = importlib.import_module(f"{name}.likelihood")
            # As train.py runs: the fast_ops choices on (a version whose objects take them
            # at construction, or one whose make_steps turns its process-wide switch on).
            on = variant != "plain"
            fast = _takes(pkg.PixelCNNPP, fast_ops=on)
            model = pkg.PixelCNNPP(F.nr_resnet, F.nr_filters, F.nr_logistic_mix,
                                   dropout_p=0.5, seed=0, **fast)
            scale = getattr(likelihood, "scale_images", None) or training.scale_images
            model.initialize(scale(pool[0]))
            optimizer = optim.Adam(learning_rate=1e-3, **_takes(optim.Adam, fused=on))
            optimizer.build(model.trainable_variables)
            averages = optim.PolyakAverage(model.trainable_variables,
                                           **_takes(optim.PolyakAverage, fused=on))
            train_step, eval_step = training.make_steps(
                tf.distribute.get_strategy(), model, optimizer, averages,
                likelihood.discretized_mix_logistic_loss, None)
            t = time.perf_counter()
            for k in range(2):   # the first traces
                float(train_step(pool[k], labels, lr))
            float(eval_step(pool[0], labels))
            warmup.append(round(time.perf_counter() - t, 2))
            steps.append((train_step, eval_step))
            print(f"{spec}: built and warmed up in {warmup[-1]} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    gc.collect()
    gc.freeze()

    n = len(steps)
    train_s = [[] for _ in range(n)]
    eval_s = [[] for _ in range(n)]
    for r in range(F.rounds):
        order = [(r + k) % n for k in range(n)]
        x = pool[r % len(pool)]
        for i in order if not F.eval_only else ():
            t = time.perf_counter()
            float(steps[i][0](x, labels, lr))
            train_s[i].append(time.perf_counter() - t)
        for i in order:
            # An evaluation step inside a pass over the test split: a version that computes
            # the normalised weights once per pass does so before the clock starts.
            ev = steps[i][1]
            with (ev.fixed_weights() if hasattr(ev, "fixed_weights")
                  else contextlib.nullcontext()):
                t = time.perf_counter()
                float(ev(x, labels))
                eval_s[i].append(time.perf_counter() - t)
        train_line = "" if F.eval_only else (
            "train s " + " ".join(f"{train_s[i][-1]:.2f}" for i in range(n)) + " | ")
        print(f"round {r}: {train_line}eval s "
              + " ".join(f"{eval_s[i][-1]:.2f}" for i in range(n)), file=sys.stderr, flush=True)

    def speedup(times, i):   # median over rounds of reference time / this version's time
        if not times[i]:
            return None
        return round(float(np.median(np.array(times[0]) / np.array(times[i]))), 4)

    def img_per_s(times):
        return round(F.batch_size / float(np.median(times)), 4) if times else None

    result = {
        "versions": [
            {"rev": rev,
             "train_img_per_s": img_per_s(train_s[i]),
             "eval_img_per_s": img_per_s(eval_s[i]),
             "train_speedup": speedup(train_s, i), "eval_speedup": speedup(eval_s, i),
             "train_step_seconds": [round(t, 3) for t in train_s[i]],
             "eval_step_seconds": [round(t, 3) for t in eval_s[i]],
             "warmup_seconds": warmup[i]}
            for i, rev in enumerate(F.revs)],
        "reference": F.revs[0], "rounds": F.rounds, "eval_only": F.eval_only,
        "nr_resnet": F.nr_resnet, "nr_filters": F.nr_filters,
        "nr_logistic_mix": F.nr_logistic_mix, "image_size": F.image_size,
        "batch_size": F.batch_size, "tensorflow": tf.__version__, "cpu_cores": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
