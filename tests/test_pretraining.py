"""Greedy layer-wise pretraining on real digits: each level learns, the stacked model starts far better
than a random one, and a classifier initialised from the pretrained encoder beats a random one at a small
labelled budget."""

import keras
import numpy as np
import pytest
from conftest import DIGITS_SHAPE

import kerasvae as kv
from kerasvae import pretraining


def stacked(seed=0):
    keras.utils.set_random_seed(seed)
    return kv.presets.stacked_ae(input_shape=DIGITS_SHAPE, latent_dim=8, hidden=(128, 64, 32), seed=seed)


@pytest.fixture(scope="module")
def pretrained(digits):
    model = stacked()
    losses = pretraining.pretrain_layerwise(model, digits[0], epochs=10, batch_size=64, learning_rate=3e-3)
    return model, losses


def test_every_level_learns_and_the_stack_starts_far_better_than_random(digits, pretrained):
    x_test = digits[2]
    model, losses = pretrained
    assert len(losses) == 4  # three hidden layers and the code layer
    random_model = stacked()
    # Level 0 is a 64-128-64 Bernoulli autoencoder: its loss must be well below the random model's.
    random_nll = -np.mean(random_model.elbo(x_test))
    assert losses[0] < 0.6 * random_nll
    # Each inner level's loss is a squared error per example; compare with predicting the code's mean.
    pretrained_nll = -np.mean(model.elbo(x_test))
    assert pretrained_nll < 0.7 * random_nll, (pretrained_nll, random_nll)


def test_classifier_starts_from_the_pretrained_encoder_and_learns_from_50_labels(digits, pretrained):
    from sklearn.linear_model import LogisticRegression

    x_train, y_train, x_test, y_test = digits
    labelled = np.random.default_rng(0).choice(len(x_train), 50, replace=False)
    model = pretrained[0]
    weights_before = [w.copy() for w in model.encoder.get_weights()]

    def torso_probe_accuracy(source):
        # What the classifier starts from: a linear read-out of its torso (encoder + code) before fine-tuning.
        torso = keras.Sequential(pretraining.encoder_classifier(source, num_classes=10).layers[:-1])
        probe = LogisticRegression(max_iter=2000).fit(torso.predict(x_train[labelled], verbose=0), y_train[labelled])
        return probe.score(torso.predict(x_test, verbose=0), y_test)

    assert torso_probe_accuracy(model) > torso_probe_accuracy(stacked()) + 0.1

    keras.utils.set_random_seed(0)
    classifier = pretraining.encoder_classifier(model, num_classes=10)
    classifier.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    repeated = np.tile(labelled, 20)  # 100 passes over the 50 labels in 5 Keras epochs (epoch overhead dominates)
    classifier.fit(x_train[repeated], y_train[repeated], epochs=5, batch_size=32, verbose=0)
    assert classifier.evaluate(x_test, y_test, verbose=0)[1] > 0.65
    # The classifier fine-tunes a copy: the autoencoder's encoder is untouched.
    for before, after in zip(weights_before, model.encoder.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_fine_tuning_after_pretraining_is_plain_fit_and_round_trips(digits, pretrained, tmp_path):
    x_train, _, x_test, _ = digits
    model = pretrained[0]
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(x_train, epochs=2, batch_size=64, verbose=0).history
    assert history["loss"][-1] <= history["loss"][0]
    model.save(tmp_path / "stacked.keras")
    reloaded = keras.saving.load_model(tmp_path / "stacked.keras")
    np.testing.assert_allclose(model.reconstruct(x_test[:8]), reloaded.reconstruct(x_test[:8]), rtol=1e-5, atol=1e-6)


def test_layerwise_pretraining_refuses_models_it_cannot_split():
    conv = kv.presets.conv_vae(input_shape=(28, 28, 1), latent_dim=4)
    with pytest.raises(TypeError, match="MLP encoder and decoder"):
        pretraining.pretrain_layerwise(conv, np.zeros((2, 28, 28, 1), np.float32))
    lopsided = kv.Autoencoder(
        encoder=kv.networks.MLP((32, 16)), decoder=kv.networks.MLP((32,)), latent_dim=4, input_shape=DIGITS_SHAPE
    )
    with pytest.raises(ValueError, match="must mirror the encoder"):
        pretraining.pretrain_layerwise(lopsided, np.zeros((2, *DIGITS_SHAPE), np.float32))
