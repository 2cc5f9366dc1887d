"""Optimizers: Keras's own, with the update arithmetic fused into one TensorFlow kernel per variable.

Keras 3's Adam writes its update as a dozen element-wise ops per variable (two moment updates, a square
root, a division, three assignments), each a separate pass over the weights through TensorFlow's
executor. On a CPU, for the classic 784-512-256-32 VAE at batch 128, that update took about a third of a
training step (benchmarks/train_speed.py). TensorFlow's `ResourceApplyAdam` kernel does the same
arithmetic in one multi-threaded pass, with the same equations:

    m <- beta_1 m + (1 - beta_1) g,    v <- beta_2 v + (1 - beta_2) g^2,
    w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon).
"""

import keras
import tensorflow as tf

from kerasvae import _keras_compat


@keras.saving.register_keras_serializable(package="kerasvae")
class Adam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` with the per-variable update in TensorFlow's fused `ResourceApplyAdam` kernel:
    same arguments, same config, same numbers (to float32 rounding); everything around the update
    (clipping, weight decay, EMA, gradient accumulation, loss scaling, learning-rate schedules) is Keras's.

    The fused kernel is used for float32 variables without `amsgrad` outside `tf.distribute` strategies;
    anything else (a strategy's scope, whose variables are mirrored or live on parameter servers,
    `amsgrad=True`, other dtypes) takes Keras's own update, as does every variable, with one warning, under a
    Keras whose Adam no longer keeps its moments where the fused update writes them (kerasvae._keras_compat).
    The kerasvae models' `compile()` uses it when given no optimizer or the string "adam".

    >>> import kerasvae as kv
    >>> kv.optimizers.Adam(1e-3).get_config()["learning_rate"]
    0.001
    """

    def update_step(self, gradient, variable, learning_rate):
        if (self.amsgrad or variable.dtype != tf.float32 or tf.distribute.has_strategy()
                or not _keras_compat.usable(_keras_compat.FUSED_ADAM)):
            return super().update_step(gradient, variable, learning_rate)
        m, v = _keras_compat.adam_moments(self, variable)
        step = tf.cast(self.iterations + 1, tf.float32)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=m.handle,
            v=v.handle,
            beta1_power=tf.pow(tf.cast(self.beta_1, tf.float32), step),
            beta2_power=tf.pow(tf.cast(self.beta_2, tf.float32), step),
            lr=tf.cast(learning_rate, tf.float32),
            beta1=tf.cast(self.beta_1, tf.float32),
            beta2=tf.cast(self.beta_2, tf.float32),
            epsilon=tf.cast(self.epsilon, tf.float32),
            grad=tf.cast(gradient, tf.float32),
        )

    def _update_model_variables_moving_average(self, trainable_variables):
        """Keras's weight average (`use_ema`) with the momentum warm-up of `tf.train.ExponentialMovingAverage`:

            average <- m_t average + (1 - m_t) w,    m_t = min(ema_momentum, (1 + t) / (10 + t)),  m_0 = 0,

        so a run of a few hundred steps averages over its own recent steps instead of staying near its first
        one (with a fixed 0.999, 36 steps would leave 96% of the first step's weights in the average).
        A private Keras hook, checked by kerasvae._keras_compat."""
        step = tf.cast(self.iterations, tf.float32)
        momentum = tf.where(step > 0, tf.minimum(tf.cast(self.ema_momentum, tf.float32), (1 + step) / (10 + step)), 0.0)
        for variable, average in zip(trainable_variables, _keras_compat.weight_averages(self)):
            if average is not None:
                average.assign(momentum * average + (1 - momentum) * tf.cast(variable, average.dtype))


def get(optimizer):
    """What the kerasvae models' `compile` trains with: the fused `Adam` for None or "adam" (Keras's default
    arguments, learning rate 1e-3), anything else as `keras.optimizers.get` resolves it."""
    if optimizer is None or (isinstance(optimizer, str) and optimizer.lower() == "adam"):
        return Adam()
    return keras.optimizers.get(optimizer)
