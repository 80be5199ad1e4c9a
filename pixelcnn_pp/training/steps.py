"""The compiled training and evaluation steps (``tf.function``s with ``strategy.run`` over the
replicas inside; evaluation's normalises the weights once per pass in a function of its own)
and the input pipeline that feeds them. Benchmarks time these."""

import contextlib

import numpy as np
import tensorflow as tf

from pixelcnn_pp.fast_ops import reuse_freed_buffers
from pixelcnn_pp.likelihood import model_inputs
from pixelcnn_pp.scoring import mutate_inputs

__all__ = ["one_hot_labels", "make_steps", "EvalStep", "split_batch", "distribute_batches"]


def one_hot_labels(y, num_classes):
    """int labels -> (B, num_classes) one-hot h for a conditional model; None otherwise."""
    return tf.one_hot(tf.cast(y, tf.int32), num_classes) if num_classes else None


def spatial_kwarg(s):
    """``spatial=s`` for a model with a spatial condition; nothing for the others (the
    baseline takes no such argument)."""
    return {} if s is None else {"spatial": s}


def make_steps(strategy, model, optimizer, averages, objective, num_classes=None,
               jit_compile=False, input_mutation_rate=0.0, l2_weight=0.0, mutation_seed=0):
    """The compiled training and evaluation steps of train() (benchmarks time these).

    ``train_step(x, y, lr, s=None)``: uint8 images (or int32 code maps), int labels and
    spatial condition maps s (per replica, from ``distribute_batches``; s only for a model
    with a spatial condition) and the learning rate -> the objective summed over the global
    batch (float32, nats). On every replica: forward with dropout, backward, then the
    optimizer's update (gradients summed over replicas) and the Polyak averages.
    ``eval_step(x, y, s=None)``: the summed objective with ``training=False``; an EvalStep,
    whose ``fixed_weights()`` block computes the normalised weights once for a pass.

    jit_compile: XLA-compiles each replica's forward and backward pass (and the evaluation
    pass); the optimizer update, which all-reduces across replicas, stays outside XLA.

    input_mutation_rate: training images (or code maps) are ``mutate_inputs``-ed with this
    rate, afresh every step, seeded by (mutation_seed, the optimizer's step, the replica), so a
    resumed run sees the same mutations; evaluation is not mutated. l2_weight: W x the sum of
    squared trainable weights is added to the summed objective that is differentiated (the
    returned loss is the objective alone). Both 0: the plain steps.

    Speed choices (pixelcnn_pp/fast_ops.py) are the model's, the optimizer's and the
    averages' own, made when they were built.
    """
    def loss_and_grads(x, y, s):
        x = model_inputs(x)
        with tf.GradientTape() as tape:
            out = model(x, h=one_hot_labels(y, num_classes), training=True,
                        **spatial_kwarg(s))
            loss = objective(x, out)                  # summed over this replica's images
            total = loss
            if l2_weight:   # replicas' gradients are summed: each adds its share of the L2
                total = loss + (l2_weight / strategy.num_replicas_in_sync) * tf.add_n(
                    [tf.reduce_sum(tf.square(tf.cast(w, tf.float32)))
                     for w in model.trainable_variables])
            scaled = optimizer.scale_loss(total) if hasattr(optimizer, "scale_loss") else total
        return loss, tape.gradient(scaled, model.trainable_variables)

    def eval_loss(x, y, w, s=None):
        x = model_inputs(x)
        with given_weights(model, w):
            return objective(x, model(x, h=one_hot_labels(y, num_classes), training=False,
                                      **spatial_kwarg(s)))

    if jit_compile:
        loss_and_grads = tf.function(loss_and_grads, jit_compile=True, autograph=False)
        eval_loss = tf.function(eval_loss, jit_compile=True, autograph=False)

    def replica_train_step(x, y, lr, s=None):
        if input_mutation_rate:
            ctx = tf.distribute.get_replica_context()
            seed = tf.random.experimental.stateless_fold_in(
                tf.stack([tf.constant(mutation_seed, tf.int64),
                          tf.cast(optimizer.iterations, tf.int64)]),
                ctx.replica_id_in_sync_group if ctx is not None else 0)
            x = mutate_inputs(x, input_mutation_rate, seed, model.num_categories or 256)
        # Deviation: gradients first, then Adam's update, then the averages, in that order;
        # the original's train op groups them unordered (a race, docs/ORIGINAL.md §4).
        loss, grads = loss_and_grads(x, y, s)
        optimizer.learning_rate.assign(lr)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))  # all-reduce: SUM
        averages.update()
        return loss

    # autograph=False: the steps are plain TF (Python branches only on static values), and
    # AutoGraph's source re-reading is slow and fragile.
    @tf.function(autograph=False)
    def train_step(x, y, lr, s=None):
        args = (x, y, lr) if s is None else (x, y, lr, s)
        losses = strategy.run(replica_train_step, args=args)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    @tf.function(autograph=False)
    def eval_weights():
        return strategy.run(effective_weights, args=(model,))

    @tf.function(autograph=False)
    def eval_step(w, x, y, s=None):
        losses = strategy.run(eval_loss, args=(x, y, w) if s is None else (x, y, w, s))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return train_step, EvalStep(eval_weights, eval_step)


