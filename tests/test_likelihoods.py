"""Every likelihood's log_prob against a hand computation, and its mean in data units."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import expit, log_softmax

from kerasvae import likelihoods

SHAPE = (2, 3, 1)


def head(name, features=5, **kwargs):
    lik = likelihoods.LIKELIHOODS[name](**kwargs)
    lik.set_event_shape(SHAPE)
    params = lik(tf.random.stateless_normal((4, features), seed=(1, 2)))
    return lik, {k: v.numpy() for k, v in params.items()}


def images(seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(4, *SHAPE)).astype(np.float32) / 255.0


def total(per_element):
    return per_element.reshape(len(per_element), -1).sum(axis=1)


def test_bernoulli_log_prob_is_the_binary_cross_entropy_by_hand():
    lik, params = head("bernoulli")
    x = (images() > 0.5).astype(np.float32)
    p = expit(params["logits"])
    expected = total(x * np.log(p) + (1 - x) * np.log1p(-p))
    np.testing.assert_allclose(lik.log_prob(params, x), expected, rtol=1e-5)
    np.testing.assert_allclose(lik.mean(params), p, rtol=1e-6)


def test_gaussian_fixed_scale_log_prob_by_hand():
    lik, params = head("gaussian", scale=0.5)
    x = images()
    loc = params["loc"]
    expected = total(-0.5 * ((x - loc) / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi))
    np.testing.assert_allclose(lik.log_prob(params, x), expected, rtol=1e-5)
    np.testing.assert_allclose(params["scale"], 0.5)


@pytest.mark.parametrize("mode, weight_shape", [("learned", ()), ("learned_per_pixel", SHAPE)])
def test_gaussian_learned_scale_is_a_weight_starting_at_one(mode, weight_shape):
    lik, params = head("gaussian", scale=mode)
    assert tuple(lik.raw_scale.shape) == weight_shape
    assert lik.raw_scale in lik.trainable_weights
    np.testing.assert_allclose(params["scale"], 1.0 + 1e-3, rtol=1e-4)


def test_continuous_bernoulli_log_prob_includes_the_normalizer():
    lik, params = head("continuous_bernoulli")
    x = images()
    lam = expit(params["logits"].astype(np.float64))
    log_normalizer = np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
    expected = total(log_normalizer + x * np.log(lam) + (1 - x) * np.log1p(-lam))
    np.testing.assert_allclose(lik.log_prob(params, x), expected, rtol=1e-4)


def test_discretized_logistic_puts_bin_mass_around_each_level():
    lik, params = head("logistic")
    x = images()
    loc, scale = params["loc"].astype(np.float64), params["scale"].astype(np.float64)
    y = np.round(x * 255)

    def cdf(v):
        return expit((v - 255 * loc) / (255 * scale))

    upper = np.where(y == 255, 1.0, cdf(y + 0.5))
    lower = np.where(y == 0, 0.0, cdf(y - 0.5))
    np.testing.assert_allclose(lik.log_prob(params, x), total(np.log(upper - lower)), rtol=1e-4)


def test_discretized_logistic_probabilities_sum_to_one_over_256_levels():
    lik, params = head("logistic")
    one_pixel = {k: np.broadcast_to(v[:1, :1, :1, :1], (256, 1, 1, 1)) for k, v in params.items()}
    levels = np.arange(256, dtype=np.float32).reshape(256, 1, 1, 1) / 255
    element = lik.element_distribution(one_pixel)
    probabilities = np.exp(element.log_prob(lik.targets(levels)).numpy())
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)


def test_categorical_log_prob_is_log_softmax_at_the_pixel_level():
    lik, params = head("categorical")
    x = images()
    assert params["logits"].shape == (4, *SHAPE, 256)
    log_p = log_softmax(params["logits"], axis=-1)
    y = np.round(x * 255).astype(int)
    expected = total(np.take_along_axis(log_p, y[..., None], axis=-1)[..., 0])
    np.testing.assert_allclose(lik.log_prob(params, x), expected, rtol=1e-5)
    mean = (np.exp(log_p) * np.arange(256) / 255).sum(-1)
    np.testing.assert_allclose(lik.mean(params), mean, rtol=1e-5)


def test_feature_maps_get_a_per_pixel_head_and_vectors_a_dense_head():
    lik = likelihoods.Bernoulli()
    lik.set_event_shape((6, 6, 1))
    params = lik(tf.zeros((2, 6, 6, 8)))
    assert lik.per_pixel and lik.dense.kernel.shape == (8, 1)
    assert params["logits"].shape == (2, 6, 6, 1)
    flat = likelihoods.Bernoulli()
    flat.set_event_shape((6, 6, 1))
    flat(tf.zeros((2, 16)))
    assert not flat.per_pixel and flat.dense.kernel.shape == (16, 36)


def test_distribution_event_shape_is_the_input_shape():
    lik, params = head("gaussian")
    distribution = lik.distribution(params)
    assert distribution.event_shape == SHAPE and distribution.batch_shape == (4,)


def test_unknown_likelihood_name_is_a_value_error():
    with pytest.raises(ValueError, match="bernoulli"):
        likelihoods.get("poisson")


def test_fitting_a_bernoulli_to_grey_levels_warns_and_binary_data_does_not():
    import warnings

    import kerasvae as kv

    x = kv.data.load_arrays("digits", "train")[0][:200]  # 17 grey levels in [0, 1]
    model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,))
    model.compile()
    with pytest.warns(UserWarning, match=r"Bernoulli likelihood is fitting non-binary data \(\d+% of the values"):
        model.fit(x, epochs=1, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(kv.data.binarize_static(x), epochs=1, verbose=0)
        model.fit(kv.data.pipeline(x, binarize="dynamic", batch_size=64), epochs=1, verbose=0, shuffle=False)  # binarized in the pipeline
        gaussian = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), likelihood="gaussian")
        gaussian.compile()
        gaussian.fit(x, epochs=1, verbose=0)
