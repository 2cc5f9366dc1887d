"""Posterior-mode inference in latent space for inputs the encoder was not trained on (noisy images, images
with missing pixels): optimize z against the observation model directly instead of trusting q(z|x).

    z* = argmax_z  log p(observation | x = decoder(z)) + log p(z)

Denoising and imputation differ only in the observation model they pass in.
"""

import weakref

import numpy as np
import tensorflow as tf

from kerasvae import progress


def check_continuous_latents(model):
    """Raise ValueError for models whose latents are discrete codes (VQ-VAE, DiscreteVAE): a gradient in z
    means nothing there."""
    if model.code_space is not None:
        raise ValueError(f"{type(model).__name__} has discrete latent codes; this application needs continuous latents.")


def posterior_means(model, x, labels=None):
    """The mean of q(z|x) [n, latent_dim] (a deterministic model's code), batched."""
    return np.asarray(model.encode(x, labels=labels).mean(), np.float32)


def latent_mode(model, log_likelihood, observations, z_init, steps=100, learning_rate=0.05, labels=None):
    """z* [n, latent_dim] maximizing log_likelihood(model, params, *batch) + log p(z) per example, by Adam
    from z_init.

    Every example has its own objective, so the batch sum's gradient is each example's gradient, and Adam's
    per-coordinate steps optimize the examples independently:
        g = -grad_z [log p(obs|z) + log p(z)],  m <- b1 m + (1 - b1) g,  v <- b2 v + (1 - b2) g^2,
        z <- z - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    Args:
        model: a kerasvae model with continuous latents.
        log_likelihood: function(model, params, *batch) -> [batch] tensor: log p(observation | z) from the
            likelihood's parameters for z (`model.likelihood_params(z)`) and an observation batch. A
            module-level function, so the compiled optimization is reused from call to call.
        observations: tuple of arrays [n, ...], batched alongside z_init.
        z_init: array [n, latent_dim]. The starting point, usually the encoder's posterior mean.
        steps: int. Adam steps. Defaults to 100.
        learning_rate: float. Defaults to 0.05 (latents have unit prior scale).
        labels: int array [n] or None. Labels of a conditional model.
    """
    check_continuous_latents(model)
    if int(steps) < 0 or not learning_rate > 0:
        raise ValueError(f"Expected steps >= 0 and learning_rate > 0, got {steps} and {learning_rate}.")
    key = (log_likelihood, int(steps), float(learning_rate), labels is None)
    functions = _COMPILED.setdefault(model, {})
    if key not in functions:
        functions[key] = _adam_on_latents(model, log_likelihood, int(steps), float(learning_rate))
    optimize = functions[key]
    z_init = np.asarray(z_init, np.float32)
    observations = tuple(np.asarray(o, np.float32) for o in observations)
    size = model.eval_batch_size
    outputs = []
    with progress.bar(len(z_init), f"posterior modes, {int(steps)} steps", unit="images") as bar:
        for start in range(0, len(z_init), size):
            batch = tuple(tf.constant(o[start : start + size]) for o in observations)
            batch_labels = None if labels is None else tf.constant(np.asarray(labels, np.int32)[start : start + size])
            outputs.append(optimize(tf.constant(z_init[start : start + size]), batch, batch_labels).numpy())
            bar.update(len(outputs[-1]))
    return np.concatenate(outputs) if outputs else z_init


# Compiled optimizations per model, one per (log_likelihood, steps, learning_rate, conditional): a tf.function
# made afresh in every call would retrace every time.
_COMPILED = weakref.WeakKeyDictionary()


def _adam_on_latents(model, log_likelihood, steps, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    # A weak reference: the function is a value of _COMPILED, keyed weakly by this model, and a strong
    # reference from value to key would keep every model alive.
    model_ref = weakref.ref(model)

    @tf.function(reduce_retracing=True)
    def optimize(z, batch, batch_labels):
        model = model_ref()
        m, v = tf.zeros_like(z), tf.zeros_like(z)
        for t in tf.range(1, steps + 1):
            with tf.GradientTape() as tape:
                tape.watch(z)
                params = model.likelihood_params(z, labels=batch_labels)
                loss = -tf.reduce_sum(log_likelihood(model, params, *batch) + model.prior.log_prob(z))
            gradient = tape.gradient(loss, z)
            m = beta_1 * m + (1.0 - beta_1) * gradient
            v = beta_2 * v + (1.0 - beta_2) * tf.square(gradient)
            step = tf.cast(t, tf.float32)
            z = z - learning_rate * (m / (1.0 - beta_1**step)) / (tf.sqrt(v / (1.0 - beta_2**step)) + epsilon)
        return z

    return optimize


def decoded_mean(model, z, labels=None):
    """E[x|z] [n, *input_shape] in [0, 1] (8-bit likelihoods map back), batched."""
    z = np.asarray(z, np.float32)
    size = model.eval_batch_size
    parts = [
        model.likelihood.mean(
            model.likelihood_params(tf.constant(z[i : i + size]), labels=None if labels is None else tf.constant(np.asarray(labels, np.int32)[i : i + size]))
        ).numpy()
        for i in range(0, len(z), size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, *model.data_shape), np.float32)
