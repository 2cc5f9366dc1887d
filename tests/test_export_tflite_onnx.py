"""TFLite decoders (every quantization mode) and ONNX models, converted from the exported SavedModel and run
where apps run them (LiteRT interpreter, onnxruntime), against the Keras model they came from."""

import json
import shutil

import browser_harness
import compiled_model_run
import keras
import numpy as np
import onnxruntime
import pytest
from ai_edge_litert.interpreter import Interpreter
from conftest import DIGITS_SHAPE, fit

import kerasvae as kv
from kerasvae import cli
from kerasvae.export import calibration_latents, export_model_tflite
from kerasvae.export.onnx import export_onnx
from kerasvae.export.savedmodel import write_savedmodel
from kerasvae.export.tflite import MODES, export_tflite

pytestmark = pytest.mark.slow  # every family converted to TFLite and ONNX: the full suite runs them, `-m 'not slow'` does not

# The MLPs keep the classic widths: an int8 file carries ~20 bytes of quantization parameters per output
# channel, so only a decoder whose weights dominate the file gets near the 4x reduction (64-32 widths: 55%).
# Three heads: mlp_vae's likelihood="auto" is the discretized logistic on the grey digits, conv_vae keeps a
# Bernoulli (whose int8 files clip the logits), mlp_ae has a Gaussian.
FAMILIES = {
    "mlp_vae": lambda: kv.presets.mlp_vae(input_shape=DIGITS_SHAPE, latent_dim=4, seed=0),
    "conv_vae": lambda: kv.presets.conv_vae(input_shape=DIGITS_SHAPE, latent_dim=4, filters=(8, 16), seed=0, likelihood="bernoulli"),
    "mlp_ae": lambda: kv.presets.mlp_ae(input_shape=DIGITS_SHAPE, latent_dim=4, likelihood="gaussian", seed=0),
}
HEAD_OUTPUTS = {"mlp_vae": {"mean", "loc", "scale"}, "conv_vae": {"mean", "logits"}}
INT8_SIZE_RATIO = {"mlp_vae": 0.30, "mlp_ae": 0.30, "conv_vae": 0.45}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def exported(request, digits, tmp_path_factory):
    """(name, model, calibration latents, export folder, TFLite report, ONNX paths)."""
    model = FAMILIES[request.param]()
    fit(model, digits[0], epochs=3)
    root = tmp_path_factory.mktemp(request.param)
    saved = write_savedmodel(model, root / "savedmodel")
    z = calibration_latents(model, digits[0][:300])
    report = export_tflite(saved, root / "tflite", calibration_z=z, batch_sizes=(1, 32))
    return request.param, model, z, root, report, export_onnx(saved, root / "onnx")


def keras_mean(model, z):
    return model.likelihood.mean(model.likelihood_params(z)).numpy()


def test_float32_tflite_matches_keras(exported):
    _, model, z, root, report, _ = exported
    for name, batch in (("decoder_float32.tflite", 1), ("decoder_float32_b32.tflite", 32)):
        interpreter = Interpreter(model_path=str(root / "tflite" / name))
        assert interpreter.get_signature_list()["decode"]["inputs"] == ["z"]
        outputs = interpreter.get_signature_runner("decode")(z=z[:batch])
        assert "mean" in outputs and set(outputs) == set(report["decoder"]["float32"]["outputs"])
        np.testing.assert_allclose(outputs["mean"], keras_mean(model, z[:batch]), atol=1e-5)


def test_quantized_decoders_are_small_and_faithful(exported):
    name, _, _, _, report, _ = exported
    decoder = report["decoder"]
    assert decoder["int8"]["size_bytes"] <= INT8_SIZE_RATIO[name] * decoder["float32"]["size_bytes"], decoder
    assert decoder["int8"]["psnr_db"] >= 30, decoder
    assert decoder["float16"]["psnr_db"] >= 45, decoder
    assert decoder["dynamic"]["psnr_db"] >= 40, decoder
    assert decoder["float32"]["max_abs_error"] <= 1e-5, decoder


