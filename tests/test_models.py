"""Every model family: trains by fit on real data, keeps its probabilistic promises, round-trips
through .keras with identical outputs, and rejects bad inputs with a message naming the shape."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import DIGITS_SHAPE, assert_same_outputs, fit, small_vae

import kerasvae as kv
from kerasvae.models import probabilistic

MODELS = {
    "vae": lambda: small_vae(),
    "conv_vae": lambda: kv.presets.conv_vae(input_shape=DIGITS_SHAPE, latent_dim=4, filters=(8, 16), seed=0),
    "iwae": lambda: small_vae(num_samples=5),
    "iwae_dreg_warmup": lambda: small_vae(num_samples=5, gradient_estimator="dreg", kl_warmup_steps=50),
    "beta_vae_warmup_free_bits": lambda: small_vae(beta=2.0, kl_warmup_steps=50, free_bits=0.1),
    "monte_carlo_kl": lambda: small_vae(analytic_kl=False),
    "gaussian_vae": lambda: small_vae(likelihood="gaussian"),
    "logistic_vae": lambda: small_vae(likelihood="logistic"),
    "categorical_vae": lambda: small_vae(likelihood="categorical"),
    "continuous_bernoulli_vae": lambda: small_vae(likelihood="continuous_bernoulli"),
    "ae": lambda: kv.presets.mlp_ae(input_shape=DIGITS_SHAPE, latent_dim=8, hidden=(64,), seed=0),
    "sparse_ae": lambda: kv.presets.sparse_ae(input_shape=DIGITS_SHAPE, latent_dim=16, hidden=(64,), seed=0),
    "denoising_ae": lambda: kv.presets.denoising_ae(input_shape=DIGITS_SHAPE, latent_dim=8, hidden=(64,), seed=0),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def trained(request, digits):
    model = MODELS[request.param]()
    history = fit(model, digits[0], epochs=6)
    return request.param, model, history


def test_fit_lowers_the_loss_and_logs_every_term(trained, digits):
    name, model, history = trained
    assert history["loss"][-1] < history["loss"][0] - 1.0, (name, history["loss"])
    assert {"loss", "reconstruction"} <= set(history)
    if isinstance(model, kv.VAE):
        assert {"kl", "elbo"} <= set(history)
    validation = model.evaluate(digits[2], batch_size=64, verbose=0, return_dict=True)
    assert set(validation) == set(history)


def test_save_and_load_give_identical_outputs_without_custom_objects(trained, digits, tmp_path):
    name, model, _ = trained
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded) is type(model)
    assert_same_outputs(model, reloaded, digits[2][:50])


def test_config_is_json_and_rebuilds_the_same_architecture(trained):
    _, model, _ = trained
    config = json.loads(json.dumps(model.get_config()))
    rebuilt = type(model).from_config(config)
    assert json.loads(json.dumps(rebuilt.get_config())) == config
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]


def test_api_shapes(trained, digits):
    _, model, _ = trained
    x = digits[2][:7]
    q = model.encode(x)
    assert q.batch_shape == (7,) and q.event_shape == (model.latent_dim,)
    assert model.decode(np.zeros((3, model.latent_dim))).event_shape == DIGITS_SHAPE
    assert model.prior.event_shape == (model.latent_dim,)
    assert model.reconstruct(x).shape == x.shape
    assert model.sample(5, seed=1).shape == (5, *DIGITS_SHAPE)
    for values in (model.elbo(x), model.log_likelihood(x, num_samples=20), model.anomaly_score(x)):
        assert values.shape == (7,) and np.all(np.isfinite(values))
    np.testing.assert_allclose(model.predict(x, verbose=0), model.reconstruct(x), rtol=1e-5, atol=1e-6)


def test_sample_is_reproducible_per_seed(trained):
    _, model, _ = trained
    np.testing.assert_array_equal(model.sample(6, seed=1234), model.sample(6, seed=1234))
    np.testing.assert_array_equal(model.sample(6, seed=(1, 2), mean=False), model.sample(6, seed=(1, 2), mean=False))
    assert not np.allclose(model.sample(6, seed=1), model.sample(6, seed=2))


def test_bad_input_shape_names_the_expected_shape(trained):
    _, model, _ = trained
    with pytest.raises(ValueError, match=r"\[batch, 8, 8, 1\].*\[3, 64\]"):
        model.reconstruct(np.zeros((3, 64)))
    with pytest.raises(ValueError, match=r"\[\.\.\., %d\]" % model.latent_dim):
        model.decode(np.zeros((3, model.latent_dim + 1)))
    with pytest.raises(ValueError, match="NaN"):
        model.elbo(np.full((2, *DIGITS_SHAPE), np.nan))


def test_one_step_changes_every_trainable_weight():
    model = small_vae()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.train_on_batch(np.random.default_rng(0).random((16, *DIGITS_SHAPE)).astype("float32"))
    changed = [not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert all(changed), [w.path for w, c in zip(model.trainable_weights, changed) if not c]


def test_per_example_weights_are_refused_not_ignored(digits):
    """The bound is an unweighted batch mean: sample_weight (or class_weight, which Keras turns into sample
    weights) would otherwise train and report another objective than asked for, silently."""
    x, labels = digits[0][:64], digits[1][:64]
    model = small_vae()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    weights = np.linspace(0.5, 2.0, len(x)).astype("float32")
    for call in (lambda: model.fit(x, sample_weight=weights, epochs=1, verbose=0),
                 lambda: model.evaluate(x, sample_weight=weights, verbose=0),
                 lambda: model.fit(tf.data.Dataset.from_tensor_slices((x, x, weights)).batch(32), epochs=1, verbose=0)):
        with pytest.raises(ValueError, match="sample_weight and class_weight are not supported"):
            call()
    conditional = kv.presets.conditional_vae(input_shape=DIGITS_SHAPE, num_classes=10, latent_dim=4, hidden=(32,))
    conditional.compile(optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match="sample_weight and class_weight are not supported"):
        conditional.fit(x, labels, class_weight={k: 1.0 + k for k in range(10)}, epochs=1, verbose=0)
    model = small_vae()  # a refusal while tracing leaves the train function half-built: recompile to go on
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert np.isfinite(model.fit(x, epochs=1, verbose=0).history["loss"][0])  # unweighted, as before


def test_kerass_own_export_writes_the_reconstruction_in_every_format(trained_vae, binary_digits, tmp_path):
    """`model.export(path)` after `fit` failed ("The model provided has never called"): fit trains through
    train_step, so Keras never saw an input shape. Each format's file gives back model(x)."""
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    x = binary_digits[2][:4]
    expected = np.asarray(trained_vae(x))
    trained_vae.export(tmp_path / "savedmodel", verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "savedmodel"))  # held: its variables die with it
    np.testing.assert_allclose(reloaded.serve(x), expected, atol=1e-6)
    trained_vae.export(tmp_path / "model.onnx", format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], expected, atol=1e-5)
    trained_vae.export(tmp_path / "model.tflite", format="litert", verbose=False)
    runner = Interpreter(str(tmp_path / "model.tflite")).get_signature_runner()
    (input_name,) = runner.get_input_details()
    (litert,) = runner(**{input_name: x[:1]}).values()  # a [1, ...] input: LiteRT keeps the traced batch
    np.testing.assert_allclose(litert, expected[:1], atol=1e-5)
    conditional = kv.presets.conditional_vae(input_shape=DIGITS_SHAPE, num_classes=10, latent_dim=4, hidden=(32,))
    with pytest.raises(ValueError, match="kv.export.export"):
        conditional.export(tmp_path / "conditional")


