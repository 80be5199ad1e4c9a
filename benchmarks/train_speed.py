"""Training and evaluation throughput of PixelCNN++: the compiled steps train.py runs.

    python benchmarks/train_speed.py                                  # full model, batch 16
    python benchmarks/train_speed.py --precision mixed_bfloat16
    python benchmarks/train_speed.py --recompute
    python benchmarks/train_speed.py --jit_compile
    python benchmarks/train_speed.py --nr_gpu 2 --batch_size 8        # 2 replicas (logical CPUs)
    python benchmarks/train_speed.py --workers 2 --batch_size 8       # 2 localhost workers
    python benchmarks/train_speed.py --smoke                          # seconds: a tiny model

It builds the model, optimizer and averages as train.py does (under the same distribution
strategy), runs the data-dependent init, then times ``training.make_steps``' train step
(forward with dropout, backward, the original's Adam, Polyak averaging; random uint8 images
prefetched through tf.data) after warm-up steps, and the evaluation step. The last line
printed is JSON: train_img_per_s, eval_img_per_s, peak_memory_mb (the process's peak resident
memory, which training sets) and the settings. ``--profile_dir`` also writes TensorBoard
profiles of two training and two evaluation steps and prints where their time went, by op
type.
"""

import collections
import contextlib
import gc
import glob
import json
import os
import resource
import socket
import subprocess
import sys
import time

from absl import app, flags

from model_flags import define_model_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

F = flags.FLAGS
define_model_flags(batch_help="Images per replica per step")
flags.DEFINE_integer("steps", 5, "Timed training steps")
flags.DEFINE_integer("warmup", 2, "Untimed training steps first (tracing included)")
flags.DEFINE_integer("eval_steps", 5, "Timed evaluation steps (after one untimed)")
flags.DEFINE_float("dropout_p", 0.5, "Dropout rate (on, as in training)")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Keras mixed-precision policy")
flags.DEFINE_boolean("jit_compile", False, "XLA for the forward/backward and eval passes")
flags.DEFINE_boolean("recompute", False, "Gradient checkpointing of the gated resnets")
flags.DEFINE_integer("nr_gpu", 1, "Replicas (GPUs, or logical CPU devices without GPUs)")
flags.DEFINE_integer("workers", 1, "Localhost worker processes (MultiWorkerMirroredStrategy)")
flags.DEFINE_boolean("smoke", False, "A tiny model and two steps: checks that it runs")
flags.DEFINE_string("profile_dir", None, "Write TensorBoard profiles of two training steps "
                    "(PROFILE_DIR/train) and two evaluation steps (PROFILE_DIR/eval)")
flags.DEFINE_integer("profile_top", 12, "Op types listed in the printed profile summaries")
flags.DEFINE_boolean("gc_freeze", True, "Exempt the traced graphs from Python's garbage "
                     "collector after warm-up, as train.py does (--nogc_freeze: don't)")
flags.DEFINE_string("_tf_config", None, "internal: this process is a worker of --workers")


class _GCTimer:
    """Seconds spent in Python's garbage collector, per generation."""

    def __init__(self):
        self.seconds = [0.0, 0.0, 0.0]
        self._t0 = None
        gc.callbacks.append(self)

    def __call__(self, phase, info):
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0 is not None:
            self.seconds[info["generation"]] += time.perf_counter() - self._t0


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


# The XLA-fused computations (Adam, the Polyak update, the weight-norm gradient, evaluation's
# gate) run asynchronously and appear in the trace as executions, not as "name:Type" ops.
XLA_OP_TYPE = "(XLA-compiled functions)"


