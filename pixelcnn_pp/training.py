"""The training loop of the original train.py on TensorFlow 2's distribution machinery.

``train(TrainConfig(...))`` is what ``train.py`` calls after parsing flags; tests call it too.
Semantics follow the original's train.py (docs/ORIGINAL.md §4): data-dependent init once on ``init_batch_size`` images, the
gradient of the summed NLL over the global batch (per-replica sums, added), the original's
Adam with the learning rate decayed before every step, Polyak averages for test bits/dim
and samples, dropout in training only.
"""

import dataclasses
import functools
import json
import math
import os
import signal
import sys
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from pixelcnn_pp import checkpoint as ckpt_lib
from pixelcnn_pp import cli, fast_ops
from pixelcnn_pp.config import ModelConfig
from pixelcnn_pp.data import check_data_set_name, make_loader
from pixelcnn_pp.likelihood import bits_per_dim, scale_images
from pixelcnn_pp.scoring import mutate_inputs
from pixelcnn_pp.optim import Adam, PolyakAverage
from pixelcnn_pp.errors import InvalidInputError

__all__ = ["TrainConfig", "train", "Run", "setup", "resume_or_initialise", "train_epoch",
           "evaluate", "log_and_save", "EpochResult", "learning_rate_at", "make_strategy",
           "make_steps", "distribute_batches",
           "NonFiniteLossError"]

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

@dataclasses.dataclass
class TrainConfig:
    """All of train.py's flags (the original's, with its defaults, plus ours)."""
    data_dir: str = "data_files"
    save_dir: str = "save"
    data_set: str = "demo"
    save_interval: int = 20
    load_params: bool = False
    model: str = "pixelcnn_pp"
    nr_resnet: int = 5
    nr_filters: int = 160
    nr_logistic_mix: int = 10
    resnet_nonlinearity: str = "concat_elu"
    class_conditional: bool = False
    energy_distance: bool = False
    num_layers: int = 15
    num_filters: int = 128
    learning_rate: float = 0.001
    lr_decay: float = 0.999995
    batch_size: int = 16
    init_batch_size: int = 16
    dropout_p: float = 0.5
    max_epochs: int = 5000
    nr_gpu: int = 8
    polyak_decay: float = 0.9995
    polyak_warmup: bool = True
    num_samples: int = 1
    seed: int = 1
    max_steps: Optional[int] = None
    strategy: str = "mirrored"
    precision: str = "float32"
    jit_compile: bool = False
    recompute: bool = False
    sample_method: str = "fast"
    # The faster computations of pixelcnn_pp/fast_ops.py (False: the original's ops only).
    fast_ops: bool = True
    quiet: bool = False
    strict_images: bool = False
    # Background models for likelihood ratios (docs/SCORING.md); 0 = off.
    input_mutation_rate: float = 0.0
    l2_weight: float = 0.0

    def model_config(self, image_shape, num_labels):
        if self.class_conditional and not num_labels:
            raise InvalidInputError(f"--class_conditional needs a labelled data set; "
                             f"{self.data_set!r} has no labels")
        return ModelConfig(
            model=self.model, image_shape=tuple(image_shape), nr_resnet=self.nr_resnet,
            nr_filters=self.nr_filters, nr_logistic_mix=self.nr_logistic_mix,
            resnet_nonlinearity=self.resnet_nonlinearity, dropout_p=self.dropout_p,
            num_classes=num_labels if self.class_conditional else None,
            energy_distance=self.energy_distance, num_layers=self.num_layers,
            num_filters=self.num_filters)


