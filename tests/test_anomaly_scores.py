"""The anomaly scores that compare inputs with normal data: each formula against numpy by hand, the
pseudo-anomalies the automatic choice uses, and on one-class Fashion-MNIST (bags, where the model's ELBO
alone fell behind PCA) the chosen score against PCA in the same test, through `.keras` and the SavedModel."""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import DIGITS_SHAPE
from PIL import Image
from sklearn.metrics import roc_auc_score

import kerasvae as kv
from kerasvae.apps import anomaly_scores
from kerasvae.export import savedmodel

BAG = 8
needs_fashion = pytest.mark.skipif(not kv.data.fashion_mnist_available(), reason="needs dataset-fashion-mnist")


@pytest.fixture(scope="module")
def digits_model(digits):
    keras.utils.set_random_seed(0)
    model = kv.presets.mlp_vae(input_shape=DIGITS_SHAPE, latent_dim=4, hidden=(32,), likelihood="gaussian_per_element", seed=0)
    model.compile()
    model.fit(digits[0], epochs=5, verbose=0)
    return model


def test_neighbor_distance_is_the_mean_of_the_k_smallest_euclidean_distances():
    rng = np.random.default_rng(0)
    points, neighbors = rng.standard_normal((7, 3)), rng.standard_normal((20, 3))
    by_hand = np.sort(np.linalg.norm(points[:, None] - neighbors[None], axis=-1), axis=1)[:, :5].mean(1)
    computed = anomaly_scores.neighbor_distance(tf.constant(points, tf.float32), tf.constant(neighbors, tf.float32), 5)
    np.testing.assert_allclose(computed, by_hand, rtol=1e-5)
    # Fewer neighbours than k: all of them.
    np.testing.assert_allclose(anomaly_scores.neighbor_distance(tf.constant(points[:1], tf.float32), tf.constant(neighbors[:2], tf.float32), 5),
                               np.linalg.norm(points[0] - neighbors[:2], axis=-1).mean(keepdims=True), rtol=1e-5)


def test_reference_scores_by_hand(digits_model, digits):
    model, x_reference, x = digits_model, digits[0][:400], digits[2][:50]
    elbo = anomaly_scores.score_arrays(model, x, "elbo", 1)
    np.testing.assert_array_equal(elbo, anomaly_scores.score_arrays(model, x, "elbo", 1))  # stateless: repeats exactly
    codes_reference, codes = model.latent_features(x_reference).astype(np.float64), model.latent_features(x).astype(np.float64)

    density = anomaly_scores.fit_reference(model, "latent_density", 1, x_reference, x)
    centred = codes - codes_reference.mean(0)
    mahalanobis = np.einsum("ni,ij,nj->n", centred, np.linalg.inv(np.cov(codes_reference, rowvar=False)), centred)
    np.testing.assert_allclose(anomaly_scores.score_arrays(model, x, "latent_density", 1, density), 0.5 * mahalanobis, rtol=1e-3)

    neighbors = anomaly_scores.fit_reference(model, "latent_neighbors", 1, x_reference, x)
    assert len(neighbors["neighbors"]) == len(x_reference)  # under MAX_NEIGHBORS: every normal code
    by_hand = np.sort(np.linalg.norm(codes[:, None] - codes_reference[None], axis=-1), axis=1)[:, :anomaly_scores.NEIGHBORS].mean(1)
    np.testing.assert_allclose(anomaly_scores.score_arrays(model, x, "latent_neighbors", 1, neighbors), by_hand, rtol=1e-3, atol=1e-4)

    typicality = anomaly_scores.fit_reference(model, "typicality", 1, x_reference, x_reference[:100])
    mean = anomaly_scores.score_arrays(model, x_reference[:100], "elbo", 1).mean()
    assert typicality["elbo_mean"] == pytest.approx(mean, rel=1e-5)
    np.testing.assert_allclose(anomaly_scores.score_arrays(model, x, "typicality", 1, typicality), np.abs(elbo - mean), rtol=1e-4, atol=1e-3)

    held = x_reference[:100]
    ensemble = anomaly_scores.fit_reference(model, "ensemble", 1, x_reference, held)
    parts = anomaly_scores.ensemble_parts(model)
    standardize = lambda name, x: (anomaly_scores.score_arrays(model, x, name, 1, ensemble) - ensemble[f"{name}_mean"]) / ensemble[f"{name}_std"]
    # Weights: each part's mean standardized score on pseudo-anomalies of the held-out images (d'), scaled to a mean of 1.
    shifts = np.array([max(standardize(name, anomaly_scores.pseudo_anomalies(held, seed=1)).mean(), 0.0) for name in parts])
    assert shifts.sum() > 0
    np.testing.assert_allclose([ensemble[f"{name}_weight"] for name in parts], shifts * len(parts) / shifts.sum(), rtol=1e-4)
    by_hand = sum(ensemble[f"{name}_weight"] * standardize(name, x) for name in parts)
    np.testing.assert_allclose(anomaly_scores.score_arrays(model, x, "ensemble", 1, ensemble), by_hand, rtol=1e-4, atol=1e-4)