def effective_weights(model):
    """The model's ``effective_weights()`` (weight-normed layers), or [] for a model without
    them (the masked PixelCNN baseline)."""
    return model.effective_weights() if hasattr(model, "effective_weights") else []


def given_weights(model, weights):
    """``model.given_weights(weights)``, or nothing to do for a model without them."""
    if hasattr(model, "given_weights"):
        return model.given_weights(weights)
    return contextlib.nullcontext()


class EvalStep:
    """``eval_step(x, y, s=None)``: the objective summed over the global batch,
    ``training=False``.

    Inside ``with eval_step.fixed_weights():`` (an evaluation pass: the weights do not change)
    the weight-normed layers' effective weights are computed once, on entry, and every step
    uses them; outside, each call computes them first. The values are the same either way;
    the original normalises the weights again in every step of its test loop."""

    def __init__(self, weights_fn, step_fn):
        self._weights_fn, self._step_fn, self._fixed = weights_fn, step_fn, None

    @contextlib.contextmanager
    def fixed_weights(self):
        self._fixed = self._weights_fn()
        try:
            yield self
        finally:
            self._fixed = None

    def __call__(self, x, y, s=None):
        w = self._fixed if self._fixed is not None else self._weights_fn()
        return self._step_fn(w, x, y) if s is None else self._step_fn(w, x, y, s)


def split_batch(batch, with_labels, with_spatial):
    """A loader's batch (x; (x, y); (x, s); (x, y, s)) -> (x, y or None, s or None)."""
    if not (with_labels or with_spatial):
        return batch, None, None
    x, rest = batch[0], list(batch[1:])
    y = rest.pop(0) if with_labels else None
    return x, y, (rest.pop(0) if with_spatial else None)


def distribute_batches(strategy, batches, image_shape, global_batch, with_labels,
                       spatial_shape=None):
    """numpy batches (as ``split_batch`` reads them) -> a prefetched distributed tf.data
    pipeline of (x, int32 y) or, with ``spatial_shape`` (Hs, Ws, D), (x, y, float32 s), split
    across the replicas: x uint8 images (H, W, C) or int32 code maps (H, W) by
    ``image_shape``; y zeros without labels. An iterable: each ``iter()`` starts a pass
    (the distributed dataset itself is its ``dataset``)."""
    codes = len(image_shape) == 2

    def gen():
        for b in batches:
            x, y, s = split_batch(b, with_labels, spatial_shape is not None)
            y = np.zeros(len(x), np.int32) if y is None else y.astype(np.int32)
            x = x.astype(np.int32) if codes else x
            yield (x, y) if s is None else (x, y, s.astype(np.float32))

    signature = (tf.TensorSpec((global_batch,) + tuple(image_shape),
                               tf.int32 if codes else tf.uint8),
                 tf.TensorSpec((global_batch,), tf.int32))
    if spatial_shape is not None:
        signature += (tf.TensorSpec((global_batch,) + tuple(spatial_shape), tf.float32),)
    ds = tf.data.Dataset.from_generator(gen, output_signature=signature).prefetch(2)
    return _ReusingBuffers(strategy.experimental_distribute_dataset(ds))


class _ReusingBuffers:
    """A distributed dataset whose iterators switch glibc's reuse of large freed buffers back
    on once made: making one runs tf.data's generator op, which switches it off (under
    Python 3.11), and every step would page-fault its activations afresh
    (``fast_ops.reuse_freed_buffers``)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        it = iter(self.dataset)
        reuse_freed_buffers()
        return it
