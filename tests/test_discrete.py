"""Discrete codes (DiscreteVAE): the discrete KL by hand, relaxed samples and their limits, straight-through
gradients, the temperature schedule, hashing and clustering on real digits measured against an untrained
network, exact log p(x) by enumerating the codes, .keras and SavedModel round trips."""

import contextlib
import doctest
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import adjusted_mutual_info_score

import kerasvae as kv
from conftest import DIGITS_SHAPE, assert_same_outputs, fit
from kerasvae import objectives, posteriors, priors
from kerasvae.export import savedmodel
from kerasvae.models import discrete


def binary_model(**kwargs):
    """16 bits. beta = 0.5 with a KL warm-up keeps more information in the bits: trained like this, 6 seeds
    gave within/between Hamming ratios 0.52-0.55, against 0.63-0.76 with beta = 1, no warm-up (lr 3e-3)."""
    options = dict(input_shape=DIGITS_SHAPE, latent_dim=16, hidden=(64, 32), anneal_rate=5e-3, beta=0.5, kl_warmup_steps=200, seed=0, likelihood="bernoulli")
    keras.utils.set_random_seed(0)  # the torsos' initializers
    return kv.presets.binary_vae(**{**options, **kwargs})


def categorical_model(**kwargs):
    """One 10-way code. (A KL warm-up ruins it: without the KL the encoder saturates on one constant code.)"""
    options = dict(input_shape=DIGITS_SHAPE, num_latents=1, num_categories=10, hidden=(64, 32), anneal_rate=5e-3, seed=0, likelihood="bernoulli")
    keras.utils.set_random_seed(0)
    return kv.presets.gumbel_vae(**{**options, **kwargs})


# Both with a Bernoulli head, not the presets' likelihood="auto" (the logistic on grey digits): the measured
# numbers below are the Bernoulli's, and the tests read p(x|z) in data units.
MODELS = {"binary": binary_model, "categorical": categorical_model}


def softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def hamming_within_and_between(bits, labels):
    distances = np.sum(bits[:, None, :] != bits[None, :, :], axis=-1)
    same, other = labels[:, None] == labels[None, :], ~np.eye(len(labels), dtype=bool)
    return distances[same & other].mean(), distances[~same].mean()


def purity(clusters, labels):
    return sum(np.bincount(labels[clusters == k]).max() for k in np.unique(clusters)) / len(labels)