def test_outputs_that_are_one_tensor_keep_one_name(exported):
    """A Gaussian decoder's loc is its mean: the files keep `mean` (CompiledModel would report only one of
    the two names) and model.json says what was dropped. A Bernoulli's logits and a discretized logistic's
    loc (clipped to [0, 1] in the mean) are tensors of their own."""
    name, _, _, root, _, _ = exported
    sidecar = json.loads((root / "tflite" / "model.json").read_text())
    runner = Interpreter(model_path=str(root / "tflite" / "decoder_float32.tflite")).get_signature_runner("decode")
    if name == "mlp_ae":  # Gaussian likelihood
        assert sidecar["decoder"]["aliases"] == {"loc": "mean"} and set(runner.get_output_details()) == {"mean", "scale"}
    else:
        assert "aliases" not in sidecar["decoder"] and set(runner.get_output_details()) == HEAD_OUTPUTS[name]


def test_report_is_written_with_every_mode(exported):
    _, _, _, root, report, _ = exported
    assert json.loads((root / "tflite" / "report.json").read_text()) == report
    assert set(report["decoder"]) == set(MODES)
    for entry in report["decoder"].values():
        assert {"size_bytes", "psnr_db", "max_abs_error", "latency_ms"} <= set(entry)
        assert entry["size_bytes"] > 0 and entry["latency_ms"] > 0 and np.isfinite(entry["psnr_db"])
    assert report["encoder"]["float32"]["max_abs_error"] <= 1e-5


def test_int8_needs_calibration_latents(exported, tmp_path):
    root = exported[3]
    with pytest.raises(ValueError, match="calibration"):
        export_tflite(root / "savedmodel", tmp_path, modes=("int8",), encoder=False)


def test_onnx_models_match_keras_in_onnxruntime(exported, digits):
    _, model, z, _, _, paths = exported
    decoder, encoder = (onnxruntime.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in paths)
    assert [i.name for i in decoder.get_inputs()] == ["z"] and [i.name for i in encoder.get_inputs()] == ["x"]
    assert {"loc", "scale"} == {o.name for o in encoder.get_outputs()}
    (mean,) = decoder.run(["mean"], {"z": z[:32]})
    np.testing.assert_allclose(mean, keras_mean(model, z[:32]), atol=1e-4)
    x = digits[2][:32]
    loc, scale = encoder.run(["loc", "scale"], {"x": x})
    params = model.posterior_params(x)
    np.testing.assert_allclose(loc, params["loc"], atol=1e-4)
    np.testing.assert_allclose(scale, params.get("scale", np.zeros_like(loc)), atol=1e-4)


# Short series: the unrolled recurrences make tracing cost grow with the length. sequence_ae shares
# sequence_vae's networks and mlp_ae's export path, so one recurrent family covers both.
SERIES_SHAPE = (8, 1)
OTHER_FAMILIES = {
    "sequence_vae": lambda: kv.presets.sequence_vae(input_shape=SERIES_SHAPE, latent_dim=4, units=(8,), seed=0),
    "vqvae": lambda: kv.presets.vqvae(
        input_shape=DIGITS_SHAPE, num_embeddings=16, embedding_dim=4, filters=(8, 16), prior_components=4, seed=0
    ),
    # A Bernoulli: after these 2 epochs its int8 decoder measured 23.7 dB, the logistic that likelihood="auto"
    # picks 18.8 dB (its mean is its loc, so the rounding of int8 reaches the image unsquashed by a sigmoid).
    "conditional_vae": lambda: kv.presets.conditional_vae(input_shape=DIGITS_SHAPE, latent_dim=4, hidden=(32,), seed=0,
                                                          likelihood="bernoulli"),
    "gumbel_vae": lambda: kv.presets.gumbel_vae(input_shape=DIGITS_SHAPE, num_latents=4, num_categories=5, hidden=(32,), seed=0),
    "binary_vae": lambda: kv.presets.binary_vae(input_shape=DIGITS_SHAPE, latent_dim=8, hidden=(32,), seed=0),
}


CODE_VALUES = {"vqvae": 16, "gumbel_vae": 5, "binary_vae": 2}  # how many values one code takes


