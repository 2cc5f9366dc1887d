"""The browser harness itself: tiny decoders exported like kerasvae's (SavedModel signature `decode` -> TFLite
and ONNX) run in headless Chromium under LiteRT.js, tfjs-tflite and onnxruntime-web, compared with the Python
runtimes. All browser jobs of this file share one harness call (one browser launch)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import browser_harness

pytestmark = pytest.mark.slow  # Chromium and the browser runtimes: the full suite runs them, `-m 'not slow'` does not

TOLERANCE = 1e-5
LATENT = 4
TFLITE_RUNTIMES = ("litertjs", "tfjs-tflite")


def _dense_decoder(rng):
    """z [batch, 4] (+ label [batch] int32) -> logits [batch, 2, 3]: Dense layers with fixed weights."""
    hidden, out = keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(6)
    hidden.build((None, LATENT))
    out.build((None, 8))
    for layer in (hidden, out):
        layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in layer.get_weights()])
    embedding = tf.constant(rng.standard_normal((3, 8)).astype(np.float32))

    def logits(z, label=None):
        h = hidden(z) if label is None else hidden(z) + tf.gather(embedding, label)
        return tf.reshape(out(h), [-1, 2, 3])

    return (hidden, out), logits


def _conv_decoder():
    """z [batch, 4] -> logits [batch, 12, 12, 1] through a reshape and two transposed convolutions."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((LATENT,)), keras.layers.Dense(72, activation="relu"), keras.layers.Reshape((3, 3, 8)),
        keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2DTranspose(1, 3, strides=2, padding="same"),
    ])


def _export(directory, tracked, logits, batch, conditional=False, dynamic_range=False):
    """A SavedModel with one signature `decode` {z (, label)} -> {mean, logits}, converted to TFLite
    (weights quantized to int8 with dynamic_range, kerasvae's "dynamic" mode)."""
    specs = [tf.TensorSpec([batch, LATENT], tf.float32, name="z")]
    if conditional:
        specs.append(tf.TensorSpec([batch], tf.int32, name="label"))

    def decode(*inputs):
        out = logits(*inputs)
        return {"mean": tf.sigmoid(out), "logits": out}

    archive = keras.export.ExportArchive()
    for layer in tracked if isinstance(tracked, (list, tuple)) else [tracked]:
        archive.track(layer)
    archive.add_endpoint(name="decode", fn=tf.function(decode), input_signature=specs)
    archive.write_out(str(directory), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(directory), signature_keys=["decode"])
    if dynamic_range:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    path = directory.with_suffix(".tflite")
    path.write_bytes(converter.convert())
    return path


def _tflite_reference(path, inputs):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_runner("decode")(**inputs)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from kerasvae.export.onnx import convert

    browser_harness.require()
    root = tmp_path_factory.mktemp("browser_harness")
    rng = np.random.default_rng(0)
    layers, logits = _dense_decoder(rng)
    conv = _conv_decoder()
    wide = keras.Sequential([keras.Input((LATENT,)), keras.layers.Dense(300), keras.layers.Dense(6)])  # quantizable
    files = {
        "b1": _export(root / "b1", layers, logits, 1),
        "b8": _export(root / "b8", layers, logits, 8),
        "dynamic": _export(root / "dynamic", layers, logits, None),
        "conditional": _export(root / "conditional", layers, logits, 1, conditional=True),
        "conv_b1": _export(root / "conv_b1", conv, conv, 1),
        "conv_dynamic": _export(root / "conv_dynamic", conv, conv, None),
        "dynamic_range": _export(root / "dynamic_range", wide, wide, 1, dynamic_range=True),
    }
    for name in ("dynamic", "conditional"):  # ONNX from the SavedModel, kerasvae's route (symbolic batch)
        files[f"{name}_onnx"] = root / f"{name}.onnx"
        files[f"{name}_onnx"].write_bytes(convert(root / name, "decode", opset=17).SerializeToString())
    return files


def _inputs(batch, seed, conditional=False):
    rng = np.random.default_rng(seed)
    inputs = {"z": rng.standard_normal((batch, LATENT)).astype(np.float32)}
    if conditional:
        inputs["label"] = rng.integers(0, 3, batch).astype(np.int32)
    return inputs


