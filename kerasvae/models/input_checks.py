"""Input validation of the probabilistic API: one ValueError line naming what was expected and what came.
A mixin of LatentVariableModel."""


import numpy as np
import tensorflow as tf


class InputChecks:

    def _check_inputs(self, x):
        """x as a float32 array [batch, *input_shape] of finite values in the likelihood's support; a
        ValueError naming what was expected and what came otherwise."""
        expected = f"[batch, {', '.join(map(str, self.data_shape))}]"
        x = finite_float32(x, "inputs", expected, lambda shape: shape[1:] == self.data_shape and len(shape) == len(self.data_shape) + 1)
        self.likelihood.validate(x)
        return x

    def _check_labels(self, labels, n):
        """None for unconditional models; int32 labels [n] in [0, num_classes) for conditional ones (one int
        is repeated n times). n, the number of examples, must be an int >= 0."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"Expected a number of examples n >= 0 (an int), got {n!r}.")
        if self.num_classes is None:
            if labels is not None:
                raise ValueError(f"{type(self).__name__} is not conditional; it takes no labels.")
            return None
        if labels is None:
            raise ValueError(f"{type(self).__name__} needs labels: integers in [0, {self.num_classes}).")
        labels = np.asarray(labels)
        if labels.ndim == 0:
            labels = np.full([n], labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"Expected {n} integer labels of shape [{n}], got {labels.dtype} of shape {list(labels.shape)}.")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"Labels must be in [0, {self.num_classes}), got [{labels.min()}, {labels.max()}].")
        return labels.astype(np.int32)

    def _check_latents(self, z):
        """z as a float32 tensor [..., latent_dim] of finite values; a ValueError otherwise."""
        return tf.constant(finite_float32(z, "latents", f"[..., {self.latent_dim}]",
                                          lambda shape: len(shape) >= 1 and shape[-1] == self.latent_dim))


def finite_float32(value, what, expected, shape_is_expected):
    """`value` as a float32 array after checking, each with one ValueError line, that it is a regular array of
    real numbers whose shape passes `shape_is_expected` (described by `expected`) and that it stays finite
    in float32."""
    try:
        value = np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"Expected {what} of shape {expected}, got a ragged value ({error}).") from None
    if value.dtype.kind not in "biuf":
        raise ValueError(f"Expected real-valued {what} (float32, or any int or float dtype), got dtype {value.dtype}.")
    if not shape_is_expected(value.shape):
        raise ValueError(f"Expected {what} of shape {expected}, got {list(value.shape)}.")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, reported just below
        value = value.astype(np.float32, copy=False)
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{what.capitalize()} contain NaN or infinite values (as float32); expected finite values.")
    return value


def refuse_sample_weight(sample_weight):
    """Raise where Keras hands the step per-example weights (sample_weight, or class_weight turned into
    them): the bound is the unweighted mean over the batch, and ignoring them would train another objective
    than the caller asked for without a word. Checked while tracing."""
    if sample_weight is not None:
        raise ValueError("kerasvae models fit and evaluate the unweighted bound: sample_weight and class_weight are not "
                         "supported. Repeat or resample examples to weight them.")