@pytest.mark.parametrize("name", sorted(OTHER_FAMILIES))
def test_every_family_exports_a_tflite_decoder_and_encoder_that_match_keras(name, digits, tmp_path):
    """The other families convert to builtin-only TFLite (recurrences unrolled for the converter, codes decoded
    from their vectors, labels as an int32 input), the float32 files agree with Keras, and every file is right
    on its first call in LiteRT.js, LiteRT's CompiledModel and (where model.json says it runs) tfjs-tflite."""
    model = OTHER_FAMILIES[name]()
    if name.startswith("sequence"):
        x, labels = kv.data.synthetic_series(256, SERIES_SHAPE[0], seed=0)[0], None
    else:
        x, labels = digits[0][:256], (digits[1][:256].astype(np.int32) if name == "conditional_vae" else None)
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x, labels, epochs=2, batch_size=64, verbose=0)
    z = calibration_latents(model, x, labels=labels)
    codes = np.asarray(model.codes(x), np.int32) if hasattr(model, "codes_to_latents") else None
    report = export_model_tflite(
        model, tmp_path / "tflite", ("float32", "int8"), calibration_z=z, calibration_labels=labels, batch_sizes=(1, 8),
        calibration_codes=codes,
    )
    assert report["decoder"]["float32"]["max_abs_error"] <= 1e-4, report
    assert report["encoder"]["float32"]["max_abs_error"] <= 1e-4, report
    assert report["decoder"]["int8"]["psnr_db"] >= 20, report  # int8 everywhere, calibrated; float32 is the bar
    if codes is not None:
        assert set(report["codes_decoder"]) == {"float32", "int8"} and report["codes_decoder"]["float32"]["psnr_db"] >= 60
        sidecar = json.loads((tmp_path / "tflite" / "model.json").read_text())
        assert sidecar["codes_decoder"]["inputs"]["codes"]["range"] == [0, CODE_VALUES[name] - 1]
    runner = Interpreter(model_path=str(tmp_path / "tflite" / "decoder_float32_b8.tflite")).get_signature_runner("decode")
    inputs = {"z": z[:8]} if labels is None else {"z": z[:8], "label": labels[:8]}
    expected = model.likelihood.mean(model.likelihood_params(z[:8], labels=inputs.get("label"))).numpy()
    np.testing.assert_allclose(runner(**inputs)["mean"], expected, atol=1e-4)
    check_on_device_runtimes(tmp_path / "tflite", {"decode": inputs, "encode": {"x": x[:8], **({} if labels is None else {"label": labels[:8]})},
                                                   "decode_codes": None if codes is None else {"codes": codes[:8]}})


def check_on_device_runtimes(tflite_dir, inputs):
    """Every file model.json lists, first call, in LiteRT.js and CompiledModel (and tfjs-tflite where its
    runs_in says so), against LiteRT's Python interpreter on the same file: float files to 1e-5, int8 files
    to two output quantization steps (runtimes round int8 kernels differently)."""
    sidecar = json.loads((tflite_dir / "model.json").read_text())
    files = []  # (path, signature, inputs, mode, tfjs, reference)
    for kind in ("decoder", "encoder", "codes_decoder"):
        signature = sidecar.get(kind, {}).get("signature")
        for mode, by_batch in sidecar.get(kind, {}).get("files", {}).items():
            for batch, entry in by_batch.items():
                feed = {k: v[: int(batch)] for k, v in inputs[signature].items()}
                path = tflite_dir / entry["file"]
                reference = Interpreter(model_path=str(path)).get_signature_runner(signature)(**feed)
                files.append((path, signature, feed, mode, entry["runs_in"]["tfjs-tflite"], reference))
    compiled = compiled_model_run.run_files([f[:3] for f in files])
    assert len(compiled) == len(files)
    checks = [("CompiledModel", f, outputs) for f, outputs in zip(files, compiled)]
    browser_harness.require()
    jobs = [(runtime, f) for f in files for runtime in ["litertjs"] + (["tfjs-tflite"] if f[4] else [])]
    results = browser_harness.run([{"runtime": r, "file": str(f[0]), "signature": f[1], "inputs": f[2]} for r, f in jobs])
    assert len(results) == len(jobs)
    checks += [(r, f, result["outputs"] if result["ok"] else result["error"]) for (r, f), result in zip(jobs, results)]
    for runtime, (path, _, _, mode, _, reference), outputs in checks:
        assert not isinstance(outputs, str), (runtime, path.name, outputs)
        assert set(outputs) == set(reference), (runtime, path.name, sorted(outputs), sorted(reference))
        for key, value in reference.items():
            np.testing.assert_allclose(outputs[key], value, atol=2 / 256 if mode == "int8" else 1e-5, err_msg=f"{runtime} {path.name} {key}")


def _entry(size, psnr, latency, **extra):
    return {"size_bytes": size, "psnr_db": psnr, "latency_ms": latency, "offered": True, **extra}


