"""Speed of fast (cached) against naive PixelCNN++ sampling; prints JSON.

    python benchmarks/sample_speed.py                       # full model, 32x32, batch 1/16/64
    python benchmarks/sample_speed.py --sizes=64 --batch_sizes=16
    python benchmarks/sample_speed.py --profile --batch_sizes=16 --xla=off
    python benchmarks/sample_speed.py --batch_sizes=16 --xla=off --precision=mixed_bfloat16

Naive time is estimated as one full network pass (the best of --repeats) times H·W, which is
what naive sampling runs (--naive_full runs it instead, for small models). Fast time is the
best of --repeats complete sampling calls after one warm-up call that traces (and, with
XLA, compiles) the per-row functions; the warm-up time is reported as ``first_call_s``.
Weights are random after data-dependent init on random images: speed does not depend on
them. ``--profile`` splits the fast sampler's time into the row-level part (the u stream at
every level and the row-above parts of the ul stream) and the per-pixel loop, and counts the
ops and FLOPs of one pixel step.
"""

import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from model_flags import define_model_flags  # noqa: E402

import tensorflow as tf  # noqa: E402

from pixelcnn_pp import sampling  # noqa: E402
from pixelcnn_pp.sampling.fast_weights import read_weights  # noqa: E402
from pixelcnn_pp.model import PixelCNNPP  # noqa: E402
from pixelcnn_pp.config import PRECISIONS  # noqa: E402

FLAGS = flags.FLAGS
define_model_flags(image_size=None, batch_size=None)   # the full CIFAR-10 model
flags.DEFINE_list("sizes", ["32"], "image sizes (square)")
flags.DEFINE_list("batch_sizes", ["1", "16", "64"], "batch sizes")
flags.DEFINE_enum("xla", "both", ["both", "on", "off"], "XLA for the fast sampler's pixel loop")
flags.DEFINE_enum("precision", "float32", list(PRECISIONS),
                  "Keras mixed-precision policy of the model (both samplers compute in it)")
flags.DEFINE_integer("repeats", 2, "timed repetitions (the best is reported)")
flags.DEFINE_bool("naive_full", False, "run naive sampling instead of estimating it")
flags.DEFINE_bool("naive_xla", False, "also time a naive pass compiled with XLA; the naive "
                  "estimate uses the faster of the two")
flags.DEFINE_bool("profile", False, "row-level / pixel-loop split, ops and FLOPs per step")
flags.DEFINE_string("out", None, "also write the JSON here")
flags.DEFINE_bool("fast_ops", True, "pixelcnn_pp/fast_ops.py's faster computations (as "
                  "sample.py; --nofast_ops: the original's ops only)")


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _model(size):
    model = PixelCNNPP(nr_resnet=FLAGS.nr_resnet, nr_filters=FLAGS.nr_filters,
                       nr_logistic_mix=FLAGS.nr_logistic_mix, dropout_p=0.0, seed=0,
                       fast_ops=FLAGS.fast_ops)
    x = tf.random.stateless_uniform((4, size, size, 3), (1, 2), -1.0, 1.0)
    model.initialize(x, training=False)
    return model


def _naive(model, B, size):
    if FLAGS.naive_full:
        run = lambda: sampling.sample(model, B, (size, size, 3), method="naive",
                                      jit_compile=False)
        run()   # traces
        t = _best(run, FLAGS.repeats)
        return {"naive_s": t, "naive_estimated": False}
    x = tf.random.stateless_uniform((B, size, size, 3), (3, 4), -1.0, 1.0)
    out = {}
    for jit in ([False, True] if FLAGS.naive_xla else [False]):
        forward = tf.function(lambda x: model(x), jit_compile=jit)
        forward(x)
        out["naive_pass_xla_s" if jit else "naive_pass_s"] = _best(lambda: forward(x).numpy(),
                                                                   FLAGS.repeats)
    p = min(out.values())
    return dict(out, naive_s=p * size * size, naive_estimated=True)


def _fast(model, B, size, jit):
    t = time.perf_counter()
    sampling.sample(model, B, (size, size, 3), seed=0, jit_compile=jit)
    first = time.perf_counter() - t
    best = _best(lambda: sampling.sample(model, B, (size, size, 3), seed=1, jit_compile=jit),
                 FLAGS.repeats)
    return {"first_call_s": first, "fast_s": best}