class NonFiniteLossError(cli.RunError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""


# TrainConfig fields that must be >= 1 / >= 0 (train.py flags of the same names).
_POSITIVE = ("batch_size", "init_batch_size", "nr_resnet", "nr_filters", "nr_logistic_mix",
             "num_layers", "num_filters", "nr_gpu", "save_interval")
_NON_NEGATIVE = ("max_epochs", "num_samples")


def validate_config(cfg):
    """Raise cli.UsageError naming the flag if a TrainConfig value makes no sense, before
    anything starts (TensorFlow devices, data, the save_dir)."""
    for name in _POSITIVE + _NON_NEGATIVE:
        v = getattr(cfg, name)
        low = 1 if name in _POSITIVE else 0
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise cli.UsageError(f"--{name} must be an integer >= {low}; got {v!r}")
    if cfg.max_steps is not None and (not isinstance(cfg.max_steps, (int, np.integer))
                                      or cfg.max_steps < 1):
        raise cli.UsageError(f"--max_steps must be an integer >= 1 (or unset); got "
                             f"{cfg.max_steps!r}")
    checks = (("learning_rate", cfg.learning_rate > 0, "> 0"),
              ("lr_decay", 0 < cfg.lr_decay <= 1, "in (0, 1]"),
              ("dropout_p", 0 <= cfg.dropout_p < 1, "in [0, 1)"),
              ("polyak_decay", 0 <= cfg.polyak_decay <= 1, "in [0, 1]"),
              ("input_mutation_rate", 0 <= cfg.input_mutation_rate <= 1, "in [0, 1]"),
              ("l2_weight", cfg.l2_weight >= 0, ">= 0"))
    for name, ok, want in checks:
        v = getattr(cfg, name)
        if not (ok and math.isfinite(v)):
            raise cli.UsageError(f"--{name} must be {want}; got {v!r}")
    if not cfg.save_dir:
        raise cli.UsageError("--save_dir must name a folder")
    if cfg.precision not in PRECISIONS:
        raise cli.UsageError(f"--precision must be one of {', '.join(PRECISIONS)}; got "
                             f"{cfg.precision!r}")
    check_data_set_name(cfg.data_set)
    if cfg.recompute and cfg.model == "pixelcnn":
        raise cli.UsageError("--recompute is for PixelCNN++ (its gated resnet blocks); the "
                             "PixelCNN baseline has none: drop the flag")
    if cfg.strict_images and cfg.data_set != "folder":
        raise cli.UsageError("--strict_images is for --data_set folder (a folder of image files)")


# ---------------------------------------------------------------------------------- setup
def make_strategy(kind="mirrored", nr_gpu=1, log=print):
    """one_device | mirrored (nr_gpu GPUs; logical CPU devices without GPUs) | multi_worker."""
    if kind == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise InvalidInputError("--strategy multi_worker reads the cluster from the TF_CONFIG "
                             "environment variable, which is not set (see the README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if kind != "mirrored":
        raise InvalidInputError(f"--strategy must be mirrored, multi_worker or one_device; got {kind!r}")
    if gpus:
        if nr_gpu > len(gpus):
            log(f"--nr_gpu {nr_gpu} but only {len(gpus)} GPU(s) visible: using {len(gpus)}")
        n = min(nr_gpu, len(gpus))
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(n)])
    if nr_gpu > 1:
        # No GPU: run the replicas on logical CPU devices (how the tests run MirroredStrategy).
        cpus = tf.config.list_physical_devices("CPU")
        try:  # must happen before TensorFlow initialises its devices
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * nr_gpu)
        except RuntimeError:
            log("TensorFlow had already started: could not split the CPU into "
                f"{nr_gpu} logical devices")
        logical = tf.config.list_logical_devices("CPU")
        n = min(nr_gpu, len(logical))
        log(f"no GPU visible: {n} replica(s) on logical CPU devices")
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])
    return tf.distribute.OneDeviceStrategy("/cpu:0")