def _profile_summary(logdir, top=12):
    """Op time (summed over the executor threads) by op type from the newest profile under
    logdir (xplane.pb); XLA-compiled functions are counted together as XLA_OP_TYPE."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    files = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))
    if not files:
        return {}
    space = xplane_pb2.XSpace()
    with open(files[-1], "rb") as f:
        space.ParseFromString(f.read())
    by_type = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor threads running ops
                continue
            for ev in line.events:
                name = plane.event_metadata[ev.metadata_id].name
                if name == "CpuExecutable::ExecuteAsyncOnStream":  # an XLA-compiled function
                    by_type[XLA_OP_TYPE] += ev.duration_ps / 1e12
                    continue
                if name.count(":") != 1:  # TF ops are "name:Type"; "A::B" are markers
                    continue
                by_type[name.split(":")[1]] += ev.duration_ps / 1e12
    total = sum(by_type.values())
    return {"op_seconds_total": round(total, 3),
            "top_op_types": [(k, round(v, 3), round(v / total, 3) if total else 0)
                             for k, v in by_type.most_common(top)]}


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch_workers(argv):
    """Run this script as F.workers localhost processes; print the chief's JSON line."""
    ports = [_free_port() for _ in range(F.workers)]
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    args = [a for a in argv[1:] if not a.startswith("--workers")]
    procs = []
    for i in range(F.workers):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, argv[0], *args, "--workers=1", f"--_tf_config={tf_config}"],
            stdout=subprocess.PIPE, text=True))
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed (exit codes {[p.returncode for p in procs]})")
    results = [json.loads(o.strip().splitlines()[-1]) for o in outs]
    chief = results[0]
    chief["workers"] = F.workers
    chief["peak_memory_mb_per_worker"] = [r["peak_memory_mb"] for r in results]
    print(json.dumps(chief))


