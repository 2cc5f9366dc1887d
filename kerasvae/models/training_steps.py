"""Training: Keras's `compile`, `fit` and train/test steps around a family's `loss_terms`, with the
model's recipe (kerasvae.recipes) and metric trackers. A mixin of LatentVariableModel."""

import math

import keras
import numpy as np
import tensorflow as tf

from kerasvae import _keras_compat, data, optimizers
from kerasvae import callbacks as kv_callbacks
from kerasvae.models.input_checks import refuse_sample_weight
from kerasvae.models.multi_worker import is_multi_worker

# compile()'s default on one device: train steps per call into TensorFlow (see compile).
STEPS_PER_EXECUTION = 10


def batch_share(x):
    """n_r / sum_r n_r: this replica's share of the global batch in a tf.distribute strategy (1 without one)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 1.0
    size = tf.cast(tf.shape(x)[0], tf.float32)
    return tf.math.divide_no_nan(size, context.all_reduce("SUM", size))


def run_steps(x, batch_size, epochs, steps_per_epoch=None, validation_split=0.0):
    """Optimizer steps of a `fit(x, batch_size=..., epochs=..., steps_per_epoch=...)` call, or None where they
    are unknown (a generator, a dataset of unknown or infinite length)."""
    if steps_per_epoch is None:
        if isinstance(x, tf.data.Dataset):
            steps_per_epoch = int(x.cardinality())
            if steps_per_epoch < 0:
                return None
        elif hasattr(x, "shape") and len(getattr(x, "shape", ())):
            examples = int(x.shape[0] * (1 - validation_split))
            steps_per_epoch = math.ceil(examples / (batch_size or 32))  # Keras's default batch for arrays
        else:
            return None
    return int(epochs) * int(steps_per_epoch)


def training_sample(x, size=1024):
    """Up to `size` training examples as numpy, for data checks: the head of an array, or the first batch of
    a dataset or a keras.utils.PyDataset (their own transformations applied, so a binarizing pipeline yields
    binary values). None for data that cannot be looked at before training: a Python generator (reading it
    would use it up)."""
    if isinstance(x, tf.data.Dataset):
        for batch in x.take(1):
            return _inputs_of(batch, size)
        return np.zeros([0], np.float32)
    if isinstance(x, keras.utils.PyDataset):
        return _inputs_of(x[0], size)  # random access by index is the PyDataset contract
    if hasattr(x, "shape"):
        return np.asarray(x[:size])
    return None


def _inputs_of(batch, size):
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return np.asarray(first)[:size]


class TrainingSteps:
    """`compile`, `fit`, `plan_run` and the train and test steps of LatentVariableModel."""


    def loss_terms(self, x, training=False, labels=None):
        raise NotImplementedError

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, optimizer=None, steps_per_execution=None, **kwargs):
        """Keras's `compile`, with the model's recipe and two defaults chosen for speed. No optimizer means
        the recipe's (`self.recipe.optimizer()`: kerasvae's fused Adam at the recipe's learning rate, with
        its weight average); the string "adam" is the fused Adam at 1e-3 (kerasvae.optimizers.Adam: Keras's
        Adam, with its update in one TensorFlow kernel per variable). `steps_per_execution` defaults to 10
        on one device, not Keras's 1: `fit` runs
        ten train steps per call into TensorFlow, which saves most of Keras's per-step Python work (about a
        fifth of a step for the classic MLP VAE on a CPU, benchmarks/train_speed.py). Batch-level callbacks
        then see every tenth batch; pass `steps_per_execution=1` for one call per batch. Under a strategy
        with several replicas or workers it stays 1: TensorFlow 2.21 cannot run the replicas' collectives
        (the global batch's all-reduce) inside the loop Keras builds for several steps. The loss is the model's own:
        leave `loss` unset."""
        if steps_per_execution is None:
            strategy = self.distribute_strategy
            one_device = strategy.num_replicas_in_sync == 1 and not is_multi_worker(strategy)
            steps_per_execution = STEPS_PER_EXECUTION if one_device else 1
        optimizer = self.recipe.optimizer() if optimizer is None else optimizers.get(optimizer)
        super().compile(optimizer=optimizer, steps_per_execution=steps_per_execution, **kwargs)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, callbacks=None, steps_per_epoch=None, **kwargs):
        """Keras's `fit`, after three things a fresh model takes from a sample of its training data (an "auto"
        likelihood's choice, a check of the data against the likelihood, a VampPrior's pseudo-inputs where it
        starts from data: `prepare_for_training_data`), fitting the model's step schedules to the run (`plan_run`) and, when the optimizer
        averages the weights, validating on the average, so the `val_*` metrics describe the model `fit`
        leaves behind, and showing the callbacks that average (`kv.callbacks.with_weight_average`)."""
        # Keras drops sample weights without a y (pack_x_y_sample_weight); the steps refuse those in batches
        refuse_sample_weight(kwargs.get("sample_weight"))
        refuse_sample_weight(kwargs.get("class_weight"))
        self.prepare_for_training_data(x)
        steps = run_steps(x, batch_size, epochs, steps_per_epoch, kwargs.get("validation_split", 0.0))
        if steps:
            self.plan_run(steps)
        callbacks = list(callbacks or [])
        if not kwargs.get("validation_split"):
            x, y, batch_size, kwargs = _quiet_arrays(x, y, batch_size, steps_per_epoch, kwargs)
        callbacks = kv_callbacks.with_weight_average(callbacks)  # no-ops where the optimizer keeps no average
        try:
            return super().fit(x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks,
                               steps_per_epoch=steps_per_epoch, **kwargs)
        finally:
            kv_callbacks.restore_trained_weights(self, callbacks)

    def evaluate(self, x=None, y=None, batch_size=None, steps=None, **kwargs):
        """Keras's `evaluate`; arrays go through Keras's own pipeline without tf.data's autotuner, as in `fit`."""
        refuse_sample_weight(kwargs.get("sample_weight"))
        kwargs.setdefault("shuffle", False)
        x, y, batch_size, kwargs = _quiet_arrays(x, y, batch_size, steps, kwargs)
        kwargs.pop("shuffle", None)
        return super().evaluate(x, y, batch_size=batch_size, steps=steps, **kwargs)

    def plan_run(self, steps):
        """Called by `fit` with the run's number of optimizer steps (epochs x steps per epoch). Families with
        schedules counted in steps fit them to the run here; the base has none."""

    def compile_from_config(self, config):
        # What load_model calls. Keras's own version skips models that override compile (ours only picks
        # the default optimizer), which would load them uncompiled, without their optimizer's state.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        refuse_sample_weight(sample_weight)
        with tf.GradientTape() as tape:
            terms = self.loss_terms(x, training=True, labels=self._fit_labels(y))
            loss = terms["loss"] + tf.add_n(self.losses) if self.losses else terms["loss"]
            # Optimizers sum gradients over replicas. Weighting each replica's mean loss by its share of the
            # global batch makes the sum the gradient of the global batch's mean loss, as on one device, also
            # when the last batch splits unevenly (a replica left without examples adds nothing).
            scaled_loss = self.optimizer.scale_loss(loss * batch_share(x))
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._track(terms, x)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        refuse_sample_weight(sample_weight)
        return self._track(self.loss_terms(x, training=False, labels=self._fit_labels(y)), x)

    def predict_step(self, data):
        # Keras's passes x alone to call; a conditional model reads its labels from (x, labels) batches.
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if y is None and isinstance(x, (tuple, list)):  # predict((x, y)): Keras hands the pair over as x
            x, y, _ = keras.utils.unpack_x_y_sample_weight(tuple(x))
        # Without labels, a conditional model's call says what it needs.
        return self(x, training=False, labels=None if y is None else self._fit_labels(y))

    def _fit_labels(self, y):
        if self.num_classes is None:
            return None  # an unconditional model ignores the labels of a labelled dataset
        if y is None:
            raise ValueError(f"{type(self).__name__} trains on (x, y): pass integer labels, fit(x, y).")
        return tf.reshape(tf.cast(y, tf.int32), [-1])

    def _track(self, terms, x):
        batch_size = tf.cast(tf.shape(x)[0], tf.float32)
        for name, value in terms.items():
            # A replica without examples (the end of a sharded epoch) has NaN means; weight 0 must add 0.
            self.trackers[name].update_state(tf.where(batch_size > 0, value, 0.0), sample_weight=batch_size)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def _quiet_arrays(x, y, batch_size, steps, kwargs):
    """(x, y, batch_size, kwargs) for Keras's fit or evaluate with in-memory arrays (and numpy validation data)
    replaced by Keras's own array adapter without tf.data's autotuner (kv.data.without_autotuning): the same
    batches in the same order, without the autotuner's stall at the end of each epoch."""
    validation = kwargs.get("validation_data")
    if isinstance(validation, tuple) and 1 <= len(validation) <= 3:
        val_x, val_y, val_weight = keras.utils.unpack_x_y_sample_weight(validation)
        # Keras validates in batches of validation_batch_size, else of fit's batch_size as passed.
        val_adapter = _keras_compat.array_adapter(val_x, val_y, val_weight, kwargs.get("validation_batch_size") or batch_size,
                                                  kwargs.get("validation_steps"), False, None, data.without_autotuning)
        if val_adapter is not None:
            kwargs = {**kwargs, "validation_data": (val_adapter,)}
    adapter = _keras_compat.array_adapter(x, y, kwargs.get("sample_weight"), batch_size, steps, kwargs.get("shuffle", True),
                                          kwargs.get("class_weight"), data.without_autotuning)
    if adapter is not None:
        kwargs = {k: v for k, v in kwargs.items() if k not in ("sample_weight", "shuffle", "class_weight")}
        x, y, batch_size = adapter, None, None
    return x, y, batch_size, kwargs