def test_dynamic_files_slower_than_float32_are_withdrawn_with_the_reason(tmp_path):
    from kerasvae.export.tflite import _withdraw_slow_dynamic, recommend

    for name in ("decoder_dynamic.tflite", "decoder_dynamic_b8.tflite", "decoder_float32.tflite"):
        (tmp_path / name).write_bytes(b"x")
    report = {"decoder": {
        "float32": _entry(1000, 140.0, 0.30),
        "dynamic": _entry(260, 55.0, 0.90, files={"1": "decoder_dynamic.tflite", "8": "decoder_dynamic_b8.tflite"}),
        "int8": _entry(280, 41.0, 0.20),
    }}
    files = {"decoder": {"dynamic": {"1": {"operators": [["DEQUANTIZE", 1], ["TRANSPOSE_CONV", 4]]}}}}
    _withdraw_slow_dynamic(tmp_path, report, files)
    dynamic = report["decoder"]["dynamic"]
    assert not dynamic["offered"] and dynamic["files"] == {} and "dynamic" not in files["decoder"]
    assert "3.0x slower than float32" in dynamic["reason"] and "TRANSPOSE_CONV" in dynamic["reason"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoder_float32.tflite"]
    mode, why = recommend(report["decoder"])
    assert mode == "int8" and "dynamic (not offered" in why  # the smallest faithful file left


def test_recommend_picks_the_smallest_mode_at_or_above_40_db():
    from kerasvae.export.tflite import recommend

    decoder = {"float32": _entry(1000, 140.0, 0.3), "float16": _entry(500, 90.0, 0.3), "int8": _entry(270, 37.0, 0.2)}
    mode, why = recommend(decoder)
    assert mode == "float16" and "int8 (PSNR 37.0 dB)" in why
    decoder["int8"]["psnr_db"] = 40.0
    assert recommend(decoder)[0] == "int8"


@pytest.mark.slow
def test_a_model_a_keras_file_a_run_folder_and_the_command_export_the_same_tflite_files(digits, tmp_path, capsys):
    """int8 calibrated on the same digits (an array, the name "digits", the run's own data) gives the same
    files, the same fidelity and the same outputs whichever way the model is given."""
    model = kv.presets.mlp_vae(input_shape=DIGITS_SHAPE, latent_dim=4, hidden=(64, 32), seed=0)
    fit(model, digits[0], epochs=2)
    keras_file, run = tmp_path / "model.keras", tmp_path / "run_folder"
    model.save(keras_file)
    run.mkdir()
    shutil.copy(keras_file, run / "model.keras")
    (run / "config.json").write_text(json.dumps({"model": "mlp-vae", "dataset": "digits"}))
    reports = {
        "object": kv.export.export(model, tmp_path / "object" / "digits", tflite=["int8"], calibration_data=digits[0]),
        "file": kv.export.export(str(keras_file), tmp_path / "file" / "digits", tflite=["int8"], calibration_data="digits"),
        "run": kv.export.export_run(run, tmp_path / "run" / "digits", tflite=["int8"]),
    }
    capsys.readouterr()
    command = ["export", str(keras_file), "--to", str(tmp_path / "command" / "digits"), "--calibration-data", "digits",
               "--tflite", "int8"]
    assert cli.main(command) == 0
    reports["command"] = json.loads(capsys.readouterr().out)
    z = calibration_latents(model, digits[0][:1])
    files, means = {}, {}
    for name, report in reports.items():
        tflite_dir = tmp_path / name / "digits" / "tflite"
        assert report["tflite"] == json.loads((tflite_dir / "report.json").read_text())
        files[name] = sorted(path.name for path in tflite_dir.iterdir())
        means[name] = Interpreter(model_path=str(tflite_dir / "decoder_int8.tflite")).get_signature_runner("decode")(z=z)["mean"]
    int8 = reports["object"]["tflite"]["decoder"]["int8"]
    assert int8["psnr_db"] >= 30 and "decoder_int8.tflite" in files["object"], int8
    for name in ("file", "run", "command"):
        assert files[name] == files["object"], name
        for key in ("psnr_db", "max_abs_error"):  # not sizes: a loaded model's layers are numbered anew (dense_5 -> dense_10)
            assert reports[name]["tflite"]["decoder"]["int8"][key] == pytest.approx(int8[key], rel=1e-6), (name, key)
        np.testing.assert_array_equal(means[name], means["object"], err_msg=name)
