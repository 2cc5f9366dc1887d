"""The exported on-device files, run where phones and browsers run them: every TFLite decoder and encoder in
LiteRT.js (headless Chromium), LiteRT's CompiledModel and, where model.json says it can, tfjs-tflite; the ONNX
decoder in onnxruntime-web. Each file's FIRST call is compared with the SavedModel's signature on the same
inputs. Models are trained and exported through the command line, as a user would."""

import json

import browser_harness
import compiled_model_run
import numpy as np
import pytest
import tensorflow as tf

import kerasvae as kv
from kerasvae.cli import main
from kerasvae.export import tflite_metadata

pytestmark = pytest.mark.slow

BATCHES = (1, 8)
# PSNR of `mean` against the SavedModel (peak 1.0), the bars.
MIN_PSNR_DB = {"float32": 60.0, "float16": 60.0, "dynamic": 40.0, "int8": 40.0}
# conv_digits covers the logistic head "auto" picks for grey digits and mlp_fashion the MLP torso with a
# Bernoulli; an MLP on digits added a minute to the suite and nothing either lacks.
RUNS = {
    "conv_digits": ["--model", "conv-vae", "--dataset", "digits", "--epochs", "1"],
    "mlp_fashion": ["--model", "mlp-vae", "--dataset", "fashion_mnist", "--binarize", "dynamic", "--epochs", "2"],
}


def psnr(got, expected):
    return float(10 * np.log10(1.0 / max(float(np.mean((got - expected) ** 2)), 1e-20)))


@pytest.fixture(scope="module", params=sorted(RUNS))
def export(request, tmp_path_factory):
    """(tflite dir, onnx dir, SavedModel signatures, model.json) of a model trained and exported by the CLI."""
    if request.param.endswith("fashion") and not kv.data.fashion_mnist_available():
        browser_harness.skip_or_fail("Fashion-MNIST IDX files are not installed (apt-get install dataset-fashion-mnist)")
    root = tmp_path_factory.mktemp(request.param)
    assert main(["train", *RUNS[request.param], "--out", str(root / "run")]) == 0
    assert main([
        "export", str(root / "run"), "--to", str(root / "saved" / request.param), "--tflite", "float32,dynamic,float16,int8",
        "--tflite-batch", ",".join(map(str, BATCHES)), "--onnx", "--author", "kerasvae tests", "--license", "Apache-2.0",
    ]) == 0
    base = root / "saved" / request.param
    signatures = tf.saved_model.load(str(base / "1")).signatures
    return base / "tflite", base / "onnx", signatures, json.loads((base / "tflite" / "model.json").read_text())


def file_inputs(sidecar, signature, batch, seed=0):
    """Inputs for one file: z ~ N(0, I) (what an app feeds for a normal prior), images from [0, 1]."""
    rng = np.random.default_rng(seed + batch)
    kind = sidecar["decoder" if signature == "decode" else "encoder"]
    inputs = {}
    for name, spec in kind["inputs"].items():
        shape = (batch, *spec["shape"][1:])
        inputs[name] = rng.standard_normal(shape).astype(np.float32) if name == "z" else rng.random(shape).astype(np.float32)
    return inputs


def every_file(sidecar):
    """(kind, mode, batch, file entry) for every file model.json lists."""
    for kind in ("decoder", "encoder"):
        for mode, by_batch in sidecar[kind]["files"].items():
            for batch, entry in by_batch.items():
                yield kind, mode, int(batch), entry


def check_outputs(kind, mode, outputs, expected, where):
    if kind == "decoder":
        assert outputs["mean"].shape == expected["mean"].shape, where
        assert psnr(outputs["mean"], expected["mean"]) >= MIN_PSNR_DB[mode], (where, psnr(outputs["mean"], expected["mean"]))
    else:
        for name in ("loc", "scale"):
            np.testing.assert_allclose(outputs[name], expected[name], atol=1e-4, err_msg=where)


