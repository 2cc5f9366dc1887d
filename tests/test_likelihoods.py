"""Every likelihood's log_prob against a hand computation, its mean in data units and its distribution's mean,
and likelihood="auto": the head `fit` chooses from the training data, kept through saving and later fits."""

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_same_outputs
from scipy.special import expit, log_softmax

import kerasvae as kv
from kerasvae import likelihoods
from kerasvae._tfp import tfd

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
    x = kv.data.load_arrays("digits", "train")[0][:200]  # 17 grey levels in [0, 1]
    model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), likelihood="bernoulli")
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


# === likelihood="auto": the head picked from the training data ===


def test_choose_picks_a_head_from_the_values_of_the_data():
    assert likelihoods.choose(np.array([0.0, 1.0, 1.0, 0.0])) == "bernoulli"
    assert likelihoods.choose(np.array([0, 1], np.uint8)) == "bernoulli"
    assert likelihoods.choose(np.zeros([0])) == "bernoulli"  # nothing to go by: the Bernoulli it starts as
    assert likelihoods.choose(np.array([0.0, 0.5, 1.0])) == "logistic"  # grey levels in [0, 1]
    assert likelihoods.choose(np.array([0.2, 0.3])) == "logistic"
    assert likelihoods.choose(np.array([-0.5, 0.5])) == "gaussian_per_element"  # standardized
    assert likelihoods.choose(np.array([0.0, 1.0, 1.5])) == "gaussian_per_element"
    assert likelihoods.choose(np.array([0.0, 128.0, 255.0])) == "gaussian_per_element"  # undivided 8-bit pixels


def auto_model(**kwargs):
    return kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0, **kwargs)


@pytest.fixture(scope="module")
def digit_sets():
    """{name: 200 digits as one kind of data}: grey levels x/16 in [0, 1], binarized, standardized."""
    x = kv.data.load_arrays("digits", "train")[0][:200]
    return {"grey": x, "binary": (x > 0.5).astype(np.float32), "standardized": (x - x.mean()) / x.std()}


@pytest.fixture(scope="module")
def fitted(digit_sets):
    """{name: a likelihood="auto" model after one epoch on that data}."""
    models = {}
    for name, x in digit_sets.items():
        models[name] = auto_model()
        models[name].compile()
        models[name].fit(x, epochs=1, batch_size=50, verbose=0)
    return models


def test_a_preset_defaults_to_auto_which_is_a_bernoulli_until_fit():
    model = auto_model()
    assert type(model.likelihood) is likelihoods.Auto and isinstance(model.likelihood, likelihoods.Bernoulli)
    assert isinstance(model.decode(np.zeros((1, 2))).distribution, tfd.Bernoulli)


def test_fit_puts_the_chosen_head_in_place(fitted):
    assert type(fitted["grey"].likelihood) is likelihoods.DiscretizedLogistic
    assert type(fitted["binary"].likelihood) is likelihoods.Bernoulli  # exactly: not the Auto subclass
    gaussian = fitted["standardized"].likelihood
    assert type(gaussian) is likelihoods.Gaussian and gaussian.scale == "learned_per_pixel"
    assert tuple(gaussian.raw_scale.shape) == (8, 8, 1)


def test_auto_chooses_from_a_pydataset_and_says_what_a_generator_leaves_it_with(digit_sets):
    """A keras.utils.PyDataset is read by index, so its first batch is looked at as an array's head is; it
    used to be skipped, and grey levels trained a Bernoulli in silence. A Python generator cannot be looked
    at without using it up: the head stays the Bernoulli and fit says so."""
    x = digit_sets["grey"]

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return x[50 * index : 50 * (index + 1)]

    model = auto_model()
    model.compile()
    model.fit(Batches(), epochs=1, verbose=0)
    assert type(model.likelihood) is likelihoods.DiscretizedLogistic

    def generator():
        while True:
            for index in range(4):
                yield (x[50 * index : 50 * (index + 1)],)

    model = auto_model()
    model.compile()
    with pytest.warns(UserWarning, match='generator.*likelihood="auto" stays a Bernoulli head'):
        model.fit(generator(), steps_per_epoch=4, epochs=1, verbose=0)
    assert type(model.likelihood) is likelihoods.Auto
    named = auto_model(likelihood="logistic")
    named.compile()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        named.fit(generator(), steps_per_epoch=4, epochs=1, verbose=0)
    assert not [w for w in caught if "cannot look" in str(w.message)]  # nothing to warn about: the head was named


