"""Model evaluation as one JSON-ready dict: ELBO, importance-weighted NLL (nats and bits/dim),
reconstruction error, KL (total and per latent dimension) and active units; and the same NLL estimate
computed from an exported SavedModel's `encode` and `decode` signatures alone."""

import math

import numpy as np
import tensorflow as tf

from kerasvae import objectives, progress
from kerasvae._tfp import tfd

ACTIVE_UNIT_THRESHOLD = 0.01


def evaluate(model, x, num_samples=1000, batch_size=256, seed=0, verbose=0, precision=None):
    """Evaluate `model` on images x (numpy, in the model's input shape).

    The importance-weighted NLL runs batch by batch (k up to thousands stays within memory: each batch
    draws its k samples in chunks, see `LatentVariableModel.log_likelihood`); `verbose=1` shows a
    progress bar over those batches, the long part of an evaluation with large k. `precision="bfloat16"`
    runs the NLL's decoder in bfloat16 (`LatentVariableModel.log_likelihood`).

    Returns a dict of floats:
        elbo: mean per-example ELBO in nats (one posterior sample per example).
        nll: mean importance-weighted estimate of -log p(x) with `num_samples` samples, in nats.
        bits_per_dim: nll / (number of input elements * ln 2).
        reconstruction, kl (and the family's other loss terms): what `model.evaluate` tracks.
        kl_per_dim: mean KL of each latent dimension (diagonal Gaussian posterior and prior only).
        active_units: latent dimensions whose posterior mean varies across x with variance > 0.01
            (Burda et al. 2016).
        Both read `model.encode`: a HierarchicalVAE's top level only, while its kl sums every level's.
    """
    x = np.asarray(x, np.float32)
    terms = model.evaluate(x, batch_size=batch_size, verbose=0, return_dict=True)
    elbo = model.elbo(x, seed=seed)
    nll = importance_weighted_nll(model, x, num_samples, batch_size, seed + 1, verbose, precision)
    q = model.encode(x)
    posterior_means = np.asarray(q.mean())
    report = {
        **{name: float(value) for name, value in terms.items()},
        **({} if precision is None else {"nll_precision": precision}),
        "elbo": float(np.mean(elbo)),
        "nll": float(np.mean(nll)),
        "bits_per_dim": float(np.mean(nll) / (math.prod(x.shape[1:]) * math.log(2.0))),
        "num_samples": int(num_samples),
        "num_examples": len(x),
        "active_units": active_units(posterior_means),
        "latent_dim": int(model.latent_dim),
    }
    kl_dims = objectives.kl_per_dimension(q, model.prior)
    if kl_dims is not None:
        report["kl_per_dim"] = [round(float(v), 4) for v in np.mean(np.asarray(kl_dims), axis=0)]
    return report


def active_units(posterior_means):
    """How many latent dimensions of posterior means [n, latent_dim] vary across the n examples with
    variance above ACTIVE_UNIT_THRESHOLD (Burda et al. 2016): the units the model uses."""
    return int(np.sum(np.var(np.asarray(posterior_means), axis=0) > ACTIVE_UNIT_THRESHOLD))


def importance_weighted_nll(model, x, num_samples, batch_size=256, seed=0, verbose=0, precision=None):
    """-log p(x) per example [n] by `model.log_likelihood`, one batch at a time so a progress bar (shown
    when `verbose` or `kerasvae.progress` is on) can follow it; batch i uses seed (seed, i), so the result
    does not depend on the batching of the bar."""
    nll, total = [], 0.0
    with progress.bar(len(x), f"IWAE NLL, k={num_samples}", unit="images", enabled=bool(verbose) or None) as bar:
        for index, start in enumerate(range(0, len(x), batch_size)):
            batch = x[start : start + batch_size]
            nll.append(-np.asarray(model.log_likelihood(batch, num_samples=num_samples, seed=(seed, index), precision=precision)))
            total += float(np.sum(nll[-1]))
            bar.note(f"mean {total / (start + len(batch)):.2f} nats")
            bar.update(len(batch))
    return np.concatenate(nll) if nll else np.zeros([0], np.float32)


