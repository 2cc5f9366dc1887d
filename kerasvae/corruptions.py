"""Input corruptions for denoising autoencoders and denoising VAEs (any model's `corruption=`). Each is a
Keras layer that corrupts only when training=True and draws its noise from its own seeded
`keras.random.SeedGenerator`, through a stateless seed that folds in the replica's id under a
tf.distribute strategy (kerasvae._tfp.stateless_seed): replicas corrupt their examples independently."""

import keras
import tensorflow as tf

from kerasvae._tfp import stateless_seed

serializable = keras.saving.register_keras_serializable(package="kerasvae")


class Corruption(keras.layers.Layer):
    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, x, training=False):
        return self.corrupt(x, stateless_seed(self.seed_generator)) if training else x

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@serializable
class GaussianNoise(Corruption):
    """x + N(0, stddev^2) per element.

    Args:
        stddev: float. Defaults to 0.3.
    """

    def __init__(self, stddev=0.3, **kwargs):
        super().__init__(**kwargs)
        self.stddev = float(stddev)

    def corrupt(self, x, seed):
        return x + self.stddev * tf.random.stateless_normal(tf.shape(x), seed=seed, dtype=x.dtype)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


@serializable
class MaskingNoise(Corruption):
    """Sets a random fraction `rate` of the elements to zero (no rescaling, unlike Dropout).

    Args:
        rate: float in [0, 1). Defaults to 0.25.
    """

    def __init__(self, rate=0.25, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)

    def corrupt(self, x, seed):
        keep = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=x.dtype) >= self.rate
        return tf.where(keep, x, tf.zeros_like(x))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


@serializable
class SaltAndPepper(Corruption):
    """Sets a random fraction `rate` of the elements to 0 or 1 with equal probability.

    Args:
        rate: float in [0, 1). Defaults to 0.1.
    """

    def __init__(self, rate=0.1, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)

    def corrupt(self, x, seed):
        u = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=x.dtype)
        salt = tf.cast(u < self.rate / 2, x.dtype)
        hit = u < self.rate
        return tf.where(hit, salt, x)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}
