"""Keras callbacks for kerasvae models: TensorBoard pictures of a model as it trains."""

import keras
import numpy as np
import tensorflow as tf

PANEL_GAP = 8  # grey pixels between the inputs panel and the reconstructions panel
CELL_PIXELS = 48  # small images are enlarged (by a whole factor, nearest pixel) to at least this size


class ImageSummaries(keras.callbacks.Callback):
    """At the end of every `every`-th epoch, writes two TensorBoard images to `log_dir`, at step = epoch
    (as Keras's TensorBoard callback logs its epoch scalars):

    - "reconstructions": `images` (the left panel) beside their reconstructions (the right panel, the same
      layout), from the model's `reconstruct`;
    - "samples": `num_samples` draws of the model's `sample` with the fixed `seed`, so that each epoch
      shows the same prior draws decoded by the model of that epoch. Written for models that have a
      `sample` method (every kerasvae model); a model with `reconstruct` only gets reconstructions alone.

    Pixels are the model's outputs clipped to [0, 1] and stored as 8-bit grey (or RGB) levels; images
    under CELL_PIXELS are enlarged by a whole factor so that TensorBoard shows them at a readable size.

    Usage: `model.fit(x, epochs=10, callbacks=[kv.callbacks.ImageSummaries("runs/x/logs", x_val[:8])])`, then
    `tensorboard --logdir runs/x/logs`, tab IMAGES.

    Args:
        log_dir: str or Path. Where the event files go (a `tf.summary.create_file_writer` folder).
        images: array [n, *input_shape] in [0, 1]. The examples to reconstruct, e.g. 8 validation images.
        every: int. Write at the end of epochs every, 2 * every, ... Defaults to 1.
        num_samples: int. Prior samples per picture. Defaults to 16.
        seed: int or pair of ints. The samples' stateless seed. Defaults to 0.
        labels: int array [n] or None. The classes of `images`, for conditional models; their samples
            cycle through the classes. Defaults to None.
    """

    def __init__(self, log_dir, images, every=1, num_samples=16, seed=0, labels=None):
        super().__init__()
        if int(every) != every or every < 1:
            raise ValueError(f"every must be a whole number of epochs >= 1, got {every!r}.")
        if len(images) < 1 or num_samples < 1:
            raise ValueError(f"Expected at least one image and one sample, got {len(images)} and {num_samples}.")
        self.log_dir = str(log_dir)
        self.images = np.asarray(images, np.float32)
        self.every = int(every)
        self.num_samples = int(num_samples)
        self.seed = seed
        self.labels = None if labels is None else np.asarray(labels)
        self._writer = None  # opened at the first write, so that a callback never used creates no folder

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=epoch):
            tf.summary.image("reconstructions", self.reconstruction_picture()[None],
                             description="left: the inputs; right: their reconstructions, in the same places")
            if callable(getattr(self.model, "sample", None)):
                from kerasvae import (
                    plots,  # matplotlib: only once there is something to draw
                )

                samples = plots.draw_samples(self.model, self.num_samples, self.seed)
                tf.summary.image("samples", picture(samples, _square_columns(self.num_samples))[None],
                                 description=f"{self.num_samples} prior samples, seed {self.seed}: the same draws every epoch")
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def reconstruction_picture(self):
        """uint8 [height, width, channels]: the inputs' panel, a grey band, their reconstructions' panel."""
        labelled = {} if self.labels is None else {"labels": self.labels}  # only conditional models take labels
        reconstructions = self.model.reconstruct(self.images, **labelled)
        ncols = _square_columns(len(self.images) / 2)  # two panels side by side make a squarish picture
        inputs, outputs = picture(self.images, ncols), picture(reconstructions, ncols)
        band = np.full((inputs.shape[0], PANEL_GAP, inputs.shape[2]), 128, np.uint8)
        return np.concatenate([inputs, band, outputs], axis=1)


def picture(images, ncols):
    """images [n, ...] in [0, 1] tiled `ncols` to a row (kerasvae.plots.tile) after enlarging them to
    CELL_PIXELS, as uint8 [height, width, channels] for tf.summary.image."""
    from kerasvae import plots

    images = plots.as_images(images)
    zoom = enlargement(images.shape[1:3])
    images = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
    canvas = np.round(plots.tile(images, ncols) * 255).astype(np.uint8)
    return canvas[..., None] if canvas.ndim == 2 else canvas


