"""Priors p(z) over R^latent_dim, each a Keras layer whose `distribution()` builds the tfd object from its
weights (so `fit` trains learned priors). Look one up by name with `get`.

Most priors are self-contained. A prior defined through the model's own posterior (the VampPrior) sets
`needs_posterior = True`; the model then calls `distribution(posterior=...)` with its q(z|x) function.
The function is passed per call rather than stored on the layer: the model owns the prior, and a tracked
reference back to the model would be a cycle in Keras's layer tracking and serialization.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from kerasvae._tfp import tfb, tfd

serializable = keras.saving.register_keras_serializable(package="kerasvae")


def _continuous(temperature):
    if temperature != 1.0:
        raise ValueError("A continuous prior has no temperature: model.sample(temperature=...) scales its samples about the mean.")


class Prior(keras.layers.Layer):
    """Base of the priors: a layer without `call` whose `distribution()` returns p(z).

    Subclasses create their weights in `__init__` (their shapes never depend on data), so a model has its
    full variable set at construction and `.keras` loading finds every prior weight. The code priors of
    discrete models (kerasvae.code_priors) are priors too.
    """

    # True for priors defined through q(z|x); see the module docstring.
    needs_posterior = False

    def distribution(self, posterior=None, temperature=1.0):
        """p(z) as a tfd distribution with event shape [latent_dim] (code priors: [num_latents] int32 codes).

        Args:
            posterior: the model's q(z|x) function, for priors that are defined through it (`needs_posterior`).
            temperature: float. Code priors divide their logits by it (< 1: more typical codes). The
                continuous priors take only 1: their models scale samples about the prior mean instead.
        """
        raise NotImplementedError

    def call(self, inputs=None):
        raise TypeError("Priors have no call; use prior.distribution().")


@serializable
class StandardNormalPrior(Prior):
    """p(z) = N(0, I).

    Args:
        latent_dim: int. Dimension of z.
    """

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.built = True

    def distribution(self, posterior=None, temperature=1.0):
        _continuous(temperature)
        zeros = tf.zeros([self.latent_dim])
        return tfd.MultivariateNormalDiag(loc=zeros, scale_diag=tf.ones_like(zeros))

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@serializable
class MomentMatchedPrior(Prior):
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

    def distribution(self, posterior=None, temperature=1.0):
        _continuous(temperature)
        scale = tf.sqrt(tf.convert_to_tensor(self.moving_variance) + 1e-6)
        return tfd.MultivariateNormalDiag(loc=tf.convert_to_tensor(self.moving_mean), scale_diag=scale)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "momentum": self.momentum}


@serializable
class MixturePrior(Prior):
    """A learned mixture of K diagonal Gaussians (Dilokthanakul et al. 2016; Tomczak & Welling 2018):

    p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)),   pi = softmax(logits),   sigma_k = softplus(raw_k) + min_scale

    Every parameter is a Keras weight, trained by `fit` through the Monte Carlo KL (a mixture has no
    closed-form KL to a Gaussian). The means start spread as N(0, I) draws so the components begin apart,
    the scales at 1 and the weights uniform.

    Args:
        latent_dim: int. Dimension of z.
        num_components: int. Number of mixture components K. Defaults to 10.
        min_scale: float. Floor of every component scale; keeps log p(z) bounded when a component
            collapses. Defaults to 1e-3.
        seed: int or None. Seeds the initial component means. Defaults to None.

    >>> prior = MixturePrior(latent_dim=2, num_components=3, seed=0)
    >>> prior.distribution().log_prob(tf.zeros([5, 2])).shape
    TensorShape([5])
    """

    def __init__(self, latent_dim, num_components=10, min_scale=1e-3, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.num_components = int(num_components)
        self.min_scale = float(min_scale)
        self.seed = seed
        if self.num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}.")
        if not 0.0 <= self.min_scale < 1.0:
            raise ValueError(f"min_scale must be in [0, 1), got {min_scale}.")
        k, d = self.num_components, self.latent_dim
        self.logits = self.add_weight(shape=(k,), initializer="zeros", name="logits")
        self.locs = self.add_weight(
            shape=(k, d), initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed), name="locs"
        )
        # softplus(raw) + min_scale = 1 at the start.
        unit_scale = math.log(math.expm1(1.0 - self.min_scale))
        self.raw_scales = self.add_weight(
            shape=(k, d), initializer=keras.initializers.Constant(unit_scale), name="raw_scales"
        )
        self.built = True

    def distribution(self, posterior=None, temperature=1.0):
        _continuous(temperature)
        scales = tf.nn.softplus(tf.convert_to_tensor(self.raw_scales)) + self.min_scale
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=tf.convert_to_tensor(self.logits)),
            components_distribution=tfd.MultivariateNormalDiag(loc=tf.convert_to_tensor(self.locs), scale_diag=scales),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "num_components": self.num_components,
            "min_scale": self.min_scale,
            "seed": self.seed,
        }


@serializable
class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling 2018): the model's own posterior averaged over K learned
    pseudo-inputs u_k, an approximation of the aggregate posterior that the ELBO's optimal prior is.

    p(z) = 1/K sum_k q(z | u_k)

    The pseudo-inputs are a Keras weight of shape [K, *input_shape] trained by `fit` along with the
    encoder. The model supplies q: it calls `distribution(posterior=model.posterior)`, and the encoder
    runs on the pseudo-inputs in inference mode (the prior is a function of the weights, not of a batch,
    so it must not update batch statistics).

    Args:
        latent_dim: int. Dimension of z.
        input_shape: tuple of int. Shape of one example, e.g. (28, 28, 1).
        num_components: int. Number of pseudo-inputs K. Defaults to 50.
        seed: int or None. Seeds the initial pseudo-inputs, uniform on [0, 1]. Defaults to None.
        pseudo_inputs_init: array [K, *input_shape], "data" or None. Initial pseudo-inputs instead of
            uniform noise: an array (like the `weights` of keras.layers.Embedding not part of the config: its
            values live in the weights, which saving keeps), or "data": K training examples drawn at random
            (`adapt`), which the model's first `fit` takes from its training sample and `kerasvae train`
            from the training images. Defaults to None.

    >>> import kerasvae as kv
    >>> vae = kv.VAE(kv.networks.MLP((16,)), kv.networks.MLP((16,)), latent_dim=2, input_shape=(8, 8, 1),
    ...              prior=VampPrior(latent_dim=2, input_shape=(8, 8, 1), num_components=5, seed=0))
    >>> vae.prior.log_prob(tf.zeros([3, 2])).shape
    TensorShape([3])
    """

    needs_posterior = True

    def __init__(self, latent_dim, input_shape, num_components=50, seed=None, pseudo_inputs_init=None, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.data_shape = tuple(int(d) for d in input_shape)
        self.num_components = int(num_components)
        self.seed = seed
        self.starts_from_data = isinstance(pseudo_inputs_init, str)
        if self.starts_from_data and pseudo_inputs_init != "data":
            raise ValueError(f'pseudo_inputs_init must be an array, "data" or None, got {pseudo_inputs_init!r}.')
        if self.num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}.")
        self.pseudo_inputs = self.add_weight(
            shape=(self.num_components, *self.data_shape),
            initializer=keras.initializers.RandomUniform(0.0, 1.0, seed=seed),
            name="pseudo_inputs",
        )
        if pseudo_inputs_init is not None and not self.starts_from_data:
            values = np.asarray(pseudo_inputs_init, np.float32)
            if values.shape != tuple(self.pseudo_inputs.shape):
                raise ValueError(f"pseudo_inputs_init must have shape {list(self.pseudo_inputs.shape)}, got {list(values.shape)}.")
            self.pseudo_inputs.assign(values)
        # Whether the pseudo-inputs have started from data: a weight, so that a saved model keeps it and no
        # later fit starts them again (also after load_model(..., compile=False) and a new optimizer).
        self.started_from_data = (self.add_weight(shape=(), initializer="zeros", trainable=False, name="started_from_data")
                                  if self.starts_from_data else None)
        self.built = True

    @property
    def adapted(self):
        """True once `adapt` has set the pseudo-inputs of a prior that starts from data."""
        return self.started_from_data is not None and bool(self.started_from_data.numpy())

    def adapt(self, x, seed=None):
        """Sets the pseudo-inputs to K examples of x [n, *input_shape] drawn at random (without replacement
        where n >= K), so the mixture starts on the data instead of on noise. `seed` defaults to the prior's."""
        x = np.asarray(x, np.float32)
        if x.shape[1:] != self.data_shape or not len(x):
            raise ValueError(f"adapt needs examples of shape {self.data_shape}, got an array of shape {x.shape}.")
        rng = np.random.default_rng(self.seed if seed is None else seed)
        self.pseudo_inputs.assign(x[rng.choice(len(x), self.num_components, replace=len(x) < self.num_components)])
        if self.started_from_data is not None:
            self.started_from_data.assign(1.0)

    def distribution(self, posterior=None, temperature=1.0):
        _continuous(temperature)
        if posterior is None:
            raise ValueError("A VampPrior is q(z|u) averaged over pseudo-inputs u; use model.prior, which passes q.")
        components = posterior(tf.convert_to_tensor(self.pseudo_inputs))
        uniform = tfd.Categorical(logits=tf.zeros([self.num_components]))
        return tfd.MixtureSameFamily(mixture_distribution=uniform, components_distribution=components)

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "input_shape": self.data_shape,
            "num_components": self.num_components,
            "seed": self.seed,
            **({"pseudo_inputs_init": "data"} if self.starts_from_data else {}),
        }


