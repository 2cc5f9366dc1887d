"""SavedModels as TF Serving loads them (a TF1 session over the signature_defs, no Python objects), their
agreement with the Keras model, seeded sampling across loads, versioning, warmup records and metadata."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import DIGITS_SHAPE, fit, small_vae

import kerasvae as kv
from kerasvae import cli
from kerasvae.export import savedmodel

ROOT = Path(__file__).resolve().parents[1]

FAMILIES = {
    "mlp_vae": lambda: small_vae(),  # likelihood="auto": the discretized logistic on the grey digits
    "conv_vae": lambda: kv.presets.conv_vae(input_shape=DIGITS_SHAPE, latent_dim=4, filters=(8, 16), seed=0, likelihood="bernoulli"),
    "mlp_ae": lambda: kv.presets.mlp_ae(input_shape=DIGITS_SHAPE, latent_dim=6, hidden=(32,), seed=0, likelihood="bernoulli"),
}
HEAD_PARAMS = {kv.likelihoods.Bernoulli: {"logits"}, kv.likelihoods.DiscretizedLogistic: {"loc", "scale"}}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def exported(request, digits, tmp_path_factory):
    model = FAMILIES[request.param]()
    fit(model, digits[0], epochs=3)
    root = tmp_path_factory.mktemp("saved_models")
    return model, savedmodel.export_savedmodel(model, root / request.param)


def run_in_tf1_session(path, signature, inputs):
    """Run one signature the way TF Serving does: a TF1 session over the graph and its signature_def."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        signature_def = meta_graph.signature_def[signature]
        assert set(signature_def.inputs) == set(inputs)
        fetches = {key: info.name for key, info in signature_def.outputs.items()}
        feeds = {signature_def.inputs[key].name: value for key, value in inputs.items()}
        return session.run(fetches, feeds)


def test_signatures_match_the_contract(exported):
    model, path = exported
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        signature_defs = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path)).signature_def
    keys = {name: (set(d.inputs), set(d.outputs)) for name, d in signature_defs.items() if not name.startswith("__")}
    assert keys["encode"] == ({"x"}, {"loc", "scale"})
    assert keys["reconstruct"] == keys["serving_default"] == ({"x"}, {"reconstruction"})
    assert keys["sample"] == ({"num_samples", "seed"}, {"x"})
    assert keys["score"] == ({"x"}, {"elbo", "reconstruction_error", "anomaly_score"})
    assert keys["decode"] == ({"z"}, {"mean", *HEAD_PARAMS[type(model.likelihood)]})  # the parameters by their TFP names
    assert signature_defs["encode"].inputs["x"].tensor_shape.dim[0].size == -1  # dynamic batch


