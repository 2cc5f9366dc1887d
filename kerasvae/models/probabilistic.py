"""The probabilistic API (numpy in, numpy out, batched) and what a family computes and exports on tensors,
read by kerasvae.export and kerasvae.apps. A mixin of LatentVariableModel."""

import contextlib
import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kerasvae import _keras_compat, objectives
from kerasvae._tfp import stateless_seed


def batch_function(method):
    """`method(x, *args, labels=None, **kwargs)` compiled once for any batch size.

    `_map_batches` ends on a smaller batch; a trace per batch size and per model adds up, across the
    models of one script, to TensorFlow's frequent-retracing warning. Tracing on an unknown batch
    dimension first lets every batch reuse that one trace (a call dispatches to a trace whose input types
    are a supertype of its own); `get_concrete_function` is a cache lookup after the first call.
    """
    compiled = tf.function(method, reduce_retracing=True)

    def call(x, *args, labels=None, **kwargs):
        if labels is not None:
            kwargs["labels"] = labels
        relaxed = {key: tf.TensorSpec([None], value.dtype) if key == "labels" else value for key, value in kwargs.items()}
        compiled.get_concrete_function(tf.TensorSpec([None, *x.shape[1:]], x.dtype), *args, **relaxed)
        return compiled(x, *args, **kwargs)

    return call


PRECISIONS = (None, "float32", "bfloat16")
# Decoded elements per chunk from which log_likelihood compiles the likelihood's log_prob with XLA
# (Likelihood.flat_log_prob): below it, compiling costs more than it saves.
FUSE_MIN_ELEMENTS = 1 << 22


def decoder_layers(model):
    """Every layer a decoded latent passes through: the decoder's and the likelihood head's."""
    return [layer for owner in (model.decoder, model.likelihood) for layer in _keras_compat.flatten_layers(owner)]


@contextlib.contextmanager
def evaluation_graph(model, precision=None, fuse_log_prob=False):
    """While the block traces: the decoder and likelihood head compute in `precision` (None: unchanged;
    "bfloat16" is Keras's mixed_bfloat16 policy: float32 variables cast per layer, the heads return float32
    parameters) and, with `fuse_log_prob`, the head's log_prob is one XLA kernel. The layers' own settings
    come back afterwards."""
    head = model.likelihood
    layers = [] if precision is None else decoder_layers(model)
    saved = [layer.dtype_policy for layer in layers]
    for layer in layers:
        layer.dtype_policy = {"float32": "float32", "bfloat16": "mixed_bfloat16"}[precision]
    head.fuse_log_prob = fuse_log_prob
    try:
        yield
    finally:
        head.fuse_log_prob = False
        for layer, own in zip(layers, saved):
            layer.dtype_policy = own


def squared_error(x, reconstruction):
    """sum_i (x_i - reconstruction_i)^2 per example [batch]."""
    return tf.reduce_sum(tf.reshape(tf.square(x - reconstruction), [tf.shape(x)[0], -1]), axis=-1)


