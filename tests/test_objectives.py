"""The shared math: KL (analytic vs Monte Carlo), free bits, the IWAE bound and the chunked
importance-weighted log-likelihood, against values computed by hand."""

import math

import numpy as np
import pytest
import tensorflow as tf

from kerasvae import objectives
from kerasvae._tfp import tfd


def diagonal_gaussian(loc, scale):
    return tfd.MultivariateNormalDiag(loc=tf.constant(loc, tf.float32), scale_diag=tf.constant(scale, tf.float32))


def test_analytic_kl_matches_the_closed_form_and_a_monte_carlo_estimate():
    q = diagonal_gaussian([[0.5, -1.0], [0.0, 2.0]], [[0.3, 1.5], [1.0, 0.2]])
    p = diagonal_gaussian([0.0, 0.0], [1.0, 1.0])
    analytic = objectives.kl_divergence(q, p).numpy()
    mu, sigma = q.mean().numpy(), q.stddev().numpy()
    by_hand = 0.5 * np.sum(sigma**2 + mu**2 - 1 - 2 * np.log(sigma), axis=-1)
    np.testing.assert_allclose(analytic, by_hand, rtol=1e-5)
    z = q.sample(200_000, seed=(1, 2))
    monte_carlo = objectives.kl_divergence(q, p, z, analytic=False).numpy()
    np.testing.assert_allclose(monte_carlo, analytic, rtol=0.02, atol=0.02)


def test_kl_falls_back_to_monte_carlo_when_tfp_has_no_closed_form():
    q = diagonal_gaussian([[0.2, 0.1]], [[0.5, 0.5]])
    mixture = tfd.MixtureSameFamily(
        tfd.Categorical(probs=[0.5, 0.5]), diagonal_gaussian([[-1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]])
    )
    z = q.sample(100_000, seed=(3, 4))
    kl = objectives.kl_divergence(q, mixture, z).numpy()
    expected = np.mean(q.log_prob(z).numpy() - mixture.log_prob(z).numpy(), axis=0)
    np.testing.assert_allclose(kl, expected, rtol=1e-6)
    with pytest.raises(NotImplementedError):
        objectives.kl_divergence(q, mixture, z, analytic=True)


