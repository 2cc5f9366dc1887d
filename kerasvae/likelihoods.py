"""Likelihood heads p(x|z): decoder features -> parameters -> `tfd.Independent` over the input shape.

Every likelihood here models data scaled to [0, 1] (pixels / 255). A head's `call` returns a dict of
named tensors named as TFP names them (`logits`, `loc`, `scale`), which is what the exported `decode`
signature serves; `distribution(params)` builds the tfd object; `log_prob(params, x)` and `mean(params)`
speak in data units, so discrete likelihoods (8-bit `logistic`, `categorical`) can live on {0..255}
internally while callers keep passing images in [0, 1].
"""

import functools
import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from kerasvae import networks
from kerasvae._tfp import tfd

serializable = keras.saving.register_keras_serializable(package="kerasvae")

PIXEL_LEVELS = 256


class Likelihood(keras.layers.Layer):
    """Base head. Subclasses set `params_per_element` and implement `split_params` and `element_distribution`.

    The head reads decoder features either as a flat vector (Dense to every element's parameters) or as a
    feature map with the image's height and width (a per-pixel Dense, i.e. a 1x1 convolution).
    """

    params_per_element = 1
    support = None  # (low, high) of the data the head models, in data units; None: any real number
    # True where log p(x|z) is the log-probability of 8-bit levels, so -log p(x) is a code length in nats
    # that a lossless image coder's can be compared with (the "complexity" anomaly score); False for densities.
    eight_bit = False
    # True where every parameter has the data's shape (no trailing parameter dims), so the event dims can
    # be flattened into one for `flat_log_prob`.
    elementwise_params = True

    def __init__(self, event_shape=None, **kwargs):
        super().__init__(**kwargs)
        self.event_shape = None if event_shape is None else tuple(int(d) for d in event_shape)
        self.fuse_log_prob = False  # set by kerasvae.models.probabilistic.evaluation_graph while it traces
        self._fused_log_prob = None

    def set_event_shape(self, event_shape):
        """Called by the model with its input shape before the head is built."""
        self.event_shape = tuple(int(d) for d in event_shape)

    def build(self, features_shape):
        if self.event_shape is None:
            raise ValueError("The likelihood needs an event shape: pass it to a model as `likelihood=`.")
        spatial = tuple(features_shape[1:-1])
        self.per_pixel = len(features_shape) == len(self.event_shape) + 1 and spatial == self.event_shape[:-1]
        width = self.event_shape[-1] if self.per_pixel else math.prod(self.event_shape)
        self.dense = keras.layers.Dense(width * self.params_per_element)
        self.dense.build((None, features_shape[-1]) if self.per_pixel else (None, math.prod(features_shape[1:])))

    def call(self, features):
        if not self.per_pixel:
            features = tf.reshape(features, [tf.shape(features)[0], -1])
        raw = tf.cast(networks.dense(self.dense, features), tf.float32)
        raw = tf.reshape(raw, [-1, *self.event_shape, self.params_per_element])
        return self.split_params(raw)

    def get_config(self):
        return {**super().get_config(), "event_shape": self.event_shape}

    def distribution(self, params):
        return tfd.Independent(self.element_distribution(params), reinterpreted_batch_ndims=len(self.event_shape))

    def validate(self, x):
        """Raise ValueError unless every value of the numpy array x lies in `support`. The models' public
        methods call it; training does not (a train step never pays for a data scan)."""
        if self.support is None or x.size == 0:
            return
        low, high = self.support
        x_min, x_max = float(np.min(x)), float(np.max(x))
        if x_min < low or x_max > high:
            hint = "; divide 8-bit images by 255" if 1 < x_max <= 255 and x_min >= 0 else ""
            raise ValueError(
                f"{type(self).__name__} likelihood models values in [{low:g}, {high:g}]; the inputs span "
                f"[{x_min:g}, {x_max:g}]{hint}."
            )

    def check_training_data(self, x):
        """Called by `fit` on a sample of the training data (numpy): warns where the data do not suit the
        likelihood. Nothing to check by default."""

    def targets(self, x):
        """Data in [0, 1] -> values in the distribution's support."""
        return x

    def log_prob(self, params, x):
        """log p(x|z) in nats, one value per example; x in data units, broadcasting over leading dims."""
        if self.fuse_log_prob and self.elementwise_params:
            if self._fused_log_prob is None:
                self._fused_log_prob = tf.function(self.flat_log_prob, jit_compile=True)
            return self._fused_log_prob(params, x)
        return self.distribution(params).log_prob(self.targets(x))

    def flat_log_prob(self, params, x):
        """log_prob with the event dims flattened into one: the same sum over the same elements. Compiled
        by XLA (`fuse_log_prob`), the element-wise terms and their sum become one pass over memory, where
        TensorFlow's kernels take one pass per op over every decoded pixel (the importance-weighted
        estimate's main cost beside the decoder's matmuls; BENCHMARKS.md)."""
        size = math.prod(self.event_shape)

        def flat(value):
            value = tf.convert_to_tensor(value)
            return tf.reshape(value, tf.concat([tf.shape(value)[: value.shape.rank - len(self.event_shape)], [size]], 0))

        elements = self.element_distribution({name: flat(value) for name, value in params.items()})
        return tfd.Independent(elements, reinterpreted_batch_ndims=1).log_prob(flat(self.targets(x)))

    def mean(self, params):
        """E[x|z] in data units."""
        return self.distribution(params).mean()

    def sample(self, params, seed):
        """x ~ p(x|z) in data units, from the stateless `seed`: an 8-bit head's levels divided by 255, so a
        sample is an image in [0, 1] like `mean` (the distribution itself draws levels)."""
        x = tf.cast(self.distribution(params).sample(seed=seed), tf.float32)
        return x / (PIXEL_LEVELS - 1) if self.eight_bit else x