# ---------------------------------------------------------------------------------- state
class _DataState(tf.Module):
    """The loader's state at the start of the current epoch plus the batches done since, kept
    in the checkpoint so a resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(self, n):
        super().__init__()
        self.order = tf.Variable(tf.zeros([n], tf.int64), trainable=False)
        self.position = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.rng_keys = tf.Variable(tf.zeros([624], tf.int64), trainable=False)
        self.rng_pos = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.rng_has_gauss = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.rng_cached_gaussian = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.batches_done = tf.Variable(0, dtype=tf.int64, trainable=False)

    def record_epoch_start(self, loader):
        s = loader.get_state()
        self.order.assign(s["order"])
        self.position.assign(s["position"])
        self.rng_keys.assign(s["rng_keys"].astype(np.int64))
        self.rng_pos.assign(s["rng_pos"])
        self.rng_has_gauss.assign(s["rng_has_gauss"])
        self.rng_cached_gaussian.assign(s["rng_cached_gaussian"])
        self.batches_done.assign(0)

    def restore_into(self, loader):
        loader.set_state({
            "order": self.order.numpy(), "position": self.position.numpy(),
            "rng_keys": self.rng_keys.numpy().astype(np.uint32), "rng_pos": self.rng_pos.numpy(),
            "rng_has_gauss": self.rng_has_gauss.numpy(),
            "rng_cached_gaussian": self.rng_cached_gaussian.numpy()})


class _StopRequested:
    """SIGINT / SIGTERM set a flag; the loop saves a checkpoint and stops at the next step."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handler)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handler(self, signum, frame):
        if self.signum is not None:  # second signal: stop at once
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------------- steps
def one_hot_labels(y, num_classes):
    """int labels -> (B, num_classes) one-hot h for a conditional model; None otherwise."""
    return tf.one_hot(tf.cast(y, tf.int32), num_classes) if num_classes else None


def make_steps(strategy, model, optimizer, averages, objective, num_classes=None,
               jit_compile=False, input_mutation_rate=0.0, l2_weight=0.0, mutation_seed=0,
               fast=True):
    """The compiled training and evaluation steps of train() (benchmarks time these).

    ``train_step(x, y, lr)``: uint8 images and int labels (per replica, from
    ``distribute_batches``) and the learning rate -> the objective summed over the global
    batch (float32, nats). On every replica: forward with dropout, backward, then the
    optimizer's update (gradients summed over replicas) and the Polyak averages.
    ``eval_step(x, y)``: the summed objective with ``training=False``.

    jit_compile: XLA-compiles each replica's forward and backward pass (and the evaluation
    pass); the optimizer update, which all-reduces across replicas, stays outside XLA.

    input_mutation_rate: training images are ``mutate_inputs``-ed with this rate, afresh every
    step, seeded by (mutation_seed, the optimizer's step, the replica), so a resumed run sees
    the same mutations; evaluation is not mutated. l2_weight: W x the sum of squared trainable
    weights is added to the summed objective that is differentiated (the returned loss is the
    objective alone). Both 0: the plain steps.

    fast: the steps are traced with the fast_ops switch on (the default, as training runs)
    or off (the original's ops only), whatever the switch is when they are called.
    """
    def loss_and_grads(x, y):
        x = scale_images(x)
        with tf.GradientTape() as tape:
            out = model(x, h=one_hot_labels(y, num_classes), training=True)
            loss = objective(x, out)                  # summed over this replica's images
            total = loss
            if l2_weight:   # replicas' gradients are summed: each adds its share of the L2
                total = loss + (l2_weight / strategy.num_replicas_in_sync) * tf.add_n(
                    [tf.reduce_sum(tf.square(tf.cast(w, tf.float32)))
                     for w in model.trainable_variables])
            scaled = optimizer.scale_loss(total) if hasattr(optimizer, "scale_loss") else total
        return loss, tape.gradient(scaled, model.trainable_variables)

    def eval_loss(x, y):
        x = scale_images(x)
        return objective(x, model(x, h=one_hot_labels(y, num_classes), training=False))

    if jit_compile:
        loss_and_grads = tf.function(loss_and_grads, jit_compile=True, autograph=False)
        eval_loss = tf.function(eval_loss, jit_compile=True, autograph=False)

    def replica_train_step(x, y, lr):
        if input_mutation_rate:
            ctx = tf.distribute.get_replica_context()
            seed = tf.random.experimental.stateless_fold_in(
                tf.stack([tf.constant(mutation_seed, tf.int64),
                          tf.cast(optimizer.iterations, tf.int64)]),
                ctx.replica_id_in_sync_group if ctx is not None else 0)
            x = mutate_inputs(x, input_mutation_rate, seed)
        loss, grads = loss_and_grads(x, y)
        optimizer.learning_rate.assign(lr)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))  # all-reduce: SUM
        averages.update()
        return loss

    # autograph=False: the steps are plain TF (Python branches only on static values), and
    # AutoGraph's source re-reading is slow and fragile.
    @tf.function(autograph=False)
    def train_step(x, y, lr):
        with fast_ops.use(fast):
            losses = strategy.run(replica_train_step, args=(x, y, lr))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    @tf.function(autograph=False)
    def eval_step(x, y):
        with fast_ops.use(fast):
            losses = strategy.run(eval_loss, args=(x, y))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return train_step, eval_step


