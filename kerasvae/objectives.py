"""The math, once. Every model family builds its loss and its likelihood estimates from these.

Notation: x data, z latents, q = q(z|x) the posterior, p = p(z) the prior, log p(x|z) the likelihood.

- ELBO:   log p(x) >= E_q[log p(x|z)] - KL(q(z|x) || p(z))                        (Kingma & Welling 2014)
- beta:   loss = -E_q[log p(x|z)] + beta * KL                                       (Higgins et al. 2017)
- IWAE:   log p(x) >= E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q             (Burda et al. 2016)
- DReG:   the IWAE bound's encoder gradient with the score-function part rewritten by reparameterization
          (Tucker et al. 2019): grad_phi = sum_i w~_i^2 (d log w_i / d z_i)(d z_i / d phi), w~ = softmax(log w),
          log q evaluated with its parameters held fixed; the decoder's gradient is the bound's own.
- log p(x) ~= logsumexp_i(log w_i) - log k with w_i = p(x|z_i) p(z_i) / q(z_i|x): the same estimator with
  large k, consistent as k -> inf, evaluated in chunks so k = 5000 fits in memory.
"""

import math

import tensorflow as tf

from kerasvae._tfp import tfd


def kl_divergence(q, p, z=None, analytic=None):
    """KL(q || p) per example, shape q.batch_shape.

    Analytic when TFP knows the pair (and `analytic` is not False); otherwise the Monte Carlo estimate
    mean_i [log q(z_i) - log p(z_i)] over the samples z [k, *batch, latent_dim] drawn from q.
    """
    if analytic is not False:
        try:
            return tfd.kl_divergence(q, p)
        except NotImplementedError:
            if analytic:
                raise
    if z is None:
        raise ValueError("A Monte Carlo KL needs samples z from q.")
    return tf.reduce_mean(q.log_prob(z) - p.log_prob(z), axis=0)


def as_factorized_normal(distribution):
    """The per-dimension `tfd.Normal` behind a diagonal Gaussian, or None for any other distribution."""
    if isinstance(distribution, tfd.MultivariateNormalDiag):
        return tfd.Normal(distribution.mean(), distribution.stddev())
    if isinstance(distribution, tfd.Independent) and isinstance(distribution.distribution, tfd.Normal):
        return distribution.distribution
    return None


def kl_per_dimension(q, p):
    """KL(q_d || p_d) for each latent dimension d, shape [*batch, latent_dim], when both are diagonal
    Gaussians (the sum over d is the full KL); None otherwise."""
    q_dims, p_dims = as_factorized_normal(q), as_factorized_normal(p)
    if q_dims is None or p_dims is None:
        return None
    return tfd.kl_divergence(q_dims, p_dims)


def free_bits_kl(kl, kl_dims, free_bits, latent_dim):
    """The KL term of the loss with free bits (Kingma et al. 2016): each dimension's batch-averaged KL is
    clamped below at `free_bits` nats, sum_d max(free_bits, E_batch KL_d), so the optimizer gains nothing by
    pushing a dimension's KL under the budget. Falls back to max(free_bits * latent_dim, E_batch KL) when
    the KL does not split by dimension. Returns a scalar."""
    if kl_dims is not None:
        return tf.reduce_sum(tf.maximum(tf.reduce_mean(kl_dims, axis=0), free_bits))
    return tf.maximum(tf.reduce_mean(kl), free_bits * latent_dim)


def log_importance_weights(log_px_given_z, log_pz, log_qz):
    """log w = log p(x|z) + log p(z) - log q(z|x), elementwise."""
    return log_px_given_z + log_pz - log_qz


def iwae_bound(log_weights):
    """log (1/k) sum_i w_i over the sample axis 0 of log_weights [k, *batch], computed in log space."""
    k = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(k)


class PathGradientScale:
    """Identity on z forward; backward, dL/dz times a factor set after the forward pass (`set_factor`).

    DReG weights each sample's path gradient by its normalized importance weight, which depends on the
    decoder's output for that very sample, so the factor can only be known once the loss is built; the
    backward pass reads it then. One instance per traced loss.
    """

    def __init__(self):
        self.factor = None

    def __call__(self, z):
        @tf.custom_gradient
        def identity(value):
            return tf.identity(value), lambda upstream: upstream * self.factor

        return identity(z)

    def set_factor(self, factor):
        self.factor = tf.stop_gradient(factor)