@pytest.fixture(scope="module")
def runs(models):
    """{key: (job, result)}, every job run in one harness call."""
    jobs = {}
    for runtime in TFLITE_RUNTIMES:
        jobs[runtime, "b1"] = dict(runtime=runtime, file=models["b1"], signature="decode", inputs=_inputs(1, 1),
                                   repeats=5)
        jobs[runtime, "b8"] = dict(runtime=runtime, file=models["b8"], inputs=_inputs(8, 2))  # default signature
        jobs[runtime, "conditional"] = dict(runtime=runtime, file=models["conditional"], signature="decode",
                                            inputs=_inputs(1, 3, conditional=True))
        jobs[runtime, "conv_dynamic"] = dict(runtime=runtime, file=models["conv_dynamic"], inputs=_inputs(1, 4))
        jobs[runtime, "dynamic_range"] = dict(runtime=runtime, file=models["dynamic_range"], inputs=_inputs(1, 6))
    jobs["tfjs-tflite", "raw_names"] = dict(runtime="tfjs-tflite", file=models["b1"], inputs=_inputs(1, 1),
                                            output_names={})
    for batch in (1, 8):
        jobs["onnxruntime-web", batch] = dict(runtime="onnxruntime-web", file=models["dynamic_onnx"],
                                              inputs=_inputs(batch, 5 + batch), repeats=3 if batch == 8 else 0)
    jobs["onnxruntime-web", "conditional"] = dict(runtime="onnxruntime-web", file=models["conditional_onnx"],
                                                  inputs=_inputs(1, 3, conditional=True))
    jobs["litertjs", "onnx_file"] = dict(runtime="litertjs", file=models["dynamic_onnx"], inputs=_inputs(1, 1))
    jobs["onnxruntime-web", "missing"] = dict(runtime="onnxruntime-web", file=models["b1"].parent / "missing.onnx",
                                              inputs=_inputs(1, 1))
    jobs["onnxruntime-web", "bad_input"] = dict(runtime="onnxruntime-web", file=models["dynamic_onnx"],
                                                inputs={"w": _inputs(1, 1)["z"]})
    results = browser_harness.run(list(jobs.values()), timeout=240)
    return {key: (job, result) for (key, job), result in zip(jobs.items(), results)}


def _assert_close(outputs, expected, names=("mean", "logits")):
    assert set(outputs) == set(names)
    for name in names:
        assert outputs[name].dtype == np.float32
        assert outputs[name].shape == expected[name].shape, name
        np.testing.assert_allclose(outputs[name], expected[name], rtol=0, atol=TOLERANCE, err_msg=name)


@pytest.mark.parametrize("runtime", TFLITE_RUNTIMES)
@pytest.mark.parametrize("model", ["b1", "b8", "conditional"])
def test_tflite_first_and_second_calls_match_interpreter(runs, models, runtime, model):
    job, result = runs[runtime, model]
    assert result["ok"], result["error"]
    expected = _tflite_reference(models[model], job["inputs"])
    _assert_close(result["outputs"], expected)  # keyed by signature output names, runtime-reported shapes
    _assert_close(result["second_outputs"], expected)


@pytest.mark.parametrize("key", [1, 8, "conditional"])
def test_onnxruntime_web_matches_onnxruntime_and_tflite(runs, models, key):
    import onnxruntime

    job, result = runs["onnxruntime-web", key]
    assert result["ok"], result["error"]
    path = models["conditional_onnx" if key == "conditional" else "dynamic_onnx"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, job["inputs"])))
    _assert_close(result["outputs"], expected)
    _assert_close(result["second_outputs"], expected)
    tflite = models["conditional" if key == "conditional" else f"b{key}"]
    _assert_close(result["outputs"], _tflite_reference(tflite, job["inputs"]))


def test_litertjs_reports_dynamic_batch_shape_error(runs):
    # @litertjs/core 2.5.3 loads a [-1, 4]-input model but refuses every input at run time, batch 1 included.
    _, result = runs["litertjs", "conv_dynamic"]
    assert not result["ok"]
    assert result["stage"] == "run"
    assert "Float32[-1, 4]" in result["error"] and "Float32[1, 4]" in result["error"]
    assert result["outputs"] == {}