def expected_outputs(signatures, signature, inputs):
    return {k: v.numpy() for k, v in signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def test_model_json_and_metadata_describe_every_file(export):
    tflite_dir, _, signatures, sidecar = export
    latent_dim = signatures["decode"].structured_input_signature[1]["z"].shape[-1]
    assert sidecar["latent_dim"] == latent_dim and sidecar["batch_sizes"] == list(BATCHES)
    assert sidecar["decoder"]["outputs"]["mean"]["layout"] == "NHWC" and sidecar["decoder"]["outputs"]["mean"]["range"] == [0, 1]
    assert sidecar["recommended_mode"] in {m for m, e in sidecar["modes"].items() if e["offered"]}
    report = json.loads((tflite_dir / "report.json").read_text())
    for mode, entry in report["decoder"].items():  # what an app needs of a mode's numerics, as the report has it
        assert {k: sidecar["modes"][mode].get(k) for k in ("activations", "logit_clip")} == {
            k: entry.get(k) for k in ("activations", "logit_clip")}, mode
    if sidecar["likelihood"] == "bernoulli":  # its int8 files clip the logits
        assert sidecar["modes"]["int8"]["logit_clip"] == 8.0
    assert sidecar["author"] == "kerasvae tests" and sidecar["license"] == "Apache-2.0"
    from ai_edge_litert.interpreter import Interpreter

    for kind, mode, batch, entry in every_file(sidecar):
        content = (tflite_dir / entry["file"]).read_bytes()
        assert len(content) == entry["size_bytes"]
        signature = sidecar[kind]["signature"]
        interpreter = Interpreter(model_content=content)
        assert list(interpreter.get_signature_list()) == [signature]
        runner = interpreter.get_signature_runner(signature)
        for direction, details in (("inputs", runner.get_input_details()), ("outputs", runner.get_output_details())):
            for name, detail in details.items():
                recorded = entry["tensors"][direction][name]
                assert (recorded["name"], recorded["index"], recorded["shape"]) == (detail["name"], detail["index"], list(detail["shape"]))
                assert detail["shape"][0] == batch and -1 not in list(detail["shape_signature"])  # static shapes
        metadata = tflite_metadata.read_metadata(content)
        assert metadata["author"] == "kerasvae tests" and metadata["license"] == "Apache-2.0"
        assert f"batch {batch}" in metadata["name"] and mode in metadata["name"]
        # TensorMetadata i describes the subgraph's tensor i, named as the signature names it
        by_index = {t["index"]: name for name, t in entry["tensors"]["outputs"].items()}
        assert [t["name"] for t in metadata["outputs"]] == [by_index[d["index"]] for d in interpreter.get_output_details()]
        described = {t["name"]: t for t in metadata["outputs"]}
        if kind == "decoder":
            assert described["mean"]["range"] == [0.0, 1.0] and described["mean"]["content"] == "image"
    onnx_sidecar = json.loads((export[1] / "model.json").read_text())
    assert onnx_sidecar["latent_dim"] == latent_dim and onnx_sidecar["decoder"]["inputs"]["z"]["shape"] == ["batch", latent_dim]
    import onnx

    props = {p.key: p.value for p in onnx.load(str(export[1] / "decoder.onnx")).metadata_props}
    assert json.loads(props["kerasvae.model"])["latent_dim"] == latent_dim
    assert json.loads(props["kerasvae.outputs"])["mean"]["layout"] == "NHWC"


def test_every_file_is_right_on_its_first_call_in_litertjs_tfjs_tflite_and_onnxruntime_web(export):
    browser_harness.require()
    tflite_dir, onnx_dir, signatures, sidecar = export
    jobs, checks = [], []
    for kind, mode, batch, entry in every_file(sidecar):
        signature = sidecar[kind]["signature"]
        inputs = file_inputs(sidecar, signature, batch)
        expected = expected_outputs(signatures, signature, inputs)
        runtimes = ["litertjs", "tfjs-tflite"] if batch == 1 or kind == "decoder" else ["litertjs"]
        for runtime in runtimes:
            jobs.append({"runtime": runtime, "file": str(tflite_dir / entry["file"]), "signature": signature, "inputs": inputs})
            checks.append((runtime, kind, mode, entry, expected))
    for batch in BATCHES:
        inputs = file_inputs(sidecar, "decode", batch, seed=1)
        jobs.append({"runtime": "onnxruntime-web", "file": str(onnx_dir / "decoder.onnx"), "inputs": inputs})
        checks.append(("onnxruntime-web", "decoder", "float32", {"file": "decoder.onnx"}, expected_outputs(signatures, "decode", inputs)))
    results = browser_harness.run(jobs)
    assert len(results) == len(jobs)
    for result, (runtime, kind, mode, entry, expected) in zip(results, checks):
        where = f"{runtime} {entry['file']}"
        if runtime == "tfjs-tflite" and not entry["runs_in"]["tfjs-tflite"]:
            assert not result["ok"], f"{where} loads although model.json says tfjs-tflite cannot run it"
            continue
        assert result["ok"], (where, result["error"])
        check_outputs(kind, mode, result["outputs"], expected, where)


def test_every_file_runs_in_litert_compiled_model_at_its_batch_size(export):
    tflite_dir, _, signatures, sidecar = export
    jobs, checks = [], []
    for kind, mode, batch, entry in every_file(sidecar):
        signature = sidecar[kind]["signature"]
        inputs = file_inputs(sidecar, signature, batch, seed=2)
        jobs.append((tflite_dir / entry["file"], signature, inputs))
        checks.append((kind, mode, entry, expected_outputs(signatures, signature, inputs)))
    results = compiled_model_run.run_files(jobs)
    assert len(results) == len(jobs)
    for outputs, (kind, mode, entry, expected) in zip(results, checks):
        assert not isinstance(outputs, str), (entry["file"], outputs)
        check_outputs(kind, mode, outputs, expected, f"CompiledModel {entry['file']}")


def test_report_recommends_a_faithful_mode_and_withdraws_slow_dynamic_files(export):
    tflite_dir, _, _, sidecar = export
    report = json.loads((tflite_dir / "report.json").read_text())
    assert report["recommended_mode"] == sidecar["recommended_mode"]
    recommended = report["decoder"][report["recommended_mode"]]
    assert recommended["offered"] and (report["recommended_mode"] == "float32" or recommended["psnr_db"] >= 40)
    assert report["recommended_mode"] in report["recommendation"]
    for mode, entry in report["decoder"].items():
        files = {p.name for p in tflite_dir.glob(f"decoder_{mode}*.tflite")}
        if entry["offered"]:
            assert entry["psnr_db"] >= MIN_PSNR_DB[mode] and files == set(entry["files"].values())
        else:  # only dynamic can be withdrawn, and only for speed
            assert mode == "dynamic" and not files and "slower than float32" in entry["reason"]
            assert entry["latency_ms"] > report["decoder"]["float32"]["latency_ms"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--tflite", "int8", "--tflite-batch", "0"], "--tflite-batch"),
        (["--tflite", "int8", "--tflite-batch", "x"], "--tflite-batch"),
        (["--tflite", "int4"], "Unknown TFLite mode"),
        (["--web"], "--web needs TFLite"),
    ],
)
def test_bad_export_arguments_exit_2_with_one_line(arguments, message, tmp_path, capsys):
    run = tmp_path / "run"  # looks like a run folder; the arguments are refused before anything reads it
    run.mkdir()
    for name in ("model.keras", "config.json"):
        (run / name).write_text("")
    assert main(["export", str(run), "--to", str(tmp_path / "saved" / "m"), *arguments]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "saved").exists()


def test_a_missing_web_runtime_is_one_line_before_anything_is_written(export, tmp_path, capsys):
    run = export[0].parent.parent.parent / "run"
    to = tmp_path / "saved" / "m"
    assert main(["export", str(run), "--to", str(to), "--tflite", "int8", "--web", "--web-runtime", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "@litertjs/core" in err
    assert not (tmp_path / "saved").exists()