def test_tf1_session_outputs_agree_with_keras(exported, digits):
    model, path = exported
    x = digits[2][:9]
    z = np.random.default_rng(0).standard_normal((5, model.latent_dim)).astype(np.float32)
    q = model.encode(x)
    encoded = run_in_tf1_session(path, "encode", {"x": x})
    np.testing.assert_allclose(encoded["loc"], q.mean(), atol=1e-4)
    decoded = run_in_tf1_session(path, "decode", {"z": z})
    # Served in data units, [0, 1]; the discretized logistic's p(x|z) lives on the 256 levels.
    levels = 255 if isinstance(model.likelihood, kv.likelihoods.DiscretizedLogistic) else 1
    np.testing.assert_allclose(levels * decoded["mean"], model.decode(z).mean(), atol=levels * 1e-4)
    reconstructed = run_in_tf1_session(path, "reconstruct", {"x": x})["reconstruction"]
    np.testing.assert_allclose(reconstructed, model.reconstruct(x), atol=1e-4)
    scores = run_in_tf1_session(path, "score", {"x": x})
    own = model.score_batch(tf.constant(x), tf.constant(savedmodel.SCORE_SEED))["elbo"].numpy()
    np.testing.assert_allclose(scores["elbo"], own, atol=1e-3, rtol=1e-5)
    one_by_one = [run_in_tf1_session(path, "score", {"x": x[i : i + 1]})["elbo"][0] for i in range(3)]
    np.testing.assert_allclose(one_by_one, scores["elbo"][:3], atol=1e-4, rtol=1e-6)  # batching changes nothing
    np.testing.assert_allclose(scores["anomaly_score"], -scores["elbo"], rtol=1e-6)
    by_hand = np.sum((x - model.reconstruct(x)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(scores["reconstruction_error"], by_hand, rtol=1e-4, atol=1e-5)


def test_score_agrees_with_elbo_in_expectation(exported, digits):
    model, path = exported
    x = digits[2][:200]
    served = run_in_tf1_session(path, "score", {"x": x})["elbo"]
    expected = np.mean([model.elbo(x, seed=s) for s in range(20)], axis=0)
    # One shared draw per request against 20 independent ones: equal on average over examples.
    mean_served, mean_expected = float(np.mean(served)), float(np.mean(expected))
    assert mean_served == pytest.approx(mean_expected, abs=0.03 * abs(mean_expected) + 0.5)


def test_sample_is_identical_for_the_same_seed_across_loads(exported):
    model, path = exported
    inputs = {"num_samples": tf.constant(6), "seed": tf.constant([7, 11])}
    first = tf.saved_model.load(str(path)).signatures["sample"](**inputs)["x"].numpy()
    second = tf.saved_model.load(str(path)).signatures["sample"](**inputs)["x"].numpy()
    assert first.shape == (6, *DIGITS_SHAPE)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, model.sample(6, seed=(7, 11)), atol=1e-5)
    session = run_in_tf1_session(path, "sample", {"num_samples": np.int32(6), "seed": np.array([7, 11], np.int32)})
    np.testing.assert_allclose(session["x"], first, atol=1e-6)
    other = tf.saved_model.load(str(path)).signatures["sample"](num_samples=tf.constant(6), seed=tf.constant([8, 11]))
    assert not np.allclose(other["x"].numpy(), first)


def test_warmup_records_hold_one_request_per_signature(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, path = exported
    logs = [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(str(path / "assets.extra" / savedmodel.WARMUP_FILE))
    ]
    requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request for log in logs}
    assert set(requests) == set(savedmodel.SIGNATURES)
    assert set(requests["sample"].inputs) == {"num_samples", "seed"} and set(requests["decode"].inputs) == {"z"}
    assert all(r.model_spec.name == path.parent.name for r in requests.values())


def test_versions_config_and_refusal_to_overwrite(digits, tmp_path):
    model = small_vae(hidden=(8,))
    base = tmp_path / "saved_models" / "digits"
    assert savedmodel.export_savedmodel(model, base).name == "1"
    assert savedmodel.export_savedmodel(model, base).name == "2"
    marker = base / "1" / "saved_model.pb"
    before = marker.read_bytes()
    with pytest.raises(ValueError, match="already exists.*--force"):
        savedmodel.export_savedmodel(model, base, version=1)
    assert marker.read_bytes() == before
    # A staging folder abandoned by a killed export is removed by the next one; a fresh one (a concurrent
    # export's) is left alone.
    abandoned, running = base / ".tmp-7-abandoned", base / ".tmp-8-running"
    abandoned.mkdir()
    running.mkdir()
    os.utime(abandoned, (0, 0))
    assert savedmodel.export_savedmodel(model, base, version=1, force=True).name == "1"
    assert savedmodel.versions(base) == [1, 2]
    assert [p.name for p in base.iterdir() if p.name.startswith(".tmp")] == [running.name]
    running.rmdir()
    config = (tmp_path / "saved_models" / "models.config").read_text()
    assert 'name: "digits"' in config and f'base_path: "{base.resolve()}"' in config
    for bad in ("bad name!", "trailing-newline\n"):
        with pytest.raises(ValueError, match="Model name"):
            savedmodel.export_savedmodel(model, tmp_path / bad)


@pytest.mark.slow
def test_cli_export_records_metadata_and_exits_2_on_an_existing_version(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2", "--out", str(run)]) == 0
    target = tmp_path / "saved_models" / "digits"
    assert cli.main(["export", str(run), "--to", str(target)]) == 0
    metadata = json.loads((target / "1" / "assets.extra" / savedmodel.METADATA_FILE).read_text())
    assert metadata["training_config"]["dataset"] == "digits" and "loss" in metadata["final_metrics"]
    assert metadata["latent_dim"] == 2 and metadata["input_shape"] == [8, 8, 1]
    capsys.readouterr()
    assert cli.main(["export", str(run), "--to", str(target), "--version", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert savedmodel.versions(target) == [1]
    # Through the script users run: its folder, first on sys.path, holds an onnx.py that must not shadow onnx
    script = subprocess.run([sys.executable, str(ROOT / "export" / "onnx.py"), str(run), "--to", str(target), "--tflite", "int8", "--onnx"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert script.returncode == 0, script.stderr[-3000:]
    printed = json.loads(script.stdout)
    assert printed["savedmodel"] == str(target / "2") and set(printed["tflite"]["decoder"]) == {"float32", "int8"}
    for name in ("tflite/decoder_float32.tflite", "tflite/decoder_int8.tflite", "tflite/report.json", "onnx/decoder.onnx", "onnx/encoder.onnx"):
        assert (target / name).stat().st_size > 0, name
    assert cli.main(["export", str(run), "--to", str(target), "--tflite", "int4"]) == 2


def write_run_folder(model, run, history=None):
    """The files `kerasvae train` leaves that export reads: the model, its config (digits, as trained here)
    and its history."""
    run.mkdir()
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"model": "mlp-vae", "dataset": "digits", "seed": 0}))
    (run / "history.json").write_text(json.dumps(history or {"loss": [3.0, 2.0]}))
    return run


@pytest.mark.slow
def test_a_model_a_keras_file_and_a_run_folder_export_the_same_savedmodel(digits, tmp_path):
    model = small_vae(hidden=(8,))
    fit(model, digits[0], epochs=1)
    model.save(tmp_path / "model.keras")
    run = write_run_folder(model, tmp_path / "run")
    sources = {"object": model, "file": str(tmp_path / "model.keras"), "run": run}
    paths = {name: kv.export.export(source, tmp_path / name / "digits")["savedmodel"] for name, source in sources.items()}
    x, z = digits[2][:5], np.random.default_rng(0).standard_normal((5, model.latent_dim)).astype(np.float32)
    inputs = {"encode": {"x": x}, "decode": {"z": z}, "score": {"x": x},
              "sample": {"num_samples": np.int32(3), "seed": np.array([1, 2], np.int32)}}
    outputs = {name: {s: run_in_tf1_session(path, s, feed) for s, feed in inputs.items()} for name, path in paths.items()}
    for name in ("file", "run"):
        for signature, expected in outputs["object"].items():
            assert set(outputs[name][signature]) == set(expected), (name, signature)
            for key, value in expected.items():
                np.testing.assert_array_equal(outputs[name][signature][key], value, err_msg=f"{name} {signature} {key}")
    metadata = {name: json.loads((tmp_path / name / "digits" / "1" / "assets.extra" / savedmodel.METADATA_FILE).read_text())
                for name in sources}
    assert metadata["object"]["model_config"] == metadata["file"]["model_config"] == metadata["run"]["model_config"]
    assert metadata["object"]["model_config"]["class_name"] == "VAE" and "compile_config" not in metadata["object"]["model_config"]
    assert "training_config" not in metadata["file"] and "final_metrics" not in metadata["object"]
    assert metadata["run"]["training_config"]["dataset"] == "digits" and metadata["run"]["final_metrics"] == {"loss": 2.0}


def test_files_that_need_calibration_data_are_refused_without_it_before_anything_is_written(digits, tmp_path):
    conditional = kv.presets.conditional_vae(input_shape=DIGITS_SHAPE, latent_dim=2, hidden=(8,), seed=0)
    refusals = [
        (small_vae(hidden=(8,)), {"tflite": ["int8"]}, "No calibration data for int8 TFLite files"),
        (small_vae(hidden=(8,)), {"tflite": ["float16"], "web": True}, "No calibration data for the web demo"),
        (conditional, {"tflite": ["float32"]}, "No calibration data for ConditionalVAE's TFLite files"),
        (conditional, {"tflite": ["float32"], "calibration_data": digits[0]}, "ConditionalVAE is conditional: pass"),
        (small_vae(hidden=(8,)), {"tflite": ["int8"], "calibration_data": np.zeros((4, 28, 28, 1))}, r"shape \(28, 28, 1\)"),
    ]
    for model, options, message in refusals:
        with pytest.raises(ValueError, match=message) as error:
            kv.export.export(model, tmp_path / "saved_models" / "digits", **options)
        assert "\n" not in str(error.value)
    assert not (tmp_path / "saved_models").exists()
    with pytest.raises(ValueError, match="No model file missing.keras"):
        kv.export.export("missing.keras", tmp_path / "saved_models" / "digits")