def distribute_batches(strategy, batches, image_shape, global_batch, with_labels):
    """numpy batches (x, or (x, y) when with_labels) -> a prefetched distributed tf.data
    pipeline of (uint8 x, int32 y) split across the replicas (y is zeros without labels)."""
    H, W, C = image_shape

    def gen():
        for b in batches:
            x, y = b if with_labels else (b, np.zeros(len(b), np.int32))
            yield x, y.astype(np.int32)

    ds = tf.data.Dataset.from_generator(gen, output_signature=(
        tf.TensorSpec((global_batch, H, W, C), tf.uint8),
        tf.TensorSpec((global_batch,), tf.int32))).prefetch(2)
    return strategy.experimental_distribute_dataset(ds)


# ---------------------------------------------------------------------------------- loop
def learning_rate_at(cfg, step):
    """The learning rate of step number ``step`` (1 for the first): lr * lr_decay ** step, as
    the original decays it before every step."""
    return cfg.learning_rate * cfg.lr_decay ** step


def train(cfg: TrainConfig, log=None):
    """Run (or resume) training as configured. Returns the list of metric dicts written.

    The phases, each a function of the ``Run`` that ``setup`` returns: ``resume_or_initialise``,
    then per epoch ``train_epoch``, ``evaluate`` and ``log_and_save``."""
    import keras
    validate_config(cfg)
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(cfg.precision)
    try:  # the policy and the fast_ops switch are process-wide: put back the caller's
        with fast_ops.use(cfg.fast_ops):
            run = setup(cfg, log)
            resume_or_initialise(run)
            with _StopRequested() as stop:
                while run.epoch_now() < cfg.max_epochs:
                    result = train_epoch(run, stop)
                    if result.ended_by == "signal":
                        run.log(f"signal {stop.signum}: saving a checkpoint at step "
                                f"{run.step_now()}")
                        run.save_checkpoint()
                        return run.written
                    log_and_save(run, result, evaluate(run))
                    if result.ended_by == "max_steps":
                        break
            run.writer.flush()
            return run.written
    finally:
        keras.mixed_precision.set_global_policy(before)


@dataclasses.dataclass
class Run:
    """Everything one training run holds, made by ``setup``."""
    cfg: TrainConfig
    log: object
    strategy: object
    chief: bool
    worker_dir: Optional[str]     # non-chief workers' scratch folder (multi-worker), or None
    train_data: object
    test_data: object
    model_config: ModelConfig
    model: object
    optimizer: object
    averages: PolyakAverage
    step: tf.Variable             # optimiser steps done
    epoch: tf.Variable            # epochs done
    data_state: "_DataState"
    parts: dict                   # what the checkpoint holds, by name
    checkpoint: tf.train.Checkpoint
    train_step: object
    eval_step: object
    writer: object
    resume_path: Optional[str] = None
    test_bpds: list = dataclasses.field(default_factory=list)
    written: list = dataclasses.field(default_factory=list)

    @property
    def global_batch(self):
        return self.cfg.batch_size * self.strategy.num_replicas_in_sync

    @property
    def image_shape(self):
        return self.model_config.image_shape

    @property
    def ckpt_dir(self):
        return os.path.join(self.worker_dir or self.cfg.save_dir, ckpt_lib.CKPT_SUBDIR)

    @property
    def metrics_path(self):
        return os.path.join(self.cfg.save_dir, "metrics.jsonl")

    @property
    def npz_path(self):
        return os.path.join(self.cfg.save_dir,
                            f"test_bpd_{self.cfg.data_set.replace(':', '_')}.npz")

    def step_now(self):
        return int(self.step.numpy())

    def epoch_now(self):
        return int(self.epoch.numpy())

    def bits_per_dim(self, nats, images):
        return bits_per_dim(nats, images, self.image_shape) if images else float("nan")

    def distributed(self, batches):
        return distribute_batches(self.strategy, batches, self.image_shape, self.global_batch,
                                  self.cfg.class_conditional)

    def save_checkpoint(self):
        # Verified before older checkpoints go (pixelcnn_pp/checkpoint.py); a failed save
        # raises CheckpointSaveError naming the cause and the checkpoint to resume from.
        ckpt_lib.save_checkpoint(self.checkpoint, self.ckpt_dir, self.step_now(),
                                 max_to_keep=1 if self.worker_dir else 3)


