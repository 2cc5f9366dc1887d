"""Posterior heads: features -> parameters of q(z|x) -> a TFP distribution with event shape [latent_dim].

Every head is a `Posterior`: its `call` returns a dict of named tensors, `distribution(params)` turns them
into the tfd object the objectives work with, and `encode_outputs(params)` names what the exported `encode`
signature serves. A new posterior is one subclass, given to `kv.VAE(posterior=...)` (README, "Extending").
"""

import keras
import tensorflow as tf

from kerasvae._tfp import tfb, tfd

serializable = keras.saving.register_keras_serializable(package="kerasvae")


class Posterior(keras.layers.Layer):
    """Base of the posterior heads: encoder features -> named parameters of q(z|x) -> a TFP distribution.

    Subclasses set `latent_dim` (the size of z) and implement:
      - `build(features_shape)`: their layers (build them here, so a model has every weight at construction);
      - `call(features)`: a dict of float32 tensors [batch, ...] with at least "loc", the point in z space
        that deterministic uses decode (reconstructions, features, reconstruction scores);
      - `distribution(params)`: q(z|x) as a tfd distribution with event shape [latent_dim]; a VAE samples
        it with a stateless seed (`sample(k, seed=...)`), reparameterized for its gradients, and takes
        `mean()`/`stddev()` for the exported deterministic scores.
    `encode_outputs(params)` names the exported `encode` signature's tensors: "loc" and "scale" by default.
    """

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = None if latent_dim is None else int(latent_dim)

    def distribution(self, params):
        raise NotImplementedError

    def encode_outputs(self, params):
        return {"loc": params["loc"], "scale": params.get("scale", tf.zeros_like(params["loc"]))}

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@serializable
class GaussianPosterior(Posterior):
    """Diagonal Gaussian q(z|x) = N(loc, diag(scale^2)).

    scale = softplus(raw) + min_scale: softplus grows linearly, so no exp overflow, and the floor keeps
    log q finite when the network pushes raw towards -inf.

    Args:
        latent_dim: int. Dimension of z.
        min_scale: float. Lower bound of every scale. Defaults to 1e-4.
    """

    def __init__(self, latent_dim, min_scale=1e-4, **kwargs):
        super().__init__(latent_dim, **kwargs)
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
        return {**super().get_config(), "min_scale": self.min_scale}


