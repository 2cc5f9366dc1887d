"""The conditional VAE: fit(x, y), labels everywhere in the API, samples that show the asked-for class,
.keras round trip and clear errors when labels are missing or wrong."""

import keras
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import kerasvae as kv
from conftest import DIGITS_SHAPE


def make(**kwargs):
    return kv.presets.conditional_vae(input_shape=DIGITS_SHAPE, num_classes=10, latent_dim=4, hidden=(128, 64), seed=0, **kwargs)


@pytest.fixture(scope="module")
def trained(digits):
    x, y = digits[0], digits[1]
    model = make()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    keras.utils.set_random_seed(0)
    history = model.fit(x, y, epochs=40, batch_size=64, verbose=0, validation_data=(digits[2], digits[3]))
    return model, history.history


def test_fit_with_labels_lowers_the_loss(trained):
    _, history = trained
    assert history["loss"][-1] < history["loss"][0] - 5 and "val_elbo" in history


def test_conditional_samples_show_their_label(trained, digits):
    model, _ = trained
    probe = LogisticRegression(max_iter=2000).fit(digits[0].reshape(len(digits[0]), -1), digits[1])
    assert probe.score(digits[2].reshape(len(digits[2]), -1), digits[3]) > 0.9
    labels = np.repeat(np.arange(10), 20)
    samples = model.sample(len(labels), labels=labels, seed=3)
    accuracy = probe.score(samples.reshape(len(samples), -1), labels)
    assert accuracy >= 0.7, accuracy


def test_labels_change_the_decoding_of_the_same_z(trained):
    model, _ = trained
    z = np.zeros((10, 4), np.float32)
    means = model.decode_outputs(z, labels=np.arange(10))["mean"].numpy()  # E[x|z] in [0, 1], whatever the head
    assert np.min([np.abs(means[i] - means[j]).mean() for i in range(10) for j in range(i)]) > 0.01


def test_api_takes_labels_and_round_trips(trained, digits, tmp_path):
    model, _ = trained
    x, y = digits[2][:20], digits[3][:20]
    assert model.elbo(x, labels=y).shape == (20,) and model.log_likelihood(x, 50, labels=y).shape == (20,)
    assert np.mean(model.log_likelihood(x, 200, labels=y)) > np.mean(model.elbo(x, num_samples=100, labels=y))
    assert model.encode(x, labels=y).batch_shape == (20,)
    model.save(tmp_path / "cvae.keras")
    reloaded = keras.saving.load_model(tmp_path / "cvae.keras")
    np.testing.assert_allclose(model.reconstruct(x, labels=y), reloaded.reconstruct(x, labels=y), atol=1e-6)
    np.testing.assert_allclose(model.sample(5, labels=3, seed=1), reloaded.sample(5, labels=3, seed=1), atol=1e-6)


def test_missing_or_bad_labels_are_value_errors(trained, digits):
    model, _ = trained
    x = digits[2][:4]
    with pytest.raises(ValueError, match=r"needs labels.*\[0, 10\)"):
        model.elbo(x)
    with pytest.raises(ValueError, match=r"in \[0, 10\)"):
        model.reconstruct(x, labels=[0, 1, 2, 10])
    with pytest.raises(ValueError, match="shape"):
        model.sample(4, labels=[1, 2])
    with pytest.raises(ValueError, match="not conditional"):
        kv.presets.mlp_vae(input_shape=DIGITS_SHAPE, latent_dim=2, hidden=(8,)).elbo(x, labels=[0, 1, 2, 3])
    unfitted = make()
    unfitted.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"fit\(x, y\)"):
        unfitted.fit(x, epochs=1, verbose=0)


def test_call_and_predict_take_the_labels_as_keras_passes_them(trained, digits):
    """model(x, labels=y), and predict on (x, y) pairs: Keras's own predict_step passes x alone."""
    model, _ = trained
    x, y = digits[2][:70], digits[3][:70]
    expected = np.asarray(model(x, labels=y))
    np.testing.assert_allclose(model.predict((x, y), batch_size=32, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(model.reconstruct(x, labels=y), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"model\(x, labels=y\)"):
        model(x)
    with pytest.raises(ValueError, match=r"predict\(\(x, y\)\)"):
        model.predict(x, verbose=0)


def test_savedmodel_signatures_take_a_label(trained, digits, tmp_path):
    import tensorflow as tf

    from kerasvae.export.savedmodel import SCORE_SEED, export_savedmodel

    model, _ = trained
    path = export_savedmodel(model, tmp_path / "cvae")
    signatures = tf.saved_model.load(str(path)).signatures
    for name in ("encode", "decode", "reconstruct", "sample", "score", "serving_default"):
        assert "label" in signatures[name].structured_input_signature[1], name
    x, y = digits[2][:6], digits[3][:6]
    served = signatures["reconstruct"](x=tf.constant(x), label=tf.constant(y, tf.int32))["reconstruction"]
    np.testing.assert_allclose(served, model.reconstruct(x, labels=y), atol=1e-5)
    samples = signatures["sample"](num_samples=tf.constant(4), seed=tf.constant([1, 2]), label=tf.constant([7], tf.int32))["x"]
    np.testing.assert_allclose(samples, model.sample(4, seed=(1, 2), labels=7), atol=1e-5)
    score = signatures["score"](x=tf.constant(x), label=tf.constant(y, tf.int32))["elbo"]
    own = model.score_batch(tf.constant(x), tf.constant(SCORE_SEED), labels=tf.constant(y, tf.int32))["elbo"]
    np.testing.assert_allclose(score, own, atol=1e-4)
