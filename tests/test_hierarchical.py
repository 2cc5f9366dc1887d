"""kv.HierarchicalVAE: the importance weights over all levels against a computation by hand (numpy) for both
inference structures, the bound ordering on real data, the KL warm-up, DReG's generative gradient, the
noise inputs of decode and the `.keras` round trip. The family harness (fit, export, TFLite) runs it in
tests/test_families.py."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import fit

import kerasvae as kv
from kerasvae._tfp import stateless_seed
from kerasvae.export.savedmodel import signature_functions

IMAGE = (8, 8, 1)


def build(inference="top_down", latent_dims=(3, 2), **kwargs):
    keras.utils.set_random_seed(0)
    return kv.HierarchicalVAE(kv.networks.MLP((16,)), kv.networks.MLP((16,)), latent_dims=latent_dims, input_shape=IMAGE,
                              level_hidden=(8,), inference=inference, seed=0, **kwargs)


def dense(layer, x):
    """A Dense layer by hand."""
    kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
    return x @ kernel + bias


def mlp(block, x):
    for layer in block.hidden:
        x = np.maximum(dense(layer, x), 0.0)
    return x


def gaussian_head(head, features):
    loc, raw = np.split(dense(head.dense, features), 2, axis=-1)
    return loc, np.logaddexp(0.0, raw) + head.min_scale


def log_normal(z, loc, scale):
    return np.sum(-0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi), axis=-1)


def log_weights_by_hand(model, x, k, seed):
    """log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1, z2 | x) for two levels, in numpy float64, with the
    standard-normal draws the model makes from `seed` (one stateless stream per level)."""
    return sum(joint_by_hand(model, x, k, seed))


def joint_by_hand(model, x, k, seed):
    """log_weights_by_hand's two parts [k, n]: log p(x|z1), and log p(z1|z2) + log p(z2) - log q(z1, z2 | x)."""
    seeds = tfp.random.split_seed(tf.constant(seed, tf.int32), n=2)
    n = len(x)
    eps = [np.asarray(tf.random.stateless_normal([k, n, d], seed=s), np.float64) for d, s in zip(model.latent_dims, seeds)]
    d1 = mlp(model.encoder, x.reshape(n, -1).astype(np.float64))
    if model.inference == "top_down":
        q2 = gaussian_head(model.posterior_head, mlp(model.up_blocks[0], d1))
        z2 = q2[0] + q2[1] * eps[1]
        p1 = gaussian_head(model.prior_heads[0], mlp(model.down_blocks[0], z2))
        m, s = gaussian_head(model.level_heads[0], d1)
        scale = 1 / np.sqrt(1 / s**2 + 1 / p1[1] ** 2)
        q1 = ((m / s**2 + p1[0] / p1[1] ** 2) * scale**2, scale)
        z1 = q1[0] + q1[1] * eps[0]
    else:
        q1 = gaussian_head(model.level_heads[0], d1)
        z1 = q1[0] + q1[1] * eps[0]
        q2 = gaussian_head(model.posterior_head, mlp(model.up_blocks[0], z1))
        z2 = q2[0] + q2[1] * eps[1]
        p1 = gaussian_head(model.prior_heads[0], mlp(model.down_blocks[0], z2))
    logits = dense(model.likelihood.dense, mlp(model.decoder, z1))
    target = x.reshape(n, -1)
    log_px = np.sum(target * logits - np.logaddexp(0.0, logits), axis=-1)  # Bernoulli log-likelihood
    log_p = log_normal(z1, *p1) + log_normal(z2, 0.0, 1.0)
    log_q = log_normal(z1, *q1) + log_normal(z2, *q2)
    return log_px, log_p - log_q


@pytest.mark.parametrize("inference", ["top_down", "bottom_up"])
def test_importance_weights_over_all_levels_match_a_computation_by_hand(inference, binary_digits):
    model = build(inference)
    x = binary_digits[0][:5]
    ours = model.log_importance_weights(tf.constant(x), 4, tf.constant([3, 4]))
    np.testing.assert_allclose(ours, log_weights_by_hand(model, x, 4, [3, 4]), rtol=1e-4, atol=1e-3)
    # The ELBO's estimate from the same draws: mean log p(x|z1) - KL, whose Monte Carlo part is unbiased,
    # so its mean over many draws approaches the mean log weight.
    elbo = model.elbo_batch(tf.constant(x), 2000, tf.constant([5, 6]))
    np.testing.assert_allclose(elbo, np.mean(log_weights_by_hand(model, x, 2000, [5, 6]), axis=0), atol=0.5)


@pytest.fixture(scope="module")
def trained(binary_digits):
    model = build(num_samples=3, gradient_estimator="dreg")
    model.compile()
    model.fit(binary_digits[0][:384], epochs=2, batch_size=64, verbose=0)
    return model


