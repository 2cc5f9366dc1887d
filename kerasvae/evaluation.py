"""Model evaluation as one JSON-ready dict: ELBO, importance-weighted NLL (nats and bits/dim),
reconstruction error, KL (total and per latent dimension) and active units."""

import math

import keras
import numpy as np

from kerasvae import objectives

ACTIVE_UNIT_THRESHOLD = 0.01


def evaluate(model, x, num_samples=1000, batch_size=256, seed=0, verbose=0):
    """Evaluate `model` on images x (numpy, in the model's input shape).

    The importance-weighted NLL runs batch by batch (k up to thousands stays within memory: each batch
    draws its k samples in chunks, see `LatentVariableModel.log_likelihood`); `verbose=1` shows a
    progress bar over those batches, the long part of an evaluation with large k.

    Returns a dict of floats:
        elbo: mean per-example ELBO in nats (one posterior sample per example).
        nll: mean importance-weighted estimate of -log p(x) with `num_samples` samples, in nats.
        bits_per_dim: nll / (number of input elements * ln 2).
        reconstruction, kl (and the family's other loss terms): what `model.evaluate` tracks.
        kl_per_dim: mean KL of each latent dimension (diagonal Gaussian posterior and prior only).
        active_units: latent dimensions whose posterior mean varies across x with variance > 0.01
            (Burda et al. 2016).
    """
    x = np.asarray(x, np.float32)
    terms = model.evaluate(x, batch_size=batch_size, verbose=0, return_dict=True)
    elbo = model.elbo(x, seed=seed)
    nll = importance_weighted_nll(model, x, num_samples, batch_size, seed + 1, verbose)
    q = model.encode(x)
    posterior_means = np.asarray(q.mean())
    report = {
        **{name: float(value) for name, value in terms.items()},
        "elbo": float(np.mean(elbo)),
        "nll": float(np.mean(nll)),
        "bits_per_dim": float(np.mean(nll) / (math.prod(x.shape[1:]) * math.log(2.0))),
        "num_samples": int(num_samples),
        "num_examples": len(x),
        "active_units": int(np.sum(np.var(posterior_means, axis=0) > ACTIVE_UNIT_THRESHOLD)),
        "latent_dim": int(model.latent_dim),
    }
    kl_dims = objectives.kl_per_dimension(q, model.prior)
    if kl_dims is not None:
        report["kl_per_dim"] = [round(float(v), 4) for v in np.mean(np.asarray(kl_dims), axis=0)]
    return report


def importance_weighted_nll(model, x, num_samples, batch_size=256, seed=0, verbose=0):
    """-log p(x) per example [n] by `model.log_likelihood`, one batch at a time so a progress bar
    (verbose=1) can follow it; batch i uses seed (seed, i), so the result does not depend on verbose."""
    progress = keras.utils.Progbar(len(x), unit_name="example", verbose=verbose) if verbose else None
    nll = []
    for index, start in enumerate(range(0, len(x), batch_size)):
        batch = x[start : start + batch_size]
        nll.append(-np.asarray(model.log_likelihood(batch, num_samples=num_samples, seed=(seed, index))))
        if progress is not None:
            progress.add(len(batch), values=[("nll", float(np.mean(nll[-1])))])
    return np.concatenate(nll) if nll else np.zeros([0], np.float32)