@contextlib.contextmanager
def tf1_session(path):
    """run(signature, inputs) -> outputs, as TF Serving runs a SavedModel: a TF1 session over the
    signature_defs, loaded once for several requests."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        signature_defs = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path)).signature_def

        def run(signature, inputs):
            definition = signature_defs[signature]
            fetches = {key: info.name for key, info in definition.outputs.items()}
            return session.run(fetches, {definition.inputs[key].name: value for key, value in inputs.items()})

        yield run


@pytest.fixture(scope="module")
def trained_models(digits):
    """{code: (model, history)}: each code type trained for 10 epochs on the digits."""
    models = {code: build() for code, build in MODELS.items()}
    return {code: (model, fit(model, digits[0], epochs=10, learning_rate=5e-3)) for code, model in models.items()}


@pytest.fixture(params=sorted(MODELS))
def trained(request, trained_models):
    return (request.param, *trained_models[request.param])


# === The math ===


def test_discrete_kl_to_uniform_by_hand():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 3, 4)).astype(np.float32) * 2
    head = posteriors.CategoricalPosterior(num_latents=3, num_categories=4)
    kl = objectives.discrete_kl(head.distribution({"logits": logits}), priors.UniformCategoricalPrior(3, 4).distribution())
    q = softmax(logits)
    np.testing.assert_allclose(kl, np.sum(q * np.log(q * 4), axis=(1, 2)), rtol=1e-5)

    bit_logits = rng.normal(size=(5, 6)).astype(np.float32) * 2
    q1 = 1 / (1 + np.exp(-bit_logits))
    by_hand = np.sum(q1 * np.log(2 * q1) + (1 - q1) * np.log(2 * (1 - q1)), axis=1)
    bits = posteriors.BernoulliPosterior(latent_dim=6).distribution({"logits": bit_logits})
    np.testing.assert_allclose(objectives.discrete_kl(bits, priors.UniformBernoulliPrior(6).distribution()), by_hand, rtol=1e-5)


@pytest.mark.parametrize("code", sorted(MODELS))
def test_model_kl_is_the_discrete_kl_of_its_logits_and_evaluation_draws_hard_codes(code, digits):
    model = MODELS[code](**({"latent_dim": 6} if code == "binary" else {"num_latents": 3, "num_categories": 4}))
    x = tf.constant(digits[2][:32])
    q, p, z, _, kl = model.elbo_parts(x, 5, tf.constant([1, 2]))
    logits = model.posterior_params(x)["logits"].numpy()
    if code == "binary":
        q1 = 1 / (1 + np.exp(-logits))
        by_hand = np.sum(q1 * np.log(2 * q1) + (1 - q1) * np.log(2 * (1 - q1)), axis=1)
    else:
        by_hand = np.sum(softmax(logits) * np.log(softmax(logits) * 4), axis=(1, 2))
    np.testing.assert_allclose(kl, by_hand, rtol=1e-4, atol=1e-6)
    assert z.shape == (5, 32, model.latent_dim) and set(np.unique(z)) <= {0.0, 1.0}
    assert q.event_shape == p.event_shape == (model.latent_dim,)


def test_relaxed_samples_lie_on_the_simplex_and_harden_as_the_temperature_falls():
    model = categorical_model(num_latents=2, num_categories=5)
    logits = tf.constant(np.random.default_rng(0).normal(size=(50, 2, 5)), tf.float32)
    distance_to_one_hot = []
    for temperature in (2.0, 1.0, 0.1, 0.01):
        z = model.sample_latents({"logits": logits}, 40, tf.constant([3, 4]), temperature).numpy().reshape(40, 50, 2, 5)
        np.testing.assert_allclose(z.sum(-1), 1.0, atol=1e-5)
        assert np.all(z >= 0) and np.all(z <= 1) and (temperature < 1 or np.all((z > 0) & (z < 1)))
        distance_to_one_hot.append(np.mean(1 - z.max(-1)))
    assert np.all(np.diff(distance_to_one_hot) < 0) and distance_to_one_hot[-1] < 0.01

    bits = binary_model(latent_dim=8)
    bit_logits = tf.constant(np.random.default_rng(1).normal(size=(50, 8)), tf.float32)
    z = bits.sample_latents({"logits": bit_logits}, 40, tf.constant([3, 4]), 1.0).numpy()
    assert np.all((z > 0) & (z < 1))
    draws = [bits.sample_latents({"logits": bit_logits}, 40, tf.constant([3, 4]), t).numpy() for t in (1.0, 0.1, 0.01)]
    distances = [np.mean(np.minimum(z, 1 - z)) for z in draws]
    assert np.all(np.diff(distances) < 0) and distances[-1] < 0.01


@pytest.mark.parametrize("code", sorted(MODELS))
def test_sampler_matches_tfp_relaxed_distribution_and_hard_draws_follow_q(code):
    model = MODELS[code](**({"latent_dim": 3} if code == "binary" else {"num_latents": 1, "num_categories": 3}))
    logits = tf.constant([[0.5, -1.0, 2.0]]) if code == "binary" else tf.constant([[[0.5, -1.0, 2.0]]])
    params = {"logits": logits}
    ours = model.sample_latents(params, 40000, tf.constant([5, 6]), 0.5).numpy()[:, 0]
    tfp_draws = model.posterior_head.relaxed(params, 0.5).sample(40000, seed=(7, 8)).numpy()[:, 0]
    np.testing.assert_allclose(ours.mean(0), tfp_draws.mean(0), atol=0.01)
    np.testing.assert_allclose(ours.std(0), tfp_draws.std(0), atol=0.01)
    hard = model.sample_latents(params, 40000, tf.constant([5, 6])).numpy()[:, 0]
    np.testing.assert_allclose(hard.mean(0), model.posterior_head.distribution(params).mean()[0], atol=0.01)


@pytest.mark.parametrize("code", sorted(MODELS))
def test_straight_through_is_exactly_hard_forward_with_the_relaxed_gradient(code):
    model = MODELS[code](straight_through=True, **({"latent_dim": 6} if code == "binary" else {"num_latents": 2, "num_categories": 3}))
    shape = (4, 6) if code == "binary" else (4, 2, 3)
    logits = tf.Variable(np.random.default_rng(0).normal(size=shape), dtype=tf.float32)
    weights = tf.constant(np.random.default_rng(1).normal(size=(3, 4, 6)), tf.float32)
    seed = tf.constant([9, 9])

    def draw(straight_through):
        model.straight_through = straight_through
        with tf.GradientTape() as tape:
            z = model.sample_latents({"logits": logits}, 3, seed, temperature=0.7)
            loss = tf.reduce_sum(weights * z)
        return z.numpy(), tape.gradient(loss, logits).numpy()

    hard, hard_gradient = draw(True)
    soft, soft_gradient = draw(False)
    np.testing.assert_array_equal(hard, model.posterior_head.harden(soft))
    assert set(np.unique(hard)) == {0.0, 1.0}
    if code == "categorical":
        np.testing.assert_array_equal(hard.reshape(3, 4, 2, 3).sum(-1), 1.0)  # exactly one-hot
    np.testing.assert_allclose(hard_gradient, soft_gradient, rtol=1e-6)
    assert np.all(np.abs(hard_gradient).sum(-1) > 0)


def test_temperature_follows_its_annealing_schedule():
    model = binary_model(latent_dim=4, hidden=(8,), temperature=2.0, anneal_rate=0.1, min_temperature=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x = np.zeros((4, *DIGITS_SHAPE), np.float32)
    temperatures = []
    for _ in range(20):
        temperatures.append(float(model.current_temperature()))
        model.train_on_batch(x)
    np.testing.assert_allclose(temperatures, np.maximum(2.0 * np.exp(-0.1 * np.arange(20)), 0.5), rtol=1e-6)
    constant = binary_model(latent_dim=4, hidden=(8,), temperature=0.3, anneal_rate=0.0)
    assert float(constant.temperature_at(0)) == float(constant.temperature_at(10**6)) == pytest.approx(0.3)


# === Training and the codes on real data ===


def test_fit_lowers_the_loss_and_logs_the_vae_terms(trained, digits):
    code, model, history = trained
    assert history["loss"][-1] < history["loss"][0] - 5.0, (code, history["loss"])
    assert set(history) == {"loss", "reconstruction", "kl", "elbo"}
    validation = model.evaluate(digits[2], batch_size=64, verbose=0, return_dict=True)
    assert set(validation) == set(history) and validation["loss"] < history["loss"][0]
    assert float(model.current_temperature()) == pytest.approx(0.5)  # annealed to the floor


def test_hashing_similar_digits_share_more_bits(trained_models, digits):
    model, _ = trained_models["binary"]
    x, y = digits[2], digits[3]
    bits = model.hash(x)
    assert bits.dtype == np.uint8 and bits.shape == (len(x), 16) and set(np.unique(bits)) == {0, 1}
    np.testing.assert_array_equal(bits, model.codes(x))
    within, between = hamming_within_and_between(bits, y)
    untrained_within, untrained_between = hamming_within_and_between(binary_model().hash(x), y)
    # Measured: 4.39 bits within a class, 8.32 between (ratio 0.53); untrained 2.42 vs 2.89 (ratio 0.84).
    ratio, untrained_ratio = within / between, untrained_within / untrained_between
    assert ratio < 0.65 and ratio < untrained_ratio - 0.15, (within, between, untrained_within, untrained_between)
    with pytest.raises(ValueError, match="hash"):
        model.cluster(x)


def test_clustering_agrees_with_digit_labels(trained_models, digits):
    model, _ = trained_models["categorical"]
    x, y = digits[2], digits[3]
    clusters = model.cluster(x)
    assert clusters.dtype == np.int32 and clusters.shape == (len(x), 1)
    ami = adjusted_mutual_info_score(y, clusters[:, 0])
    untrained_ami = adjusted_mutual_info_score(y, categorical_model().cluster(x)[:, 0])
    # Measured: AMI 0.41, purity 0.44 (0.10 for one cluster); untrained AMI 0.10. Six seeds: AMI 0.30-0.47.
    assert ami > 0.25 and ami > untrained_ami + 0.1 and purity(clusters[:, 0], y) > 0.3, (ami, untrained_ami)
    with pytest.raises(ValueError, match="cluster"):
        model.hash(x)


def test_log_likelihood_and_elbo_against_enumerating_every_code(trained_models, digits):
    """With one 10-way code, log p(x) = logsumexp_k log p(x|e_k) - log 10 exactly, and the ELBO is
    sum_k q_k log p(x|e_k) - KL(q || uniform): the estimators must agree with both."""
    model, _ = trained_models["categorical"]
    x = digits[2][:20]
    codes = np.eye(10, dtype=np.float32)
    log_px_given_code = np.stack([model.decode(np.repeat(codes[k : k + 1], len(x), 0)).log_prob(x).numpy() for k in range(10)], -1)
    peak = log_px_given_code.max(-1)
    exact_log_px = peak + np.log(np.sum(np.exp(log_px_given_code - peak[:, None]), -1)) - np.log(10)
    q = model.encode(x).mean().numpy()
    exact_elbo = np.sum(q * log_px_given_code, -1) - np.sum(q * np.log(np.maximum(q, 1e-30) * 10), -1)
    ll, elbo = model.log_likelihood(x, num_samples=1000, seed=1), model.elbo(x, num_samples=1000, seed=1)
    np.testing.assert_allclose(ll, exact_log_px, atol=0.05)
    np.testing.assert_allclose(elbo, exact_elbo, atol=0.3)
    assert np.all(exact_elbo <= exact_log_px + 1e-4)


def test_api_shapes_and_codes(trained, digits):
    code, model, _ = trained
    x = digits[2][:7]
    q = model.encode(x)
    assert q.batch_shape == (7,) and q.event_shape == (model.latent_dim,)
    assert model.prior.event_shape == (model.latent_dim,)
    codes = model.codes(x)
    assert codes.shape == (7, model.num_latents) and codes.dtype == np.int32
    np.testing.assert_array_equal(model.codes_to_latents(codes), q.mode())
    np.testing.assert_allclose(model.decode_codes(codes).mean(), model.reconstruct(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, verbose=0), model.reconstruct(x), rtol=1e-5, atol=1e-6)
    for values in (model.elbo(x), model.log_likelihood(x, num_samples=20), model.anomaly_score(x)):
        assert values.shape == (7,) and np.all(np.isfinite(values))
    with pytest.raises(ValueError, match=r"\[0, %d\]" % (model.num_categories - 1)):
        model.decode_codes(np.full((1, model.num_latents), model.num_categories))


def test_sample_draws_hard_prior_codes_reproducibly(trained):
    _, model, _ = trained
    np.testing.assert_array_equal(model.sample(6, seed=1234), model.sample(6, seed=1234))
    np.testing.assert_array_equal(model.sample(6, seed=(1, 2), mean=False), model.sample(6, seed=(1, 2), mean=False))
    assert not np.allclose(model.sample(6, seed=1), model.sample(6, seed=2))
    z = model.prior.sample(1000, seed=(3, 4)).numpy()
    assert set(np.unique(z)) == {0.0, 1.0}
    np.testing.assert_allclose(z.mean(0), 1 / model.num_categories, atol=0.06)  # uniform codes


# === Serialization and export ===


def test_save_and_load_give_identical_outputs_without_custom_objects(trained, digits, tmp_path):
    code, model, _ = trained
    path = tmp_path / f"{code}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded) is kv.DiscreteVAE and reloaded.code == code
    x = digits[2][:50]
    assert_same_outputs(model, reloaded, x)
    np.testing.assert_array_equal(model.codes(x), reloaded.codes(x))
    config = json.loads(json.dumps(model.get_config()))
    rebuilt = kv.DiscreteVAE.from_config(config)
    assert json.loads(json.dumps(rebuilt.get_config())) == config
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]


def test_savedmodel_serves_logits_and_codes(trained_models, digits, tmp_path):
    model, _ = trained_models["categorical"]
    path = savedmodel.export_savedmodel(model, tmp_path / "gumbel")
    x = digits[2][:9]
    with tf1_session(path) as run:
        encoded = run("encode", {"x": x})
        decoded = run("decode", {"z": encoded["z"]})
        from_codes = run("decode_codes", {"codes": encoded["codes"]})
        scores = run("score", {"x": x})
        one_by_one = [run("score", {"x": x[i : i + 1]})["elbo"][0] for i in range(3)]
        sampled = run("sample", {"num_samples": np.int32(4), "seed": np.array([7, 11], np.int32)})["x"]
    assert set(encoded) == {"logits", "codes", "z"} and encoded["codes"].dtype == np.int32
    assert encoded["logits"].shape == (9, 1, 10) and encoded["codes"].shape == (9, 1)
    np.testing.assert_array_equal(encoded["codes"], model.codes(x))
    np.testing.assert_allclose(encoded["logits"], model.posterior_params(tf.constant(x))["logits"], atol=1e-5)
    np.testing.assert_allclose(decoded["mean"], model.reconstruct(x), atol=1e-5)
    np.testing.assert_allclose(from_codes["mean"], model.reconstruct(x), atol=1e-5)
    own = model.score_batch(tf.constant(x), tf.constant(savedmodel.SCORE_SEED))["elbo"].numpy()
    np.testing.assert_allclose(scores["elbo"], own, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(one_by_one, scores["elbo"][:3], rtol=1e-5, atol=1e-4)  # batching changes nothing
    np.testing.assert_allclose(sampled, model.sample(4, seed=(7, 11)), atol=1e-5)


def test_binary_signatures_serve_bits(trained_models, digits):
    """The binary model's signature functions, called in process (the SavedModel path is the categorical test's)."""
    model, _ = trained_models["binary"]
    x = digits[2][:9]
    functions = savedmodel.signature_functions(model)
    encoded = functions["encode"][0](tf.constant(x))
    assert set(encoded) == {"logits", "codes", "z"} and encoded["logits"].shape == (9, 16)
    np.testing.assert_array_equal(encoded["codes"], model.hash(x))
    np.testing.assert_array_equal(encoded["z"], model.hash(x).astype(np.float32))
    from_codes = functions["decode_codes"][0](encoded["codes"])["mean"]
    np.testing.assert_allclose(from_codes, model.reconstruct(x), atol=1e-5)
    assert functions["decode_codes"][1][0].shape.as_list() == [None, 16]


# === Construction ===


def test_presets_and_bad_arguments():
    assert kv.presets.get("binary-vae") is kv.presets.binary_vae and kv.presets.get("gumbel_vae") is kv.presets.gumbel_vae
    jang = kv.presets.gumbel_vae(input_shape=DIGITS_SHAPE, hidden=(16,))
    assert (jang.num_latents, jang.num_categories, jang.latent_dim, jang.min_temperature) == (30, 10, 300, 0.5)
    encoder, decoder = kv.networks.MLP((8,)), kv.networks.MLP((8,))
    with pytest.raises(ValueError, match="code must be one of"):
        kv.DiscreteVAE(encoder, decoder, 4, DIGITS_SHAPE, code="ternary")
    with pytest.raises(ValueError, match="num_categories"):
        kv.DiscreteVAE(encoder, decoder, input_shape=DIGITS_SHAPE, code="categorical", num_latents=2)
    with pytest.raises(ValueError, match="num_latents \\* num_categories = 6"):
        kv.DiscreteVAE(encoder, decoder, 5, DIGITS_SHAPE, code="categorical", num_latents=2, num_categories=3)
    with pytest.raises(ValueError, match="latent_dim"):
        kv.DiscreteVAE(encoder, decoder, input_shape=DIGITS_SHAPE)
    with pytest.raises(ValueError, match="positive"):
        kv.DiscreteVAE(encoder, decoder, 4, DIGITS_SHAPE, temperature=0.0)


def test_docstring_examples():
    for module in (discrete, posteriors):
        assert doctest.testmod(module, extraglobs={"np": np, "tf": tf}).failed == 0