@pytest.mark.slow  # a fit (shared by the tests that take `trained`)
def test_importance_weighted_likelihood_tightens_the_elbo_on_digits(trained, binary_digits):
    x = binary_digits[0][512:576]
    elbo = trained.elbo(x, num_samples=20, seed=1)
    ll_10, ll_200 = trained.log_likelihood(x, num_samples=10, seed=2), trained.log_likelihood(x, num_samples=200, seed=3)
    assert np.all(np.isfinite(ll_200))
    # Jensen: E log (1/k sum w) >= E log w, and the bound tightens with k (Burda et al. 2016).
    assert np.mean(elbo) < np.mean(ll_10) < np.mean(ll_200)
    assert np.mean(ll_200) - np.mean(elbo) < 20.0
    # The `nll` anomaly score is that estimate, negated (other draws: equal on average).
    assert abs(np.mean(trained.anomaly_score(x, method="nll", num_samples=200)) + np.mean(ll_200)) < 1.0


def test_kl_warmup_weights_every_levels_kl(binary_digits):
    model = build(kl_warmup_steps=8)
    model.compile()
    model.optimizer.iterations.assign(3)  # step 4 of 8: weight 0.5
    terms = model.loss_terms(tf.constant(binary_digits[0][:32]), training=True)
    np.testing.assert_allclose(float(terms["loss"]), float(terms["reconstruction"] + 0.5 * terms["kl"]), rtol=1e-6)
    assert float(terms["kl"]) > 0
    model.plan_run(10)  # a short run: the warm-up shrinks to the recipe's share... (no share: unchanged)
    assert model.kl_warmup_steps == 8
    preset = kv.presets.hvae(input_shape=IMAGE, latent_dim=2, lower_dims=(3,), encoder_filters=None, hidden=(16,), level_hidden=(8,))
    preset.plan_run(100)
    assert preset.kl_warmup_steps == 40  # 40% of 100 steps (presets.KL_WARMUP_SHARE)


@pytest.mark.parametrize("gradient_estimator", ["reparameterized", "dreg"])
def test_kl_warmup_tempers_every_levels_importance_weights(gradient_estimator, binary_digits):
    """With k > 1 the warmed-up loss is -mean log (1/k) sum_i exp(log p(x|z1_i) + beta (log p(z_i) - log q(z_i|x)))
    over both levels' draws, beta = 0.5 here, computed by hand from the seed the step draws."""
    model = build("bottom_up", num_samples=3, kl_warmup_steps=8, gradient_estimator=gradient_estimator)
    model.compile()
    model.optimizer.iterations.assign(3)  # step 4 of 8: weight 0.5
    x = binary_digits[0][:6]
    state = np.asarray(model.seed_generator.state)
    seed = np.asarray(stateless_seed(model.seed_generator))  # the seed loss_terms will draw
    model.seed_generator.state.assign(state)
    loss = model.loss_terms(tf.constant(x), training=True)["loss"]
    log_px, log_ratio = joint_by_hand(model, x, 3, seed)
    tempered = log_px + 0.5 * log_ratio
    bound = np.log(np.mean(np.exp(tempered - tempered.max(0)), axis=0)) + tempered.max(0)
    np.testing.assert_allclose(float(loss), -np.mean(bound), rtol=1e-5)


def generative_gradients(model, x, state):
    model.seed_generator.state.assign(state)
    with tf.GradientTape() as tape:
        loss = model.loss_terms(x, training=True)["loss"]
    variables = model.decoder.trainable_variables + model.likelihood.trainable_variables
    encoder = model.encoder.trainable_variables
    return loss, tape.gradient(loss, variables + encoder), len(variables)


@pytest.mark.parametrize("inference", ["top_down", "bottom_up"])
def test_dreg_keeps_the_decoders_gradient_and_changes_the_encoders(inference, binary_digits):
    x = tf.constant(binary_digits[0][:16])
    plain = build(inference, num_samples=4)
    dreg = build(inference, num_samples=4, gradient_estimator="dreg")
    dreg.set_weights(plain.get_weights())
    for model in (plain, dreg):
        model.compile()
    state = np.asarray(plain.seed_generator.state)
    loss_plain, grads_plain, split = generative_gradients(plain, x, state)
    loss_dreg, grads_dreg, _ = generative_gradients(dreg, x, state)
    np.testing.assert_allclose(float(loss_dreg), float(loss_plain), rtol=1e-5)  # the same bound's value
    for ours, theirs in zip(grads_dreg[:split], grads_plain[:split]):  # the IWAE gradient of p(x|z1)'s weights
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert all(np.isfinite(g).all() for g in grads_dreg[split:])
    assert not all(np.allclose(a, b) for a, b in zip(grads_dreg[split:], grads_plain[split:]))


