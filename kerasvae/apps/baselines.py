"""The classical baseline the applications measure themselves against: principal component analysis, the
linear autoencoder with the optimal squared error for its dimension (Eckart-Young)."""

import numpy as np


class PCABaseline:
    """PCA on flattened images: encode = the top principal components, decode = their linear span.

    x ~= mean + codes @ components, codes = (x - mean) @ components^T

    Args:
        n_components: int. Dimension of the code; use the latent dimension of the model compared with.
        seed: int. Seeds the randomized SVD scikit-learn picks for large inputs. Defaults to 0.

    >>> pca = PCABaseline(8).fit(x_train)
    >>> errors = pca.reconstruction_error(x_test)   # per-example sum of squared errors
    """

    def __init__(self, n_components, seed=0):
        self.n_components = int(n_components)
        self.seed = seed
        self.pca = None
        self.shape = None

    def fit(self, x):
        from sklearn.decomposition import PCA

        x = np.asarray(x, np.float32)
        if self.n_components < 1 or self.n_components > min(len(x), int(np.prod(x.shape[1:]))):
            raise ValueError(f"PCA needs 1 <= n_components <= min(examples, features), got {self.n_components} for {list(x.shape)}.")
        self.shape = x.shape[1:]
        self.pca = PCA(self.n_components, random_state=self.seed).fit(x.reshape(len(x), -1))
        return self

    def encode(self, x):
        """Principal-component codes [n, n_components]."""
        return self.pca.transform(self._flat(x))

    def decode(self, codes):
        """Images [n, *shape] back from codes."""
        return self.pca.inverse_transform(np.asarray(codes)).reshape(-1, *self.shape).astype(np.float32)

    def reconstruct(self, x):
        """The projection of x onto the principal subspace, clipped to the image range [0, 1]."""
        return np.clip(self.decode(self.encode(x)), 0.0, 1.0)

    def reconstruction_error(self, x):
        """Per-example sum of squared errors of the (unclipped) projection: the classical anomaly score."""
        flat = self._flat(x)
        projected = self.pca.inverse_transform(self.pca.transform(flat))
        return np.sum(np.square(flat - projected), axis=1)

    @property
    def component_stddev(self):
        """Standard deviation of each code on the fitted data."""
        return np.sqrt(self.pca.explained_variance_)

    def _flat(self, x):
        if self.pca is None:
            raise ValueError("Call fit(x) first.")
        x = np.asarray(x, np.float32)
        if x.shape[1:] != self.shape:
            raise ValueError(f"Expected inputs of shape [batch, {', '.join(map(str, self.shape))}], got {list(x.shape)}.")
        return x.reshape(len(x), -1)