def test_ten_steps_per_execution_by_default_train_exactly_as_one(digits):
    """compile() runs ten train steps per call into TensorFlow by default; the steps, their noise and the
    epoch's logs are those of Keras's one step per call, also for an epoch of 23 batches (not a multiple)."""
    x = digits[0][:1440]  # 23 batches of 64: two calls of ten steps and one of three
    results = []
    for options in ({}, {"steps_per_execution": 1}):
        keras.utils.set_random_seed(0)
        model = small_vae()
        model.compile(optimizer=keras.optimizers.Adam(3e-3), **options)
        history = model.fit(x, epochs=2, batch_size=64, shuffle=False, verbose=0).history
        results.append((model.steps_per_execution, int(model.optimizer.iterations.numpy()), history, model.get_weights()))
    (spe, steps, history, weights), (spe_one, steps_one, history_one, weights_one) = results
    assert (spe, spe_one) == (10, 1) and steps == steps_one == 46
    for name in history:
        np.testing.assert_allclose(history[name], history_one[name], rtol=1e-5)
    for w, w_one in zip(weights, weights_one):
        np.testing.assert_allclose(w, w_one, rtol=1e-4, atol=1e-6)


def test_elbo_below_iwae_estimates_below_zero_with_the_gap_shrinking(trained_vae, binary_digits):
    x = binary_digits[2][:300]
    elbo = np.mean([trained_vae.elbo(x, seed=s) for s in range(20)])
    estimates = [np.mean(trained_vae.log_likelihood(x, num_samples=k, seed=k)) for k in (1, 10, 100, 1000)]
    assert estimates[0] == pytest.approx(elbo, abs=0.5)  # k = 1 is the ELBO
    # The bound rises with k in expectation only: once it has nearly converged (k = 100 -> 1000 gains
    # thousandths of a nat here), Monte Carlo noise of about 0.01 nats decides the sign of the last step.
    noise = 0.02
    assert elbo < estimates[1] < estimates[2] < estimates[3] + noise and estimates[3] < 0, estimates
    gaps = np.diff(estimates)
    assert gaps[0] > gaps[1] > gaps[2] - noise and gaps[2] > -noise, gaps