def setup(cfg, log=None):
    """Devices, data, the model, its optimiser and averages, the compiled steps: a ``Run``.
    Checks the save_dir against --load_params first; creates the save_dir and the TensorBoard
    writer, and writes no other file."""
    if log is None:
        log = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, flush=True))
    os.makedirs(cfg.save_dir, exist_ok=True)
    strategy = make_strategy(cfg.strategy, cfg.nr_gpu, log)  # before anything starts TF
    # Multi-worker: every worker runs the same steps (collectives), only the chief writes
    # outputs; the others save their (identical) checkpoints to a scratch folder.
    chief, worker_dir = _chief_and_scratch(strategy, cfg.save_dir)
    if not chief:
        log = lambda *a: None  # noqa: E731
    import keras
    keras.utils.set_random_seed(cfg.seed)  # python, numpy, TF and Keras's initializers
    global_batch = cfg.batch_size * strategy.num_replicas_in_sync
    labels = cfg.class_conditional
    train_data = make_loader(cfg.data_set, cfg.data_dir, "train", global_batch,
                             rng=np.random.RandomState(cfg.seed), shuffle=True,
                             return_labels=labels, strict_images=cfg.strict_images)
    test_data = make_loader(cfg.data_set, cfg.data_dir, "test", global_batch, shuffle=False,
                            return_labels=labels, strict_images=cfg.strict_images)
    model_config = cfg.model_config(tuple(train_data.get_observation_size()),
                                    train_data.get_num_labels())
    resume_path = _checkpoint_to_resume(cfg, model_config, chief)

    with strategy.scope():
        model = ckpt_lib.build_model(model_config, seed=cfg.seed)
        if cfg.recompute:
            model.recompute = True
        optimizer = Adam(learning_rate=cfg.learning_rate)
        if cfg.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        # Deviation: the decay warms up as tf.train.ExponentialMovingAverage's with
        # num_updates (min(decay, (1 + t) / (10 + t))); --nopolyak_warmup: the original's
        # constant decay.
        averages = PolyakAverage(model.trainable_variables, decay=cfg.polyak_decay,
                                 warmup=cfg.polyak_warmup)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        data_state = _DataState(len(train_data.data))
    parts = dict(model=model, averages=averages, optimizer=optimizer, step=step, epoch=epoch,
                 data=data_state)
    if model.rng is not None:   # the generator of its dropout masks (the baseline has none)
        parts["rng"] = model.rng
    train_step, eval_step = make_steps(strategy, model, optimizer, averages, model.objective,
                                       model_config.num_classes, jit_compile=cfg.jit_compile,
                                       input_mutation_rate=cfg.input_mutation_rate,
                                       l2_weight=cfg.l2_weight, mutation_seed=cfg.seed,
                                       fast=cfg.fast_ops)
    writer = tf.summary.create_file_writer(
        os.path.join(worker_dir or cfg.save_dir, "tensorboard"))
    return Run(cfg=cfg, log=log, strategy=strategy, chief=chief, worker_dir=worker_dir,
               train_data=train_data, test_data=test_data, model_config=model_config,
               model=model, optimizer=optimizer, averages=averages, step=step, epoch=epoch,
               data_state=data_state, parts=parts, checkpoint=tf.train.Checkpoint(**parts),
               train_step=train_step,
               eval_step=eval_step, writer=writer, resume_path=resume_path)