def test_decode_of_the_chosen_logistic_has_a_mean_in_levels(fitted, digit_sets):
    model, x = fitted["grey"], digit_sets["grey"][:5]
    decoded = model.decode(model.encode(x).mean())
    np.testing.assert_allclose(decoded.mean(), 255 * model.reconstruct(x), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(decoded.log_prob(np.round(255 * x)), model.likelihood.log_prob(model.likelihood_params(model.encode(x).mean()), x), rtol=1e-5)


def test_the_chosen_heads_weights_replace_the_old_ones_in_a_rebuilt_models_order(fitted):
    for name, model in fitted.items():
        rebuilt = type(model).from_config(model.get_config())
        assert [tuple(w.shape) for w in model.weights] == [tuple(w.shape) for w in rebuilt.weights], name
        assert [w.path.split("/")[0] for w in model.weights] == [w.path.split("/")[0] for w in rebuilt.weights], name
        rebuilt.set_weights(model.get_weights())
        np.testing.assert_array_equal(rebuilt.reconstruct(np.zeros((2, 8, 8, 1))), model.reconstruct(np.zeros((2, 8, 8, 1))))


def test_the_chosen_head_survives_a_keras_round_trip(fitted, digit_sets, tmp_path):
    for name in ("grey", "standardized"):
        model = fitted[name]
        model.save(tmp_path / f"{name}.keras")
        reloaded = keras.saving.load_model(tmp_path / f"{name}.keras")
        assert type(reloaded.likelihood) is type(model.likelihood), name
        x = digit_sets[name][:20]
        if name == "grey":
            assert_same_outputs(model, reloaded, x)
        else:  # beyond [0, 1]: reconstruct and elbo, the Gaussian has no support to check
            np.testing.assert_allclose(model.reconstruct(x), reloaded.reconstruct(x), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(model.elbo(x, seed=3), reloaded.elbo(x, seed=3), rtol=1e-5, atol=1e-4)


def test_on_binary_data_auto_trains_as_a_bernoulli_weight_for_weight(digit_sets):
    # The chosen Bernoulli keeps the weights the auto head drew, so binarized benchmarks are reproduced exactly.
    weights = []
    for likelihood in ("auto", "bernoulli"):
        keras.utils.set_random_seed(0)
        model = auto_model(likelihood=likelihood)
        model.compile()
        model.fit(digit_sets["binary"], epochs=1, batch_size=50, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    for auto, bernoulli in zip(*weights, strict=True):
        np.testing.assert_array_equal(auto, bernoulli)


def test_a_second_fit_keeps_the_head_the_first_chose(digit_sets):
    model = auto_model()
    model.compile()
    model.fit(digit_sets["grey"], epochs=1, batch_size=50, verbose=0)
    head = model.likelihood
    history = model.fit(digit_sets["binary"], epochs=1, batch_size=50, verbose=0).history
    assert model.likelihood is head and np.isfinite(history["loss"][-1])


def test_a_step_traced_before_the_first_fit_is_traced_again_with_the_chosen_head(digit_sets):
    x = digit_sets["grey"]
    model = auto_model()
    model.compile()
    model.evaluate(x, verbose=0)  # Keras traces and keeps a test step, with the Bernoulli head
    history = model.fit(x, epochs=1, batch_size=50, validation_data=(x,), verbose=0).history
    assert type(model.likelihood) is likelihoods.DiscretizedLogistic
    # The validation ran the logistic: its loss is the negative ELBO, about 210 nats here, not the stale
    # step's Bernoulli cross-entropy (45 nats).
    negative_elbo = -np.mean(model.elbo(x, num_samples=10, seed=0))
    np.testing.assert_allclose(history["val_loss"][-1], negative_elbo, rtol=0.05)
    np.testing.assert_allclose(model.evaluate(x, verbose=0, return_dict=True)["loss"], negative_elbo, rtol=0.05)


def test_decode_has_a_mean_for_every_head_in_the_distributions_units():
    """The discretized logistic's p(x|z) lives on the levels {0..255}; its mean is the head's in levels."""
    for name in sorted(likelihoods.LIKELIHOODS):
        lik, params = head(name)
        mean = np.asarray(lik.distribution(params).mean())
        assert mean.shape == (4, *SHAPE), name
        scale = 255 if name in ("logistic", "categorical") else 1
        np.testing.assert_allclose(mean, scale * np.asarray(lik.mean(params)), rtol=1e-5, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("name", ["logistic", "categorical"])
def test_samples_of_8_bit_heads_are_images_in_data_units(name):
    import kerasvae as kv

    model = kv.presets.mlp_vae(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), likelihood=name, seed=0)
    x = model.sample(50, seed=(1, 2), mean=False)
    levels = x * 255
    # Draws on the 1/255 grid of [0, 1], like `mean`, not the 0..255 levels the distribution itself draws.
    assert x.min() >= 0 and x.max() <= 1 and np.allclose(levels, np.round(levels), atol=1e-3)
    assert len(np.unique(levels)) > 10
    head = kv.likelihoods.DiscretizedLogistic(event_shape=(1,))
    sharp = {"loc": tf.fill([1000, 1], 0.5), "scale": tf.fill([1000, 1], 1e-4)}
    # Logistic(255 * 0.5 - 0.5, 0.0255) quantized to (y - 1, y]: level 127 or 128, the two nearest 127.5.
    assert set(np.round(np.asarray(head.sample(sharp, seed=(0, 1))) * 255).ravel()) <= {127.0, 128.0}
