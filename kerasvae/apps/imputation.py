"""Imputation: fill missing pixels (or features) given a mask, from what the observed ones say about z."""

import numpy as np
import tensorflow as tf

from kerasvae.apps import inference
from kerasvae.choices import IMPUTATION_METHODS


def random_mask(shape, fraction, seed=0):
    """bool array of `shape`, True (missing) independently with probability `fraction`."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"The missing fraction must lie in (0, 1), got {fraction}.")
    return np.random.default_rng(seed).random(shape) < fraction


def block_mask(shape, rows=0.5):
    """bool array of `shape` [n, height, ...] with the bottom `rows` fraction of each image missing."""
    if not 0.0 < rows < 1.0:
        raise ValueError(f"The missing fraction of rows must lie in (0, 1), got {rows}.")
    mask = np.zeros(shape, bool)
    mask[:, shape[1] - max(1, round(rows * shape[1])) :] = True
    return mask


def mean_imputation(x, missing, x_fit):
    """The classical baseline: each missing element takes its mean over the (complete) data x_fit."""
    x, missing = _check(x, missing)
    return np.where(missing, np.asarray(x_fit, np.float32).mean(axis=0), x)


def impute(model, x, missing, method="map", fill=None, steps=100, learning_rate=0.05, iterations=5, labels=None):
    """x with its missing elements filled in from the model; observed elements are returned unchanged.

    Methods:
      - "map": the posterior mode given the observed elements only,
            z* = argmax_z  sum_{i observed} log p(x_i | z) + log p(z),
        then x_i = E[x_i | z*] for the missing i; found by Adam from the posterior mean of the filled image.
      - "pseudo_gibbs": the iterative posterior of Rezende et al. (2014), `iterations` times:
            z = mean of q(z | x_t),  x_{t+1} = E[x | z] on the missing elements, x on the observed.
        Cheap, and good for scattered missing pixels; on large holes it can drift after a few iterations
        (Mattei & Frellsen 2018), which is why "map" is the default.

    Args:
        model: a kerasvae model with continuous latents.
        x: array [n, *input_shape]. Values at missing positions are ignored (NaN allowed there).
        missing: bool array of x's shape, True where the element is missing.
        fill: array broadcastable to x or None. Starting values of the missing elements, e.g. the training
            mean (what `mean_imputation` returns); None starts at 0.5.
    """
    if method not in IMPUTATION_METHODS:
        raise ValueError(f"Unknown imputation method {method!r}; expected one of {', '.join(IMPUTATION_METHODS)}.")
    inference.check_continuous_latents(model)
    x, missing = _check(x, missing)
    observed_x = np.where(missing, np.float32(0.5) if fill is None else np.asarray(fill, np.float32), x)
    if method == "pseudo_gibbs":
        current = observed_x
        for _ in range(int(iterations)):
            z = inference.posterior_means(model, current, labels=labels)
            current = np.where(missing, inference.decoded_mean(model, z, labels=labels), x)
        return current.astype(np.float32)
    z = inference.posterior_means(model, observed_x, labels=labels)
    z = inference.latent_mode(
        model, observed_log_likelihood, (observed_x, ~missing), z, steps=steps, learning_rate=learning_rate, labels=labels
    )
    return np.where(missing, inference.decoded_mean(model, z, labels=labels), x).astype(np.float32)


def observed_log_likelihood(model, params, images, observed):
    """sum_i observed_i * log p(x_i | z) per example: the likelihood of the observed elements only."""
    per_element = model.likelihood.element_distribution(params).log_prob(model.likelihood.targets(images))
    return tf.reduce_sum(per_element * observed, axis=list(range(-len(model.data_shape), 0)))


def imputation_error(imputed, x, missing):
    """Root mean squared error over the missing elements only."""
    imputed, missing = np.asarray(imputed, np.float64), np.asarray(missing, bool)
    return float(np.sqrt(np.mean(np.square(imputed - np.asarray(x, np.float64))[missing])))


def evaluate_imputation(model, x, missing, x_fit, steps=100, iterations=5, labels=None):
    """RMSE over the missing elements of "map", "pseudo_gibbs" and mean imputation (x_fit's means), with the
    images. Returns (report, images)."""
    baseline = mean_imputation(x, missing, x_fit)
    images = {
        "map": impute(model, x, missing, "map", fill=baseline, steps=steps, labels=labels),
        "pseudo_gibbs": impute(model, x, missing, "pseudo_gibbs", fill=baseline, iterations=iterations, labels=labels),
        "mean": baseline,
    }
    report = {f"rmse_{name}": imputation_error(values, x, missing) for name, values in images.items()}
    report.update(missing_fraction=float(np.mean(missing)), num_examples=len(x), steps=int(steps), iterations=int(iterations))
    return report, images


def _check(x, missing):
    x, missing = np.asarray(x, np.float32), np.asarray(missing)
    if missing.shape != x.shape or missing.dtype != bool:
        raise ValueError(f"Expected a bool mask of the inputs' shape {list(x.shape)}, got {missing.dtype} {list(missing.shape)}.")
    if not np.all(np.isfinite(x[~missing])):
        raise ValueError("Observed inputs contain NaN or infinite values.")
    return x, missing