def _checkpoint_to_resume(cfg, model_config, chief):
    """The checkpoint --load_params resumes (None without it); errors for a save_dir that
    cannot be resumed, or that would be overwritten without --load_params."""
    if not cfg.load_params:
        if chief and ckpt_lib.list_checkpoints(cfg.save_dir):
            newest = ckpt_lib.list_checkpoints(cfg.save_dir)[0][1]
            raise FileExistsError(
                f"{cfg.save_dir!r} already holds a checkpoint ({os.path.basename(newest)} in "
                f"{os.path.dirname(newest)}): pass --load_params to resume it, or choose "
                "another --save_dir (nothing is overwritten)")
        return None
    none_yet = ckpt_lib.NoCheckpointError(
        f"--load_params: no checkpoint in {cfg.save_dir!r} to resume (its training saved "
        "none yet): run without --load_params to start afresh")
    if not ckpt_lib.list_checkpoints(cfg.save_dir):
        raise none_yet
    saved, _ = ckpt_lib.read_config(cfg.save_dir)
    diff = saved.differences(model_config)
    if diff:
        raise cli.UsageError(
            "--load_params: these settings differ from the checkpoint's and would change "
            "the model: " + ", ".join(f"{k}: saved {a} vs now {b}"
                                      for k, (a, b) in sorted(diff.items()))
            + ". Use the saved values or a new --save_dir.")
    # The newest checkpoint that reads back whole; damaged newer ones are renamed
    # ckpt-N.damaged.* (kept) and reported.
    path = ckpt_lib.find_intact_checkpoint(
        cfg.save_dir, warn=(lambda m: print(f"warning: {m}", file=sys.stderr, flush=True))
        if chief else (lambda m: None), what="resuming from")
    if path is None:
        raise none_yet
    return path


def _phase(fn):
    """A phase of training runs with the fast_ops switch of its run's config (train() sets it
    for the whole run; a phase called on its own does too), and restores the caller's."""
    @functools.wraps(fn)
    def phase(run, *args, **kwargs):
        with fast_ops.use(run.cfg.fast_ops):
            return fn(run, *args, **kwargs)
    return phase


@_phase
def resume_or_initialise(run):
    """Restore the checkpoint being resumed (model, optimiser, averages, counters, the data
    order and position), or write config.json and run the data-dependent initialisation."""
    cfg = run.cfg
    if run.resume_path:
        if PolyakAverage.counter_in_checkpoint(run.resume_path):
            run.checkpoint.restore(run.resume_path).assert_existing_objects_matched()
        else:  # written before the averages counted their updates: count from the step
            tf.train.Checkpoint(**{**run.parts, "averages": run.averages.without_counter()}
                                ).restore(run.resume_path).assert_existing_objects_matched()
            run.averages.num_updates.assign(run.step)
        run.data_state.restore_into(run.train_data)
        for _ in range(int(run.data_state.batches_done.numpy())):
            next(run.train_data)  # skip the batches of this epoch already trained on
        run.log(f"resumed from {run.resume_path} at epoch {run.epoch_now()}, "
                f"step {run.step_now()}")
        _resume_outputs(run)
        return
    if run.chief:
        ckpt_lib.write_config(cfg.save_dir, run.model_config, dataclasses.asdict(cfg))
    # Data-dependent init on the first init_batch_size images of the shuffled train set,
    # on one device (cross-replica), so its statistics equal a single-device init.
    batch = run.train_data.next(cfg.init_batch_size)
    x_init, y_init = batch if cfg.class_conditional else (batch, None)
    run.log("initializing the model...")
    with run.strategy.scope():
        run.model.initialize(scale_images(x_init),
                             h=one_hot_labels(y_init, run.model_config.num_classes))
        run.averages.reset()  # deviation: averages start from the data-initialised weights
    # No rewind, as the original's train.py: epoch 0 goes on from the batch after the init
    # batch in the same order, so a seed gives the original's batches.
    run.data_state.record_epoch_start(run.train_data)


