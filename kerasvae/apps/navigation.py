"""Latent navigation: interpolate between two inputs and traverse one latent dimension at a time (the
inspection of disentanglement in beta-VAEs, Higgins et al. 2017)."""

import numpy as np

from kerasvae import objectives
from kerasvae.apps import inference
from kerasvae.choices import INTERPOLATIONS


def interpolate_latents(z_a, z_b, steps=8, method="linear", center=None):
    """steps points [steps, latent_dim] from z_a to z_b (both included).

    linear:    z(t) = (1 - t) z_a + t z_b
    spherical: z(t) = sin((1 - t) W) / sin W * a + sin(t W) / sin W * b + center,  cos W = a.b / (|a| |b|),
               a = z_a - center, b = z_b - center (slerp, White 2016). Under a Gaussian prior the norm of a
               typical z is about sqrt(latent_dim); the midpoint of a straight line is shorter, so it decodes
               to an atypical, blurry image, which slerp avoids. Falls back to linear for (anti)parallel
               a and b.
    """
    if method not in INTERPOLATIONS:
        raise ValueError(f"Unknown interpolation {method!r}; expected one of {', '.join(INTERPOLATIONS)}.")
    if int(steps) < 2:
        raise ValueError(f"An interpolation needs steps >= 2, got {steps}.")
    z_a, z_b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
    t = np.linspace(0.0, 1.0, int(steps))[:, None]
    center = np.zeros_like(z_a) if center is None else np.asarray(center, np.float64)
    a, b = z_a - center, z_b - center
    cosine = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
    omega = np.arccos(np.clip(cosine, -1.0, 1.0))
    if method == "linear" or np.sin(omega) < 1e-6:
        return ((1 - t) * z_a + t * z_b).astype(np.float32)
    return (np.sin((1 - t) * omega) / np.sin(omega) * a + np.sin(t * omega) / np.sin(omega) * b + center).astype(np.float32)


def interpolate(model, x_a, x_b, steps=8, method="linear"):
    """Images [steps, *input_shape]: E[x|z] along the path between the posterior means of x_a and x_b
    (single examples of the input shape); spherical paths go around the prior's mean."""
    inference.check_continuous_latents(model)
    z = inference.posterior_means(model, np.stack([x_a, x_b]))
    path = interpolate_latents(z[0], z[1], steps, method, center=np.asarray(model.prior.mean()))
    return inference.decoded_mean(model, path)


def informative_dimensions(model, x):
    """Latent dimensions sorted by their mean KL(q(z_d|x) || p(z_d)) over x, most informative first (the
    variance of the posterior means when the KL does not factorize). Collapsed dimensions come last."""
    q = model.encode(x)
    kl = objectives.kl_per_dimension(q, model.prior)
    weight = np.mean(np.asarray(kl), axis=0) if kl is not None else np.var(np.asarray(q.mean()), axis=0)
    return [int(d) for d in np.argsort(-weight)]


def traverse(model, x=None, dims=None, values=None):
    """A latent traversal: (images [len(dims), len(values), *input_shape], dims). Row i holds E[x|z] as
    dimension dims[i] sweeps `values` (in prior standard deviations around the prior mean) while the other
    dimensions stay at the base code: the posterior mean of x (one example), or the prior mean.

    Args:
        x: array of the input shape or None. The example whose code is the base.
        dims: list of int or None. Dimensions to traverse, e.g. `informative_dimensions(model, x_data)[:6]`
            for the most informative first. Defaults to all, in order.
        values: array or None. Positions along each dimension, in prior standard deviations. Defaults to
            nine values from -3 to 3.
    """
    inference.check_continuous_latents(model)
    prior = model.prior
    center, spread = np.asarray(prior.mean(), np.float32), np.asarray(prior.stddev(), np.float32)
    base = center if x is None else inference.posterior_means(model, np.asarray(x)[None])[0]
    dims = list(range(model.latent_dim)) if dims is None else [int(d) for d in dims]
    if not dims or min(dims) < 0 or max(dims) >= model.latent_dim:
        raise ValueError(f"Traversal dimensions must lie in [0, {model.latent_dim}), got {dims}.")
    values = np.linspace(-3.0, 3.0, 9, dtype=np.float32) if values is None else np.asarray(values, np.float32)
    z = np.repeat(base[None, None], len(dims), 0).repeat(len(values), 1)
    for row, d in enumerate(dims):
        z[row, :, d] = center[d] + values * spread[d]
    images = inference.decoded_mean(model, z.reshape(-1, model.latent_dim))
    return images.reshape(len(dims), len(values), *model.data_shape), dims
