"""The training loop of the original train.py, as named phases of a ``Run``.

``train(TrainConfig(...))`` is what ``train.py`` calls after parsing flags; tests call it and
the phases too. Semantics follow the original's train.py (docs/ORIGINAL.md §4):
data-dependent init once on ``init_batch_size`` images, the gradient of the summed NLL over
the global batch (per-replica sums, added), the original's Adam with the learning rate
decayed before every step, Polyak averages for test bits/dim and samples, dropout in
training only.
"""

import dataclasses
import math
import signal
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from pixelcnn_pp import checkpoint as ckpt_lib
from pixelcnn_pp import fast_ops
from pixelcnn_pp.config import TrainConfig
from pixelcnn_pp.errors import RunError
from pixelcnn_pp.optim import PolyakAverage
from pixelcnn_pp.training import outputs
from pixelcnn_pp.training.run import setup
from pixelcnn_pp.likelihood import model_inputs
from pixelcnn_pp.training.steps import one_hot_labels, spatial_kwarg

__all__ = ["train", "resume_or_initialise", "train_epoch", "evaluate", "log_and_save",
           "EpochResult", "learning_rate_at", "NonFiniteLossError"]


class NonFiniteLossError(RunError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""


def learning_rate_at(cfg, step):
    """The learning rate of step number ``step`` (1 for the first): lr * lr_decay ** step, as
    the original decays it before every step."""
    return cfg.learning_rate * cfg.lr_decay ** step


def train(cfg: TrainConfig, log=None, progress=None):
    """Run (or resume) training as configured. Returns the list of metric dicts written.

    The phases, each a function of the ``Run`` that ``setup`` returns: ``resume_or_initialise``,
    then per epoch ``train_epoch``, ``evaluate`` and ``log_and_save``. ``progress``: see
    ``Run.progress`` (the command line passes a progress bar)."""
    import keras
    cfg.validate()
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(cfg.precision)
    try:  # the precision policy is process-wide: put back the caller's
        run = setup(cfg, log, progress)
        resume_or_initialise(run)
        with StopRequested() as stop:
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


class StopRequested:
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


def resume_or_initialise(run):
    """Restore the checkpoint being resumed (model, optimiser, averages, counters, the data
    order and position), or write config.json and run the data-dependent initialisation."""
    cfg = run.cfg
    if run.resume_path:
        # Deviation: resuming is exact (counters, learning rate, data order and position,
        # dropout generator, averages); the original restarted its epochs, lr and data order.
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
        outputs.resume_outputs(run)
        return
    if run.chief:
        ckpt_lib.write_config(cfg.save_dir, run.model_config, dataclasses.asdict(cfg))
    # Data-dependent init on the first init_batch_size images of the shuffled train set,
    # on one device (cross-replica), so its statistics equal a single-device init.
    x_init, y_init, s_init = run.split(run.train_data.next(cfg.init_batch_size))
    run.log("initializing the model...")
    with run.strategy.scope():
        run.model.initialize(model_inputs(tf.constant(x_init)),
                             h=one_hot_labels(y_init, run.model_config.num_classes),
                             **spatial_kwarg(s_init))
        run.averages.reset()  # Deviation: averages start from the data-initialised weights
    # No rewind, as the original's train.py: epoch 0 goes on from the batch after the init
    # batch in the same order, so a seed gives the original's batches.
    run.data_state.record_epoch_start(run.train_data)


@dataclasses.dataclass
class EpochResult:
    """What ``train_epoch`` did: the epoch's number, its summed training NLL (nats) over
    ``images`` images, its time, and why it ended early ("max_steps", "signal") or None."""
    epoch: int
    nats: float
    images: int
    seconds: float
    ended_by: Optional[str]


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
    bar = run.progress(run.global_batch) if run.progress else None
    done = 0
    for i, batch in enumerate(run.distributed(run.train_data)):     # (x, y) or (x, y, s)
        lr = learning_rate_at(cfg, run.step_now() + 1)
        loss = float(run.train_step(*batch[:2], tf.constant(lr, tf.float32), *batch[2:]))
        if not math.isfinite(loss):
            raise NonFiniteLossError(outputs.non_finite_message(
                loss, run.step_now() + 1, run.ckpt_dir, cfg.learning_rate))
        run.step.assign_add(1)
        run.data_state.batches_done.assign_add(1)
        if i == 0 and cfg.fast_ops:
            fast_ops.freeze_gc()  # Deviation (fast_ops): the traced step out of the GC's walk
        nats += loss
        images += run.global_batch
        done = i + 1
        if bar:
            bar(done, n_batches, f"{run.unit} {run.bits_per_dim(loss, run.global_batch):.4f}")
        if cfg.max_steps is not None and run.step_now() >= cfg.max_steps:
            ended_by = "max_steps"
            break
        if stop is not None and stop.signum is not None:
            ended_by = "signal"
            break
    if ended_by is None:  # a full epoch
        run.epoch.assign_add(1)
        run.data_state.record_epoch_start(run.train_data)
    if bar and done < n_batches:
        bar.end()
    return EpochResult(ep, nats, images, time.time() - t0, ended_by)


def evaluate(run):
    """Test bits/dim of the whole test split with the Polyak averages, as the original."""
    total, n = 0.0, 0
    with run.averages.swap(), run.eval_step.fixed_weights():
        for batch in run.distributed(run.test_data):
            total += float(run.eval_step(*batch))
            n += run.global_batch
    if run.cfg.fast_ops:
        fast_ops.freeze_gc()  # Deviation (fast_ops): the traced step out of the GC's walk
    if n == 0:
        run.log(f"warning: the test split holds no full batch of {run.global_batch} images: "
                "test bits/dim is nan (lower --batch_size)")
    return run.bits_per_dim(total, n)


def log_and_save(run, result, test_bpd):
    """The epoch's line, its row of metrics.jsonl, TensorBoard scalars; every
    --save_interval epochs and at the end, samples (PNG tile + .npz) and a checkpoint."""
    cfg, step = run.cfg, run.step_now()
    train_bpd = run.bits_per_dim(result.nats, result.images)
    run.test_bpds.append(test_bpd)
    seconds = result.seconds
    run.log(f"Iteration {result.epoch}, time = {seconds:.0f}s, train {run.unit} = "
            f"{train_bpd:.4f}, test {run.unit} = {test_bpd:.4f}")
    lr_now = learning_rate_at(cfg, step)
    record = {"epoch": result.epoch, "step": step, "train_bpd": train_bpd,
              "test_bpd": test_bpd, "seconds": seconds, "lr": lr_now,
              "images_per_second": result.images / seconds if seconds else None}
    if run.chief:
        outputs.append_metrics(run.metrics_path, record)
    run.written.append(record)
    with run.writer.as_default(step=step):
        tf.summary.scalar(f"train/{run.unit}", train_bpd)
        tf.summary.scalar(f"test/{run.unit}", test_bpd)
        tf.summary.scalar("train/learning_rate", lr_now)
    last = result.ended_by == "max_steps" or run.epoch_now() >= cfg.max_epochs
    if result.epoch % cfg.save_interval == 0 or last:
        if run.chief:
            if cfg.num_samples > 0:
                outputs.write_samples(run, result.epoch)
            outputs.atomic_savez(run.npz_path, test_bpd=np.asarray(run.test_bpds))
        run.save_checkpoint()
    return record