def test_reconstruction_error_is_the_squared_error_of_the_mean_reconstruction(digits_model, digits):
    x = digits[2][:50]
    by_hand = ((x - digits_model.reconstruct(x)) ** 2).reshape(len(x), -1).sum(1)
    np.testing.assert_allclose(digits_model.anomaly_score(x, method="reconstruction_error"), by_hand, rtol=1e-5)
    np.testing.assert_allclose(anomaly_scores.score_arrays(digits_model, x, "reconstruction_error", 1), by_hand, rtol=1e-5)


def test_ensemble_of_an_eight_bit_image_model_adds_the_reconstruction_error_and_is_served(digits, tmp_path):
    """With a probability of 8-bit levels (the discretized logistic) the ensemble standardizes, weighs and adds
    the complexity-corrected likelihood, the latent neighbours and the reconstruction error; the SavedModel's
    `score` serves the same sum."""
    x_reference, x = np.round(digits[0][:300] * 255) / 255, np.round(digits[2][:40] * 255) / 255
    model = kv.presets.mlp_vae(input_shape=DIGITS_SHAPE, latent_dim=4, hidden=(32,), likelihood="logistic", seed=0)
    assert anomaly_scores.ensemble_parts(model) == ("complexity", "latent_neighbors", "reconstruction_error")
    detector = kv.apps.AnomalyDetector(model, method="ensemble").fit(x_reference)
    reference = detector.reference
    parts = {"complexity": anomaly_scores.score_arrays(model, x, "elbo", 1) - anomaly_scores.png_bits(tf.constant(x)).numpy() * np.log(2),
             "latent_neighbors": anomaly_scores.score_arrays(model, x, "latent_neighbors", 1, reference),
             "reconstruction_error": ((x - model.reconstruct(x)) ** 2).reshape(len(x), -1).sum(1)}
    standardized = {name: (score - reference[f"{name}_mean"]) / reference[f"{name}_std"] for name, score in parts.items()}
    by_hand = sum(reference[f"{name}_weight"] * z for name, z in standardized.items())
    np.testing.assert_allclose(detector.score(x), by_hand, rtol=1e-4, atol=1e-4)
    served = tf.saved_model.load(str(savedmodel.export_savedmodel(model, tmp_path / "logistic"))).signatures["score"](x=tf.constant(x, tf.float32))
    np.testing.assert_allclose(served["anomaly_score"], by_hand, rtol=1e-4, atol=1e-3)
    # A model calibrated before the reconstruction error joined the ensemble, and before its weights, keeps
    # scoring the plain sum of its two parts.
    earlier = {key: value for key, value in reference.items() if not key.startswith("reconstruction_error") and not key.endswith("_weight")}
    two_parts = standardized["complexity"] + standardized["latent_neighbors"]
    np.testing.assert_allclose(anomaly_scores.score_arrays(model, x, "ensemble", 1, earlier), two_parts, rtol=1e-4, atol=1e-4)


def test_complexity_is_the_elbo_less_the_png_code_length(digits_model, digits):
    x = digits[2][:20]
    bits = []
    for image in np.round(x * 255).astype(np.uint8):
        png = tf.io.encode_png(image, compression=9).numpy()
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png)))[..., None], image)  # lossless: a real code length
        bits.append(8 * len(png))
    np.testing.assert_allclose(anomaly_scores.png_bits(tf.constant(x)), bits)
    elbo = anomaly_scores.score_arrays(digits_model, x, "elbo", 1)
    np.testing.assert_allclose(anomaly_scores.score_arrays(digits_model, x, "complexity", 1, {}), elbo - np.array(bits) * np.log(2), rtol=1e-5)
    flat, noise = np.zeros((1, 28, 28, 1), np.float32), np.random.default_rng(0).random((1, 28, 28, 1)).astype(np.float32)
    assert anomaly_scores.png_bits(tf.constant(flat))[0] * 8 < anomaly_scores.png_bits(tf.constant(noise))[0]  # 73 bytes against 880