def test_the_fused_and_bfloat16_estimates_draw_the_same_samples_as_the_plain_one(trained_vae, binary_digits, monkeypatch):
    """log_likelihood's fast paths change no draw: the XLA-fused log_prob (used from FUSE_MIN_ELEMENTS decoded
    elements per chunk) gives the plain graph's estimate to float32 rounding; a bfloat16 decoder moves it a
    little; and the decoder's layers keep their own float32 policies afterwards."""
    x = binary_digits[2][:300]
    plain = trained_vae.log_likelihood(x, 200, seed=4)
    monkeypatch.setattr(probabilistic, "FUSE_MIN_ELEMENTS", 0)
    fused = trained_vae.log_likelihood(x, 200, seed=4)
    np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-4)
    half = trained_vae.log_likelihood(x, 200, seed=4, precision="bfloat16")
    assert 0 < np.max(np.abs(half - plain)) and abs(np.mean(half) - np.mean(plain)) < 0.05, (np.mean(half), np.mean(plain))
    layers = [*trained_vae.decoder._flatten_layers(), *trained_vae.likelihood._flatten_layers()]
    assert {layer.dtype_policy.name for layer in layers} == {"float32"} and not trained_vae.likelihood.fuse_log_prob
    with pytest.raises(ValueError, match="precision"):
        trained_vae.log_likelihood(x, 10, precision="float16")


def test_vae_loss_terms_recompose_the_elbo_by_hand(trained_vae, binary_digits):
    x = tf.constant(binary_digits[2][:64])
    q, p, z, log_px_z, kl = trained_vae.elbo_parts(x, 1, tf.constant([3, 4]))
    mu, sigma = q.mean().numpy(), q.stddev().numpy()
    np.testing.assert_allclose(kl, 0.5 * np.sum(sigma**2 + mu**2 - 1 - 2 * np.log(sigma), -1), rtol=1e-4)
    logits = trained_vae.likelihood_params(z)["logits"].numpy()[0]
    xn = x.numpy()
    by_hand = np.sum(xn * -np.logaddexp(0, -logits) + (1 - xn) * -np.logaddexp(0, logits), axis=(1, 2, 3))
    np.testing.assert_allclose(log_px_z[0], by_hand, rtol=1e-4)


