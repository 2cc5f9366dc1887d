"""Multi-worker training: the overrides that let Keras 3's TensorFlow trainer run under
MultiWorkerMirroredStrategy (keras-team/keras#20585). A mixin of LatentVariableModel."""


import tensorflow as tf

from kerasvae import _keras_compat


def all_replicas(t):
    """t [batch, ...] concatenated over the replicas of a tf.distribute strategy, i.e. over the global batch
    (t itself without one). Statistics that update state (EMA codebooks, moving moments) take it, so every
    replica applies the same update and mirrored variables stay one value."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return t
    return context.all_gather(t, axis=0)


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and _keras_compat.in_multi_worker_mode(strategy)


class MultiWorkerSteps:
    # === Multi-worker training: keras-team/keras#20585 ===
    # Keras 3.15's TensorFlow trainer fails under MultiWorkerMirroredStrategy in two places:
    # `_maybe_symbolic_build` draws one batch to build from and reduces it with `strategy.reduce("MEAN",
    # batch)`, a nest that the collective strategy's `reduce` cannot take (MirroredStrategy maps over it,
    # so only the multi-worker case fails), and the train/test functions reduce each step's scalar logs
    # with `strategy.reduce("MEAN", v, axis=0)`, which has no axis 0 to reduce. The overrides below build
    # without a batch and average the logs over replicas with `axis=None`.

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Every weight exists from the constructor and the losses and metrics are the model's own, so only
        # the optimizer is left to build, in the strategy's scope. Drawing no batch also leaves the
        # pipeline's reshuffled orders to the training epochs, as without a strategy.
        # A private Keras hook, as is the strategy it reads: both checked by kerasvae._keras_compat.
        strategy = _keras_compat.creation_strategy(self)
        if strategy is not None and self.optimizer is not None and not self.optimizer.built:
            with strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def make_train_function(self, force=False):
        return self._step_function("train_function", self.train_step, super().make_train_function, force)

    def make_test_function(self, force=False):
        return self._step_function("test_function", self.test_step, super().make_test_function, force)

    def _step_function(self, attribute, step, make_keras_function, force):
        """Keras's train/test function, or under the multi-worker strategy ours around `step`, cached in
        `attribute` as Keras caches its own."""
        if not is_multi_worker(self.distribute_strategy):
            return make_keras_function(force)
        if getattr(self, attribute) is None or force:
            setattr(self, attribute, self._multi_worker_function(step))
        return getattr(self, attribute)

    def _multi_worker_function(self, step):
        strategy = self.distribute_strategy
        if self.jit_compile and not self.run_eagerly:
            if not tf.config.list_logical_devices("GPU"):
                raise ValueError(
                    "XLA cannot compile the multi-worker strategy's collectives on CPUs (TensorFlow has no XLA "
                    "collectives for CPU devices): train without --xla (jit_compile=False), or on GPUs."
                )
            # XLA compiles the replica's step, as Keras's trainer does; reading the distributed iterator and
            # reducing the logs across workers around it are ops that XLA cannot compile.
            step = tf.function(step, reduce_retracing=True, jit_compile=True)

        def one_step(iterator):
            # get_next on a distributed iterator is synchronous across workers: a worker whose shard ran
            # out gets empty batches until every worker has, then all raise OutOfRangeError together.
            logs = strategy.run(step, args=(iterator.get_next(),))
            return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), logs)

        if not self.run_eagerly:
            one_step = tf.function(one_step, reduce_retracing=True)

        def function(iterator):
            for _ in range(self.steps_per_execution):
                logs = one_step(iterator)
            return logs

        return function