class ProbabilisticAPI:
    """reconstruct, sample, elbo, log_likelihood, anomaly_score and the tensor-level capabilities."""


    def reconstruct(self, x, labels=None):
        """Mean of p(x | z = mean of q(z|x)), shape of x."""
        x = self._check_inputs(x)
        return self._map_batches(self._compiled["_reconstruct_batch"], x, labels=self._check_labels(labels, len(x)))

    def sample(self, n, seed=None, mean=True, temperature=1.0, labels=None):
        """n draws from the model, shape [n, *input_shape]: z ~ p(z), then E[x|z] (mean=True, the usual image)
        or x ~ p(x|z). The same seed gives the same output.

        Args:
            n: int. Number of samples.
            seed: int, pair of ints or None. Stateless seed. Defaults to None (fresh randomness).
            mean: bool. Return E[x|z] instead of a draw from p(x|z). Defaults to True.
            temperature: float. Scales z around the prior mean (< 1 gives smoother, more typical samples).
            labels: int or int array [n]. The class of each sample, for conditional models.
        """
        seed = stateless_seed(self.seed_generator if seed is None else seed)
        z_seed, x_seed = tfp.random.split_seed(seed, n=2)
        labels = self._check_labels(labels, n)
        return self.sample_batch(int(n), z_seed, x_seed, bool(mean), float(temperature), labels).numpy()

    def sample_batch(self, n, z_seed, x_seed, mean, temperature, labels=None):
        """`sample` on tensors, in graph (the exported `sample` signature): n images from z ~ p(z) drawn
        with the stateless `z_seed`, and x ~ p(x|z) with `x_seed` unless `mean`."""
        prior = self.prior
        z = prior.sample(n, seed=z_seed)
        z = prior.mean() + temperature * (z - prior.mean())
        params = self.likelihood_params(z, labels=labels)
        if mean:
            return self.likelihood.mean(params)
        return self.likelihood.sample(params, x_seed)

    def elbo(self, x, num_samples=1, seed=None, labels=None):
        """Per-example evidence lower bound in nats, shape [n]: E_q[log p(x|z)] - KL(q(z|x) || p(z))."""
        x = self._check_inputs(x)
        elbo_batch = self._compiled["elbo_batch"]
        return self._map_batches(
            lambda xb, lb=None: elbo_batch(xb, num_samples, self._seed(seed), labels=lb),
            x,
            labels=self._check_labels(labels, len(x)),
        )

    def log_likelihood(self, x, num_samples=1000, seed=None, chunk_size=None, labels=None, precision=None):
        """Per-example importance-weighted estimate of log p(x) in nats, shape [n] (see objectives).

        Args:
            num_samples: int. Importance samples per example; the bias shrinks as it grows.
            chunk_size: int or None. Samples drawn at once; defaults to what keeps about 2^16 decoded
                examples in memory.
            precision: None, "float32" or "bfloat16". The decoder's compute precision during the estimate:
                None keeps the model's own; "bfloat16" runs its matmuls in bfloat16 (Keras's mixed_bfloat16:
                float32 weights cast per layer, log-densities in float32), which is faster where the CPU or
                GPU has bfloat16 units and moves the estimate by a small amount (BENCHMARKS.md measures it).
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        x = self._check_inputs(x)
        labels = self._check_labels(labels, len(x))
        batch = min(self.eval_batch_size, 256)
        chunk = int(chunk_size or max(1, min(num_samples, (1 << 16) // batch)))
        seeds = iter(tfp.random.split_seed(self._seed(seed), n=max(1, math.ceil(len(x) / batch))))
        fuse = chunk * batch * math.prod(self.data_shape) >= FUSE_MIN_ELEMENTS
        estimate = self._compiled["_log_likelihood_batch"]
        return self._map_batches(
            lambda xb, lb=None: estimate(xb, next(seeds), int(num_samples), chunk, precision, fuse, labels=lb),
            x, batch_size=batch, labels=labels,
        )

    def _log_likelihood_batch(self, x, seed, num_samples, chunk_size, precision, fuse_log_prob, labels=None):
        """log_likelihood of one batch tensor in one graph: chunk i draws from stateless seed i of `seed`."""
        seeds = tf.random.experimental.stateless_split(seed, num=math.ceil(num_samples / chunk_size))
        with evaluation_graph(self, precision, fuse_log_prob):
            return objectives.importance_weighted_log_likelihood(
                lambda k, index: self.log_importance_weights(x, k, tf.gather(seeds, index), labels=labels),
                num_samples, chunk_size,
            )

    def anomaly_score(self, x, method="elbo", num_samples=1, labels=None):
        """Per-example anomaly score in nats, higher = more anomalous.

        Args:
            method: str. "elbo": -ELBO averaged over `num_samples` posterior samples (what the exported
                `score` signature serves); "nll": -log p(x), the importance-weighted estimate with
                `num_samples` samples; "reconstruction": -log p(x | z = mean of q(z|x)), deterministic,
                and the most sensitive to a few corrupted elements (no KL, no sampling noise);
                "reconstruction_error": the sum of squared errors of that reconstruction's mean, blind to
                the likelihood's scales (what a plain autoencoder or PCA scores).
            num_samples: int. Samples for "elbo" and "nll". Defaults to 1.
        """
        if method == "elbo":
            return -self.elbo(x, num_samples=num_samples, labels=labels)
        if method == "nll":
            return -self.log_likelihood(x, num_samples=num_samples, labels=labels)
        if method in ("reconstruction", "reconstruction_error"):
            x = self._check_inputs(x)
            sign = -1.0 if method == "reconstruction" else 1.0
            function = self._compiled["reconstruction_log_prob" if method == "reconstruction" else "reconstruction_error"]
            return sign * self._map_batches(function, x, labels=self._check_labels(labels, len(x)))
        raise ValueError(f"Unknown anomaly score method {method!r}; expected 'elbo', 'nll', 'reconstruction' or 'reconstruction_error'.")

    def score_batch(self, x, seed, labels=None):
        """Per-example scores of a batch tensor, as the exported `score` signature serves them: elbo (one
        posterior sample from the stateless `seed`, the same standard-normal draw for every example, so a
        score is deterministic and does not depend on how requests are batched), reconstruction_error (sum
        of squared errors of the reconstruction) and anomaly_score (-elbo)."""
        elbo = self.elbo_batch(x, 1, seed, shared_noise=True, labels=labels)
        return {"elbo": elbo, "reconstruction_error": self.reconstruction_error(x, labels=labels), "anomaly_score": -elbo}

    def reconstruction_error(self, x, labels=None):
        """sum_i (x_i - E[x_i | z = mean of q(z|x)])^2 per example of a batch tensor."""
        return squared_error(x, self(x, training=False, labels=labels))

    def _reconstruct_batch(self, x, labels=None):
        return self(x, training=False, labels=labels)

    # === What a family computes and exports, on tensors: read by kerasvae.export and kerasvae.apps ===

    @property
    def anomaly_threshold(self):
        """The calibrated threshold (`anomaly_calibration.threshold`), or None."""
        return None if self.anomaly_calibration is None else self.anomaly_calibration.threshold

    @property
    def anomaly_method(self):
        return None if self.anomaly_calibration is None else self.anomaly_calibration.method

    @property
    def anomaly_num_samples(self):
        return 1 if self.anomaly_calibration is None else self.anomaly_calibration.num_samples

    # (num_latents, num_categories) for families whose latents are discrete codes that `codes_to_latents`
    # turns into decoder inputs (VQ-VAE, discrete VAEs): export adds a `decode_codes` signature, and the
    # applications that move through a continuous z refuse them. None: z is continuous.
    code_space = None

    def encode_outputs(self, x, labels=None):
        """The exported `encode` signature's outputs for a batch tensor, named by the posterior head
        (`Posterior.encode_outputs`): {"loc", "scale"} of a Gaussian q(z|x) (a deterministic model's scale
        is zero); codes and their latents for discrete ones."""
        return self.posterior_head.encode_outputs(self.posterior_params(x, labels=labels))

    def decode_noise_shapes(self):
        """{name: shape without the batch} of the exported `decode` signature's inputs besides z (and label):
        noise a family's decoder takes from outside the graph, so exported decoders (TFLite, ONNX) hold no
        random ops. `decode_outputs` takes them as keyword arguments. Most families have none (an empty dict);
        a HierarchicalVAE declares its lower levels' standard-normal noise noise_1, ..., noise_(L-1)."""
        return {}

    def decode_outputs(self, z, labels=None):
        """The exported `decode` signature's outputs: {"mean": E[x|z], and the likelihood's parameters}."""
        params = self.likelihood_params(z, labels=labels)
        return {"mean": self.likelihood.mean(params), **params}

    def decoder_inputs(self, x, seed=0, labels=None):
        """What the decoder is fed for data x, as numpy [n, latent_dim]: draws from q(z|x), so their mixture
        over x is the aggregate posterior. TFLite int8 calibration and fidelity checks use them as traffic."""
        return np.asarray(self.encode(x, labels=labels).sample(seed=(seed, 1)), np.float32)

    def latent_features(self, x, labels=None):
        """Features of x as numpy [n, latent_dim]: the posterior means."""
        return np.asarray(self.encode(x, labels=labels).mean(), np.float32)

    def reconstruction_log_prob(self, x, labels=None):
        """log p(x | z = mean of q(z|x)) per example of a batch tensor."""
        code = self.posterior_params(x, labels=labels)["loc"]
        return self.likelihood.log_prob(self.likelihood_params(code, labels=labels), x)

    def log_importance_weights(self, x, k, seed, labels=None):
        """Log importance weights [k, batch] of k draws from the proposal (kerasvae.objectives), whose
        logsumexp over k, minus log k, estimates log p(x)."""
        q = self.proposal(x, labels=labels)
        z = q.sample(k, seed=seed)
        log_px_z = self.likelihood.log_prob(self.likelihood_params(z, labels=labels), x)
        return objectives.log_importance_weights(log_px_z, self.prior.log_prob(z), q.log_prob(z))

    def elbo_batch(self, x, num_samples, seed, shared_noise=False, labels=None):
        """The ELBO [batch] of a batch tensor averaged over `num_samples` posterior draws from the stateless
        `seed`; `shared_noise` gives every example the same standard-normal draw, so an example's value does
        not depend on its batch (the exported `score` signature)."""
        raise NotImplementedError

    def _seed(self, seed):
        return stateless_seed(self.seed_generator if seed is None else seed)

    def _map_batches(self, fn, x, batch_size=None, labels=None):
        batch_size = batch_size or self.eval_batch_size
        outputs = [
            np.asarray(fn(tf.constant(x[i : i + batch_size]), *(() if labels is None else (tf.constant(labels[i : i + batch_size]),))))
            for i in range(0, len(x), batch_size)
        ]
        if not outputs:  # an empty batch: probe one dummy example (and label) for the output's shape
            probe = fn(tf.zeros((1, *x.shape[1:])), *(() if labels is None else (tf.zeros([1], tf.int32),)))
            return np.zeros((0, *np.shape(probe)[1:]), np.float32)
        return np.concatenate(outputs)