def test_kl_weight_warms_up_linearly_to_beta():
    model = small_vae(beta=2.0, kl_warmup_steps=10)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x = np.zeros((4, *DIGITS_SHAPE), np.float32)
    weights = []
    for _ in range(12):
        weights.append(float(model.kl_weight(training=True)))
        model.train_on_batch(x)
    np.testing.assert_allclose(weights[:3], [0.2, 0.4, 0.6], rtol=1e-6)
    assert weights[-1] == 2.0 and float(model.kl_weight(training=False)) == 2.0


def test_dreg_changes_only_the_encoder_gradient_of_the_same_draw(trained_vae, binary_digits):
    # The same weights and the same draw of z: one loss value, one decoder gradient; the encoder's differs.
    models = {}
    for estimator in ("reparameterized", "dreg"):
        models[estimator] = small_vae(num_samples=10, gradient_estimator=estimator)
        models[estimator].set_weights(trained_vae.get_weights())
    x = tf.constant(binary_digits[0][:64])
    losses, gradients = {}, {}
    for estimator, model in models.items():
        with tf.GradientTape() as tape:
            losses[estimator] = model.loss_terms(x, training=True)["loss"]
        gradients[estimator] = [g.numpy() for g in tape.gradient(losses[estimator], model.trainable_variables)]
    np.testing.assert_allclose(losses["dreg"], losses["reparameterized"], rtol=1e-6)
    model = models["dreg"]
    encoder = {id(v) for v in model.encoder.trainable_variables + model.posterior_head.trainable_variables}
    for variable, plain, dreg in zip(model.trainable_variables, gradients["reparameterized"], gradients["dreg"]):
        if id(variable) in encoder:
            assert not np.allclose(plain, dreg, atol=1e-4), variable.path
        else:
            np.testing.assert_allclose(dreg, plain, atol=1e-5, err_msg=variable.path)
    with pytest.raises(ValueError, match="gradient_estimator"):
        small_vae(gradient_estimator="vimco")


def test_corruption_applies_in_training_only(digits):
    model = kv.presets.denoising_ae(input_shape=DIGITS_SHAPE, latent_dim=8, hidden=(32,), stddev=0.5, seed=0)
    x = tf.constant(digits[0][:32])
    assert np.array_equal(model.corruption(x, training=False), x)
    noisy = model.corruption(x, training=True).numpy()
    assert np.std(noisy - x.numpy()) == pytest.approx(0.5, rel=0.1)
    np.testing.assert_array_equal(model.reconstruct(x.numpy()), model.reconstruct(x.numpy()))


def test_denoising_vae_codes_barely_move_under_noise(digits, tmp_path):
    """A VAE given a corruption (the denoising VAE) encodes noisy inputs in training and scores the clean
    ones; after training the posterior means of noisy test digits (sigma 0.3) stay near the clean digits'
    codes. Measured over seeds 0 and 1: the mean squared shift is 0.11-0.12 of the codes' variance, against
    0.26-0.30 for a plain VAE trained alike. The trained model loads back with its corruption, without
    custom objects."""
    x_train, x_test = digits[0], digits[2]
    noisy = np.clip(x_test + 0.3 * np.random.default_rng(0).standard_normal(x_test.shape), 0, 1).astype(np.float32)
    shifts = {}
    for name, corruption in (("plain", None), ("denoising", kv.corruptions.GaussianNoise(0.3, seed=0))):
        keras.utils.set_random_seed(0)
        model = small_vae(likelihood="auto", corruption=corruption)
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        model.fit(x_train, epochs=20, batch_size=64, verbose=0)
        codes = model.latent_features(x_test)
        shifts[name] = np.mean(np.sum((model.latent_features(noisy) - codes) ** 2, axis=1)) / np.sum(np.var(codes, axis=0))
    model.save(tmp_path / "denoising_vae.keras")
    reloaded = keras.saving.load_model(tmp_path / "denoising_vae.keras", safe_mode=True)
    assert reloaded.corruption.get_config() == model.corruption.get_config()
    assert_same_outputs(model, reloaded, x_test[:50])
    assert shifts["denoising"] < 0.6 * shifts["plain"], shifts


