"""Sparse coding on latents: learn a dictionary of atoms in the latent space, write each code as a
combination of a few atoms, and decode that. Compared with sparse coding of the raw pixels, the same
number of atoms goes through the decoder's nonlinearity.

    z ~= s @ D   (s with at most k nonzeros, found by orthogonal matching pursuit),   x_hat = E[x | z = s @ D]
"""

import numpy as np

from kerasvae import progress
from kerasvae.apps import inference
from kerasvae.apps.metrics import psnr


def learn_dictionary(data, n_atoms=32, alpha=1.0, max_iter=10, seed=0):
    """Atoms [n_atoms, dim] (unit norm) learned from rows of data by scikit-learn's DictionaryLearning
    (Mairal et al. 2009: min ||X - S D||^2 / 2 + alpha ||S||_1 over S and unit-norm atoms D)."""
    from sklearn.decomposition import DictionaryLearning

    data = np.asarray(data, np.float64).reshape(len(data), -1)
    learner = DictionaryLearning(n_atoms, alpha=alpha, max_iter=max_iter, fit_algorithm="cd", random_state=seed)
    return learner.fit(data).components_


def sparse_codes(dictionary, data, n_nonzero):
    """Codes [n, n_atoms] with at most n_nonzero nonzeros each, by orthogonal matching pursuit
    (scikit-learn's SparseCoder)."""
    from sklearn.decomposition import SparseCoder

    if not 1 <= int(n_nonzero) <= len(dictionary):
        raise ValueError(f"n_nonzero must lie in [1, {len(dictionary)}], got {n_nonzero}.")
    coder = SparseCoder(dictionary, transform_algorithm="omp", transform_n_nonzero_coefs=int(n_nonzero))
    return coder.transform(np.asarray(data, np.float64).reshape(len(data), -1))


class SparseLatentCoder:
    """Dictionary learning on a model's posterior means; reconstruction through its decoder.

    Args:
        model: a kerasvae model with continuous latents.
        n_atoms: int. Dictionary size (> latent_dim makes it overcomplete). Defaults to 32.
        alpha: float. The L1 weight of dictionary learning. Defaults to 1.0.
        max_iter: int. Dictionary-learning iterations. Defaults to 10.

    >>> coder = SparseLatentCoder(model).fit(x_train)
    >>> images = coder.reconstruct(x_test, n_nonzero=3)   # three atoms per image
    """

    def __init__(self, model, n_atoms=32, alpha=1.0, max_iter=10, seed=0):
        inference.check_continuous_latents(model)
        self.model, self.n_atoms, self.alpha, self.max_iter, self.seed = model, int(n_atoms), float(alpha), int(max_iter), seed
        self.dictionary = None

    def fit(self, x):
        self.dictionary = learn_dictionary(inference.posterior_means(self.model, x), self.n_atoms, self.alpha, self.max_iter, self.seed)
        return self

    def transform(self, x, n_nonzero):
        """Sparse codes [n, n_atoms] of the posterior means of x."""
        if self.dictionary is None:
            raise ValueError("Call fit(x) first.")
        return sparse_codes(self.dictionary, inference.posterior_means(self.model, x), n_nonzero)

    def reconstruct(self, x, n_nonzero):
        """E[x | z = codes @ dictionary], images in [0, 1]."""
        z = self.transform(x, n_nonzero) @ self.dictionary
        return np.clip(inference.decoded_mean(self.model, z), 0.0, 1.0)


def sparsity_curve(model, x_fit, x, n_nonzero=(1, 2, 3, 4), n_atoms=32, alpha=1.0, max_iter=10, seed=0):
    """Reconstruction error against sparsity, latent dictionary vs a pixel dictionary of the same size
    learned the same way on the same images (the classical baseline). Returns (rows, images): rows of
    {"n_nonzero", "latent_mse", "latent_psnr", "pixel_mse", "pixel_psnr"}, images {"original",
    "latent_<k>", "pixel_<k>"}."""
    x = np.asarray(x, np.float32)
    latent = SparseLatentCoder(model, n_atoms, alpha, max_iter, seed).fit(x_fit)
    pixel_dictionary = learn_dictionary(x_fit, n_atoms, alpha, max_iter, seed)
    rows, images = [], {"original": x}
    for k in progress.iterate(n_nonzero, "dictionaries"):
        from_latent = latent.reconstruct(x, k)
        from_pixels = np.clip(sparse_codes(pixel_dictionary, x, k) @ pixel_dictionary, 0.0, 1.0).reshape(x.shape).astype(np.float32)
        images[f"latent_{k}"], images[f"pixel_{k}"] = from_latent, from_pixels
        rows.append({
            "n_nonzero": int(k),
            "latent_mse": float(np.mean(np.square(from_latent - x))),
            "latent_psnr": psnr(from_latent, x),
            "pixel_mse": float(np.mean(np.square(from_pixels - x))),
            "pixel_psnr": psnr(from_pixels, x),
        })
    return rows, images
