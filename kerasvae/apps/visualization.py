"""Latent visualization: maps of the posterior means in 2-D or 3-D, and the decoded manifold of a 2-D
latent space."""

import numpy as np

from kerasvae.apps import inference
from kerasvae.apps.features import features
from kerasvae.choices import EMBEDDINGS


def embed(model, x, method="pca", dims=2, seed=0):
    """Coordinates [n, dims] of the posterior means of x: themselves when latent_dim == dims, else their
    principal components ("pca") or a t-SNE embedding ("tsne", van der Maaten & Hinton 2008; slower, keeps
    neighbourhoods rather than distances). Returns (coordinates, axis name)."""
    if method not in EMBEDDINGS:
        raise ValueError(f"Unknown embedding {method!r}; expected one of {', '.join(EMBEDDINGS)}.")
    if dims not in (2, 3):
        raise ValueError(f"A latent map has 2 or 3 dimensions, got {dims}.")
    means = features(model, x)
    if means.shape[1] < dims:
        raise ValueError(f"A {dims}-D map needs latent_dim >= {dims}; the model has {means.shape[1]}.")
    if means.shape[1] == dims:
        return means, "z"
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(dims, random_state=seed).fit_transform(means), "principal component"
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(2.0, (len(means) - 1) / 3))  # t-SNE needs perplexity < n
    return TSNE(dims, perplexity=perplexity, init="pca", random_state=seed).fit_transform(means), "t-SNE"


def manifold(model, n=15, quantile=0.05):
    """The decoded 2-D latent manifold (Kingma & Welling 2014, fig. 4): images [n, n, *input_shape] at
    z_d = mean_d + stddev_d * Phi^-1(u) of the prior, u on an even grid over [quantile, 1 - quantile]
    (for a Gaussian prior, its quantiles: every row and column holds equal prior mass). Row 0 holds the
    largest z2, so the figure reads like a plot with z2 upwards. Returns (images, (z1 values, z2 values))."""
    from scipy.special import ndtri

    inference.check_continuous_latents(model)
    if model.latent_dim != 2:
        raise ValueError(f"The manifold grid needs latent_dim == 2; the model has {model.latent_dim}.")
    if int(n) < 2 or not 0.0 < quantile < 0.5:
        raise ValueError(f"Expected n >= 2 and quantile in (0, 0.5), got {n} and {quantile}.")
    prior = model.prior
    center, spread = np.asarray(prior.mean(), np.float64), np.asarray(prior.stddev(), np.float64)
    grid = ndtri(np.linspace(quantile, 1.0 - quantile, int(n)))
    z1, z2 = center[0] + spread[0] * grid, center[1] + spread[1] * grid[::-1]
    z = np.stack(np.meshgrid(z1, z2), axis=-1).reshape(-1, 2)
    return inference.decoded_mean(model, z).reshape(int(n), int(n), *model.data_shape), (z1, z2)