@serializable
class Bernoulli(Likelihood):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logits_i)), for binary (or binarized) data.

    >>> lik = Bernoulli(); lik.set_event_shape((2,))
    """

    support = (0.0, 1.0)

    def split_params(self, raw):
        return {"logits": raw[..., 0]}

    def element_distribution(self, params):
        return tfd.Bernoulli(logits=params["logits"], dtype=tf.float32)

    def check_training_data(self, x):
        """Warns when x is not binary: on grey levels a Bernoulli "log-likelihood" is a cross-entropy, not a
        density of the data, so its bounds and likelihood-based scores (anomaly, NLL) mislead."""
        share = float(np.mean((x != 0) & (x != 1))) if x.size else 0.0
        if share > 0:
            warnings.warn(
                f"A Bernoulli likelihood is fitting non-binary data ({share:.0%} of the values sampled are neither 0 nor 1): "
                "binarize it (kv.data.load(..., binarize='dynamic')), or use likelihood='continuous_bernoulli', "
                "'gaussian' or 'logistic' for grey levels.", UserWarning, stacklevel=3,
            )


@serializable
class ContinuousBernoulli(Likelihood):
    """The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): the properly normalized density on [0, 1]
    that a Bernoulli log-loss on grey values silently assumes."""

    support = (0.0, 1.0)

    def split_params(self, raw):
        return {"logits": raw[..., 0]}

    def element_distribution(self, params):
        return tfd.ContinuousBernoulli(logits=params["logits"])


@serializable
class Gaussian(Likelihood):
    """p(x|z) = prod_i N(x_i; loc_i, scale^2).

    Args:
        scale: float, "learned" or "learned_per_pixel". A fixed scale; one learned scale shared by all
            elements; or one learned scale per element. Learned scales are softplus(raw) + min_scale.
            Defaults to "learned".
        min_scale: float. Floor of a learned scale. Defaults to 1e-3.
    """

    def __init__(self, scale="learned", min_scale=1e-3, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(scale, (int, float)) and scale not in ("learned", "learned_per_pixel"):
            raise ValueError(f"Gaussian scale must be a number, 'learned' or 'learned_per_pixel'; got {scale!r}.")
        self.scale = float(scale) if isinstance(scale, (int, float)) else scale
        self.min_scale = float(min_scale)

    def build(self, features_shape):
        super().build(features_shape)
        if isinstance(self.scale, str):
            shape = () if self.scale == "learned" else self.event_shape
            # softplus(0.5413) = 1.0: start at unit scale.
            self.raw_scale = self.add_weight(shape=shape, initializer=keras.initializers.Constant(0.5413), name="raw_scale")

    def split_params(self, raw):
        loc = raw[..., 0]
        if isinstance(self.scale, float):
            scale = tf.fill(tf.shape(loc), self.scale)
        else:
            scale = tf.broadcast_to(tf.nn.softplus(tf.cast(self.raw_scale, tf.float32)) + self.min_scale, tf.shape(loc))
        return {"loc": loc, "scale": scale}

    def element_distribution(self, params):
        return tfd.Normal(loc=params["loc"], scale=params["scale"])

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "min_scale": self.min_scale}


class QuantizedLogistic(tfd.QuantizedDistribution):
    """DiscretizedLogistic's distribution of one element over the levels {0, ..., 255}: a
    `tfd.QuantizedDistribution` of a logistic shifted by -1/2, with the mean TFP leaves undefined for a
    quantized distribution. The mean is in levels, as are samples and `log_prob`'s argument: 255 times
    `DiscretizedLogistic.mean`, the logistic's location clipped to [0, 255].

    >>> round(float(QuantizedLogistic(tfd.Logistic(127.5 - 0.5, 3.0), low=0.0, high=255.0).mean()), 4)
    127.5
    """

    def _mean(self):
        # The head's mean (its location, clipped to the range) in levels, so that `model.decode(z).mean()`
        # is `likelihood.mean` scaled as the samples are. Undoing the shift: the location is loc + 1/2.
        return tf.clip_by_value(self.distribution.loc + 0.5, self.low, self.high)


@serializable
class DiscretizedLogistic(Likelihood):
    """Discretized logistic for 8-bit data (Salimans et al. 2017, PixelCNN++), one component per element.

    With y = 255 x in {0..255}: P(y) = G(y + 1/2) - G(y - 1/2), where G is the CDF of
    Logistic(255 loc, 255 scale) and the edge bins take the tails (y = 0 gets G(1/2), y = 255 gets
    1 - G(254.5)). Implemented as `tfd.QuantizedDistribution` of a logistic shifted by -1/2, whose bins are
    (y - 1, y].

    Args:
        min_scale: float. Floor of the scale in data units. Defaults to 1e-3.
    """

    params_per_element = 2
    support = (0.0, 1.0)
    eight_bit = True

    def __init__(self, min_scale=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.min_scale = float(min_scale)

    def split_params(self, raw):
        return {"loc": raw[..., 0], "scale": tf.nn.softplus(raw[..., 1]) + self.min_scale}

    def element_distribution(self, params):
        levels = PIXEL_LEVELS - 1
        logistic = tfd.Logistic(loc=levels * params["loc"] - 0.5, scale=levels * params["scale"])
        return QuantizedLogistic(logistic, low=0.0, high=float(levels))

    def targets(self, x):
        return tf.round(x * (PIXEL_LEVELS - 1))

    def mean(self, params):
        # The mean of the clipped logistic is within a bin of loc for all but extreme scales. (The element
        # distribution's `mean()` is this one in levels, 255 times larger.)
        return tf.clip_by_value(params["loc"], 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "min_scale": self.min_scale}


@serializable
class Categorical(Likelihood):
    """A 256-way categorical per element (van den Oord et al. 2016), over y = round(255 x)."""

    params_per_element = PIXEL_LEVELS
    support = (0.0, 1.0)
    eight_bit = True
    elementwise_params = False  # logits [..., 256] per element

    def split_params(self, raw):
        return {"logits": raw}

    def element_distribution(self, params):
        return tfd.Categorical(logits=params["logits"], dtype=tf.int32)

    def targets(self, x):
        return tf.cast(tf.round(x * (PIXEL_LEVELS - 1)), tf.int32)

    def mean(self, params):
        levels = tf.range(PIXEL_LEVELS, dtype=tf.float32) / (PIXEL_LEVELS - 1)
        return tf.reduce_sum(tf.nn.softmax(params["logits"]) * levels, axis=-1)


@serializable
class Auto(Bernoulli):
    """likelihood="auto": the head `choose` picks from the training data, put in place by the model's first
    `fit` (`LatentVariableModel.choose_likelihood`). Until then it is a Bernoulli head, so a model that
    never sees data behaves as the presets always did."""

    def check_training_data(self, x):
        """Nothing to warn about: `fit` replaces this head by one that suits x before training."""


def choose(x):
    """The name of the likelihood that fits data x (numpy): "bernoulli" for binary {0, 1} data, "logistic"
    (the discretized logistic over 256 levels, a density of 8-bit images whose mean stays in [0, 1]) for
    other values in [0, 1], and "gaussian_per_element" (a Gaussian with a learned scale per element) for
    real data beyond [0, 1].

    Measured on Fashion-MNIST grey levels, `mlp_vae` with the classic Adam 1e-3, 10 epochs (BENCHMARKS.md, "Denoising and features
    with the presets' defaults"): the logistic's posterior means give a linear probe of 0.808-0.823 over
    three runs, level with PCA-32's 0.814 (Bernoulli 0.796, Gaussian 0.808, continuous Bernoulli 0.802),
    and MAP denoising gains 8.6 dB at sigma 0.3 (Bernoulli 8.2, Gaussian 7.5, continuous Bernoulli 5.4).
    Its complexity-corrected likelihood is what makes one-class anomaly detection work (mean AUROC 0.942 in the ensemble).

    >>> choose(np.array([0.0, 1.0, 1.0])), choose(np.array([0.0, 0.5])), choose(np.array([0.5, 2.0]))
    ('bernoulli', 'logistic', 'gaussian_per_element')
    """
    x = np.asarray(x)
    if x.size == 0 or np.all((x == 0) | (x == 1)):
        return "bernoulli"
    if x.min() >= 0 and x.max() <= 1:
        return "logistic"
    return "gaussian_per_element"


LIKELIHOODS = {
    "auto": Auto,
    "bernoulli": Bernoulli,
    "continuous_bernoulli": ContinuousBernoulli,
    "gaussian": Gaussian,
    "gaussian_per_element": functools.partial(Gaussian, scale="learned_per_pixel"),
    "logistic": DiscretizedLogistic,
    "categorical": Categorical,
}


def name_of(likelihood):
    """The name in LIKELIHOODS of a head's class ("gaussian" whatever its scale), or else of its nearest base
    class that has one: an "auto" head that no `fit` has replaced is the "bernoulli" it behaves as.

    >>> name_of(Auto()), name_of(DiscretizedLogistic())
    ('bernoulli', 'logistic')
    """
    names = {cls: key for key, cls in LIKELIHOODS.items() if isinstance(cls, type) and cls is not Auto}
    return next((names[cls] for cls in type(likelihood).__mro__ if cls in names), type(likelihood).__name__)


def get(likelihood):
    """A fresh likelihood head from a name in LIKELIHOODS, or the head itself."""
    if isinstance(likelihood, Likelihood):
        return likelihood
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"Unknown likelihood {likelihood!r}; expected one of {sorted(LIKELIHOODS)} or a Likelihood.")
    return LIKELIHOODS[likelihood]()