def test_masking_and_salt_and_pepper_hit_the_requested_fraction():
    x = tf.fill((100, 8, 8, 1), 0.5)
    masked = kv.corruptions.MaskingNoise(0.3, seed=1)(x, training=True).numpy()
    assert np.mean(masked == 0) == pytest.approx(0.3, abs=0.03) and set(np.unique(masked)) == {0.0, 0.5}
    peppered = kv.corruptions.SaltAndPepper(0.2, seed=1)(x, training=True).numpy()
    assert np.mean(peppered != 0.5) == pytest.approx(0.2, abs=0.03)
    assert np.mean(peppered == 1.0) == pytest.approx(0.1, abs=0.02)


def test_kl_sparsity_penalty_by_hand_and_training_moves_rates_to_target(digits):
    codes = tf.constant([[0.1, 0.5], [0.3, 0.5]])
    rho, rho_hat = 0.05, np.array([0.2, 0.5])
    by_hand = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    assert kv.sparsity.KLSparsity(rho)(codes).numpy() == pytest.approx(by_hand, rel=1e-5)
    assert kv.sparsity.L1Sparsity(0.5)(codes).numpy() == pytest.approx(0.5 * 0.7, rel=1e-6)

    model = kv.presets.sparse_ae(input_shape=DIGITS_SHAPE, latent_dim=32, hidden=(64,), target=0.05, weight=1.0, seed=0)
    rates_before = np.mean(model.encode(digits[2]).mean(), axis=0)
    fit(model, digits[0], epochs=15)
    rates_after = np.mean(model.encode(digits[2]).mean(), axis=0)
    assert np.mean(np.abs(rates_after - 0.05)) < 0.5 * np.mean(np.abs(rates_before - 0.05))


def test_autoencoder_prior_tracks_the_codes_it_was_trained_on(digits):
    model = kv.presets.mlp_ae(input_shape=DIGITS_SHAPE, latent_dim=4, hidden=(32,), seed=0)
    fit(model, digits[0], epochs=20, batch_size=32)
    codes = np.asarray(model.encode(digits[0]).mean())
    np.testing.assert_allclose(model.prior.mean(), codes.mean(0), atol=0.25 * codes.std(0).max())
    np.testing.assert_allclose(model.prior.stddev(), codes.std(0), rtol=0.3)


def test_unknown_names_are_value_errors():
    with pytest.raises(ValueError, match="normal"):
        small_vae(prior="laplace")
    with pytest.raises(ValueError, match="mlp_vae"):
        kv.presets.get("transformer")
    with pytest.raises(ValueError, match="num_samples"):
        small_vae(num_samples=0)


def test_arrays_feed_kerass_own_batches_without_the_autotuner(binary_digits, monkeypatch):
    """fit and evaluate on numpy arrays go through Keras's own array pipeline (its batches, shuffling and
    validation batches), only without tf.data's autotuner (kv.data.without_autotuning): the weights, history
    and evaluation are those of Keras's stock adapter, to the bit."""
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    quieted, without_autotuning = [], kv.data.without_autotuning
    monkeypatch.setattr(kv.data, "without_autotuning", lambda dataset: quieted.append(dataset) or without_autotuning(dataset))
    x = binary_digits[0]
    runs = []
    for source in (x, ArrayDataAdapter(x, batch_size=64, shuffle=True)):
        keras.utils.set_random_seed(0)
        model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), seed=0)
        model.compile()
        history = model.fit(source, batch_size=64 if source is x else None, epochs=2, verbose=0,
                            validation_data=(x[:100],), validation_batch_size=64).history
        runs.append((history, model.get_weights(), model.evaluate(x[:300], verbose=0, return_dict=True)))
    (history, weights, evaluated), (keras_history, keras_weights, keras_evaluated) = runs
    assert history == keras_history and evaluated == keras_evaluated
    assert all(np.array_equal(a, b) for a, b in zip(weights, keras_weights))
    # The arrays of the first run's fit, its validation and evaluate; the second run's validation and evaluate.
    assert len(quieted) == 5
