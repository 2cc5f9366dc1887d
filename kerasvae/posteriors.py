"""Posterior heads: features -> parameters of q(z|x) -> a TFP distribution with event shape [latent_dim].

A head's `call` returns a dict of named tensors (what the exported `encode` signature serves); its
`distribution(params)` turns them into the tfd object the objectives work with.
"""

import keras
import tensorflow as tf

from kerasvae._tfp import tfd

serializable = keras.saving.register_keras_serializable(package="kerasvae")


@serializable
class GaussianPosterior(keras.layers.Layer):
    """Diagonal Gaussian q(z|x) = N(loc, diag(scale^2)).

    scale = softplus(raw) + min_scale: softplus grows linearly, so no exp overflow, and the floor keeps
    log q finite when the network pushes raw towards -inf.

    Args:
        latent_dim: int. Dimension of z.
        min_scale: float. Lower bound of every scale. Defaults to 1e-4.
    """

    def __init__(self, latent_dim, min_scale=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.min_scale = float(min_scale)
        self.dense = keras.layers.Dense(2 * self.latent_dim)

    def build(self, features_shape):
        self.dense.build(features_shape)

    def call(self, features):
        loc, raw_scale = tf.split(tf.cast(self.dense(features), tf.float32), 2, axis=-1)
        return {"loc": loc, "scale": tf.nn.softplus(raw_scale) + self.min_scale}

    def distribution(self, params):
        return tfd.MultivariateNormalDiag(loc=params["loc"], scale_diag=params["scale"])

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "min_scale": self.min_scale}


@serializable
class DeterministicPosterior(keras.layers.Layer):
    """Point-mass q(z|x) = delta(z - f(x)) of a plain autoencoder.

    Args:
        latent_dim: int. Dimension of z.
        activation: str or None. Activation of the code, e.g. "sigmoid" for KL sparsity, which needs
            codes in (0, 1). Defaults to None.
    """

    def __init__(self, latent_dim, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.activation = activation
        self.dense = keras.layers.Dense(self.latent_dim, activation=activation)

    def build(self, features_shape):
        self.dense.build(features_shape)

    def call(self, features):
        return {"loc": tf.cast(self.dense(features), tf.float32)}

    def distribution(self, params):
        return tfd.Independent(tfd.Deterministic(loc=params["loc"]), reinterpreted_batch_ndims=1)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "activation": self.activation}
