"""One import point for TensorFlow Probability, and the seed conventions every sampler shares."""

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions
tfb = tfp.bijectors


def stateless_seed(seed):
    """A TFP stateless seed (int32 [2]) from an int, a pair, a tensor or a Keras SeedGenerator.

    Stateless seeds make sampling a pure function of the seed: same seed, same draw, in eager mode,
    in a tf.function and in an exported SavedModel.
    """
    if seed is None:
        return None
    if hasattr(seed, "next"):  # keras.random.SeedGenerator
        seed = seed.next()
    if isinstance(seed, int):
        seed = (seed, 0)
    return tf.cast(tf.convert_to_tensor(seed), tf.int32)