def test_tfjs_tflite_first_call_of_dynamic_model_is_what_is_reported(runs, models):
    # tfjs-tflite 0.0.1-alpha.10 reads output buffers fetched before the first invoke, which reallocates
    # dynamic tensors: the first call of a [-1, 4] model returns zeros, the second the right values. The
    # harness must report the first call; a static-batch model is right from the first call.
    job, result = runs["tfjs-tflite", "conv_dynamic"]
    assert result["ok"], result["error"]
    expected = _tflite_reference(models["conv_b1"], job["inputs"])
    _assert_close(result["second_outputs"], expected)
    assert result["outputs"]["mean"].shape == (1, 12, 12, 1)
    assert np.abs(result["outputs"]["mean"] - expected["mean"]).max() > 0.1
    assert not np.any(result["outputs"]["mean"])


def test_tfjs_tflite_unsupported_op_reason_is_in_the_error(runs, models):
    # tfjs-tflite 0.0.1-alpha.10 predates the FULLY_CONNECTED version that int8-weight models use; the reason
    # is only printed to the console, and the harness adds it to the error. LiteRT.js runs the same file.
    _, result = runs["tfjs-tflite", "dynamic_range"]
    assert not result["ok"] and result["stage"] == "load"
    assert "Failed to create TFLiteWebModelRunner" in result["error"]
    assert "Didn't find op for builtin opcode 'FULLY_CONNECTED'" in result["error"]
    job, result = runs["litertjs", "dynamic_range"]
    assert result["ok"], result["error"]
    expected = _tflite_reference(models["dynamic_range"], job["inputs"])
    _assert_close(result["outputs"], expected)


def test_tfjs_tflite_names_are_raw_tensor_names_without_a_mapping(runs, models):
    job, result = runs["tfjs-tflite", "raw_names"]
    names = browser_harness.tflite_tensor_names(models["b1"], "decode")
    assert names["inputs"] == {"z": "decode_z:0"}
    assert sorted(names["outputs"].values()) == ["logits", "mean"]
    assert result["ok"] and set(result["outputs"]) == set(names["outputs"])  # e.g. "StatefulPartitionedCall:1"
    expected = _tflite_reference(models["b1"], job["inputs"])
    for raw, name in names["outputs"].items():
        np.testing.assert_allclose(result["outputs"][raw], expected[name], atol=TOLERANCE)


def test_latency_is_a_median_only_when_repeats_are_asked(runs):
    for key in [("litertjs", "b1"), ("tfjs-tflite", "b1"), ("onnxruntime-web", 8)]:
        latency = runs[key][1]["latency_ms"]
        assert isinstance(latency, float) and 0 <= latency < 1000, key
    assert runs["litertjs", "b8"][1]["latency_ms"] is None


def test_load_and_input_errors_are_results_not_exceptions(runs):
    _, wrong_format = runs["litertjs", "onnx_file"]
    assert not wrong_format["ok"] and wrong_format["stage"] == "load" and wrong_format["error"]
    _, missing = runs["onnxruntime-web", "missing"]
    assert not missing["ok"] and "missing.onnx" in missing["error"]
    _, bad_input = runs["onnxruntime-web", "bad_input"]
    assert not bad_input["ok"] and bad_input["stage"] == "run" and "'z' is missing" in bad_input["error"]


def test_timeout_is_reported_per_job(models):
    results = browser_harness.run([dict(runtime="litertjs", file=models["b1"], inputs=_inputs(1, 1))], timeout=0.01)
    assert not results[0]["ok"] and "timed out" in results[0]["error"]


def test_bad_jobs_raise_before_launching(tmp_path):
    with pytest.raises(ValueError, match="runtime"):
        browser_harness.run([dict(runtime="tflite", file=tmp_path / "x.tflite", inputs={})])
    assert browser_harness.run([]) == []


@pytest.mark.parametrize("ci", [None, "true"])
def test_require_skips_locally_and_fails_under_ci(monkeypatch, ci):
    monkeypatch.setattr(browser_harness, "chromium", lambda: None)
    if ci:
        monkeypatch.setenv("CI", ci)
    else:
        monkeypatch.delenv("CI", raising=False)
    assert "Chromium" in browser_harness.unavailable()
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="Chromium"):
        browser_harness.require()
    assert os.environ.get("CI") == ci
