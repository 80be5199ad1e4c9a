"""The original's optimiser (Adam with epsilon inside the square root) and Polyak averaging.

The original's ``nn.py: adam_updates`` and ``train.py`` (its ``tf.train.ExponentialMovingAverage``).
Keras's own Adam adds epsilon outside the square root,
p -= lr * m_hat / (sqrt(v_hat) + eps), which differs for small gradients; the original
computes p -= lr * m_hat / sqrt(v_hat + eps) with its own defaults β1 = 0.95, β2 = 0.9995.
"""

import contextlib

import keras
import tensorflow as tf

from pixelcnn_pp import fast_ops

__all__ = ["Adam", "PolyakAverage", "adam_step", "ema_step"]


def adam_step(p, m, v, g, lr, b1, one_minus_b1, b2, one_minus_b2, c1, c2, eps):
    """One Adam step of one array: (p_t, m_t, v_t). c1, c2: 1 - β1^t, 1 - β2^t."""
    m_t = b1 * m + one_minus_b1 * g
    v_t = b2 * v + one_minus_b2 * tf.square(g)
    return p - lr * ((m_t / c1) / tf.sqrt(v_t / c2 + eps)), m_t, v_t


def ema_step(avg, var, one_minus_decay):
    """One Polyak step of one array: avg - (1 - decay) * (avg - var)."""
    return avg - (avg - var) * one_minus_decay


