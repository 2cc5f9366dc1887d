"""VQ-VAE: the quantizer's lookup, losses, straight-through gradient, EMA update, perplexity and dead-code
restarts against hand-computed values; the PixelCNN prior's exact autoregressive log-probability, causality
and seeded position-by-position sampling; the model trains on real data, samples from its fitted code
priors, round-trips through .keras and exports the contract's VQ signatures."""

import doctest
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import DIGITS_SHAPE, fit
from test_export_savedmodel import run_in_tf1_session

import kerasvae as kv
from kerasvae.export import savedmodel

K, D = 16, 4
TINY_PIXELCNN = {"filters": 16, "num_layers": 2, "kernel_size": 3}


def small_vqvae(**kwargs):
    # A Bernoulli head, not the preset's likelihood="auto" (the logistic on grey digits): the tests read p(x|z)
    # in data units and copy a trained model's weights into a fresh one.
    options = {"input_shape": DIGITS_SHAPE, "num_embeddings": K, "embedding_dim": D, "filters": (16, 32), "seed": 0, "ema_decay": None,
               "likelihood": "bernoulli"}
    options.update(prior="pixelcnn", prior_options=TINY_PIXELCNN)
    return kv.presets.vqvae(**{**options, **kwargs})


def quantizer_with(codebook, **kwargs):
    vq = kv.quantizers.VectorQuantizer(len(codebook), codebook.shape[1], **kwargs)
    vq.codebook.assign(codebook)
    if vq.ema_decay is not None:
        vq.embedding_sum.assign(codebook)
    return vq


@pytest.fixture(scope="module")
def trained(digits):
    model = small_vqvae()
    history = fit(model, digits[0], epochs=12)
    keras.utils.set_random_seed(0)
    model.fit_code_prior(digits[0], epochs=30, batch_size=64, learning_rate=1e-2)
    return model, history


def test_codes_are_the_nearest_codebook_vectors():
    rng = np.random.default_rng(0)
    codebook, z_e = rng.standard_normal((K, D)).astype("float32"), rng.standard_normal((5, 7, D)).astype("float32")
    out = quantizer_with(codebook)(z_e)
    by_hand = np.argmin(((z_e[..., None, :] - codebook) ** 2).sum(-1), axis=-1)
    np.testing.assert_array_equal(out["codes"], by_hand)
    assert out["codes"].dtype == tf.int32
    np.testing.assert_array_equal(out["z_q"], codebook[by_hand])


def test_losses_by_hand_and_straight_through_gradients():
    rng = np.random.default_rng(1)
    codebook, z_e = rng.standard_normal((K, D)).astype("float32"), rng.standard_normal((3, 5, D)).astype("float32")
    vq = quantizer_with(codebook, commitment_cost=0.25)
    z = tf.Variable(z_e)
    with tf.GradientTape(persistent=True) as tape:
        out = vq(z, training=True)
        terms = vq.loss_terms(z, out["codes"])
        downstream = tf.reduce_sum(3.0 * out["z_q"])
    e = codebook[out["codes"].numpy()]
    squared = np.mean(np.sum((z_e - e) ** 2, axis=(1, 2)))
    np.testing.assert_allclose([terms["commitment"], terms["codebook"]], [squared, squared], rtol=1e-5)
    np.testing.assert_allclose(terms["vq_loss"], 1.25 * squared, rtol=1e-5)
    # Straight-through: d(z_q)/d(z_e) = identity; the commitment loss pulls z_e only, the codebook loss e only.
    np.testing.assert_allclose(tape.gradient(downstream, z), np.full_like(z_e, 3.0))
    np.testing.assert_allclose(tape.gradient(terms["commitment"], z), 2 * (z_e - e) / 3, rtol=1e-5)
    assert tape.gradient(terms["codebook"], z) is None
    codebook_grad = tf.convert_to_tensor(tape.gradient(terms["codebook"], vq.codebook)).numpy()
    by_hand = np.zeros_like(codebook)
    np.add.at(by_hand, out["codes"].numpy().ravel(), (2 * (e - z_e) / 3).reshape(-1, D))
    np.testing.assert_allclose(codebook_grad, by_hand, rtol=1e-5, atol=1e-6)