def _resume_outputs(run):
    """The test bits/dim history of a resumed run; rows of epochs after the restored step (a
    fallback past a damaged checkpoint, or a run that went on after its last save) and of the
    epoch being resumed go to side files, so that metrics.jsonl never holds an epoch twice."""
    if os.path.exists(run.npz_path):
        run.test_bpds = list(np.load(run.npz_path)["test_bpd"])
    if not run.chief:
        return
    kept = _set_aside_metrics(run.metrics_path, run.step_now(), run.epoch_now(), run.log)
    if kept is not None and len(run.test_bpds) > kept:
        _atomic_savez(f"{run.npz_path[:-4]}.after-step-{run.step_now()}.npz",
                      test_bpd=np.asarray(run.test_bpds[kept:]))
        run.test_bpds = run.test_bpds[:kept]
        _atomic_savez(run.npz_path, test_bpd=np.asarray(run.test_bpds))


@dataclasses.dataclass
class EpochResult:
    """What ``train_epoch`` did: the epoch's number, its summed training NLL (nats) over
    ``images`` images, its time, and why it ended early ("max_steps", "signal") or None."""
    epoch: int
    nats: float
    images: int
    seconds: float
    ended_by: Optional[str]


@_phase
def train_epoch(run, stop=None):
    """Train on the rest of the current epoch (all of it unless resumed part way), one
    compiled step per global batch; stops early at --max_steps or when ``stop.signum`` is
    set (a signal). A completed epoch advances the epoch counter and records the loader's
    state for the next."""
    cfg, t0 = run.cfg, time.time()
    ep = run.epoch_now()
    nats, images, ended_by = 0.0, 0, None
    position = int(run.train_data.get_state()["position"])
    n_batches = (len(run.train_data.data) - position) // run.global_batch  # left this epoch
    bar = cli.ProgressBar(unit="steps", images_per_unit=run.global_batch, stream=sys.stdout,
                          tty_only=True)
    bar.enabled = bar.enabled and not cfg.quiet
    done = 0
    for i, (x, y) in enumerate(run.distributed(run.train_data)):
        lr = learning_rate_at(cfg, run.step_now() + 1)
        loss = float(run.train_step(x, y, tf.constant(lr, tf.float32)))
        if not math.isfinite(loss):
            raise NonFiniteLossError(_non_finite_message(
                loss, run.step_now() + 1, run.ckpt_dir, cfg.learning_rate))
        run.step.assign_add(1)
        run.data_state.batches_done.assign_add(1)
        if i == 0 and fast_ops.enabled():
            fast_ops.freeze_gc()  # Deviation (fast_ops): the traced step out of the GC's walk
        nats += loss
        images += run.global_batch
        done = i + 1
        bar(done, n_batches, f"bpd {run.bits_per_dim(loss, run.global_batch):.4f}")
        if cfg.max_steps is not None and run.step_now() >= cfg.max_steps:
            ended_by = "max_steps"
            break
        if stop is not None and stop.signum is not None:
            ended_by = "signal"
            break
    if ended_by is None:  # a full epoch
        run.epoch.assign_add(1)
        run.data_state.record_epoch_start(run.train_data)
    if done < n_batches:
        bar.end()
    return EpochResult(ep, nats, images, time.time() - t0, ended_by)


@_phase
def evaluate(run):
    """Test bits/dim of the whole test split with the Polyak averages, as the original."""
    total, n = 0.0, 0
    with run.averages.swap():
        for x, y in run.distributed(run.test_data):
            total += float(run.eval_step(x, y))
            n += run.global_batch
    if fast_ops.enabled():
        fast_ops.freeze_gc()  # Deviation (fast_ops): the traced step out of the GC's walk
    if n == 0:
        run.log(f"warning: the test split holds no full batch of {run.global_batch} images: "
                "test bits/dim is nan (lower --batch_size)")
    return run.bits_per_dim(total, n)


