"""A training run's state, made once by ``setup``: devices (the distribution strategy), data,
the model with its optimiser and averages, the counters and the data order the checkpoint
keeps, the compiled steps."""

import dataclasses
import os
import sys
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from pixelcnn_pp import checkpoint as ckpt_lib
from pixelcnn_pp.config import ModelConfig, TrainConfig
from pixelcnn_pp.data import make_loader
from pixelcnn_pp.errors import InvalidInputError, UsageError
from pixelcnn_pp.likelihood import bits_per_dim
from pixelcnn_pp.optim import Adam, PolyakAverage
from pixelcnn_pp.training.steps import distribute_batches, make_steps, split_batch

__all__ = ["Run", "setup", "make_strategy"]


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
        raise InvalidInputError(f"--strategy must be mirrored, multi_worker or one_device; got "
                                f"{kind!r}")
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


class DataState(tf.Module):
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
    data_state: "DataState"
    parts: dict                   # what the checkpoint holds, by name
    checkpoint: tf.train.Checkpoint
    train_step: object
    eval_step: object
    writer: object
    resume_path: Optional[str] = None
    # progress(images_per_step) -> a bar, bar(done, total, extra) and bar.end(); None: none
    progress: Optional[Callable] = None
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

    @property
    def unit(self):
        """What the NLL is reported in: bits per sub-pixel, or per code of a code map."""
        return "bits_per_code" if self.model_config.num_categories else "bits_per_dim"

    @property
    def spatial_shape(self):
        """(Hs, Ws, D) of the spatial condition maps, or None."""
        return self.train_data.get_spatial_shape() if self.cfg.spatial_conditioning else None

    def split(self, batch):
        """A loader's batch -> (x, y or None, s or None)."""
        return split_batch(batch, self.cfg.class_conditional, self.cfg.spatial_conditioning)

    def distributed(self, batches):
        return distribute_batches(self.strategy, batches, self.image_shape, self.global_batch,
                                  self.cfg.class_conditional, self.spatial_shape)

    def save_checkpoint(self):
        # Verified before older checkpoints go (pixelcnn_pp/checkpoint.py); a failed save
        # raises CheckpointSaveError naming the cause and the checkpoint to resume from.
        ckpt_lib.save_checkpoint(self.checkpoint, self.ckpt_dir, self.step_now(),
                                 max_to_keep=1 if self.worker_dir else 3)


def setup(cfg, log=None, progress=None):
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
    asked = dict(return_labels=cfg.class_conditional, strict_images=cfg.strict_images,
                 return_spatial=cfg.spatial_conditioning)
    train_data = make_loader(cfg.data_set, cfg.data_dir, "train", global_batch,
                             rng=np.random.RandomState(cfg.seed), shuffle=True, **asked)
    test_data = make_loader(cfg.data_set, cfg.data_dir, "test", global_batch, shuffle=False,
                            **asked)
    model_config = cfg.model_config(train_data)
    resume_path = _checkpoint_to_resume(cfg, model_config, chief)

    with strategy.scope():
        model = ckpt_lib.build_model(model_config, seed=cfg.seed, fast_ops=cfg.fast_ops)
        if cfg.recompute:
            model.recompute = True
        optimizer = Adam(learning_rate=cfg.learning_rate, fused=cfg.fast_ops)
        if cfg.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        # Deviation: the decay warms up as tf.train.ExponentialMovingAverage's with
        # num_updates (min(decay, (1 + t) / (10 + t))); --nopolyak_warmup: the original's
        # constant decay.
        averages = PolyakAverage(model.trainable_variables, decay=cfg.polyak_decay,
                                 warmup=cfg.polyak_warmup, fused=cfg.fast_ops)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        data_state = DataState(len(train_data.data))
    parts = dict(model=model, averages=averages, optimizer=optimizer, step=step, epoch=epoch,
                 data=data_state)
    if model.rng is not None:   # the generator of its dropout masks (the baseline has none)
        parts["rng"] = model.rng
    train_step, eval_step = make_steps(strategy, model, optimizer, averages, model.objective,
                                       model_config.num_classes, jit_compile=cfg.jit_compile,
                                       input_mutation_rate=cfg.input_mutation_rate,
                                       l2_weight=cfg.l2_weight, mutation_seed=cfg.seed)
    writer = tf.summary.create_file_writer(
        os.path.join(worker_dir or cfg.save_dir, "tensorboard"))
    return Run(cfg=cfg, log=log, strategy=strategy, chief=chief, worker_dir=worker_dir,
               train_data=train_data, test_data=test_data, model_config=model_config,
               model=model, optimizer=optimizer, averages=averages, step=step, epoch=epoch,
               data_state=data_state, parts=parts, checkpoint=tf.train.Checkpoint(**parts),
               train_step=train_step,
               eval_step=eval_step, writer=writer, resume_path=resume_path, progress=progress)


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
        raise UsageError(
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