def saved_model_nll(saved_model, x, num_samples=1000, batch_size=256, chunk_size=100, seed=0):
    """-log p(x) per example [n], estimated from what a server exposes: the `encode` signature's Gaussian
    posterior (loc, scale) and the `decode` signature's likelihood parameters, with the standard normal prior,

        log p(x) ~= logsumexp_i [log p(x|z_i) + log N(z_i; 0, I) - log q(z_i|x)] - log k,  z_i ~ q(z|x),

    with TFP distributions built from the signatures' outputs alone and the estimator of
    kerasvae.objectives, independently of the model's networks and heads: it checks that an exported model
    carries the likelihood the Python model was evaluated with.

    Args:
        saved_model: a SavedModel directory (e.g. `saved_models/<name>/<version>`) or a loaded SavedModel.
        x: array [n, *input_shape], binary for a Bernoulli decoder.
        num_samples: int. Importance samples k per example.
        chunk_size: int. Samples decoded at once per batch (memory: batch_size * chunk_size examples).
        seed: int. Seeds numpy's generator for the posterior noise.

    Decoders returning `logits` are Bernoulli, `loc` and `scale` Gaussian; others raise a ValueError.
    A SavedModel with a `log_importance_weights` signature (models with latents besides encode's, e.g.
    HierarchicalVAE) gives its own weights instead: chunk c of batch b draws with seed (seed, b * 2^16 + c).
    """
    loaded = tf.saved_model.load(str(saved_model)) if isinstance(saved_model, (str, bytes)) or hasattr(saved_model, "__fspath__") else saved_model
    x = np.asarray(x, np.float32)
    if "log_importance_weights" in loaded.signatures:
        weights_of = _served_log_weights(loaded.signatures["log_importance_weights"], seed)
    else:
        weights_of = _encode_decode_log_weights(loaded.signatures["encode"], loaded.signatures["decode"], seed)
    nll = [
        -objectives.importance_weighted_log_likelihood(weights_of(x[start : start + batch_size], batch), num_samples, chunk_size).numpy()
        for batch, start in enumerate(range(0, len(x), batch_size))
    ]
    return np.concatenate(nll) if nll else np.zeros([0], np.float32)


def _encode_decode_log_weights(encode, decode, seed):
    """(x batch, batch index) -> log_weights_fn(k, chunk) of saved_model_nll from encode's Gaussian q, decode's
    likelihood and N(0, I), with numpy's default_rng(seed) drawing the posterior noise."""
    rng = np.random.default_rng(seed)

    def weights_of(xb, batch):
        posterior = encode(x=tf.constant(xb))
        if set(posterior) != {"loc", "scale"}:
            raise ValueError(f"saved_model_nll needs a Gaussian-posterior encode (loc, scale), got {sorted(posterior)}.")
        q = tfd.MultivariateNormalDiag(posterior["loc"], posterior["scale"])
        prior = tfd.MultivariateNormalDiag(tf.zeros_like(posterior["loc"]))
        x_flat = xb.reshape(len(xb), -1)

        def log_weights(k, chunk):
            z = q.mean() + q.stddev() * rng.standard_normal((k, *q.batch_shape, q.event_shape[0])).astype(np.float32)
            decoded = decode(z=tf.reshape(z, [-1, q.event_shape[0]]))
            log_px_given_z = tf.reshape(_likelihood(decoded).log_prob(np.tile(x_flat, (k, 1))), [k, len(x_flat)])
            return objectives.log_importance_weights(log_px_given_z, prior.log_prob(z), q.log_prob(z))

        return log_weights

    return weights_of


def _served_log_weights(signature, seed):
    """(x batch, batch index) -> log_weights_fn(k, chunk) of saved_model_nll from the model's own served
    weights; chunk c of batch b draws with the stateless seed (seed, b * 2^16 + c)."""
    def weights_of(xb, batch):
        xb = tf.constant(xb)

        def log_weights(k, chunk):
            draw_seed = tf.constant([seed, batch * (1 << 16) + int(chunk)], tf.int32)
            return tf.transpose(signature(x=xb, num_samples=tf.constant(k, tf.int32), seed=draw_seed)["log_weights"])

        return log_weights

    return weights_of


def _likelihood(decoded):
    """p(x|z) over flattened examples [k * n, d] from a decode signature's outputs."""
    def flat(name):
        return tf.reshape(decoded[name], [tf.shape(decoded[name])[0], -1])

    if "logits" in decoded:
        return tfd.Independent(tfd.Bernoulli(logits=flat("logits"), dtype=tf.float32), 1)
    if "loc" in decoded and "scale" in decoded:
        loc = flat("loc")
        return tfd.Independent(tfd.Normal(loc, tf.broadcast_to(flat("scale"), tf.shape(loc))), 1)
    raise ValueError(f"saved_model_nll knows Bernoulli (logits) and Gaussian (loc, scale) decoders, got {sorted(decoded)}.")
