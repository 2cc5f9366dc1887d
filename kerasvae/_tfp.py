"""One import point for TensorFlow Probability, and the seed conventions every sampler shares."""

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions
tfb = tfp.bijectors


def stateless_seed(seed):
    """A TFP stateless seed (int32 [2]) from an int, a pair, a tensor or a Keras SeedGenerator.

    Stateless seeds make sampling a pure function of the seed: same seed, same draw, in eager mode,
    in a tf.function and in an exported SavedModel. A generator's seed drawn by a replica of a
    tf.distribute strategy with several replicas has the replica's id folded in, so each replica draws
    its own noise.
    """
    if seed is None:
        return None
    if hasattr(seed, "next"):  # keras.random.SeedGenerator
        return _per_replica(tf.cast(seed.next(), tf.int32))
    if isinstance(seed, int):
        seed = (seed, 0)
    return tf.cast(tf.convert_to_tensor(seed), tf.int32)


def _per_replica(seed):
    # Every replica of a tf.distribute strategy advances its copy of a SeedGenerator in step, so they would
    # all draw the same noise for their different examples; folding in the replica's id gives each its own
    # stream. One replica (no strategy, or one device) keeps the generator's seed, bit for bit.
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return seed
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    return tf.cast(tf.random.experimental.stateless_fold_in(seed, replica), tf.int32)