def test_reconstruction_gradient_reaches_the_encoder_through_the_quantizer(digits):
    model = small_vqvae()
    with tf.GradientTape() as tape:
        terms = model.loss_terms(tf.constant(digits[0][:32]), training=True)
    gradients = tape.gradient(terms["reconstruction"], model.encoder.trainable_weights)
    assert all(g is not None and np.any(np.asarray(g) != 0) for g in gradients)


def test_ema_update_matches_the_formula_for_one_step():
    rng = np.random.default_rng(2)
    codebook, z_e = rng.standard_normal((4, 2)).astype("float32"), rng.standard_normal((10, 2)).astype("float32")
    gamma, eps = 0.9, 1e-5
    vq = quantizer_with(codebook, ema_decay=gamma, epsilon=eps, restart_after=0)
    assert not vq.codebook.trainable
    codes = vq(z_e)["codes"].numpy()
    vq.update(tf.constant(z_e), tf.constant(codes))
    counts = np.bincount(codes, minlength=4)
    sums = np.stack([z_e[codes == k].sum(0) for k in range(4)])
    size = gamma * 1.0 + (1 - gamma) * counts
    total = size.sum()
    smoothed = (size + eps) / (total + 4 * eps) * total
    expected = (gamma * codebook + (1 - gamma) * sums) / smoothed[:, None]
    np.testing.assert_allclose(vq.codebook.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(vq.cluster_size.numpy(), size, rtol=1e-6)


def test_perplexity_by_hand():
    vq = kv.quantizers.VectorQuantizer(4, 2)
    usage = np.array([0.5, 0.25, 0.25, 0.0])
    assert float(vq.perplexity(tf.constant([[0, 0], [1, 2]]))) == pytest.approx(np.exp(-np.sum(usage[:3] * np.log(usage[:3]))))
    assert float(vq.perplexity(tf.constant([0, 1, 2, 3]))) == pytest.approx(4.0)


def test_dead_codes_restart_to_encoder_outputs():
    z_e = np.random.default_rng(3).standard_normal((20, 2)).astype("float32")
    codebook = np.full((4, 2), 100.0, "float32")
    codebook[0] = 0.0  # every vector maps to code 0; codes 1-3 are dead
    vq = quantizer_with(codebook, restart_after=2, seed=0)
    codes = vq(z_e)["codes"]
    vq.update(z_e, codes)
    np.testing.assert_array_equal(vq.codebook.numpy()[1:], codebook[1:])  # one unused step: not yet
    vq.update(z_e, codes)
    restarted = vq.codebook.numpy()[1:]
    assert all(any(np.allclose(row, z) for z in z_e) for row in restarted)
    np.testing.assert_array_equal(vq.codebook.numpy()[0], 0.0)
    np.testing.assert_array_equal(vq.steps_unused.numpy(), 0.0)


def test_restarts_revive_a_collapsed_codebook_in_fit(digits):
    model = small_vqvae(restart_after=3)
    codebook = np.full((K, D), 50.0, "float32")
    codebook[0] = 0.0
    model.quantizer.codebook.assign(codebook)
    assert len(np.unique(model.codes(digits[0]))) == 1
    fit(model, digits[0], epochs=2)
    assert len(np.unique(model.codes(digits[0]))) > K // 2


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_fit_lowers_the_loss_and_uses_many_codes(ema_decay, trained, digits):
    if ema_decay is None:
        model, history = trained
    else:
        model = small_vqvae(ema_decay=ema_decay)
        history = fit(model, digits[0], epochs=8)
    assert set(history) == {"loss", "reconstruction", "vq_loss", "perplexity"}
    assert history["loss"][-1] < history["loss"][0] - 5.0, history["loss"]
    assert history["perplexity"][-1] > 4.0
    validation = model.evaluate(digits[2], batch_size=64, verbose=0, return_dict=True)
    assert set(validation) == set(history) and validation["perplexity"] > 4.0


def test_api_and_its_definitions_by_hand(trained, digits):
    model, _ = trained
    x = digits[2][:7]
    assert model.num_latents == 4 and model.latent_dim == 4 * D  # 8x8 -> a 2x2 grid of codes
    q = model.encode(x)
    codes = model.codes(x)
    assert q.batch_shape == (7,) and q.event_shape == (4,) and codes.dtype == np.int32
    np.testing.assert_array_equal(q.mean(), codes)
    z = model.quantized_latents(x)
    np.testing.assert_allclose(z, model.quantizer.codebook.numpy()[codes].reshape(7, -1))
    np.testing.assert_allclose(model.decode(z).mean(), model.reconstruct(x), atol=1e-6)
    np.testing.assert_allclose(model.decode_codes(codes).mean(), model.reconstruct(x), atol=1e-6)
    np.testing.assert_allclose(model.predict(x, verbose=0), model.reconstruct(x), atol=1e-6)
    log_px = model.decode(z).log_prob(x).numpy()
    log_prior = model.prior.log_prob(codes).numpy()
    np.testing.assert_allclose(model.elbo(x), log_px + log_prior, rtol=1e-5)
    np.testing.assert_allclose(model.log_likelihood(x, num_samples=10), model.elbo(x))
    np.testing.assert_allclose(model.anomaly_score(x), -log_px, rtol=1e-5)
    with pytest.raises(ValueError, match=r"codes of shape \[\.\.\., 4\]"):
        model.decode_codes(np.zeros((2, 5), np.int32))
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        model.decode_codes(np.full((2, 4), K))


def test_code_prior_fits_code_frequencies_and_sampling_is_seeded(trained, digits):
    # The trained autoencoder behind the categorical mixture prior instead of its PixelCNN.
    model = small_vqvae(prior="categorical", prior_components=64)
    for name in ("encoder", "posterior_head", "decoder", "likelihood"):
        getattr(model, name).set_weights(getattr(trained[0], name).get_weights())
    codes = model.codes(digits[0])
    np.testing.assert_array_equal(codes, trained[0].codes(digits[0]))
    model.fit_code_prior(digits[0])
    independent = kv.quantizers.CodePrior(4, K)
    mean_log_prob = independent.fit(codes)
    counts = np.stack([np.bincount(codes[:, l], minlength=K) for l in range(4)])
    frequencies = (counts + 1) / (len(codes) + K)  # Laplace smoothing
    np.testing.assert_allclose(np.exp(independent.distribution().distribution.logits_parameter()), frequencies, rtol=1e-5)
    np.testing.assert_allclose(mean_log_prob, np.mean(np.log(frequencies[np.arange(4), codes]).sum(1)), rtol=1e-5)
    # The mixture prior explains the codes better, and agrees with TFP.
    assert model.prior_layer.num_components > 1 and model.prior.event_shape == (4,)
    np.testing.assert_allclose(model.prior_layer.log_prob(codes[:50]), model.prior.log_prob(codes[:50]), rtol=1e-5)
    assert np.mean(model.prior_layer.log_prob(codes)) > mean_log_prob + 0.5
    samples = model.sample(6, seed=1234)
    assert samples.shape == (6, *DIGITS_SHAPE)
    np.testing.assert_array_equal(samples, model.sample(6, seed=1234))
    np.testing.assert_array_equal(model.sample(6, seed=(1, 2), mean=False), model.sample(6, seed=(1, 2), mean=False))
    assert not np.allclose(samples, model.sample(6, seed=1235))


def small_pixelcnn(grid_shape=(3, 4), num_embeddings=5, **kwargs):
    prior = kv.quantizers.PixelCNNPrior(grid_shape, num_embeddings, **{"filters": 8, "num_layers": 2, "kernel_size": 3, "seed": 0, **kwargs})
    # Random output biases: with the zero initial ones the first conditional, which sees no code, is flat.
    prior.head[-1].bias.assign(np.random.default_rng(6).standard_normal(num_embeddings))
    return prior


def test_pixelcnn_log_prob_is_the_sum_of_conditionals_fed_prefix_by_prefix():
    prior = small_pixelcnn()
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 5, (6, 12)).astype(np.int32)
    by_hand = np.zeros(6)
    for i in range(12):
        # Only the prefix c_<i is real: position i and everything after it are noise the conditional must ignore.
        prefix = codes.copy()
        prefix[:, i:] = rng.integers(0, 5, (6, 12 - i))
        log_p = tf.nn.log_softmax(prior.conditional_logits(prefix)[:, i]).numpy()
        by_hand += log_p[np.arange(6), codes[:, i]]
    np.testing.assert_allclose(prior.log_prob(codes), by_hand, rtol=1e-5)
    np.testing.assert_allclose(prior.distribution().log_prob(codes), by_hand, rtol=1e-5)
    np.testing.assert_array_equal(prior.distribution().event_shape_tensor(), [12])  # TFP leaves the static shape unknown