@pytest.mark.parametrize("inference", ["top_down", "bottom_up"])
def test_dreg_encoder_gradient_is_tucker_et_als_formula(inference, binary_digits):
    """sum_i w~_i^2 (d log w_i / d z_i)(d z_i / d phi) over the joint z_i = (z_1i, z_2i), with log q(z_i) read
    through a copy of the model (its weights are other variables, so only z carries gradient): a second
    route to what the model gets by holding its own weights (stateless_call under stop_gradient)."""
    model = build(inference, num_samples=4, gradient_estimator="dreg")
    model.compile()
    copy = kv.HierarchicalVAE.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    x = tf.constant(binary_digits[0][:6])
    # Inference-only weights (top-down's shared top-down path also gets log p's direct gradient).
    inference_layers = (model.encoder, model.posterior_head, *model.level_heads, *model.up_blocks)
    phi = [v for layer in inference_layers for v in layer.trainable_variables]
    seed = tf.cast(model.seed_generator.state.value, tf.int32)  # the seed loss_terms draws next
    with tf.GradientTape() as tape:
        loss = model.loss_terms(x, training=True)["loss"]
    ours = tape.gradient(loss, phi)

    eps = [tf.random.stateless_normal([4, 6, d], seed=s) for d, s in zip(model.latent_dims, tfp.random.split_seed(seed, n=2))]
    with tf.GradientTape(persistent=True) as chain:
        _, z, _, _ = model._posterior_levels(x, lambda level, params: params["loc"] + params["scale"] * eps[level])
    fixed = [tf.constant(value) for value in z]
    with tf.GradientTape() as local:
        local.watch(fixed)
        q, _, _, _ = copy._posterior_levels(x, lambda level, params: fixed[level])
        log_q = sum(kv.models.hierarchical.gaussian(params).log_prob(value) for params, value in zip(q, fixed))
        conditional = kv.models.hierarchical.gaussian(model.conditional_params(0, fixed[1]))
        log_p = model.prior.log_prob(fixed[1]) + conditional.log_prob(fixed[0])
        log_px = model.likelihood.log_prob(kv.LatentVariableModel.likelihood_params(model, fixed[0]), x)
        log_w = log_px + log_p - log_q
    np.testing.assert_allclose(float(loss), -np.mean(tf.reduce_logsumexp(log_w, axis=0) - np.log(4.0)), rtol=1e-5)
    squared = tf.square(tf.nn.softmax(log_w, axis=0))[..., None]
    expected = chain.gradient(z, phi, output_gradients=[squared * g for g in local.gradient(log_w, fixed)])
    for a, b in zip(ours, expected):  # loss = -mean over the 6 examples of the bound
        np.testing.assert_allclose(a, -b / 6, rtol=1e-3, atol=1e-6)


def test_decode_takes_the_lower_levels_noise_and_sample_is_seeded():
    trained = build()
    z = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    assert trained.decode_noise_shapes() == {"noise_1": (3,)}
    means = trained.decode_outputs(tf.constant(z), noise_1=tf.zeros((4, 3)))["mean"]
    np.testing.assert_allclose(means, trained.decode(z).mean(), rtol=1e-5, atol=1e-6)  # zero noise: the means
    noisy = trained.decode_outputs(tf.constant(z), noise_1=tf.ones((4, 3)))["mean"]
    assert np.abs(np.asarray(noisy) - np.asarray(means)).max() > 1e-3
    np.testing.assert_array_equal(trained.sample(5, seed=7), trained.sample(5, seed=7))
    assert np.abs(trained.sample(5, seed=7) - trained.sample(5, seed=8)).max() > 1e-3
    # sample is the decoder on z_L ~ p(z_L) and noise_1 ~ N(0, I) from the split seed: rebuild it by hand
    z_seed, _ = tfp.random.split_seed(tf.constant([7, 0], tf.int32), n=2)
    seeds = tfp.random.split_seed(z_seed, n=2)
    top = trained.prior.sample(5, seed=seeds[1])
    noise = tf.random.stateless_normal([5, 3], seed=seeds[0])
    np.testing.assert_allclose(trained.sample(5, seed=(7, 0)), trained.decode_outputs(top, noise_1=noise)["mean"], rtol=1e-5, atol=1e-6)


def test_exported_signatures_name_every_level():
    model = build(latent_dims=(4, 3, 2))
    functions = signature_functions(model)
    x = tf.zeros((2, *IMAGE))
    encode, specs = functions["encode"]
    assert set(encode(x)) == {"loc", "scale", "loc_1", "scale_1", "loc_2", "scale_2"}
    shapes = {name: tuple(encode(x)[name].shape) for name in ("loc", "loc_1", "loc_2")}
    assert shapes == {"loc": (2, 2), "loc_1": (2, 4), "loc_2": (2, 3)}
    decode, specs = functions["decode"]
    assert [(s.name, tuple(s.shape)) for s in specs] == [("z", (None, 2)), ("noise_1", (None, 4)), ("noise_2", (None, 3))]
    assert decode(tf.zeros((2, 2)), tf.zeros((2, 4)), tf.zeros((2, 3)))["mean"].shape == (2, *IMAGE)
    # The exported encode's top is the Python model's `encode` (both q(z_L | z_(L-1) = its mean) here).
    q = model.encode(np.zeros((2, *IMAGE), np.float32))
    np.testing.assert_allclose(q.mean(), encode(x)["loc"], rtol=1e-6)


