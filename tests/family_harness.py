"""`run_family_test`: what every model family must do, checked the same way for each (in the spirit of
keras-hub's `run_backbone_test`). tests/test_families.py runs it on every preset.

It fits a fresh model briefly, round-trips its config and a `.keras` file, exports every serving signature
the family declares and checks each against the model's own computation, and converts the float32 TFLite
decoder and checks it against the SavedModel's `decode`.
"""

import json

import keras
import numpy as np
import tensorflow as tf

from kerasvae.export import calibration_latents, export_model_tflite
from kerasvae.export.savedmodel import SIGNATURES, export_savedmodel, warmup_inputs


def run_family_test(build, x, tmp_path, labels=None, epochs=2, tflite=True):
    """Checks the family built by `build()` on data x [n, ...] (and integer `labels` for conditional models).

    Args:
        build: callable returning a fresh, untrained model.
        x: float32 array of training examples.
        tmp_path: pathlib.Path. A scratch folder.
        labels: int array [n] or None.
        epochs: int. Epochs of the short fit.
        tflite: bool. Also convert and check the float32 TFLite decoder.
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    model = build()
    probe, probe_labels = x[:8], None if labels is None else labels[:8]
    fit_data = (x,) if labels is None else (x, labels)
    model.compile()
    history = model.fit(*fit_data, epochs=epochs, batch_size=64, verbose=0).history
    assert all(np.isfinite(values).all() for values in history.values()), history

    _check_config_round_trip(model)
    _check_keras_round_trip(model, probe, probe_labels, tmp_path)
    saved = export_savedmodel(model, tmp_path / "saved_models" / "family")
    _check_signatures(model, saved, probe, probe_labels)
    if tflite:
        _check_tflite_decoder(model, saved, probe, probe_labels, tmp_path)
    return model


def _check_config_round_trip(model):
    config = model.get_config()
    rebuilt = type(model).from_config(config)
    assert json.dumps(rebuilt.get_config(), sort_keys=True, default=str) == json.dumps(config, sort_keys=True, default=str)
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]


def _check_keras_round_trip(model, x, labels, tmp_path):
    path = tmp_path / "family.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded) is type(model) and reloaded.recipe == model.recipe
    kwargs = {} if labels is None else {"labels": labels}
    np.testing.assert_allclose(reloaded.reconstruct(x, **kwargs), model.reconstruct(x, **kwargs), rtol=1e-5, atol=1e-6)
    sample_kwargs = {} if labels is None else {"labels": labels[:4]}
    np.testing.assert_allclose(reloaded.sample(4, seed=3, **sample_kwargs), model.sample(4, seed=3, **sample_kwargs),
                               rtol=1e-5, atol=1e-6)


def _check_signatures(model, saved, x, labels):
    loaded = tf.saved_model.load(str(saved))
    label = {} if labels is None else {"label": tf.constant(labels, tf.int32)}
    expected_names = (set(SIGNATURES) | ({"decode_codes"} if model.code_space is not None else set())
                      | ({"log_importance_weights"} if model.decode_noise_shapes() else set()))
    assert set(loaded.signatures) == expected_names
    inputs = warmup_inputs(model)
    for name in expected_names:  # every signature answers its warm-up request with named, finite tensors
        outputs = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs[name].items()})
        assert outputs and all(np.isfinite(np.asarray(v, np.float64)).all() for v in outputs.values()), name
    x_tensor, labels_tensor = tf.constant(x), None if labels is None else tf.constant(labels, tf.int32)
    encoded = loaded.signatures["encode"](x=x_tensor, **label)
    ours = model.encode_outputs(x_tensor, labels=labels_tensor)
    assert set(encoded) == set(ours)
    for key in ours:
        np.testing.assert_allclose(encoded[key], ours[key], rtol=1e-5, atol=1e-5, err_msg=f"encode {key}")
    z = model.decoder_inputs(x, labels=labels)
    noise = _decode_noise(model, len(z))
    decoded = loaded.signatures["decode"](z=tf.constant(z), **label, **noise)
    for key, value in model.decode_outputs(tf.constant(z), labels=labels_tensor, **noise).items():
        np.testing.assert_allclose(decoded[key], value, rtol=1e-5, atol=1e-5, err_msg=f"decode {key}")
    kwargs = {} if labels is None else {"labels": labels}
    np.testing.assert_allclose(loaded.signatures["reconstruct"](x=x_tensor, **label)["reconstruction"],
                               model.reconstruct(x, **kwargs), rtol=1e-5, atol=1e-5)
    sample_label = {} if labels is None else {"label": tf.constant(labels[:1], tf.int32)}
    first = loaded.signatures["sample"](num_samples=tf.constant(3), seed=tf.constant([1, 2]), **sample_label)["x"]
    again = loaded.signatures["sample"](num_samples=tf.constant(3), seed=tf.constant([1, 2]), **sample_label)["x"]
    np.testing.assert_array_equal(first, again)  # seeded
    scores = loaded.signatures["score"](x=x_tensor, **label)
    assert {"elbo", "reconstruction_error", "anomaly_score"} <= set(scores)


def _check_tflite_decoder(model, saved, x, labels, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    options = {} if labels is None else {"calibration_labels": np.asarray(labels, np.int32)}
    report = export_model_tflite(model, tmp_path / "tflite", ["float32"], saved_model_dir=saved,
                                 calibration_z=calibration_latents(model, x, labels=labels), encoder=False, **options)
    assert report["decoder"]["float32"]["psnr_db"] > 60, report["decoder"]["float32"]
    decode = Interpreter(model_path=str(tmp_path / "tflite" / "decoder_float32.tflite")).get_signature_runner("decode")
    z = model.decoder_inputs(x[:1], labels=None if labels is None else labels[:1])
    noise = {name: value.numpy() for name, value in _decode_noise(model, 1).items()}
    feed = {"z": z, **noise} if labels is None else {"z": z, "label": np.asarray(labels[:1], np.int32), **noise}
    label_kwargs = {} if labels is None else {"labels": tf.constant(labels[:1], tf.int32)}
    np.testing.assert_allclose(decode(**feed)["mean"], model.decode_outputs(tf.constant(z), **label_kwargs, **noise)["mean"],
                               rtol=1e-4, atol=1e-5)


def _decode_noise(model, n):
    """N(0, I) draws for the extra inputs of `decode` the model declares (model.decode_noise_shapes)."""
    rng = np.random.default_rng(1)
    return {name: tf.constant(rng.standard_normal((n, *shape)), tf.float32) for name, shape in model.decode_noise_shapes().items()}