@serializable
class UniformBernoulliPrior(Prior):
    """p(z) = prod_d Bernoulli(z_d; 1/2): every one of the 2^latent_dim binary codes equally likely.

    Args:
        latent_dim: int. Number of bits.

    >>> round(float(UniformBernoulliPrior(latent_dim=3).distribution().log_prob(tf.ones([3]))), 4)  # log 2^-3
    -2.0794
    """

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.built = True

    def distribution(self, posterior=None, temperature=1.0):
        del posterior, temperature  # uniform at every temperature
        return tfd.Independent(tfd.Bernoulli(logits=tf.zeros([self.latent_dim]), dtype=tf.float32), reinterpreted_batch_ndims=1)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@serializable
class UniformCategoricalPrior(Prior):
    """p(z) = prod_g OneHotCategorical(z_g; 1/K): num_latents independent one-hot codes, each category equally
    likely. Samples are flat, row-major over (group, category): [latent_dim = num_latents * num_categories],
    the layout of `kerasvae.posteriors.CategoricalPosterior`.

    Args:
        num_latents: int. Number of categorical variables (groups).
        num_categories: int. Categories K of each.

    >>> UniformCategoricalPrior(num_latents=2, num_categories=4).distribution().sample(5, seed=(0, 0)).shape
    TensorShape([5, 8])
    """

    def __init__(self, num_latents, num_categories, **kwargs):
        super().__init__(**kwargs)
        self.num_latents = int(num_latents)
        self.num_categories = int(num_categories)
        self.latent_dim = self.num_latents * self.num_categories
        self.built = True

    def distribution(self, posterior=None, temperature=1.0):
        del posterior, temperature  # uniform at every temperature
        shape = [self.num_latents, self.num_categories]
        groups = tfd.Independent(tfd.OneHotCategorical(logits=tf.zeros(shape), dtype=tf.float32), reinterpreted_batch_ndims=1)
        return tfd.TransformedDistribution(groups, tfb.Reshape([self.latent_dim], shape))

    def get_config(self):
        return {**super().get_config(), "num_latents": self.num_latents, "num_categories": self.num_categories}


PRIORS = {"normal": StandardNormalPrior, "mixture": MixturePrior, "vamp": VampPrior}


def get(prior, latent_dim, input_shape=None):
    """A prior layer from a name in PRIORS, or the prior layer itself.

    Args:
        prior: str or prior layer. A name in PRIORS, or a layer to return as is.
        latent_dim: int. Dimension of z.
        input_shape: tuple of int or None. Shape of one example; required by priors defined in input
            space through the posterior ("vamp"). Defaults to None.
    """
    if isinstance(prior, keras.layers.Layer):
        shape = getattr(prior, "data_shape", None)
        if input_shape is not None and shape is not None and shape != tuple(input_shape):
            raise ValueError(f"The prior's input_shape {shape} differs from the model's {tuple(input_shape)}.")
        return prior
    if prior not in PRIORS:
        raise ValueError(f"Unknown prior {prior!r}; expected one of {sorted(PRIORS)} or a prior layer.")
    prior_class = PRIORS[prior]
    if prior_class.needs_posterior:
        if input_shape is None:
            raise ValueError(f"The {prior!r} prior lives in input space and needs the model's input_shape.")
        return prior_class(latent_dim, input_shape=input_shape)
    return prior_class(latent_dim)