def _profile(model, B, size, jit):
    """Time per row kind: the whole row, and its row-level part alone (each compiled alone,
    with XLA if ``jit`` as the sampler's rows are, so the sum is a little above the real run,
    which compiles four rows at a time)."""
    fs = sampling._get_sampler(model, "fast", B, size, size, False, jit)
    w = read_weights(model, None, fs.dtype)
    st = fs._initial_state()
    noise = [n[0] for n in sampling.rows_noise(tf.constant(0, tf.int64), tf.constant(5), 1,
                                                size, B, fs.M, 3, False)]

    # Row kinds: i mod 4 = 0 (all three levels), odd (full resolution only), 2 (two levels),
    # by the number of levels that get a new row.
    out = {"row_kinds": ["i%4==0", "i odd", "i%4==2"], "row_s": [], "row_level_s": []}
    i = tf.constant(5)
    given, no_given = tf.zeros((B, size, size, 3)), tf.constant(0)   # nothing given: sampling
    rows = []
    for n in (3, 1, 2):
        row = tf.function(lambda st, w, i, nz, n=n: fs._row(n, st, w, i, nz, given, no_given),
                          autograph=False, jit_compile=jit)
        row(st, w, i, noise)
        out["row_s"].append(_best(lambda: row(st, w, i, noise), 3))
        rows.append(row)
        f = tf.function(lambda st, w, i, n=n: fs._row_above(n, st, w, i)[1], autograph=False,
                        jit_compile=jit)
        f(st, w, i)
        out["row_level_s"].append(_best(lambda: f(st, w, i), 3))
    per4 = lambda t: t[0] + 2 * t[1] + t[2]
    out["row_level_total_s"] = size // 4 * per4(out["row_level_s"])
    out["pixel_loop_total_s"] = size // 4 * (per4(out["row_s"]) - per4(out["row_level_s"]))
    # Ops in one pixel step (the loop body covers four columns) of an odd row, and the
    # multiply-adds of its matmuls at this batch size.
    graph = rows[1].get_concrete_function(st, w, i, noise).graph.as_graph_def()
    bodies = [f for f in graph.library.function if "while_body" in f.signature.name]
    if bodies:
        nodes = [n for n in bodies[0].node_def if n.op not in ("Const", "Identity", "NoOp")]
        out["ops_per_step_odd_row"] = len(nodes) / 4.0
    F, Fn, n_up, n_down = fs.F, fs.Fn, fs.n_up[0], fs.n_down[0]
    macs = ((n_up + n_down) * (Fn * F + Fn * 2 * F) * 2     # 2 taps in matmuls
            + n_down * Fn * F)                              # the down pass's short-cuts
    out["matmul_gflop_per_step_odd_row"] = 2.0 * B * macs / 1e9
    out["pixel_loop_s_per_step"] = out["pixel_loop_total_s"] / (size * size)
    out.update(_floors(fs, w, B, size))
    return out


# Weights of the ul stream that only the row-level part reads (the taps on the row above,
# the u stream's short-cuts, the class and spatial terms); the pixel steps read the rest.
_ROW_LEVEL_FIELDS = {"top", "down", "r_top", "h", "a", "a_u", "s"}


def _step_bytes(x):
    """Bytes of the weights one pixel step reads, in the nest x of ``Weights`` pieces."""
    if x is None:
        return 0
    if hasattr(x, "_fields"):
        return sum(_step_bytes(getattr(x, f)) for f in x._fields if f not in _ROW_LEVEL_FIELDS)
    if isinstance(x, (list, tuple)):
        return sum(_step_bytes(v) for v in x)
    return int(x.shape.num_elements()) * x.dtype.size


def _floors(fs, w, B, size):
    """What bounds the two parts on this machine: a pixel step reads its levels' ul-stream
    weight matrices once, so one matrix product of B rows over as many bytes (on average over
    the positions), timed alone, times H*W steps is the per-pixel loop's floor; the row-level
    part's convolutions are matrix products of B*W rows, whose rate is timed on the shape of
    a gated resnet's conv2 (K = 6 Fn, N = 2F). Printed: the bytes per step, the product's
    seconds and that floor, the rate (GFLOP/s)."""
    # Level l (1/2**l resolution) steps on 1 of 4**l positions: the bytes per position.
    ul = w.ul_stream()
    nbytes = _step_bytes(ul._replace(levels=[])) + int(sum(
        _step_bytes(level) / 4 ** l for l, level in enumerate(ul.levels)))
    k = int((nbytes // 4) ** 0.5)
    mat, vec = tf.random.normal((k, nbytes // 4 // k)), tf.random.normal((B, k))
    mm = tf.function(tf.matmul, autograph=False)
    mm(vec, mat)
    matvec = _best(lambda: mm(vec, mat).numpy(), 20)
    M, K, N = B * size, 6 * fs.Fn, 2 * fs.F
    x, kern = tf.random.normal((M, K)), tf.random.normal((K, N))
    mm(x, kern)
    rate = 2.0 * M * K * N / _best(lambda: mm(x, kern).numpy(), 50) / 1e9
    return {"ul_weight_mb_per_step": nbytes / 1e6, "matvec_s_same_bytes": matvec,
            "pixel_loop_floor_s": matvec * size * size, "row_matmul_gflop_s": rate}


def main(argv):
    del argv
    if FLAGS.precision != "float32":
        import keras
        keras.mixed_precision.set_global_policy(FLAGS.precision)   # before the model is built
    result = {
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "tensorflow": tf.__version__},
        "model": {"nr_resnet": FLAGS.nr_resnet, "nr_filters": FLAGS.nr_filters,
                  "nr_logistic_mix": FLAGS.nr_logistic_mix, "precision": FLAGS.precision,
                  "fast_ops": FLAGS.fast_ops},
        "command": "python benchmarks/sample_speed.py " + " ".join(sys.argv[1:]),
        "runs": [],
    }
    jits = {"both": [False, True], "on": [True], "off": [False]}[FLAGS.xla]
    for size in (int(s) for s in FLAGS.sizes):
        model = _model(size)
        for B in (int(b) for b in FLAGS.batch_sizes):
            naive = _naive(model, B, size)
            for jit in jits:
                run = {"size": size, "batch_size": B, "xla": jit, **naive, **_fast(model, B,
                                                                                 size, jit)}
                run["speedup"] = run["naive_s"] / run["fast_s"]
                run["fast_images_per_s"] = B / run["fast_s"]
                if FLAGS.profile:
                    run["profile"] = _profile(model, B, size, jit)
                result["runs"].append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
    text = json.dumps(result, indent=2)
    print(text)
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    app.run(main)
