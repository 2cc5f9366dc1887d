"""Sequence autoencoders on synthetic sine/sawtooth series: they reconstruct held-out series and flag
injected spikes."""

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import kerasvae as kv

pytestmark = pytest.mark.slow  # recurrent models trained per module: the full suite runs them, `-m 'not slow'` does not

LENGTH = 32


@pytest.fixture(scope="module")
def series():
    train, _ = kv.data.synthetic_series(1500, LENGTH, seed=0)
    test, _ = kv.data.synthetic_series(300, LENGTH, seed=1)
    return train, test


@pytest.fixture(scope="module", params=["sequence_vae", "sequence_ae"])
def trained(request, series):
    model = kv.presets.get(request.param)(input_shape=(LENGTH, 1), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    keras.utils.set_random_seed(0)
    history = model.fit(series[0], epochs=25, batch_size=64, verbose=0).history
    return request.param, model, history


def test_series_generator_and_spikes():
    x, kind = kv.data.synthetic_series(50, 20, kinds=("sine", "square"), noise=0.0, seed=3)
    assert x.shape == (50, 20, 1) and set(kind) == {0, 1}
    assert np.allclose(np.abs(x[kind == 1]), np.abs(x[kind == 1]).max(axis=1, keepdims=True))  # square waves
    spiked, anomalous = kv.data.inject_spikes(x, fraction=0.5, magnitude=2.0, seed=0)
    changed = np.any(spiked != x, axis=(1, 2))
    assert np.array_equal(changed, anomalous) and np.allclose(np.abs(spiked - x).max(axis=(1, 2))[anomalous], 2.0)


def test_reconstructs_held_out_series(trained, series):
    name, model, history = trained
    test = series[1]
    error = np.mean((model.reconstruct(test) - test) ** 2)
    assert history["loss"][-1] < history["loss"][0]
    assert error < 0.25 * np.var(test), (name, error, np.var(test))


def test_flags_injected_spikes(trained, series):
    name, model, _ = trained
    spiked, anomalous = kv.data.inject_spikes(series[1], fraction=0.5, magnitude=2.0, seed=2)
    auroc = roc_auc_score(anomalous, model.anomaly_score(spiked, method="reconstruction"))
    assert auroc >= 0.95, (name, auroc)


def test_anomaly_score_methods_by_hand(trained, series):
    _, model, _ = trained
    x = series[1][:16]
    by_hand = -model.likelihood.log_prob(model.likelihood_params(model.encode(x).mean()), x).numpy()
    np.testing.assert_allclose(model.anomaly_score(x, method="reconstruction"), by_hand, rtol=1e-4, atol=1e-3)
    assert np.all(np.isfinite(model.anomaly_score(x, method="nll", num_samples=20)))
    with pytest.raises(ValueError, match="reconstruction"):
        model.anomaly_score(x, method="mahalanobis")


def test_round_trip(trained, series, tmp_path):
    name, model, _ = trained
    model.save(tmp_path / f"{name}.keras")
    reloaded = keras.saving.load_model(tmp_path / f"{name}.keras")
    np.testing.assert_allclose(reloaded.reconstruct(series[1][:8]), model.reconstruct(series[1][:8]), atol=1e-5)