def test_docstring_examples():
    assert doctest.testmod(kv.quantizers, extraglobs={"tf": tf}).failed == 0


def test_pixelcnn_is_causal_in_raster_order_with_no_blind_spot():
    prior = small_pixelcnn()
    codes = np.random.default_rng(5).integers(0, 5, (1, 12)).astype(np.int32)
    logits = prior.conditional_logits(codes).numpy()[0]
    for j in range(12):
        perturbed = codes.copy()
        perturbed[0, j] = (codes[0, j] + 1) % 5
        changed = np.any(np.abs(prior.conditional_logits(perturbed).numpy()[0] - logits) > 1e-6, axis=-1)
        assert not changed[: j + 1].any(), f"changing c_{j} moved the conditionals at {np.flatnonzero(changed[: j + 1])}"
        # The next position in the row and the one below see it (the rest may lie outside the receptive field).
        assert all(changed[k] for k in (j + 1, j + 4) if k < 12 and (k == j + 4 or j % 4 < 3)), j
    # Up and to the right: (0, 3) conditions (1, 2), the position a masked-kernel PixelCNN is blind to.
    perturbed = codes.copy()
    perturbed[0, 3] = (codes[0, 3] + 1) % 5
    assert not np.allclose(prior.conditional_logits(perturbed).numpy()[0, 6], logits[6])