@serializable
class DeterministicPosterior(Posterior):
    """Point-mass q(z|x) = delta(z - f(x)) of a plain autoencoder.

    Args:
        latent_dim: int. Dimension of z.
        activation: str or None. Activation of the code, e.g. "sigmoid" for KL sparsity, which needs
            codes in (0, 1). Defaults to None.
    """

    def __init__(self, latent_dim, activation=None, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.activation = activation
        self.dense = keras.layers.Dense(self.latent_dim, activation=activation)

    def build(self, features_shape):
        self.dense.build(features_shape)

    def call(self, features):
        return {"loc": tf.cast(self.dense(features), tf.float32)}

    def distribution(self, params):
        return tfd.Independent(tfd.Deterministic(loc=params["loc"]), reinterpreted_batch_ndims=1)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


def straight_through(soft, hard):
    """`hard` in the forward pass, the gradient of `soft` in the backward pass (the straight-through estimator,
    Bengio et al. 2013; straight-through Gumbel-softmax, Jang et al. 2017). soft - stop_gradient(soft) is
    exactly 0 for finite soft, so the forward value is exactly `hard`, not hard up to rounding."""
    return tf.stop_gradient(hard) + (soft - tf.stop_gradient(soft))


@serializable
class BernoulliPosterior(Posterior):
    """Binary codes: q(z|x) = prod_d Bernoulli(z_d; sigmoid(logits_d)), z in {0, 1}^latent_dim.

    `call` returns {"logits", "loc"}: loc = 1[logits > 0] is the most likely code, the one `reconstruct`
    decodes. `distribution(params)` is the discrete q. Training draws relaxed codes (the binary Concrete
    distribution, Maddison et al. 2017), a reparameterized sample in (0, 1)^latent_dim:

        z = relax(logits + L, tau) = sigmoid((logits + L) / tau),   L ~ Logistic(0, 1) = `noise`

    `relaxed(params, tau)` is that distribution as a `tfd.RelaxedBernoulli`. `harden(z)` = 1[z > 1/2] =
    1[logits + L > 0] turns a relaxed sample into an exact draw from q, whatever tau.

    Args:
        latent_dim: int. Number of bits.

    >>> head = BernoulliPosterior(latent_dim=3)
    >>> head(tf.zeros((2, 5)))["logits"].shape
    TensorShape([2, 3])
    """

    @property
    def noise(self):
        return tfd.Logistic(loc=0.0, scale=1.0)

    def __init__(self, latent_dim, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.num_latents = self.latent_dim
        self.dense = keras.layers.Dense(self.latent_dim)

    def build(self, features_shape):
        self.dense.build(features_shape)

    def call(self, features):
        logits = tf.cast(self.dense(features), tf.float32)
        return {"logits": logits, "loc": tf.cast(logits > 0, tf.float32)}

    def distribution(self, params):
        return tfd.Independent(tfd.Bernoulli(logits=params["logits"], dtype=tf.float32), reinterpreted_batch_ndims=1)

    def relaxed(self, params, temperature):
        return tfd.Independent(tfd.RelaxedBernoulli(temperature, logits=params["logits"]), reinterpreted_batch_ndims=1)

    def relax(self, perturbed_logits, temperature):
        return tf.sigmoid(perturbed_logits / temperature)

    def harden(self, z):
        return tf.cast(z > 0.5, tf.float32)

    def codes(self, z):
        """Bits int32 [..., latent_dim] of hard latents z."""
        return tf.cast(z > 0.5, tf.int32)

    def latents(self, codes):
        """Latents float32 [..., latent_dim] of bits."""
        return tf.cast(codes, tf.float32)

    def encode_outputs(self, params):
        """logits, the most likely codes int32 [n, num_latents] and their latents z, the input of `decode`."""
        return {"logits": params["logits"], "codes": self.codes(params["loc"]), "z": params["loc"]}


@serializable
class CategoricalPosterior(Posterior):
    """One-hot codes: num_latents independent categorical variables of num_categories each,
    q(z|x) = prod_g OneHotCategorical(z_g; softmax(logits_g)). The latents travel flat, row-major over
    (group, category): z [batch, num_latents * num_categories], so the prior, the decoder and the base
    model's API see event shape [latent_dim].

    `call` returns {"logits" [batch, num_latents, num_categories], "loc"}: loc is the most likely code (the
    one-hot argmax of each group, flat), the one `reconstruct` decodes. `distribution(params)` is the
    discrete q. Training draws relaxed codes (Gumbel-softmax, Jang et al. 2017; Concrete, Maddison et al.
    2017), a reparameterized sample on the simplex of each group:

        z_g = relax(logits_g + G_g, tau) = softmax((logits_g + G_g) / tau),   G ~ Gumbel(0, 1) = `noise`

    `relaxed(params, tau)` is that distribution as a `tfd.RelaxedOneHotCategorical`. `harden(z)`, the
    one-hot argmax of each group, turns a relaxed sample into an exact draw from q (the Gumbel-max trick),
    whatever tau.

    Args:
        num_latents: int. Number of categorical variables (groups).
        num_categories: int. Categories K of each.

    >>> head = CategoricalPosterior(num_latents=2, num_categories=3)
    >>> head(tf.zeros((4, 5)))["loc"].shape
    TensorShape([4, 6])
    """

    @property
    def noise(self):
        return tfd.Gumbel(loc=0.0, scale=1.0)

    def __init__(self, num_latents, num_categories, **kwargs):
        kwargs.pop("latent_dim", None)  # derived: num_latents * num_categories
        super().__init__(int(num_latents) * int(num_categories), **kwargs)
        self.num_latents = int(num_latents)
        self.num_categories = int(num_categories)
        self.dense = keras.layers.Dense(self.latent_dim)

    def build(self, features_shape):
        self.dense.build(features_shape)

    def call(self, features):
        logits = tf.reshape(tf.cast(self.dense(features), tf.float32), [-1, self.num_latents, self.num_categories])
        return {"logits": logits, "loc": self.latents(tf.argmax(logits, axis=-1, output_type=tf.int32))}

    def _flat(self, distribution):
        groups = tfd.Independent(distribution, reinterpreted_batch_ndims=1)
        return tfd.TransformedDistribution(groups, tfb.Reshape([self.latent_dim], [self.num_latents, self.num_categories]))

    def distribution(self, params):
        return self._flat(tfd.OneHotCategorical(logits=params["logits"], dtype=tf.float32))

    def relaxed(self, params, temperature):
        return self._flat(tfd.RelaxedOneHotCategorical(temperature, logits=params["logits"]))

    def relax(self, perturbed_logits, temperature):
        soft = tf.nn.softmax(perturbed_logits / temperature, axis=-1)
        return tf.reshape(soft, tf.concat([tf.shape(soft)[:-2], [self.latent_dim]], axis=0))

    def harden(self, z):
        return self.latents(self.codes(z))

    def codes(self, z):
        """Category indices int32 [..., num_latents] of latents z [..., latent_dim] (argmax per group)."""
        groups = tf.reshape(z, tf.concat([tf.shape(z)[:-1], [self.num_latents, self.num_categories]], axis=0))
        return tf.argmax(groups, axis=-1, output_type=tf.int32)

    def latents(self, codes):
        """Flat one-hot latents float32 [..., latent_dim] of category indices [..., num_latents]."""
        one_hot = tf.one_hot(codes, self.num_categories, dtype=tf.float32)
        return tf.reshape(one_hot, tf.concat([tf.shape(codes)[:-1], [self.latent_dim]], axis=0))

    def encode_outputs(self, params):
        """logits [n, num_latents, num_categories], the most likely codes int32 [n, num_latents] and their
        flat one-hot latents z, the input of `decode`."""
        return {"logits": params["logits"], "codes": self.codes(params["loc"]), "z": params["loc"]}

    def get_config(self):
        config = {k: v for k, v in super().get_config().items() if k != "latent_dim"}
        return {**config, "num_latents": self.num_latents, "num_categories": self.num_categories}