def enlargement(shape):
    """The whole factor that brings an image of `shape` (height, width) to at least CELL_PIXELS."""
    return max(1, -(-CELL_PIXELS // max(shape)))


def _square_columns(n):
    return max(1, int(np.ceil(np.sqrt(n))))


class ValidateAveragedWeights(keras.callbacks.Callback):
    """With a weight average (the optimizer's `use_ema`), `fit` trains the last step's weights but ends by
    replacing them with the average; this callback lets each validation see the average too, so `val_*`
    describe the model that will be saved. No effect without a weight average. A kerasvae model's `fit`
    shows the average to validation and to the other callbacks by itself (`with_weight_average`); this one
    alone is for runs whose callbacks handle the average themselves (`kerasvae train`'s early stopping)."""

    def on_test_begin(self, logs=None):
        self._trained = swap_in_weight_average(self.model)

    def on_test_end(self, logs=None):
        restore_weights(self.model, self._trained)


class _ShowWeightAverage(keras.callbacks.Callback):
    """The first half of `with_weight_average`: swaps the average in as validation and `on_epoch_end` begin."""

    def __init__(self, held):
        super().__init__()
        self.held = held

    def on_test_begin(self, logs=None):
        if "trained" not in self.held:
            self.held["trained"] = swap_in_weight_average(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self.on_test_begin()


class _HideWeightAverage(_ShowWeightAverage):
    """The second half of `with_weight_average`: puts the trained weights back."""

    def on_test_begin(self, logs=None):
        pass

    def on_test_end(self, logs=None):
        restore_weights(self.model, self.held.pop("trained", None))

    def on_epoch_end(self, epoch, logs=None):
        self.on_test_end()


def restore_trained_weights(model, callbacks):
    """Put back trained weights that `with_weight_average`'s callbacks still hold: a `fit` that raised between
    its two halves (Keras's `fit` has no finally) would otherwise go on from the average."""
    for callback in callbacks:
        if isinstance(callback, _ShowWeightAverage):
            restore_weights(model, callback.held.pop("trained", None))


def with_weight_average(callbacks):
    """`fit`'s callbacks arranged so that they see the weights `val_*` scored where the optimizer averages
    the weights: from the first callback's `on_test_begin` and `on_epoch_end` to those of the last one
    before the first BackupAndRestore, the average is in the model. Stock EarlyStopping(
    restore_best_weights=True) then ends on the best epoch's average and ModelCheckpoint saves the average
    (both snapshot at `on_epoch_end`, where they got the last step's weights, which no validation scored);
    BackupAndRestore, and any callback after it, sees the trained weights that resuming continues from.
    Batch-level saves (ModelCheckpoint's integer save_freq) see the trained weights, and what a callback
    assigns to the weights at `on_epoch_end` before the second half is undone there. Without a weight
    average both halves do nothing. A kerasvae model's `fit` arranges its callbacks so by itself. Callbacks already arranged, or holding a
    ValidateAveragedWeights (which shows the average to validation alone) or Keras's SwapEMAWeights (which
    swaps the average in and out itself), are returned as they are.
    """
    callbacks, held = list(callbacks), {}
    arranged = (ValidateAveragedWeights, _ShowWeightAverage, keras.callbacks.SwapEMAWeights)
    if any(isinstance(c, arranged) for c in callbacks):
        return callbacks
    backup = next((i for i, c in enumerate(callbacks) if isinstance(c, keras.callbacks.BackupAndRestore)), len(callbacks))
    return [_ShowWeightAverage(held), *callbacks[:backup], _HideWeightAverage(held), *callbacks[backup:]]


def keeps_weight_average(optimizer):
    """Whether `optimizer` averages the weights (its `use_ema`). Under mixed_float16 Keras wraps it in a
    LossScaleOptimizer, whose own use_ema is always False while it finalizes with the inner one's average."""
    return bool(getattr(getattr(optimizer, "inner_optimizer", optimizer), "use_ema", False))


def swap_in_weight_average(model):
    """Put the optimizer's weight average (its `use_ema`) into the model's trainable weights; returns the
    trained values to put back with `restore_weights`, or None where the optimizer keeps no average."""
    optimizer = getattr(model, "optimizer", None)
    if not (keeps_weight_average(optimizer) and optimizer.built):
        return None
    trained = [np.asarray(weight) for weight in model.trainable_weights]
    optimizer.finalize_variable_values(model.trainable_weights)
    return trained


def restore_weights(model, trained):
    for weight, value in zip(model.trainable_weights, trained or ()):
        weight.assign(value)

