"""Priors: log p(z) against hand-computed mixtures, the VampPrior against the model's own encoder, learned
priors trained by fit, .keras and SavedModel round trips, and the Monte Carlo KL they fall back to."""

import doctest
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasvae as kv
from conftest import DIGITS_SHAPE, assert_same_outputs, fit, small_vae
from kerasvae import objectives, priors
from kerasvae.export import savedmodel

LEARNED = ("mixture", "vamp")


def softplus(x):
    return np.logaddexp(0.0, x)


def logsumexp(a, axis):
    peak = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(peak, axis) + np.log(np.sum(np.exp(a - peak), axis=axis))


def diagonal_normal_log_prob(z, loc, scale):
    """log N(z; loc, diag(scale^2)) summed over the last axis, broadcasting z against loc."""
    return np.sum(-0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi), axis=-1)


@pytest.fixture(scope="module", params=LEARNED)
def trained(request, binary_digits):
    """(name, model, history, prior weights before fit) for a small VAE trained with each learned prior."""
    keras.utils.set_random_seed(1)
    model = small_vae(prior=request.param)
    before = [w.numpy().copy() for w in model.prior_layer.weights]
    history = fit(model, binary_digits[0], epochs=5)
    return request.param, model, history, before


def test_names_build_the_learned_priors_with_every_weight_at_construction():
    mixture = small_vae(prior="mixture").prior_layer
    assert isinstance(mixture, priors.MixturePrior)
    assert {w.path.split("/")[-1]: tuple(w.shape) for w in mixture.trainable_weights} == {
        "logits": (10,), "locs": (10, 4), "raw_scales": (10, 4)
    }
    vamp = small_vae(prior="vamp").prior_layer
    assert isinstance(vamp, priors.VampPrior)
    # Only the pseudo-inputs belong to the prior: the encoder it uses is the model's, not a tracked copy.
    assert [tuple(w.shape) for w in vamp.weights] == [(50, *DIGITS_SHAPE)]
    assert sorted(priors.PRIORS) == ["mixture", "normal", "vamp"]


def test_mixture_starts_uniform_with_unit_scales_and_spread_means():
    p = priors.MixturePrior(latent_dim=3, num_components=200, min_scale=1e-3, seed=0).distribution()
    np.testing.assert_allclose(p.mixture_distribution.probs_parameter(), np.full(200, 1 / 200), rtol=1e-6)
    np.testing.assert_allclose(p.components_distribution.stddev(), np.ones((200, 3)), rtol=1e-6)
    locs = p.components_distribution.mean().numpy()
    assert abs(locs.mean()) < 0.15 and locs.std() == pytest.approx(1.0, abs=0.1)


def test_mixture_log_prob_is_a_logsumexp_over_components_by_hand():
    rng = np.random.default_rng(0)
    layer = priors.MixturePrior(latent_dim=3, num_components=4, min_scale=1e-3, seed=0)
    logits, locs, raw = rng.normal(size=4), rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    layer.set_weights([logits, locs, raw])
    z = rng.normal(size=(5, 7, 3)).astype(np.float32)  # [k samples, n examples, latent_dim], as IWAE draws

    log_weights = logits - logsumexp(logits, axis=0)
    per_component = diagonal_normal_log_prob(z[..., None, :], locs, softplus(raw) + 1e-3)  # [5, 7, 4]
    by_hand = logsumexp(log_weights + per_component, axis=-1)
    np.testing.assert_allclose(layer.distribution().log_prob(z), by_hand, rtol=1e-5, atol=1e-5)


def test_mixture_samples_have_the_mixture_mean():
    layer = priors.MixturePrior(latent_dim=2, num_components=3, seed=0)
    layer.set_weights([np.array([0.0, 1.0, -1.0]), np.array([[4.0, 0.0], [0.0, -4.0], [-4.0, 4.0]]), np.zeros((3, 2))])
    weights = np.exp([0.0, 1.0, -1.0]) / np.sum(np.exp([0.0, 1.0, -1.0]))
    samples = layer.distribution().sample(20000, seed=(1, 2)).numpy()
    np.testing.assert_allclose(samples.mean(0), weights @ layer.locs.numpy(), atol=0.08)


def test_vamp_log_prob_averages_the_models_posterior_over_pseudo_inputs_by_hand():
    model = small_vae(prior=priors.VampPrior(latent_dim=4, input_shape=DIGITS_SHAPE, num_components=6, seed=0))
    q = model.encode(model.prior_layer.pseudo_inputs.numpy())
    loc, scale = q.mean().numpy(), q.stddev().numpy()  # [6, 4]
    z = np.random.default_rng(1).normal(size=(5, 7, 4)).astype(np.float32)

    by_hand = logsumexp(diagonal_normal_log_prob(z[..., None, :], loc, scale), axis=-1) - np.log(6)
    np.testing.assert_allclose(model.prior.log_prob(z), by_hand, rtol=1e-5, atol=1e-5)


