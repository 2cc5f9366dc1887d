"""TFLite decoders for on-device generation, converted from an exported SavedModel, and a report of what
each quantization mode costs in fidelity against the SavedModel.

Files written to `out_dir`, each with a `decode` signature (z [None, latent_dim] -> mean [None, *input_shape]
plus the likelihood's parameters, e.g. `logits`, which the converter keeps because the SavedModel's signature
returns them):
    decoder_float32.tflite  no optimization: the reference, equal to the SavedModel up to float rounding
    decoder_dynamic.tflite  int8 weights, float activations (dynamic-range quantization)
    decoder_float16.tflite  float16 weights, dequantized to float32 at load
    decoder_int8.tflite     int8 weights and activations (full integer), calibrated on `calibration_z`;
                            input and output stay float32 so apps feed and read floats
    encoder_float32.tflite  the `encode` signature, x -> loc, scale (optional)

Conversion goes through the SavedModel's signatures: converting a concrete function that captures Keras
variables yields a model that outputs NaN. The graphs hold no random ops (stateless random ops are not
TFLite builtins), so an app draws z itself; z ~ N(0, I) then `decode` is `sample` for a standard-normal prior.
"""

import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

MODES = ("float32", "dynamic", "float16", "int8")
EVAL_SAMPLES = 256
LATENCY_RUNS = 50
# A float32 file can match the SavedModel bit for bit: flooring the MSE caps PSNR at 200 dB, so the report
# stays finite, valid JSON.
MSE_FLOOR = 1e-20


