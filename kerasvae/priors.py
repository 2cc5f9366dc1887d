"""Priors p(z) over R^latent_dim, each a Keras layer whose `distribution()` builds the tfd object from its
weights (so `fit` trains learned priors). Look one up by name with `get`."""

import keras
import tensorflow as tf

from kerasvae._tfp import tfd

serializable = keras.saving.register_keras_serializable(package="kerasvae")


@serializable
class StandardNormalPrior(keras.layers.Layer):
    """p(z) = N(0, I).

    Args:
        latent_dim: int. Dimension of z.
    """

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.built = True

    def distribution(self):
        zeros = tf.zeros([self.latent_dim])
        return tfd.MultivariateNormalDiag(loc=zeros, scale_diag=tf.ones_like(zeros))

    def call(self, inputs=None):
        raise TypeError("Priors have no call; use prior.distribution().")

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@serializable
class MomentMatchedPrior(keras.layers.Layer):
    """p(z) = N(mean, diag(variance)) of the codes seen in training, tracked as moving averages.

    A plain autoencoder trains no prior; fitting a Gaussian to its aggregate codes afterwards (ex-post
    density estimation, Ghosh et al. 2020) is what makes it generate. The moments update like
    BatchNormalization's: `update(codes)` in each training step.

    Args:
        latent_dim: int. Dimension of z.
        momentum: float. Weight of the old moments in each update. Defaults to 0.99.
    """

    def __init__(self, latent_dim, momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.momentum = float(momentum)
        self.moving_mean = self.add_weight(shape=(self.latent_dim,), initializer="zeros", trainable=False, name="moving_mean")
        self.moving_variance = self.add_weight(shape=(self.latent_dim,), initializer="ones", trainable=False, name="moving_variance")
        self.built = True

    def update(self, codes):
        mean, variance = tf.nn.moments(codes, axes=[0])
        self.moving_mean.assign(self.momentum * self.moving_mean + (1.0 - self.momentum) * mean)
        self.moving_variance.assign(self.momentum * self.moving_variance + (1.0 - self.momentum) * variance)

    def distribution(self):
        scale = tf.sqrt(tf.convert_to_tensor(self.moving_variance) + 1e-6)
        return tfd.MultivariateNormalDiag(loc=tf.convert_to_tensor(self.moving_mean), scale_diag=scale)

    def call(self, inputs=None):
        raise TypeError("Priors have no call; use prior.distribution().")

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "momentum": self.momentum}


PRIORS = {"normal": StandardNormalPrior}


def get(prior, latent_dim):
    """A prior layer from a name in PRIORS, or the prior layer itself."""
    if isinstance(prior, keras.layers.Layer):
        return prior
    if prior not in PRIORS:
        raise ValueError(f"Unknown prior {prior!r}; expected one of {sorted(PRIORS)} or a prior layer.")
    return PRIORS[prior](latent_dim)