def test_pseudo_anomalies_are_flipped_turned_shifted_and_overlaid_normal_images():
    x = np.random.default_rng(0).random((40, 6, 6, 1)).astype(np.float32)
    fake = anomaly_scores.pseudo_anomalies(x)
    assert fake.shape == x.shape and fake.dtype == np.float32
    flat = x.reshape(40, -1)
    made = [kind(x) for kind in (lambda a: a[:, ::-1], lambda a: np.rot90(a, 1, axes=(1, 2)), lambda a: np.roll(a, 1, axis=2))]
    for i, candidates in enumerate(made):  # each tenth of the fakes is one transform of some normal image
        share = fake[i * 10:(i + 1) * 10].reshape(10, -1)
        assert all(any(np.array_equal(f, c) for c in candidates.reshape(40, -1)) for f in share)
    overlays = fake[30:].reshape(10, -1)
    assert all((f >= flat).all(axis=1).sum() >= 1 for f in overlays)  # the elementwise max dominates its sources
    series = anomaly_scores.pseudo_anomalies(np.random.default_rng(1).random((9, 64, 1)))  # no quarter turn for series
    assert series.shape == (9, 64, 1)


def test_detector_refuses_what_does_not_apply(digits_model):
    vq = kv.presets.vqvae(input_shape=DIGITS_SHAPE, num_embeddings=8, embedding_dim=2, filters=(8,), prior="categorical", seed=0)
    with pytest.raises(ValueError, match="latent_neighbors.*does not apply"):
        kv.apps.AnomalyDetector(vq, method="latent_neighbors")
    with pytest.raises(ValueError, match="call fit first"):
        kv.apps.AnomalyDetector(digits_model).score(np.zeros((1, *DIGITS_SHAPE), np.float32))
    with pytest.raises(ValueError, match="at least 10 normal examples"):
        kv.apps.AnomalyDetector(digits_model, method="ensemble").fit(np.zeros((5, *DIGITS_SHAPE), np.float32))


@pytest.mark.slow
@needs_fashion
def test_chosen_score_beats_pca_on_bags_and_is_served_unchanged(tmp_path):
    x_train, y_train = kv.data.load_arrays("fashion_mnist", "train")
    x_test, y_test = kv.data.load_arrays("fashion_mnist", "test[:2000]")
    normal, is_anomaly = x_train[y_train == BAG][:3000], y_test != BAG
    keras.utils.set_random_seed(0)
    model = kv.presets.mlp_vae(latent_dim=16, likelihood="gaussian_per_element", seed=0)
    model.compile()
    model.fit(normal[:2400], epochs=15, verbose=0)  # fit holds out the last 600 (a fifth) for its reference statistics

    elbo = kv.apps.AnomalyDetector(model, method="elbo").fit(normal).score(x_test)
    detector = kv.apps.AnomalyDetector(model, method="auto").fit(normal, false_positive_rate=0.05)  # normal data only
    scores = detector.score(x_test)
    pca = kv.apps.PCABaseline(16).fit(normal).reconstruction_error(x_test)
    auroc = {name: roc_auc_score(is_anomaly, s) for name, s in (("chosen", scores), ("elbo", elbo), ("pca", pca))}
    print(f"\nbags: {detector.method} AUROC {auroc['chosen']:.4f}, ELBO {auroc['elbo']:.4f}, PCA-16 {auroc['pca']:.4f}; "
          f"pseudo-anomaly AUROC {detector.selection}")
    assert set(detector.selection) == set(anomaly_scores.available(model)) - {"nll"}
    assert detector.method == max(detector.selection, key=detector.selection.get)
    assert detector.method in anomaly_scores.REFERENCE_SCORES
    assert auroc["chosen"] > auroc["pca"] + 0.03 and auroc["chosen"] > auroc["elbo"]

    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    again = kv.apps.AnomalyDetector(reloaded)
    assert (again.method, again.threshold) == (detector.method, detector.threshold)
    np.testing.assert_allclose(again.score(x_test[:300]), scores[:300], rtol=1e-5, atol=1e-5)
    path = savedmodel.export_savedmodel(model, tmp_path / "saved_models" / "bags")
    served = tf.saved_model.load(str(path)).signatures["score"](x=tf.constant(x_test[:300]))
    np.testing.assert_allclose(served["anomaly_score"], scores[:300], rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(served["is_anomaly"], served["anomaly_score"].numpy() > detector.threshold)