def test_pixelcnn_samples_position_by_position_with_a_stateless_seed():
    prior = small_pixelcnn()
    codes = prior.sample(7, (3, 4)).numpy()
    assert codes.shape == (7, 12) and codes.dtype == np.int32 and codes.min() >= 0 and codes.max() < 5
    np.testing.assert_array_equal(codes, prior.sample(7, (3, 4)))
    np.testing.assert_array_equal(codes, tf.function(prior.sample)(tf.constant(7), tf.constant([3, 4])))
    assert not np.array_equal(codes, prior.sample(7, (3, 5)))
    # Near zero temperature every draw is the mode of its conditional given the codes drawn before it.
    cold = prior.sample(3, (0, 1), temperature=1e-4).numpy()
    greedy = np.zeros((3, 12), np.int32)
    for i in range(12):
        greedy[:, i] = np.argmax(prior.conditional_logits(greedy)[:, i], axis=-1)
    np.testing.assert_array_equal(cold, greedy)


def test_pixelcnn_prior_beats_the_independent_categorical_on_real_codes(trained, digits):
    model, _ = trained
    assert isinstance(model.prior_layer, kv.quantizers.PixelCNNPrior) and not model.prior_layer.trainable_weights
    train_codes, test_codes = model.codes(digits[0]), model.codes(digits[2])
    independent = kv.quantizers.CodePrior(4, K)
    independent.fit(train_codes)
    pixelcnn = model.prior_layer.log_prob(train_codes).numpy()
    assert np.mean(pixelcnn) > np.mean(independent.log_prob(train_codes)) + 0.5
    assert np.mean(model.prior_layer.log_prob(test_codes)) > np.mean(independent.log_prob(test_codes))
    samples = model.sample(6, seed=1234)
    assert samples.shape == (6, *DIGITS_SHAPE) and np.all((samples >= 0) & (samples <= 1))
    np.testing.assert_array_equal(samples, model.sample(6, seed=1234))
    assert not np.allclose(samples, model.sample(6, seed=1235))