class Adam(keras.optimizers.Optimizer):
    """Adam exactly as the original's ``nn.adam_updates`` (t = 1, 2, ...):

        m = β1 m + (1 - β1) g;   v = β2 v + (1 - β2) g²
        p -= lr · (m / (1 - β1^t)) / sqrt(v / (1 - β2^t) + ε)

    ``learning_rate`` may be changed between steps (``opt.learning_rate = lr``, or
    ``opt.learning_rate.assign(lr)`` inside a tf.function), as train.py does every step.
    ``fused``: each array's step as one XLA-fused function (``fast_ops.fused``), the same
    formula; default False, the plain ops.
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.95, beta_2=0.9995, epsilon=1e-8,
                 fused=False, name="pixelcnn_adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.fused = bool(fused)
        self._step_scalars = None    # during a step's updates: its scalars, per dtype

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, ["m", "v"])

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        # Keras calls update_step once per array; the step's scalars are made once and shared
        # (the full model has 567 arrays: ~9,000 fewer ops to trace and optimise).
        self._step_scalars = {}
        try:
            return super()._distributed_tf_update_step(distribution, grads_and_vars,
                                                       learning_rate)
        finally:
            self._step_scalars = None

    def _scalars(self, dtype, learning_rate):
        """(lr, β1, 1 - β1, β2, 1 - β2, 1 - β1^t, 1 - β2^t, ε) of this step in ``dtype``."""
        cache = self._step_scalars
        if cache is not None and dtype in cache:
            return cache[dtype]
        t = tf.cast(self.iterations + 1, dtype)
        # Rounded as the original: (1 - β) is formed in double precision before the cast,
        # 1 - β^t in float32. The two differ by ~2e-5 relative for β2 = 0.9995.
        c = lambda x: tf.constant(x, dtype)  # noqa: E731
        scalars = (tf.cast(learning_rate, dtype), c(self.beta_1), c(1.0 - self.beta_1),
                   c(self.beta_2), c(1.0 - self.beta_2), 1.0 - tf.pow(c(self.beta_1), t),
                   1.0 - tf.pow(c(self.beta_2), t), c(self.epsilon))
        if cache is not None:
            cache[dtype] = scalars
        return scalars

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        i = self._get_variable_index(variable)
        m, v = self._m[i], self._v[i]
        r = tf.convert_to_tensor
        step = adam_step
        if self.fused:
            # Deviation (fast_ops): the chain of ~10 elementwise ops as one XLA-fused pass.
            step = fast_ops.fused(adam_step)
        lr, b1, omb1, b2, omb2, c1, c2, eps = self._scalars(dtype, learning_rate)
        p_t, m_t, v_t = step(r(variable), r(m), r(v), tf.cast(gradient, dtype), lr,
                             b1, omb1, b2, omb2, c1, c2, eps)
        self.assign(m, m_t)
        self.assign(v, v_t)
        self.assign(variable, p_t)

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon,
                      fused=self.fused)
        return config


class PolyakAverage(tf.Module):
    """Exponential moving averages of a list of variables (TF's ExponentialMovingAverage rule):

        avg -= (1 - decay_t) * (avg - var)          after every optimiser step

    Deviation from the original (marked): the averages start from the variables' values when
    this object is created -- call it after data-dependent init -- whereas the original's
    started from the pre-init values (g = 1, b = 0), which takes thousands of steps to wash out.

    Deviation from the original (marked), ``warmup=True`` (the default): the decay warms up as
    ``tf.train.ExponentialMovingAverage(decay, num_updates=t)`` does,

        decay_t = min(decay, (1 + t) / (10 + t)),   t = 1 at the first update, 2 at the next...

    (t counts the updates including the current one, as a step counter incremented before the
    averaging would pass it). The averages then follow the weights from the first steps instead
    of lagging behind them for ~1 / (1 - decay) steps; from t = (10 decay - 1) / (1 - decay)
    on (17,990 updates for 0.9995) decay_t is the constant decay. ``warmup=False`` is the
    original's constant decay. The count lives in ``num_updates`` (checkpointed with the
    averages; a checkpoint without it, written before it existed, still loads: see
    ``without_counter``).

    ``swap()`` puts the averages into the variables (for evaluation and sampling) and back.
    ``fused``: each array's step as one XLA-fused function (``fast_ops.fused``), the same
    formula; default False, the plain ops.
    """

    def __init__(self, variables, decay=0.9995, warmup=True, fused=False, name="polyak"):
        super().__init__(name=name)
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.fused = bool(fused)
        variables = list(variables)
        # A closure, not an attribute: the model's variables are checkpointed by the model,
        # and an attribute would make every checkpoint hold them twice.
        self._variables = lambda: variables
        # Every replica computes the same average; under a distribution strategy the first
        # replica's value is kept (the update runs inside the replicated train step).
        self.averages = [
            tf.Variable(tf.convert_to_tensor(v), trainable=False, name=f"avg_{i}",
                        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            for i, v in enumerate(variables)]
        # Updates done so far (also counted with warmup=False, so that a run can switch).
        self.num_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="num_updates",
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def one_minus_decay(self, t):
        """1 - decay_t for the t-th update (t = 1, 2, ...; a float64 tensor).

        With warm-up, 1 - min(decay, (1 + t) / (10 + t)) = max(1 - decay, 9 / (10 + t)), formed
        in float64 so that past the crossover it is the constant's 1 - decay to the last bit."""
        constant = tf.constant(1.0 - self.decay, tf.float64)
        if not self.warmup:
            return constant
        t = tf.cast(t, tf.float64)
        return tf.maximum(constant, 9.0 / (10.0 + t))

    def update(self):
        """One averaging step; call after each optimiser step."""
        t = tf.convert_to_tensor(self.num_updates) + 1        # this update's t (1 at the first)
        # Deviation: decay_t = min(decay, (1 + t) / (10 + t)) unless warmup=False.
        one_minus_decay = self.one_minus_decay(t)
        step = ema_step
        if self.fused:
            # Deviation (fast_ops): the 3 elementwise ops as one XLA-fused pass per array.
            step = fast_ops.fused(ema_step)
        rates = {}      # 1 - decay_t per dtype, made once
        for avg, var in zip(self.averages, self._variables()):
            if avg.dtype not in rates:
                rates[avg.dtype] = tf.cast(one_minus_decay, avg.dtype)
            avg.assign(step(tf.convert_to_tensor(avg),
                            tf.cast(tf.convert_to_tensor(var), avg.dtype), rates[avg.dtype]))
        self.num_updates.assign(t)

    def without_counter(self):
        """A stand-in holding only the averages, laid out as checkpoints written before
        ``num_updates`` existed: restore such a checkpoint through it (then set the count,
        e.g. to the restored step)."""
        view = tf.Module(name=self.name)
        view.averages = self.averages
        return view

    @staticmethod
    def counter_in_checkpoint(path, key="averages"):
        """Whether the checkpoint at ``path`` holds the update count of the PolyakAverage
        checkpointed under ``key``."""
        name = f"{key}/num_updates/.ATTRIBUTES/VARIABLE_VALUE"
        return any(n == name for n, _ in tf.train.list_variables(path))

    def reset(self, values=None):
        """Restart the averages from the variables' current values (or from ``values``), and
        the warm-up with them (the next update is t = 1)."""
        values = self._variables() if values is None else values
        for avg, v in zip(self.averages, values):
            avg.assign(tf.convert_to_tensor(v))
        self.num_updates.assign(0)

    def _swap_values(self):
        for avg, var in zip(self.averages, self._variables()):
            tmp = tf.convert_to_tensor(var)
            var.assign(tf.convert_to_tensor(avg))
            avg.assign(tmp)

    @contextlib.contextmanager
    def swap(self):
        """Within the block the variables hold the averages; on exit (even on error) they are
        back to the trained values and the averages are unchanged."""
        self._swap_values()
        try:
            yield
        finally:
            self._swap_values()