def dreg_iwae_bound(log_weights, path, kl_weight=1.0):
    """The IWAE bound per example (its value), with the DReG gradient (Tucker et al. 2019).

    log_weights [k, *batch] = log p(x|z) + beta (log p(z) - log q(z|x)), computed from z = path(z_sampled)
    and with q's parameters under tf.stop_gradient, so only the path through z reaches the encoder. The
    surrogate sum_i w~_i log w_i gives the decoder the bound's exact gradient and the encoder
    sum_i w~_i (d log w_i / d z_i)(d z_i / d phi); the path scale turns the encoder's factor w~_i into
    w~_i (1 - beta + beta w~_i): the reparameterized score term -beta w~_i (1 - w~_i) added to the path term
    w~_i, which is w~_i^2 at beta = 1 (KL warm-up tempers the weights with beta < 1).
    """
    normalized = tf.stop_gradient(tf.nn.softmax(log_weights, axis=0))
    path.set_factor(((1.0 - kl_weight) + kl_weight * normalized)[..., tf.newaxis])
    surrogate = tf.reduce_sum(normalized * log_weights, axis=0)
    return tf.stop_gradient(iwae_bound(log_weights) - surrogate) + surrogate


def hold_parameters(distribution):
    """The same diagonal Gaussian with its parameters under tf.stop_gradient: log_prob then depends on the
    encoder only through its argument z."""
    normal = as_factorized_normal(distribution)
    if normal is None:
        raise ValueError(f"DReG needs a diagonal Gaussian posterior, got {type(distribution).__name__}.")
    return tfd.MultivariateNormalDiag(tf.stop_gradient(normal.loc), tf.stop_gradient(normal.scale))


def importance_weighted_log_likelihood(log_weights_fn, num_samples, chunk_size):
    """log p(x) ~= logsumexp over num_samples importance weights - log num_samples, per example.

    log_weights_fn(k, index) returns fresh log weights [k, batch] for chunk `index` (0, 1, ...: a scalar
    int32 tensor); every chunk holds `chunk_size` samples but the last, which holds the rest. The chunks
    run one after another in a tf.while_loop merged by a running logsumexp: in a graph, no Python per chunk
    and one chunk's tensors alive at a time, so memory stays O(chunk_size * batch).
    """
    num_samples = int(num_samples)
    chunk_size = min(int(chunk_size), num_samples)
    full, rest = divmod(num_samples, chunk_size)

    def merge(total, k, index):
        return tf.reduce_logsumexp(tf.stack([total, tf.reduce_logsumexp(log_weights_fn(k, index), axis=0)]), axis=0)

    total = tf.reduce_logsumexp(log_weights_fn(chunk_size, tf.constant(0)), axis=0)
    _, total = tf.while_loop(
        lambda index, _: index < full, lambda index, total: (index + 1, merge(total, chunk_size, index)),
        (tf.constant(1), total), parallel_iterations=1,
    )
    if rest:
        total = merge(total, rest, tf.constant(full))
    return total - math.log(num_samples)


def discrete_kl(q, p):
    """KL(q || p) per example between discrete codes, the KL term of relaxed (Gumbel-softmax / Concrete)
    models. It is taken between the underlying discrete distributions, as Jang et al. 2017 do, not between
    the relaxed densities the training samples come from:

        KL(q || p) = sum_g sum_i q_gi log(q_gi / p_gi),   uniform p over K categories: sum_i q_i log(q_i K)

    over groups g and categories i (Bernoulli bits are K = 2). It is analytic, does not depend on the
    temperature, and is the exact KL of the hard-code model whose ELBO `elbo` evaluates. (Maddison et al.
    2017 instead estimate the KL between the relaxed densities by Monte Carlo, a temperature-dependent
    objective.)

    Args:
        q, p: discrete tfd distributions of the same family and event shape (Independent Bernoulli, or
            Independent OneHotCategorical, reshaped alike).
    """
    return tfd.kl_divergence(q, p)