def test_pixelcnn_prior_over_vector_latents_is_causal_in_one_dimension(digits):
    model = kv.VQVAE(kv.networks.MLP((32,)), kv.networks.MLP((32,)), DIGITS_SHAPE, num_embeddings=8, embedding_dim=2, num_latents=6,
                     prior="pixelcnn", prior_options={"filters": 8, "num_layers": 2, "kernel_size": 3}, seed=0)
    assert model.prior_layer.grid_shape == (1, 6)
    codes = model.codes(digits[2][:5])
    logits = model.prior_layer.conditional_logits(codes).numpy()
    perturbed = codes.copy()
    perturbed[:, 3] = (codes[:, 3] + 1) % 8
    np.testing.assert_allclose(model.prior_layer.conditional_logits(perturbed).numpy()[:, :4], logits[:, :4], atol=1e-6)
    assert model.sample(3, seed=0).shape == (3, *DIGITS_SHAPE)
    with pytest.raises(ValueError, match="Unknown prior"):
        small_vqvae(prior="gaussian")


def test_save_and_load_give_identical_outputs_without_custom_objects(trained, digits, tmp_path):
    model, _ = trained
    model.save(tmp_path / "vqvae.keras")
    reloaded = keras.saving.load_model(tmp_path / "vqvae.keras", safe_mode=True)
    assert type(reloaded) is kv.VQVAE
    x = digits[2][:50]
    np.testing.assert_array_equal(reloaded.codes(x), model.codes(x))
    np.testing.assert_allclose(reloaded.reconstruct(x), model.reconstruct(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reloaded.elbo(x), model.elbo(x), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(reloaded.prior_layer.log_prob(reloaded.codes(x)), model.prior_layer.log_prob(model.codes(x)))
    np.testing.assert_array_equal(reloaded.prior_layer.sample(9, (5, 6)), model.prior_layer.sample(9, (5, 6)))
    np.testing.assert_allclose(reloaded.sample(4, seed=5), model.sample(4, seed=5), rtol=1e-5, atol=1e-6)
    assert reloaded.prior_kind == "pixelcnn" and reloaded.prior_options == TINY_PIXELCNN and not reloaded.prior_layer.trainable_weights
    config = json.loads(json.dumps(model.get_config()))
    assert json.loads(json.dumps(kv.VQVAE.from_config(config).get_config())) == config


def test_vector_latents_for_mlp_torsos(digits):
    model = kv.VQVAE(kv.networks.MLP((32,)), kv.networks.MLP((32,)), DIGITS_SHAPE, num_embeddings=8, embedding_dim=2, num_latents=6, ema_decay=0.9, seed=0)
    assert model.latent_dim == 12 and model.codes(digits[2][:3]).shape == (3, 6)
    assert model.decode(np.zeros((2, 12))).event_shape == DIGITS_SHAPE
    with pytest.raises(ValueError, match="num_latents"):
        kv.VQVAE(kv.networks.MLP((32,)), kv.networks.MLP((32,)), DIGITS_SHAPE)
    with pytest.raises(ValueError, match="latent_dim"):
        small_vqvae(latent_dim=3)


def test_savedmodel_serves_codes_and_quantized_latents(trained, digits, tmp_path):
    model, _ = trained
    path = savedmodel.export_savedmodel(model, tmp_path / "vq")
    x = digits[2][:9]
    encoded = run_in_tf1_session(path, "encode", {"x": x})
    assert set(encoded) == {"codes", "z"} and encoded["codes"].dtype == np.int32
    np.testing.assert_array_equal(encoded["codes"], model.codes(x))
    decoded = run_in_tf1_session(path, "decode", {"z": encoded["z"]})
    np.testing.assert_allclose(decoded["mean"], model.reconstruct(x), atol=1e-5)
    assert "logits" in decoded
    from_codes = run_in_tf1_session(path, "decode_codes", {"codes": encoded["codes"]})
    np.testing.assert_allclose(from_codes["mean"], model.reconstruct(x), atol=1e-5)
    scores = run_in_tf1_session(path, "score", {"x": x})
    np.testing.assert_allclose(scores["elbo"], model.elbo(x), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(scores["anomaly_score"], model.anomaly_score(x), rtol=1e-5, atol=1e-3)
    sampled = run_in_tf1_session(path, "sample", {"num_samples": np.int32(4), "seed": np.array([7, 11], np.int32)})
    np.testing.assert_allclose(sampled["x"], model.sample(4, seed=(7, 11)), atol=1e-5)
    metadata = json.loads((path / "assets.extra" / savedmodel.METADATA_FILE).read_text())
    assert "decode_codes" in metadata["signatures"]