def test_vamp_pseudo_inputs_can_start_from_data(binary_digits):
    x = binary_digits[0][:5]
    layer = priors.VampPrior(latent_dim=4, input_shape=DIGITS_SHAPE, num_components=5, pseudo_inputs_init=x)
    np.testing.assert_array_equal(layer.pseudo_inputs.numpy(), x)
    uniform = priors.VampPrior(latent_dim=4, input_shape=DIGITS_SHAPE, num_components=100, seed=0).pseudo_inputs.numpy()
    assert uniform.min() >= 0 and uniform.max() <= 1 and uniform.mean() == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match=r"\[5, 8, 8, 1\]"):
        priors.VampPrior(latent_dim=4, input_shape=DIGITS_SHAPE, num_components=5, pseudo_inputs_init=x[:3])


def test_adapt_draws_the_pseudo_inputs_from_the_examples_it_is_given(digits):
    x = digits[0][:40]
    layer = priors.VampPrior(latent_dim=4, input_shape=DIGITS_SHAPE, num_components=12, seed=3)
    layer.adapt(x)
    chosen = np.random.default_rng(3).choice(40, 12, replace=False)  # the prior's seed, without replacement
    np.testing.assert_array_equal(layer.pseudo_inputs.numpy(), x[chosen])
    layer.adapt(x[:5], seed=0)  # fewer examples than components: drawn with replacement
    rows = {r.tobytes() for r in layer.pseudo_inputs.numpy()}
    assert len(rows) <= 5 and rows <= {r.tobytes() for r in x[:5]}
    with pytest.raises(ValueError, match="shape"):
        layer.adapt(np.zeros((3, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match='"data"'):
        priors.VampPrior(latent_dim=4, input_shape=DIGITS_SHAPE, pseudo_inputs_init="examples")


def test_the_first_fit_starts_data_pseudo_inputs_from_its_training_sample_and_later_fits_keep_them(tmp_path, binary_digits):
    x = binary_digits[0][:256]
    model = small_vae(prior=priors.VampPrior(latent_dim=4, input_shape=DIGITS_SHAPE, num_components=8, seed=0,
                                             pseudo_inputs_init="data"))
    assert model.prior_layer.get_config()["pseudo_inputs_init"] == "data"
    model.compile(optimizer=keras.optimizers.SGD(0.0))  # no step moves them: what fit put there stays
    model.fit(x, epochs=1, batch_size=64, verbose=0)
    start = model.prior_layer.pseudo_inputs.numpy()
    np.testing.assert_array_equal(start, x[np.random.default_rng(0).choice(len(x), 8, replace=False)])
    model.fit(x[::-1].copy(), epochs=1, batch_size=64, verbose=0)
    np.testing.assert_array_equal(model.prior_layer.pseudo_inputs.numpy(), start)
    model.save(tmp_path / "m.keras")
    for compiled in (True, False):  # trained pseudo-inputs come back and stay, also under a new optimizer
        loaded = keras.saving.load_model(tmp_path / "m.keras", compile=compiled)
        if not compiled:
            loaded.compile(optimizer=keras.optimizers.SGD(0.0))
        loaded.fit(x[::-1].copy(), epochs=1, batch_size=64, verbose=0)
        assert loaded.prior_layer.starts_from_data and loaded.prior_layer.adapted
        np.testing.assert_array_equal(loaded.prior_layer.pseudo_inputs.numpy(), start)


def test_fit_lowers_the_loss_and_trains_the_prior(trained):
    name, model, history, before = trained
    assert history["loss"][-1] < history["loss"][0] - 3.0, (name, history["loss"])
    assert np.all(np.isfinite(history["kl"]))
    after = [w.numpy() for w in model.prior_layer.weights]
    for old, new, weight in zip(before, after, model.prior_layer.weights):
        assert np.max(np.abs(new - old)) > 1e-2, weight.path


def test_kl_falls_back_to_monte_carlo(trained, binary_digits):
    _, model, _, _ = trained
    x = tf.constant(binary_digits[2][:16])
    q, p = model.encode(x.numpy()), model.prior
    z = q.sample(3, seed=(4, 5))
    by_hand = np.mean(q.log_prob(z).numpy() - p.log_prob(z).numpy(), axis=0)
    np.testing.assert_allclose(objectives.kl_divergence(q, p, z, analytic=None), by_hand, rtol=1e-5, atol=1e-5)
    assert objectives.kl_per_dimension(q, p) is None  # so free bits takes its non-factorized form
    with pytest.raises(NotImplementedError):
        objectives.kl_divergence(q, p, z, analytic=True)


def test_one_component_mixture_monte_carlo_kl_matches_the_gaussian_kl():
    layer = priors.MixturePrior(latent_dim=2, num_components=1, min_scale=0.0)
    layer.set_weights([np.zeros(1), np.array([[1.0, -0.5]]), np.log(np.expm1([[0.5, 2.0]]))])
    q = kv.posteriors.GaussianPosterior(2).distribution({"loc": tf.constant([[0.0, 0.0]]), "scale": tf.constant([[1.0, 1.0]])})
    z = q.sample(50000, seed=(0, 1))
    mu, s = np.array([1.0, -0.5]), np.array([0.5, 2.0])
    by_hand = np.sum(np.log(s) + (1 + mu**2) / (2 * s**2) - 0.5)
    assert float(objectives.kl_divergence(q, layer.distribution(), z)[0]) == pytest.approx(by_hand, rel=0.03)


def test_free_bits_with_a_mixture_uses_the_total_kl_budget(binary_digits):
    model = small_vae(prior="mixture", free_bits=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    terms = {k: float(v) for k, v in model.loss_terms(tf.constant(binary_digits[2][:32])).items()}
    assert terms["loss"] == pytest.approx(terms["reconstruction"] + max(0.5 * 4, terms["kl"]), rel=1e-5)


def test_iwae_estimates_are_finite_and_above_the_elbo(trained, binary_digits):
    name, model, _, _ = trained
    x = binary_digits[2][:200]
    elbo = np.mean([model.elbo(x, seed=s) for s in range(5)])
    iwae = model.log_likelihood(x, num_samples=200, seed=7)
    assert np.all(np.isfinite(iwae))
    assert elbo < np.mean(iwae) < 0, (name, elbo, np.mean(iwae))


def test_save_and_load_give_identical_outputs(trained, binary_digits, tmp_path):
    name, model, _, _ = trained
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded.prior_layer) is type(model.prior_layer)
    for saved, loaded in zip(model.prior_layer.weights, reloaded.prior_layer.weights):
        np.testing.assert_array_equal(saved.numpy(), loaded.numpy())
    assert_same_outputs(model, reloaded, binary_digits[2][:50])


@pytest.mark.parametrize(
    "layer",
    [
        priors.MixturePrior(latent_dim=3, num_components=5, min_scale=0.01, seed=4),
        priors.VampPrior(latent_dim=3, input_shape=(4, 2), num_components=7, seed=4),
    ],
    ids=["mixture", "vamp"],
)
def test_config_is_json_and_holds_every_argument(layer):
    config = json.loads(json.dumps(layer.get_config()))
    rebuilt = type(layer).from_config(config)
    assert rebuilt.get_config() == layer.get_config()
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in layer.weights]
    assert {"latent_dim", "num_components", "seed"} <= set(config)


def test_savedmodel_sample_and_score_signatures_run(trained, binary_digits, tmp_path):
    name, model, _, _ = trained
    path = savedmodel.export_savedmodel(model, tmp_path / name)
    signatures = tf.saved_model.load(str(path)).signatures
    x = binary_digits[2][:9]
    drawn = signatures["sample"](num_samples=tf.constant(6), seed=tf.constant([7, 11]))["x"].numpy()
    np.testing.assert_allclose(drawn, model.sample(6, seed=(7, 11)), atol=1e-5)
    scores = signatures["score"](x=tf.constant(x))
    own = model.score_batch(tf.constant(x), tf.constant(savedmodel.SCORE_SEED))["elbo"].numpy()
    np.testing.assert_allclose(scores["elbo"], own, atol=1e-3, rtol=1e-5)
    assert np.all(np.isfinite(scores["elbo"])) and np.all(scores["elbo"] < 0)


def test_bad_prior_arguments_are_value_errors():
    with pytest.raises(ValueError, match="input_shape"):
        priors.get("vamp", latent_dim=4)
    with pytest.raises(ValueError, match="model.prior"):
        priors.VampPrior(latent_dim=4, input_shape=DIGITS_SHAPE, num_components=3).distribution()
    with pytest.raises(ValueError, match="num_components"):
        priors.MixturePrior(latent_dim=4, num_components=0)
    with pytest.raises(ValueError, match="mixture"):
        priors.get("flow", latent_dim=4)
    with pytest.raises(ValueError, match=r"\(8, 8, 1\)"):
        small_vae(prior=priors.VampPrior(latent_dim=4, input_shape=(28, 28, 1), num_components=3))


def test_docstring_examples_run():
    assert doctest.testmod(priors, extraglobs={"tf": tf}).failed == 0