def main(argv):
    if F.workers > 1:
        return _launch_workers(sys.argv)
    if F.smoke:
        F.nr_resnet, F.nr_filters, F.nr_logistic_mix, F.image_size = 1, 8, 2, 8
        F.batch_size, F.steps, F.warmup, F.eval_steps = 2, 2, 1, 2
    if F._tf_config:
        os.environ["TF_CONFIG"] = F._tf_config
    import numpy as np
    import keras
    import tensorflow as tf

    from pixelcnn_pp import PixelCNNPP
    from pixelcnn_pp.likelihood import discretized_mix_logistic_loss, scale_images
    from pixelcnn_pp.optim import Adam, PolyakAverage
    from pixelcnn_pp.fast_ops import freeze_gc
    from pixelcnn_pp.training import distribute_batches, make_steps, make_strategy

    if F.precision != "float32":
        keras.mixed_precision.set_global_policy(F.precision)
    strategy = make_strategy("multi_worker" if F._tf_config else "mirrored", F.nr_gpu,
                             log=lambda *a: print(*a, file=sys.stderr))
    replicas = strategy.num_replicas_in_sync
    global_batch = F.batch_size * replicas
    shape = (F.image_size, F.image_size, 3)
    rng = np.random.RandomState(0)
    pool = [rng.randint(0, 256, (global_batch,) + shape).astype(np.uint8) for _ in range(4)]

    def batches(n):
        for i in range(n):
            yield pool[i % len(pool)]

    gc_timer = _GCTimer()
    rss_start = _rss_mb()
    with strategy.scope():
        model = PixelCNNPP(F.nr_resnet, F.nr_filters, F.nr_logistic_mix,
                           dropout_p=F.dropout_p, seed=0, recompute=F.recompute,
                           fast_ops=True)   # as train.py runs
        model.initialize(scale_images(pool[0][:F.batch_size]))
        optimizer = Adam(learning_rate=1e-3, fused=True)
        if F.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        averages = PolyakAverage(model.trainable_variables, fused=True)
    rss_model = _rss_mb()
    train_step, eval_step = make_steps(strategy, model, optimizer, averages,
                                       discretized_mix_logistic_loss, None,
                                       jit_compile=F.jit_compile)
    lr = tf.constant(1e-3, tf.float32)

    # One pipeline for all training steps and one for all evaluation steps, as in an epoch of
    # train.py (tearing a tf.data pipeline down removes its functions from TensorFlow's
    # function library, which takes seconds once the full model's steps are in it).
    def pipeline(n):
        return iter(distribute_batches(strategy, batches(n), shape, global_batch, False))

    def run(step, it, n, args=()):
        """n steps from iterator it: (outputs, step seconds, seconds waiting for input)."""
        outs, times, waits = [], [], []
        for _ in range(n):
            t = time.perf_counter()
            x, y = next(it)
            t1 = time.perf_counter()
            outs.append(float(step(x, y, *args)))   # train.py reads every loss too
            times.append(time.perf_counter() - t1)
            waits.append(t1 - t)
        return outs, times, waits

    it = pipeline(F.warmup + F.steps)
    t0 = time.perf_counter()
    run(train_step, it, F.warmup, (lr,))
    if F.gc_freeze:
        freeze_gc()  # as train() does after its first step
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    losses, train_steps, train_waits = run(train_step, it, F.steps, (lr,))
    train_s = time.perf_counter() - t0
    peak_train = _peak_mb()
    if not all(np.isfinite(losses)):
        raise SystemExit(f"non-finite training loss: {losses}")

    # Evaluation steps as train.py's pass over the test split runs them: the normalised
    # weights computed once, on entering the pass (before the clock starts), then every step.
    it = pipeline(1 + F.eval_steps)
    with eval_step.fixed_weights():
        run(eval_step, it, 1)
        t0 = time.perf_counter()
        _, eval_times, eval_waits = run(eval_step, it, F.eval_steps)
        eval_s = time.perf_counter() - t0

    result = {
        "train_img_per_s": round(F.steps * global_batch / train_s, 4),
        "eval_img_per_s": round(F.eval_steps * global_batch / eval_s, 4),
        # The same from the median step time: robust to a step slowed by another tenant of a
        # shared machine (the means above are the figures to compare with other benchmarks).
        "train_img_per_s_median_step": round(global_batch / float(np.median(train_steps)), 4),
        "eval_img_per_s_median_step": round(global_batch / float(np.median(eval_times)), 4),
        "peak_memory_mb": round(peak_train, 1),
        "memory_before_training_mb": round(rss_model, 1),
        "process_start_memory_mb": round(rss_start, 1),
        "train_seconds_per_step": round(train_s / F.steps, 4),
        "train_step_seconds": [round(t, 3) for t in train_steps],
        "eval_seconds_per_step": round(eval_s / F.eval_steps, 4),
        "eval_step_seconds": [round(t, 3) for t in eval_times],
        "train_input_wait_seconds": round(sum(train_waits), 4),
        "eval_input_wait_seconds": round(sum(eval_waits), 4),
        "warmup_seconds": round(warmup_s, 2),
        "python_gc_seconds": [round(t, 2) for t in gc_timer.seconds],
        "gc_freeze": F.gc_freeze,
        "bits_per_dim_last_step": round(
            losses[-1] / (np.log(2) * np.prod(shape) * global_batch), 4),
        "nr_resnet": F.nr_resnet, "nr_filters": F.nr_filters,
        "nr_logistic_mix": F.nr_logistic_mix, "image_size": F.image_size,
        "batch_size": F.batch_size, "replicas": replicas, "global_batch": global_batch,
        "precision": F.precision, "jit_compile": F.jit_compile, "recompute": F.recompute,
        "steps": F.steps, "eval_steps": F.eval_steps, "dropout_p": F.dropout_p,
        "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        "tensorflow": tf.__version__, "cpu_cores": os.cpu_count(),
    }
    if F.profile_dir:
        for key, sub, step, args in (("profile", "train", train_step, (lr,)),
                                     ("eval_profile", "eval", eval_step, ())):
            it = pipeline(2)
            logdir = os.path.join(F.profile_dir, sub)
            with (eval_step.fixed_weights() if sub == "eval" else contextlib.nullcontext()):
                tf.profiler.experimental.start(logdir)
                t0 = time.perf_counter()
                run(step, it, 2, args)
                wall = time.perf_counter() - t0
                tf.profiler.experimental.stop()
            result[key] = dict(_profile_summary(logdir, F.profile_top), wall_seconds=round(wall, 3))
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
