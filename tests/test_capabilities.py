"""Families declare what they export and compute through the base model's public API; export and the
applications read it instead of probing for attributes (issue 20)."""

import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import kerasvae as kv
from kerasvae.calibration import AnomalyCalibration

PACKAGE = Path(kv.__file__).parent
PROBE = re.compile(r"hasattr\(model|isinstance\(model\b|getattr\(model|model\._")


def test_export_and_apps_decide_nothing_by_probing_the_model():
    found = [f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
             for folder in ("export", "apps") for path in sorted((PACKAGE / folder).glob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if PROBE.search(line)]
    assert not found, "\n".join(found)


@pytest.fixture(scope="module")
def families():
    shape = (8, 8, 1)
    return {
        "vae": kv.presets.mlp_vae(input_shape=shape, latent_dim=3, hidden=(8,)),
        "ae": kv.presets.mlp_ae(input_shape=shape, latent_dim=3, hidden=(8,)),
        "vqvae": kv.presets.vqvae(input_shape=shape, num_embeddings=5, embedding_dim=2),
        "binary": kv.presets.binary_vae(input_shape=shape, latent_dim=6, hidden=(8,)),
        "gumbel": kv.presets.gumbel_vae(input_shape=shape, num_latents=2, num_categories=4, hidden=(8,)),
    }


def test_each_family_declares_its_codes_and_encode_outputs(families):
    x = tf.random.uniform((2, 8, 8, 1))
    expected = {"vae": ({"loc", "scale"}, None), "ae": ({"loc", "scale"}, None),
                "vqvae": ({"codes", "z"}, (families["vqvae"].num_latents, 5)),
                "binary": ({"logits", "codes", "z"}, (6, 2)), "gumbel": ({"logits", "codes", "z"}, (2, 4))}
    for name, model in families.items():
        outputs, code_space = expected[name]
        assert set(model.encode_outputs(x)) == outputs and model.code_space == code_space, name
        z = model.decoder_inputs(x.numpy())
        assert z.shape == (2, model.latent_dim) and model.latent_features(x.numpy()).shape == (2, model.latent_dim)
        decoded = model.decode_outputs(tf.constant(z))
        assert decoded["mean"].shape == (2, 8, 8, 1), name


def test_a_vqvae_decodes_its_quantized_latents_and_its_nll_is_its_elbo(families):
    model, x = families["vqvae"], np.random.default_rng(0).random((3, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(model.decoder_inputs(x), model.quantized_latents(x))
    weights = model.log_importance_weights(tf.constant(x), 7, tf.constant([1, 2]))
    np.testing.assert_allclose(weights[0], model.elbo_batch(tf.constant(x), 1, tf.constant([1, 2])), rtol=1e-6)


def test_anomaly_calibration_is_one_object_in_the_config_and_old_configs_still_load(families):
    model = families["vae"]
    model.anomaly_calibration = AnomalyCalibration(12.5, "nll", 5)
    config = model.get_config()
    assert config["anomaly_calibration"] == {"threshold": 12.5, "method": "nll", "num_samples": 5, "reference": None}
    assert "anomaly_threshold" not in config
    old = {k: v for k, v in config.items() if k != "anomaly_calibration"}
    old.update(anomaly_threshold=3.0, anomaly_method="reconstruction", anomaly_num_samples=1)
    loaded = type(model).from_config(old)
    assert loaded.anomaly_calibration == AnomalyCalibration(3.0, "reconstruction", 1)
    assert (loaded.anomaly_threshold, loaded.anomaly_method, loaded.anomaly_num_samples) == (3.0, "reconstruction", 1)
    model.anomaly_calibration = None
    assert model.anomaly_threshold is None and model.get_config()["anomaly_calibration"] is None


@pytest.mark.slow
def test_a_new_posterior_is_one_class_that_trains_saves_and_exports(tmp_path):
    import keras
    import tensorflow_probability as tfp

    @keras.saving.register_keras_serializable(package="kerasvae_tests")
    class LaplacePosterior(kv.posteriors.Posterior):
        def __init__(self, latent_dim, **kwargs):
            super().__init__(latent_dim, **kwargs)
            self.dense = keras.layers.Dense(2 * self.latent_dim)

        def build(self, features_shape):
            self.dense.build(features_shape)

        def call(self, features):
            loc, raw_scale = tf.split(self.dense(features), 2, axis=-1)
            return {"loc": loc, "scale": tf.nn.softplus(raw_scale) + 1e-4}

        def distribution(self, params):
            return tfp.distributions.Independent(tfp.distributions.Laplace(params["loc"], params["scale"]), 1)

    x = kv.data.binarize_static(kv.data.load_arrays("digits", "train")[0])
    model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), posterior=LaplacePosterior(4), seed=0)
    before = float(model.elbo(x[:300], seed=0).mean())
    model.compile()
    model.fit(x, epochs=5, batch_size=64, verbose=0)
    after = float(model.elbo(x[:300], seed=0).mean())
    assert after > before + 5  # nats: it trains through the Monte Carlo KL
    assert isinstance(model.encode(x[:2]).distribution, tfp.distributions.Laplace)
    model.save(tmp_path / "laplace.keras")
    reloaded = keras.saving.load_model(tmp_path / "laplace.keras")
    np.testing.assert_allclose(reloaded.reconstruct(x[:5]), model.reconstruct(x[:5]), atol=1e-6)
    registered, name = keras.saving.get_custom_objects(), "kerasvae_tests>LaplacePosterior"
    definition = registered.pop(name)  # as in a process that has not imported the module defining it
    try:
        with pytest.raises(ValueError, match="not registered here .*LaplacePosterior.*import the module that defines it"):
            kv.saving.load_model(tmp_path / "laplace.keras")
    finally:
        registered[name] = definition
    saved = kv.export.export_savedmodel(model, tmp_path / "saved")
    encode = tf.saved_model.load(str(saved)).signatures["encode"]
    outputs = encode(x=tf.constant(x[:3]))
    np.testing.assert_allclose(outputs["loc"], model.encode(x[:3]).mean(), atol=1e-5)
    assert set(outputs) == {"loc", "scale"}