def convert(saved_model_dir, signature, mode="float32", calibration=None):
    """One signature of a SavedModel as TFLite flatbuffer bytes.

    Args:
        saved_model_dir: str or Path. SavedModel folder (tag serve).
        signature: str. Signature key, e.g. "decode".
        mode: str. One of MODES.
        calibration: dict or None. {input name: array [n, ...]}, n examples of the signature's inputs;
            required for "int8", whose activation ranges they set.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown TFLite mode {mode!r}; expected one of {list(MODES)}.")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[signature])
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        if calibration is None:
            raise ValueError("int8 conversion needs calibration inputs (e.g. latents of training data).")
        calibration = {
            name: np.asarray(value, np.int32 if np.issubdtype(np.asarray(value).dtype, np.integer) else np.float32)
            for name, value in calibration.items()
        }
        count = len(next(iter(calibration.values())))
        converter.representative_dataset = lambda: (
            {name: value[i : i + 1] for name, value in calibration.items()} for i in range(count)
        )
        # Builtin int8 kernels only; inference_input/output_type keep their float32 default.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def export_tflite(
    saved_model_dir, out_dir, modes=MODES, calibration_z=None, reference_fn=None, encoder=True, seed=0, calibration_labels=None
):
    """Write decoder_<mode>.tflite for each mode (and encoder_float32.tflite) to out_dir, measure each against
    the SavedModel, and write the measurements to out_dir/report.json. Returns the report:

        {"eval_samples": 256,
         "decoder": {mode: {"file", "size_bytes", "psnr_db", "max_abs_error", "latency_ms", "outputs"}},
         "encoder": {"float32": {"file", "size_bytes", "max_abs_error", "latency_ms", "outputs"}}}

    psnr_db and max_abs_error compare `mean` (peak 1.0: data units) on EVAL_SAMPLES latents; latency_ms is the
    median over LATENCY_RUNS single-example calls in the LiteRT interpreter on this machine.

    Args:
        saved_model_dir: str or Path. SavedModel with `decode` (and `encode`) signatures.
        out_dir: str or Path. Created if missing.
        modes: iterable of str. Decoder modes among MODES.
        calibration_z: array [n, latent_dim] or None. Latents from the aggregate posterior of training data:
            the int8 calibration set (required for "int8"; a few hundred rows suffice) and, when given, the
            pool the evaluation latents are drawn from. Without it they are N(0, I) draws.
        reference_fn: callable or None. z -> reference mean [n, *input_shape]; defaults to the SavedModel's
            `decode`.
        encoder: bool. Also write and check encoder_float32.tflite. Defaults to True.
        seed: int. Seeds the evaluation inputs.
        calibration_labels: int array [n] or None. For conditional models, whose `decode` (and `encode`) also
            take a `label`: the labels that go with `calibration_z` (required for them).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    signatures = tf.saved_model.load(str(saved_model_dir)).signatures
    conditional = "label" in signatures["decode"].structured_input_signature[1]
    if conditional and (calibration_z is None or calibration_labels is None):
        raise ValueError("This decoder takes a label: pass calibration_z and the calibration_labels that go with them.")
    if calibration_z is not None:
        calibration_z = np.asarray(calibration_z, np.float32)
        chosen = rng.choice(len(calibration_z), EVAL_SAMPLES)
        z = calibration_z[chosen]
    else:
        latent_dim = signatures["decode"].structured_input_signature[1]["z"].shape[-1]
        z = rng.standard_normal((EVAL_SAMPLES, latent_dim)).astype(np.float32)
    inputs = {"z": z}
    calibration = None if calibration_z is None else {"z": calibration_z}
    if conditional:
        calibration_labels = np.asarray(calibration_labels, np.int32)
        inputs["label"], calibration["label"] = calibration_labels[chosen], calibration_labels
    if reference_fn is not None:
        reference = reference_fn(z)
    else:
        reference = signatures["decode"](**{k: tf.constant(v) for k, v in inputs.items()})["mean"]
    reference = np.asarray(reference, np.float32)

    report = {"eval_samples": EVAL_SAMPLES, "decoder": {}}
    for mode in modes:
        path = out_dir / f"decoder_{mode}.tflite"
        _write_atomically(path, convert(saved_model_dir, "decode", mode, calibration))
        runner, entry = _load(path, "decode")
        error = runner(**inputs)["mean"] - reference
        entry["psnr_db"] = float(10 * np.log10(1.0 / max(float(np.mean(error**2)), MSE_FLOOR)))
        entry["max_abs_error"] = float(np.abs(error).max())
        entry["latency_ms"] = _latency_ms(runner, {name: value[:1] for name, value in inputs.items()})
        report["decoder"][mode] = entry

    if encoder:
        input_shape = signatures["encode"].structured_input_signature[1]["x"].shape[1:]
        encoder_inputs = {"x": rng.random((EVAL_SAMPLES, *input_shape)).astype(np.float32)}
        if conditional:
            encoder_inputs["label"] = inputs["label"]
        path = out_dir / "encoder_float32.tflite"
        _write_atomically(path, convert(saved_model_dir, "encode"))
        runner, entry = _load(path, "encode")
        got = runner(**encoder_inputs)
        expected = signatures["encode"](**{k: tf.constant(v) for k, v in encoder_inputs.items()})
        entry["max_abs_error"] = max(float(np.abs(got[k] - expected[k].numpy()).max()) for k in expected)
        entry["latency_ms"] = _latency_ms(runner, {name: value[:1] for name, value in encoder_inputs.items()})
        report["encoder"] = {"float32": entry}

    _write_atomically(out_dir / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    return report


def _write_atomically(path, content):
    from kerasvae.training import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_bytes(content))


def _load(path, signature):
    """(signature runner, report entry with the file's name, size and outputs). The LiteRT interpreter, not
    tf.lite.Interpreter, which TF deprecates."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    outputs = interpreter.get_signature_list()[signature]["outputs"]
    entry = {"file": path.name, "size_bytes": path.stat().st_size, "outputs": sorted(outputs)}
    return interpreter.get_signature_runner(signature), entry


def _latency_ms(runner, inputs):
    runner(**inputs)  # the first call allocates tensors and prepares the delegate
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        runner(**inputs)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))