@pytest.mark.slow
def test_keras_round_trip_keeps_every_level(trained, tmp_path, binary_digits):
    path = tmp_path / "hvae.keras"
    trained.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded) is kv.HierarchicalVAE and reloaded.latent_dims == (3, 2) and reloaded.inference == "top_down"
    x = tf.constant(binary_digits[0][:8])
    seed = tf.constant([1, 2])
    np.testing.assert_allclose(reloaded.log_importance_weights(x, 5, seed), trained.log_importance_weights(x, 5, seed),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reloaded.encode_outputs(x)["loc_1"], trained.encode_outputs(x)["loc_1"], rtol=1e-5, atol=1e-5)
    keys = ("latent_dims", "level_hidden", "inference", "num_samples", "gradient_estimator", "latent_dim")
    assert {k: tuple(reloaded.get_config()[k]) if k in ("latent_dims", "level_hidden") else reloaded.get_config()[k] for k in keys} == {
        k: trained.get_config()[k] for k in keys}


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="two stochastic layers"):
        build(latent_dims=(3,))
    with pytest.raises(ValueError, match="inference"):
        build(inference="sideways")
    with pytest.raises(ValueError, match="free bits"):
        build(free_bits=0.5)
    with pytest.raises(ValueError, match="diagonal Gaussians.*BernoulliPosterior"):
        build(posterior=kv.posteriors.BernoulliPosterior(2))
    assert build(posterior=kv.posteriors.GaussianPosterior(2, min_scale=1e-3)).posterior_head.min_scale == 1e-3


@pytest.mark.slow  # a SavedModel and a tf2onnx conversion
def test_onnx_decoder_takes_the_noise_and_matches_the_savedmodel(tmp_path):
    import onnx

    from kerasvae.export import onnx as kv_onnx
    from kerasvae.export.savedmodel import write_savedmodel

    saved = write_savedmodel(build(), tmp_path / "saved")
    onnx.save(kv_onnx.convert(saved, "decode"), str(tmp_path / "decoder.onnx"))
    decode = tf.saved_model.load(str(saved)).signatures["decode"]
    # check() feeds every input the signature has (z and noise_1) and compares each output within TOLERANCE
    assert kv_onnx.check(tmp_path / "decoder.onnx", decode) == {"mean": list(IMAGE), "logits": list(IMAGE)}


def test_the_docstring_example_runs():
    import doctest

    from kerasvae.models import hierarchical

    assert doctest.testmod(hierarchical).failed == 0


def test_the_web_demo_refuses_a_decoder_that_needs_noise():
    """The browser page sets z alone; a hierarchical decoder also takes the lower levels' noise."""
    from kerasvae.export.web import check_demo_model

    with pytest.raises(ValueError, match=r"z input alone.*noise_1"):
        check_demo_model(kv.presets.hvae(input_shape=(8, 8, 1)))


def test_a_served_nll_comes_from_the_savedmodels_importance_weights(tmp_path, binary_digits):
    """encode exposes the lower levels only along the posterior means, so the SavedModel serves the model's
    own log importance weights (batch-major), and saved_model_nll estimates log p(x) from them: the same
    weights as Python's for the same seed, and the same estimate as log_likelihood within Monte Carlo noise."""
    from kerasvae.export.savedmodel import write_savedmodel

    model = build(inference="bottom_up")
    fit(model, binary_digits[0][:256], epochs=1)
    loaded = tf.saved_model.load(str(write_savedmodel(model, tmp_path / "saved")))
    x = tf.constant(binary_digits[2][:16])
    served = loaded.signatures["log_importance_weights"](x=x, num_samples=tf.constant(7), seed=tf.constant([3, 4]))
    np.testing.assert_allclose(served["log_weights"], tf.transpose(model.log_importance_weights(x, 7, tf.constant([3, 4]))),
                               rtol=1e-5, atol=1e-4)
    served_nll = kv.evaluation.saved_model_nll(loaded, binary_digits[2][:64], num_samples=200, batch_size=32, chunk_size=64)
    python_nll = -model.log_likelihood(binary_digits[2][:64], num_samples=200, seed=5)
    assert served_nll.shape == (64,) and abs(np.mean(served_nll) - np.mean(python_nll)) < 0.1, (np.mean(served_nll), np.mean(python_nll))
