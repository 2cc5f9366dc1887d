"""The conditional VAE (Sohn et al. 2015): q(z|x, y), p(x|z, y) and p(z) = N(0, I), so z carries what the
label does not (style) and `sample(n, labels=...)` generates a chosen class."""

import keras
import tensorflow as tf

from kerasvae.models.vae import VAE


@keras.saving.register_keras_serializable(package="kerasvae")
class ConditionalVAE(VAE):
    """A VAE conditioned on an integer label: the label's one-hot vector is joined to the encoder's
    features and to z before the decoder. Trained by `fit(x, y)`; every API method takes `labels`.

    loss = -E_q(z|x,y)[log p(x|z,y)] + beta * KL(q(z|x,y) || p(z))

    Args:
        num_classes: int. Number of label classes.
        All other arguments as for kv.VAE (the VampPrior, which encodes pseudo-inputs without labels, is
        not available here).

    >>> import kerasvae as kv
    >>> cvae = kv.ConditionalVAE(kv.networks.MLP((32,)), kv.networks.MLP((32,)), latent_dim=2,
    ...                          input_shape=(8, 8, 1), num_classes=10)
    >>> cvae.sample(3, labels=[0, 1, 2], seed=0).shape
    (3, 8, 8, 1)
    """

    def __init__(self, encoder, decoder, latent_dim, input_shape, num_classes, **kwargs):
        self.num_classes = int(num_classes)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        if kwargs.get("prior") == "vamp":
            raise ValueError("ConditionalVAE does not support the VampPrior (its pseudo-inputs have no labels).")
        super().__init__(encoder, decoder, latent_dim, input_shape, **kwargs)

    def condition(self, inputs, labels):
        flat = tf.reshape(inputs, [tf.shape(inputs)[0], -1])
        return tf.concat([flat, tf.one_hot(labels, self.num_classes, dtype=flat.dtype)], axis=-1)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
