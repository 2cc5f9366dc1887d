"""VQ-VAE: the quantizer's lookup, losses, straight-through gradient, EMA update, perplexity and dead-code
restarts against hand-computed values; the model trains on real data, samples from its fitted code prior,
round-trips through .keras and exports the contract's VQ signatures."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasvae as kv
from conftest import DIGITS_SHAPE, fit
from kerasvae.export import savedmodel
from test_export_savedmodel import run_in_tf1_session

K, D = 16, 4


def small_vqvae(**kwargs):
    options = dict(input_shape=DIGITS_SHAPE, num_embeddings=K, embedding_dim=D, filters=(16, 32), seed=0)
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
    model.fit_code_prior(digits[0])
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
    model, _ = trained
    codes = model.codes(digits[0])
    independent = kv.quantizers.CodePrior(4, K)
    mean_log_prob = independent.fit(codes)
    counts = np.stack([np.bincount(codes[:, l], minlength=K) for l in range(4)])
    frequencies = (counts + 1) / (len(codes) + K)  # Laplace smoothing
    np.testing.assert_allclose(np.exp(independent.distribution().distribution.logits_parameter()), frequencies, rtol=1e-5)
    np.testing.assert_allclose(mean_log_prob, np.mean(np.log(frequencies[np.arange(4), codes]).sum(1)), rtol=1e-5)
    # The preset's mixture prior (fitted by the fixture) explains the codes better, and agrees with TFP.
    assert model.prior_layer.num_components > 1 and model.prior.event_shape == (4,)
    np.testing.assert_allclose(model.prior_layer.log_prob(codes[:50]), model.prior.log_prob(codes[:50]), rtol=1e-5)
    assert np.mean(model.prior_layer.log_prob(codes)) > mean_log_prob + 0.5
    samples = model.sample(6, seed=1234)
    assert samples.shape == (6, *DIGITS_SHAPE)
    np.testing.assert_array_equal(samples, model.sample(6, seed=1234))
    np.testing.assert_array_equal(model.sample(6, seed=(1, 2), mean=False), model.sample(6, seed=(1, 2), mean=False))
    assert not np.allclose(samples, model.sample(6, seed=1235))


def test_save_and_load_give_identical_outputs_without_custom_objects(trained, digits, tmp_path):
    model, _ = trained
    model.save(tmp_path / "vqvae.keras")
    reloaded = keras.saving.load_model(tmp_path / "vqvae.keras", safe_mode=True)
    assert type(reloaded) is kv.VQVAE
    x = digits[2][:50]
    np.testing.assert_array_equal(reloaded.codes(x), model.codes(x))
    np.testing.assert_allclose(reloaded.reconstruct(x), model.reconstruct(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reloaded.elbo(x), model.elbo(x), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(reloaded.sample(4, seed=5), model.sample(4, seed=5), rtol=1e-5, atol=1e-6)
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