def test_kl_per_dimension_sums_to_the_full_kl():
    q = diagonal_gaussian([[0.5, -1.0, 0.0]], [[0.3, 1.5, 1.0]])
    p = diagonal_gaussian([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    per_dim = objectives.kl_per_dimension(q, p).numpy()
    assert per_dim.shape == (1, 3) and per_dim[0, 2] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(per_dim.sum(-1), objectives.kl_divergence(q, p).numpy(), rtol=1e-5)


def test_free_bits_clamp_each_dimension_at_the_budget():
    kl_dims = tf.constant([[0.1, 2.0], [0.3, 4.0]])
    kl = tf.reduce_sum(kl_dims, axis=-1)
    # batch means per dimension: 0.2 and 3.0; with 0.5 free nats the first is clamped to 0.5.
    assert objectives.free_bits_kl(kl, kl_dims, 0.5, 2).numpy() == pytest.approx(3.5)
    assert objectives.free_bits_kl(kl, None, 2.0, 2).numpy() == pytest.approx(4.0)  # max(3.2, 2 * 2)


def test_iwae_bound_is_the_log_mean_of_the_weights():
    log_weights = tf.constant([[-1.0, -5.0], [-2.0, -3.0], [-4.0, -0.5]])
    expected = np.log(np.mean(np.exp(log_weights.numpy()), axis=0))
    np.testing.assert_allclose(objectives.iwae_bound(log_weights), expected, rtol=1e-6)
    np.testing.assert_allclose(objectives.iwae_bound(log_weights[:1]), log_weights[0], rtol=1e-6)


@pytest.mark.parametrize("kl_weight", [1.0, 0.5])
def test_dreg_gradients_match_the_doubly_reparameterized_formula(kl_weight):
    # q(z) = N(loc, scale^2) over 2-d z; log p(x|z) = -||x - theta z||^2 / 2 (+ const), p(z) = N(0, I).
    x = np.array([1.0, -0.5])
    loc, scale, theta = tf.Variable([0.3, -0.2]), tf.Variable([0.8, 1.2]), tf.Variable(1.5)
    eps = np.random.default_rng(0).standard_normal((6, 2)).astype(np.float32)
    with tf.GradientTape() as tape:
        q = tfd.MultivariateNormalDiag(loc, scale)
        path = objectives.PathGradientScale()
        z = path(loc + scale * eps)
        log_px = -0.5 * tf.reduce_sum((x - theta * z) ** 2, axis=-1)
        prior = tfd.MultivariateNormalDiag(tf.zeros(2), tf.ones(2))
        log_weights = log_px + kl_weight * (prior.log_prob(z) - objectives.hold_parameters(q).log_prob(z))
        bound = objectives.dreg_iwae_bound(log_weights, path, kl_weight)
    grad_loc, grad_scale, grad_theta = (g.numpy() for g in tape.gradient(bound, [loc, scale, theta]))

    z = loc.numpy() + scale.numpy() * eps
    log_w = log_weights.numpy()
    normalized = np.exp(log_w - log_w.max()) / np.exp(log_w - log_w.max()).sum()
    # d log w_i / d z_i with q's parameters held: theta (x - theta z) + kl_weight (-z + (z - loc) / scale^2)
    dlogw_dz = 1.5 * (x - 1.5 * z) + kl_weight * (-z + (z - loc.numpy()) / scale.numpy() ** 2)
    factor = (normalized * (1 - kl_weight + kl_weight * normalized))[:, None]
    np.testing.assert_allclose(bound.numpy(), np.log(np.mean(np.exp(log_w))), rtol=1e-6)
    np.testing.assert_allclose(grad_loc, np.sum(factor * dlogw_dz, axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad_scale, np.sum(factor * dlogw_dz * eps, axis=0), rtol=1e-4, atol=1e-6)
    # The decoder keeps the bound's own gradient: sum_i w~_i d log w_i / d theta.
    np.testing.assert_allclose(grad_theta, np.sum(normalized * np.sum((x - 1.5 * z) * z, axis=-1)), rtol=1e-4)


@pytest.mark.parametrize("kl_weight", [1.0, 0.5])
def test_dreg_is_unbiased_and_less_noisy_than_the_reparameterized_gradient(kl_weight):
    # The toy above, 20,000 independent draws of k = 6 samples: both estimators average to the same encoder
    # gradient (the tempered bound's), and DReG's draws scatter less around it.
    x, draws = np.array([1.0, -0.5]), 20_000
    # One copy of the encoder's parameters per draw: the gradient of the summed bounds is then each draw's.
    loc, scale, theta = tf.Variable(np.tile([0.3, -0.2], (draws, 1))), tf.Variable(np.tile([0.8, 1.2], (draws, 1))), 1.5
    eps = tf.random.stateless_normal((6, draws, 2), seed=(7, 8), dtype=tf.float64)
    prior = tfd.MultivariateNormalDiag(tf.zeros(2, tf.float64), tf.ones(2, tf.float64))

    def per_draw_gradients(dreg):
        with tf.GradientTape() as tape:
            q = tfd.MultivariateNormalDiag(loc, scale)
            path = objectives.PathGradientScale() if dreg else None
            z = loc + scale * eps
            z = path(z) if dreg else z
            log_q = (objectives.hold_parameters(q) if dreg else q).log_prob(z)
            log_weights = -0.5 * tf.reduce_sum((x - theta * z) ** 2, axis=-1) + kl_weight * (prior.log_prob(z) - log_q)
            bound = objectives.dreg_iwae_bound(log_weights, path, kl_weight) if dreg else objectives.iwae_bound(log_weights)
            total = tf.reduce_sum(bound)
        return tape.gradient(total, loc).numpy()  # [draws, 2]

    plain, dreg = per_draw_gradients(False), per_draw_gradients(True)
    standard_error = np.sqrt(plain.var(axis=0) / len(plain) + dreg.var(axis=0) / len(dreg))
    assert np.all(np.abs(plain.mean(axis=0) - dreg.mean(axis=0)) < 4 * standard_error), (plain.mean(0), dreg.mean(0))
    assert np.all(dreg.var(axis=0) < 0.5 * plain.var(axis=0)), (dreg.var(0), plain.var(0))


def test_chunked_estimate_equals_the_one_shot_estimate():
    all_weights = tf.random.stateless_normal((10, 3), seed=(5, 6)) * 3.0
    calls = []

    def next_chunk(k, index):
        start = sum(size for size, _ in calls)
        calls.append((k, int(index)))
        return all_weights[start : start + k]

    chunked = objectives.importance_weighted_log_likelihood(next_chunk, 10, chunk_size=3)
    np.testing.assert_allclose(chunked, objectives.iwae_bound(all_weights), rtol=1e-5)
    assert calls == [(3, 0), (3, 1), (3, 2), (1, 3)]
    in_graph = tf.function(lambda: objectives.importance_weighted_log_likelihood(lambda k, index: tf.gather(
        tf.reshape(all_weights[:9], [3, 3, 3]), index), 9, chunk_size=3))  # chunk by index, in a tf.while_loop
    np.testing.assert_allclose(in_graph(), objectives.iwae_bound(all_weights[:9]), rtol=1e-5)


def test_estimator_is_exact_with_the_true_posterior_in_a_linear_gaussian_model():
    # z ~ N(0, 1), x | z ~ N(z, 1): p(x) = N(x; 0, 2) and p(z | x) = N(x / 2, 1 / 2).
    x = tf.constant([-1.5, 0.0, 2.0])
    prior = tfd.Normal(0.0, 1.0)

    def log_weights(posterior):
        def draw(k, index):
            z = posterior.sample(k, seed=(7, int(index)))
            return objectives.log_importance_weights(tfd.Normal(z, 1.0).log_prob(x), prior.log_prob(z), posterior.log_prob(z))

        return draw

    exact = tfd.Normal(0.0, math.sqrt(2.0)).log_prob(x).numpy()
    true_posterior = tfd.Normal(x / 2, math.sqrt(0.5))
    np.testing.assert_allclose(objectives.importance_weighted_log_likelihood(log_weights(true_posterior), 5, 2), exact, rtol=1e-5)
    poor_proposal = tfd.Normal(x / 2 + 0.5, 1.0)
    estimate = objectives.importance_weighted_log_likelihood(log_weights(poor_proposal), 20_000, 5_000).numpy()
    np.testing.assert_allclose(estimate, exact, atol=0.02)