@_phase
def log_and_save(run, result, test_bpd):
    """The epoch's line, its row of metrics.jsonl, TensorBoard scalars; every
    --save_interval epochs and at the end, samples (PNG tile + .npz) and a checkpoint."""
    cfg, step = run.cfg, run.step_now()
    train_bpd = run.bits_per_dim(result.nats, result.images)
    run.test_bpds.append(test_bpd)
    seconds = result.seconds
    run.log(f"Iteration {result.epoch}, time = {seconds:.0f}s, train bits_per_dim = "
            f"{train_bpd:.4f}, test bits_per_dim = {test_bpd:.4f}")
    lr_now = learning_rate_at(cfg, step)
    record = {"epoch": result.epoch, "step": step, "train_bpd": train_bpd,
              "test_bpd": test_bpd, "seconds": seconds, "lr": lr_now,
              "images_per_second": result.images / seconds if seconds else None}
    if run.chief:
        with open(run.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
    run.written.append(record)
    with run.writer.as_default(step=step):
        tf.summary.scalar("train/bits_per_dim", train_bpd)
        tf.summary.scalar("test/bits_per_dim", test_bpd)
        tf.summary.scalar("train/learning_rate", lr_now)
    last = result.ended_by == "max_steps" or run.epoch_now() >= cfg.max_epochs
    if result.epoch % cfg.save_interval == 0 or last:
        if run.chief:
            if cfg.num_samples > 0:
                _write_samples(run, result.epoch)
            _atomic_savez(run.npz_path, test_bpd=np.asarray(run.test_bpds))
        run.save_checkpoint()
    return record


def _chief_and_scratch(strategy, save_dir):
    """(is this the chief worker?, a scratch save folder for non-chief workers or None)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True, None
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief" or (task_type == "worker" and task_id == 0
                                and "chief" not in resolver.cluster_spec().as_dict()):
        return True, None
    return False, os.path.join(save_dir, f".worker_{task_type}_{task_id}")


def _non_finite_message(loss, at_step, ckpt_dir, learning_rate):
    """What a NaN/inf loss means for the user: which checkpoint is kept, if any, and what to
    change."""
    newest = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
    lower = f"a lower --learning_rate (now {learning_rate:g})"
    if newest is None:
        return (f"the training loss became {loss} at step {at_step}: stopping. No checkpoint "
                f"exists yet (the first is saved after epoch 0): run again with {lower}")
    return (f"the training loss became {loss} at step {at_step}: stopping; the last good "
            f"checkpoint, {newest}, is kept: resume from it with --load_params and {lower}")


def _set_aside_metrics(path, step, epoch, log):
    """Move the rows of metrics.jsonl with a step after ``step``, or of epoch ``epoch`` or later
    (the one a resumed run is about to finish), to ``path.after-step-<step>`` (appended).
    Returns how many rows stay (None when there is no file)."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        lines = [l for l in f.read().splitlines() if l.strip()]
    keep, aside = [], []
    for line in lines:
        try:
            row = json.loads(line)
            later = row.get("step", 0) > step or row.get("epoch", -1) >= epoch
        except (ValueError, AttributeError, TypeError):
            later = False   # not ours to judge: stays where it was
        (aside if later else keep).append(line)
    if aside:
        side = f"{path}.after-step-{step}"
        with open(side, "a") as f:
            f.write("".join(l + "\n" for l in aside))
            f.flush()
            os.fsync(f.fileno())
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join(l + "\n" for l in keep))
        os.replace(tmp, path)
        log(f"set aside {len(aside)} row(s) of {path} after step {step} (the restored "
            f"checkpoint's) in {side}")
    return len(keep)


def _atomic_savez(path, **arrays):
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _write_samples(run, ep):
    """num_samples batches of samples with the averaged weights: PNG tile + .npz."""
    from pixelcnn_pp import plotting
    cfg, config = run.cfg, run.model_config
    n, K = cfg.batch_size, config.num_classes
    images = []
    for k in range(cfg.num_samples):
        # labels arange(n) mod K, as the original
        h = tf.one_hot(np.arange(n) % K, K) if K else None
        with run.averages.swap():
            x = run.model.sample_images(n, config.image_shape, h=h,
                                        seed=cfg.seed * 100003 + ep * 1009 + k,
                                        method=cfg.sample_method)
        images.append(np.asarray(x))
    u8 = plotting.images_to_uint8(np.concatenate(images))
    base = os.path.join(cfg.save_dir, f"{cfg.data_set.replace(':', '_')}_sample{ep}")
    plotting.save_tile(base + ".png", u8[:100])
    _atomic_savez(base + ".npz", images=u8)
    with run.writer.as_default(step=ep):
        tf.summary.image("samples", u8[:16].astype(np.float32) / 255.0, max_outputs=16)
    run.log(f"wrote {len(u8)} samples to {base}.png / .npz")
