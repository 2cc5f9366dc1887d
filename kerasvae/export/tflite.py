"""TFLite models for on-device generation, converted from an exported SavedModel, checked against it, and
described for the apps that load them.

On-device runtimes are stricter than Python's LiteRT interpreter: LiteRT.js cannot feed a `[-1, d]` input,
LiteRT's CompiledModel crashes after resizing a dynamic batch, and tfjs-tflite allocates run-time-shaped
outputs only during the first call. So every file has static shapes and one signature, and each batch size
is its own file. Files written to `out_dir` (N: the batch sizes asked for besides 1):

    decoder_<mode>.tflite        signature `decode`: z [1, latent_dim] (+ label int32 [1] for conditional
                                 models, + noise_l [1, d_l] for a HierarchicalVAE's lower levels) -> mean
                                 [1, *input_shape] + the likelihood's parameters (`logits`, ...)
    decoder_<mode>_b<N>.tflite   the same on a batch of exactly N
    encoder_float32[_b<N>].tflite  signature `encode`: x -> loc, scale (encode's outputs)
    codes_decoder_<mode>[_b<N>].tflite  signature `decode_codes`: codes int32 -> as decode (VQ-VAE, DiscreteVAE)
    model.json                   what an app needs: shapes, raw tensor names per file, layout, range, runtime
                                 versions, per-mode measurements and the recommended mode
    report.json                  the measurements

Modes: float32 (no optimization, the reference), dynamic (int8 weights, float activations), float16
(float16 weights), int8 (int8 weights and activations calibrated on `calibration_z`, float input and output).
Each file carries TFLite Metadata (tflite_metadata.py) describing its tensors.

Conversion goes through SavedModel signatures: converting a concrete function that captures Keras variables
yields a model that outputs NaN. The graphs hold no random ops (stateless random ops are not TFLite
builtins), so an app draws z itself; z ~ N(0, I) then `decode` is `sample` for a standard-normal prior.
"""

import contextlib
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasvae import logs, progress
from kerasvae.export import tflite_metadata
from kerasvae.export.descriptions import (
    KIND_SIGNATURES,
    file_metadata,
    model_json,
    runtime_support,
    saved_description,
)

MODES = ("float32", "dynamic", "float16", "int8")
EVAL_SAMPLES = 256
LATENCY_RUNS = 100
LATENCY_ROUNDS = 3
# int8 files of Bernoulli decoders clip the logits to +-8 before the sigmoid (mean moves < 3.4e-4): an int8
# tensor spanning a trained decoder's whole logit range ([-50, 18] on Fashion-MNIST) has steps of 0.27 and
# cost 4 dB (conv decoder, 1 epoch: 37.2 dB unclipped, 41.3 clipped at 8, 41.1 at 6).
INT8_LOGIT_CLIP = 8.0
# Quantized modes must stay this close to the SavedModel to be recommended (PSNR of `mean`, peak 1.0).
MIN_QUANTIZED_PSNR_DB = 40.0
# Dynamic-range files are offered only if a batch-1 call on one thread is at most this much slower than
# float32's (the margin absorbs timing noise; hybrid TRANSPOSE_CONV kernels were 80x slower).
DYNAMIC_MAX_SLOWDOWN = 1.25
# A float32 file can match the SavedModel bit for bit: flooring the MSE caps PSNR at 200 dB, so the report
# stays finite, valid JSON.
MSE_FLOOR = 1e-20


def parse_batch_sizes(text):
    """(1, N, ...) from "1,16": sorted, unique, always with 1 (the default on-device call).

    Raises:
        ValueError: for anything but positive integers.
    """
    values = [v.strip() for v in str(text).split(",") if v.strip()] if isinstance(text, str) else list(text)
    try:
        sizes = {int(v) for v in values}
    except (TypeError, ValueError):
        raise ValueError(f"--tflite-batch takes comma-separated positive integers, got {text!r}.") from None
    if not sizes or min(sizes) < 1 or any(isinstance(v, float) and v != int(v) for v in values):
        raise ValueError(f"--tflite-batch takes comma-separated positive integers, got {text!r}.")
    return tuple(sorted(sizes | {1}))


def file_name(kind, mode, batch_size=1):
    """decoder_int8.tflite for batch 1, decoder_int8_b16.tflite for 16."""
    return f"{kind}_{mode}.tflite" if batch_size == 1 else f"{kind}_{mode}_b{batch_size}.tflite"


def write_static_savedmodel(saved_model_dir, directory, signatures, batch_sizes, clip_logits=False):
    """One SavedModel per signature `<name>_b<N>`, in directory/<name>_b<N>: signature `name` of
    `saved_model_dir` on a batch of exactly N, for each name and N. The converter then folds every shape, so
    the TFLite graph has no run-time shapes (no SHAPE/PACK of the batch). Each folder holds its one function
    and the variables it captures, saved again: the converter loads a whole SavedModel for every file, and a
    model with every signature took twice as long to load as the conversion itself.
    With `clip_logits` (Bernoulli decoders) each also gets `<name>_b<N>_clipped`, the int8 files' source:
    logits clipped to +-INT8_LOGIT_CLIP and mean = sigmoid(clipped logits). Returns `directory`."""
    loaded = tf.saved_model.load(str(saved_model_dir))
    static = {}
    for name in signatures:
        function = loaded.signatures[name]
        specs = function.structured_input_signature[1]
        for batch in batch_sizes:
            fixed = {key: tf.TensorSpec([batch, *spec.shape[1:]], spec.dtype, name=key) for key, spec in specs.items()}
            static[f"{name}_b{batch}"] = tf.function(lambda function=function, **inputs: function(**inputs)).get_concrete_function(**fixed)
            if clip_logits and name != "encode":
                static[f"{name}_b{batch}_clipped"] = tf.function(
                    lambda function=function, **inputs: _clipped(function(**inputs))
                ).get_concrete_function(**fixed)
    for key, function in static.items():
        module = tf.Module()
        module.captured = list(function.variables)  # tracked, so saved with the one function that reads them
        tf.saved_model.save(module, str(Path(directory) / key), signatures={key: function})
    return Path(directory)


def _clipped(outputs):
    logits = tf.clip_by_value(outputs["logits"], -INT8_LOGIT_CLIP, INT8_LOGIT_CLIP)
    return {**outputs, "logits": logits, "mean": tf.sigmoid(logits)}


def convert(saved_model_dir, signature, mode="float32", calibration=None, rename=None, int16_activations=False,
            batch_size=None):
    """One signature of a SavedModel as TFLite flatbuffer bytes.

    Args:
        saved_model_dir: str or Path. SavedModel folder (tag serve).
        signature: str. Signature key, e.g. "decode".
        mode: str. One of MODES.
        calibration: dict or None. {input name: array [n, ...]}, n examples of the signature's inputs;
            required for "int8", whose activation ranges they set. A signature with a static batch B is fed
            them B at a time.
        rename: str or None. The signature key in the file (e.g. "decode" for "decode_b16").
        int16_activations: bool. For "int8": int16 activations with the int8 weights (TFLite's 16x8 scheme),
            the fallback when full int8 is not faithful enough.
        batch_size: int or None. The signature's static batch, which int8 calibration feeds; None reads it
            from the SavedModel (1 for a dynamic batch).
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
        batch = batch_size
        if batch is None:
            spec = tf.saved_model.load(str(saved_model_dir)).signatures[signature].structured_input_signature[1]
            batch = next(iter(spec.values())).shape[0] or 1
        count = len(next(iter(calibration.values())))
        if count < batch:  # a batch larger than the calibration set: its rows repeated fill one batch
            calibration = {name: np.resize(value, (batch, *value.shape[1:])) for name, value in calibration.items()}
            count = batch
        converter.representative_dataset = lambda: (
            {name: value[i : i + batch] for name, value in calibration.items()} for i in range(0, count - batch + 1, batch)
        )
        # Builtin int8 kernels only; inference_input/output_type keep their float32 default.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            if int16_activations
            else tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
    with logs.quiet_tflite():
        content = converter.convert()
    return tflite_metadata.rename_signature(content, rename) if rename else content


def convert_for_device(saved_model_dir, signature, mode, calibration, rename, int16_activations=False, batch_size=None):
    """convert() with one name per output tensor: (bytes, {dropped output: the output it equals})."""
    content = convert(saved_model_dir, signature, mode, calibration, rename, int16_activations, batch_size)
    return tflite_metadata.drop_aliased_outputs(content)


def export_tflite(
    saved_model_dir,
    out_dir,
    modes=MODES,
    calibration_z=None,
    reference_fn=None,
    encoder=True,
    seed=0,
    calibration_labels=None,
    batch_sizes=(1,),
    calibration_codes=None,
    description=None,
):
    """Write the TFLite files of the module docstring to out_dir, check each against the SavedModel, measure
    each mode, write model.json and report.json, and return the report:

        {"eval_samples": 256, "batch_sizes": [1, ...], "latency_threads": 1,
         "recommended_mode": "int8", "recommendation": "...",
         "decoder": {mode: {"file", "size_bytes", "psnr_db", "max_abs_error", "latency_ms", "outputs",
                            "offered", "reason", "files": {batch: file}}},
         "encoder": {"float32": {...}}, "codes_decoder": {...} (models with codes)}

    psnr_db and max_abs_error compare `mean` (peak 1.0: data units) on EVAL_SAMPLES latents, the worst over
    the mode's batch sizes; latency_ms is the best of LATENCY_ROUNDS medians over LATENCY_RUNS batch-1 calls
    in the LiteRT interpreter on one thread on this machine. A dynamic-range decoder more than
    DYNAMIC_MAX_SLOWDOWN times slower than float32 is not offered: its files are removed and `reason` says
    why.

    Args:
        saved_model_dir: str or Path. SavedModel with `decode` (and `encode`, `decode_codes`) signatures.
        out_dir: str or Path. Created if missing.
        modes: iterable of str. Decoder modes among MODES (float32 is always written: the reference).
        calibration_z: array [n, latent_dim] or None. Latents from the aggregate posterior of training data:
            the int8 calibration set (required for "int8"; a few hundred rows suffice) less a held-out quarter
            (at most EVAL_SAMPLES rows) that the evaluation latents are drawn from. Without it they are
            N(0, I) draws.
        reference_fn: callable or None. z -> reference mean [n, *input_shape]; defaults to the SavedModel's
            `decode`.
        encoder: bool. Also write and check encoder_float32 files. Defaults to True.
        seed: int. Seeds the evaluation inputs.
        calibration_labels: int array [n] or None. For conditional models, whose `decode` (and `encode`) also
            take a `label`: the labels that go with `calibration_z` (required for them).
        batch_sizes: iterable of int. Static batch sizes; 1 is always written. Defaults to (1,).
        calibration_codes: int array [n, num_latents] or None. Codes of training data, for models whose
            SavedModel has `decode_codes` (required for their int8 codes decoder).
        description: dict or None. What model.json says about the model beyond its signatures (model_class,
            likelihood, prior, demo, ...; kerasvae.export.describe_model). Without it, the SavedModel's
            assets.extra/kerasvae.json.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batch_sizes = parse_batch_sizes(batch_sizes)
    for stale in [p for kind in KIND_SIGNATURES for p in out_dir.glob(f"{kind}_*.tflite")]:
        stale.unlink()  # an earlier export's modes or batch sizes: model.json lists exactly what is there
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"Unknown TFLite mode(s) {unknown}; expected some of {list(MODES)}.")
    modes = ["float32"] + [m for m in MODES if m in set(modes) and m != "float32"]
    signatures = tf.saved_model.load(str(saved_model_dir)).signatures
    inputs, calibration, kinds = _evaluation_inputs(
        signatures, modes, np.random.default_rng(seed), calibration_z, calibration_labels, calibration_codes, encoder
    )
    z = inputs["decode"]["z"]

    def expected(signature):
        if signature == "decode" and reference_fn is not None:
            return {"mean": np.asarray(reference_fn(z), np.float32)}
        result = signatures[signature](**{k: tf.constant(v) for k, v in inputs[signature].items()})
        return {k: v.numpy() for k, v in result.items()}

    report = {"eval_samples": EVAL_SAMPLES, "batch_sizes": list(batch_sizes), "latency_threads": 1}
    files = {}
    with tempfile.TemporaryDirectory() as scratch:
        clip = (description or {}).get("likelihood", saved_description(saved_model_dir).get("likelihood", "")).lower() == "bernoulli"
        static_dir = write_static_savedmodel(
            saved_model_dir, Path(scratch) / "static", [KIND_SIGNATURES[kind] for kind in kinds], batch_sizes, clip_logits=clip
        )
        with progress.bar(sum(map(len, kinds.values())), "TFLite", unit="modes") as bar:
            for kind, kind_modes in kinds.items():
                signature = KIND_SIGNATURES[kind]
                reference = expected(signature)
                report[kind], files[kind] = {}, {}
                for mode in kind_modes:
                    bar.note(f"{kind} {mode}")
                    report[kind][mode], files[kind][mode] = _write_mode(
                        static_dir, out_dir, kind, mode, batch_sizes, clip, inputs[signature], calibration.get(signature),
                        reference, description, signatures[signature],
                    )
                    bar.update()
                _measure_latency(out_dir, kind, signature, report[kind], inputs[signature])
        _withdraw_slow_dynamic(out_dir, report, files)
    report["recommended_mode"], report["recommendation"] = recommend(report["decoder"])
    _write_atomically(out_dir / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    sidecar = model_json(saved_model_dir, signatures, report, files, description, batch_sizes)
    _write_atomically(out_dir / "model.json", (json.dumps(sidecar, indent=2) + "\n").encode())
    return report


def _write_mode(static_dir, out_dir, kind, mode, batch_sizes, clip, inputs, calibration, reference, description,
                function):
    """Convert, describe, write and check one mode's file for each batch size: (report entry, {batch: model.json
    file entry}). int8 files of Bernoulli decoders (`clip`) come from the clipped signatures; an int8 batch-1
    file under MIN_QUANTIZED_PSNR_DB is rebuilt with int16 activations, and that choice holds for every batch
    size of the mode."""
    signature = KIND_SIGNATURES[kind]
    entry, files = {"offered": True, "files": {}}, {}
    if mode == "int8" and clip and kind != "encoder":
        entry["logit_clip"] = INT8_LOGIT_CLIP
    int16 = False

    def write(path, source, batch, int16):
        content, aliases = convert_for_device(static_dir / source, source, mode, calibration, signature, int16, batch)
        needs = tflite_metadata.model_info(content)["min_runtime_version"]
        content = tflite_metadata.add_metadata(content, file_metadata(description, kind, mode, batch, function, aliases, needs))
        if aliases:
            entry["aliases"] = aliases
        _write_atomically(path, content)
        got = _run_batched(path, signature, inputs, batch)
        return content, got, _fidelity(got, reference, "mean" if "mean" in reference else None)

    for batch in batch_sizes:
        path = out_dir / file_name(kind, mode, batch)
        source = f"{signature}_b{batch}" + ("_clipped" if "logit_clip" in entry else "")
        content, got, fidelity = write(path, source, batch, int16)
        if mode == "int8" and batch == 1 and fidelity.get("psnr_db", np.inf) < MIN_QUANTIZED_PSNR_DB:
            # Measured, not assumed: int8 activations lose too much here; 16x8 keeps the int8 weights.
            low = f"int8 activations gave {fidelity['psnr_db']:.1f} dB < {MIN_QUANTIZED_PSNR_DB:.0f} dB"
            try:
                wide = write(path, source, batch, True)
            except RuntimeError as error:  # an op without 16x8 kernels (e.g. ONE_HOT): keep int8
                entry["activations_reason"] = f"{low}; 16x8 unavailable: {str(error).strip().splitlines()[0]}"
                content, got, fidelity = write(path, source, batch, False)
            else:
                if wide[2]["psnr_db"] > fidelity["psnr_db"]:
                    content, got, fidelity = wide
                    int16 = True
                    entry["activations_reason"] = f"{low}: int16 activations (TFLite's 16x8 scheme), same int8 weights"
                else:
                    entry["activations_reason"] = f"{low}; 16x8 was no better ({wide[2]['psnr_db']:.1f} dB)"
                    content, got, fidelity = write(path, source, batch, False)
        files[str(batch)] = _file_entry(path, content, signature, fidelity)
        entry["files"][str(batch)] = path.name
        _merge_worst(entry, fidelity)
    entry["activations"] = "int16" if int16 else ("int8" if mode == "int8" else "float32")
    first = out_dir / file_name(kind, mode)
    entry.update(file=first.name, size_bytes=first.stat().st_size, outputs=sorted(got))
    return entry, files


def _evaluation_inputs(signatures, modes, rng, calibration_z, calibration_labels, calibration_codes, encoder):
    """({signature: inputs of the fidelity check}, {signature: int8 calibration inputs or None},
    {kind: modes to write}): EVAL_SAMPLES rows drawn from a held-out part of the calibration data, which
    int8 is not calibrated on (N(0, I) latents and uniform images without it)."""
    specs = {name: fn.structured_input_signature[1] for name, fn in signatures.items()}
    conditional = "label" in specs["decode"]
    if conditional and (calibration_z is None or calibration_labels is None):
        raise ValueError("This decoder takes a label: pass calibration_z and the calibration_labels that go with them.")
    if calibration_z is not None:
        chosen, fitted = _held_out_split(len(calibration_z), rng)
        calibration_z = np.asarray(calibration_z, np.float32)
        z, calibration_z = calibration_z[chosen], calibration_z[fitted]
    else:
        z = rng.standard_normal((EVAL_SAMPLES, specs["decode"]["z"].shape[-1])).astype(np.float32)
    inputs = {"decode": {"z": z}}
    calibration = {"decode": None if calibration_z is None else {"z": calibration_z}}
    for name, spec in specs["decode"].items():  # noise inputs (a hierarchical decoder's lower levels): N(0, I)
        if name not in ("z", "label"):
            inputs["decode"][name] = rng.standard_normal((EVAL_SAMPLES, *spec.shape[1:])).astype(np.float32)
            if calibration["decode"] is not None:
                calibration["decode"][name] = rng.standard_normal((len(calibration_z), *spec.shape[1:])).astype(np.float32)
    if conditional:
        calibration_labels = np.asarray(calibration_labels, np.int32)
        inputs["decode"]["label"], calibration["decode"]["label"] = calibration_labels[chosen], calibration_labels[fitted]
    kinds = {"decoder": modes}
    if encoder:
        input_shape = specs["encode"]["x"].shape[1:]
        inputs["encode"] = {"x": rng.random((EVAL_SAMPLES, *input_shape)).astype(np.float32)}
        if conditional:
            inputs["encode"]["label"] = inputs["decode"]["label"]
        kinds["encoder"] = ["float32"]
    if "decode_codes" in specs:
        codes_spec = specs["decode_codes"]["codes"]
        if calibration_codes is not None:
            chosen, fitted = _held_out_split(len(calibration_codes), rng)
            calibration_codes = np.asarray(calibration_codes, np.int32)
            codes = calibration_codes[chosen]
            calibration["decode_codes"] = {"codes": calibration_codes[fitted]}
        else:
            codes, calibration["decode_codes"] = np.zeros((EVAL_SAMPLES, *codes_spec.shape[1:]), np.int32), None
        inputs["decode_codes"] = {"codes": codes}
        kinds["codes_decoder"] = [m for m in modes if m != "int8" or calibration_codes is not None]

    return inputs, calibration, kinds


def _held_out_split(n, rng):
    """(EVAL_SAMPLES rows for the fidelity check, the rows int8 is calibrated on) out of n: a check on the
    calibration rows themselves would flatter int8. The check draws (with replacement) from a held-out
    quarter of the rows, at most EVAL_SAMPLES of them (from all rows when there are under four)."""
    order = rng.permutation(n)
    held_out = min(EVAL_SAMPLES, n // 4)
    return rng.choice(order[: held_out or n], EVAL_SAMPLES), order[held_out:]


def recommend(decoder_report):
    """(mode, why): the smallest offered decoder at or above MIN_QUANTIZED_PSNR_DB against the SavedModel
    (float32 is the fallback), ties broken by latency."""
    offered = {m: e for m, e in decoder_report.items() if e.get("offered", True)}
    faithful = {m: e for m, e in offered.items() if m == "float32" or e["psnr_db"] >= MIN_QUANTIZED_PSNR_DB}
    mode = min(faithful, key=lambda m: (faithful[m]["size_bytes"], faithful[m]["latency_ms"]))
    entry, reference = faithful[mode], decoder_report["float32"]
    why = (
        f"{mode}: the smallest file at or above {MIN_QUANTIZED_PSNR_DB:.0f} dB PSNR against the SavedModel "
        f"({entry['size_bytes'] / 1024:.0f} KiB, {entry['size_bytes'] / reference['size_bytes']:.0%} of float32; "
        f"PSNR {entry['psnr_db']:.1f} dB; {entry['latency_ms']:.3f} ms a batch-1 call on one thread against "
        f"float32's {reference['latency_ms']:.3f} ms)"
    )
    rejected = sorted(set(decoder_report) - set(faithful))
    if rejected:
        why += "; not chosen: " + "; ".join(
            f"{m} ({decoder_report[m].get('reason') or 'PSNR %.1f dB' % decoder_report[m]['psnr_db']})" for m in rejected
        )
    return mode, why


def _withdraw_slow_dynamic(out_dir, report, files):
    """Remove dynamic-range files that run slower than float32 (their hybrid kernels: e.g. TRANSPOSE_CONV),
    keeping the measurement and the reason in the report."""
    for kind in ("decoder", "codes_decoder"):
        entries = report.get(kind, {})
        if "dynamic" not in entries:
            continue
        slowdown = entries["dynamic"]["latency_ms"] / max(entries["float32"]["latency_ms"], 1e-9)
        if slowdown > DYNAMIC_MAX_SLOWDOWN:
            ops = sorted({op for op, _ in files[kind]["dynamic"]["1"]["operators"]} - {"DEQUANTIZE", "QUANTIZE", "RESHAPE"})
            entries["dynamic"].update(
                offered=False,
                reason=(
                    f"not offered: {slowdown:.1f}x slower than float32 at batch 1 on one thread "
                    f"({entries['dynamic']['latency_ms']:.3f} ms against {entries['float32']['latency_ms']:.3f} ms; "
                    f"hybrid int8-weight kernels for {', '.join(ops)}); int8 or float16 are as small without the cost"
                ),
            )
            for name in entries["dynamic"]["files"].values():
                (Path(out_dir) / name).unlink(missing_ok=True)
            entries["dynamic"].update(files={}, file=None)
            files[kind].pop("dynamic")


def _run_batched(path, signature, inputs, batch):
    """The file's outputs on all of `inputs`, fed `batch` rows a call (the last call padded)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner(signature)
    count = len(next(iter(inputs.values())))
    chunks = []
    for start in range(0, count, batch):
        chunk = {k: v[start : start + batch] for k, v in inputs.items()}
        short = batch - len(next(iter(chunk.values())))
        if short:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], short, axis=0)]) for k, v in chunk.items()}
        with logs.quiet_tflite() if start == 0 else contextlib.nullcontext():  # the first call creates the XNNPACK delegate, which says so
            outputs = runner(**chunk)
        chunks.append({k: v[: batch - short] for k, v in outputs.items()})
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _fidelity(got, reference, key):
    """PSNR (peak 1.0) and max error of `key` (every shared output's max error when key is None)."""
    if key is None:
        return {"max_abs_error": max(float(np.abs(got[k] - reference[k]).max()) for k in reference)}
    error = got[key] - reference[key]
    mse = max(float(np.mean(error**2)), MSE_FLOOR)
    return {"psnr_db": float(10 * np.log10(1.0 / mse)), "max_abs_error": float(np.abs(error).max())}


def _merge_worst(entry, fidelity):
    if "psnr_db" in fidelity:
        entry["psnr_db"] = min(entry.get("psnr_db", np.inf), fidelity["psnr_db"])
    entry["max_abs_error"] = max(entry.get("max_abs_error", 0.0), fidelity["max_abs_error"])


def _file_entry(path, content, signature, fidelity):
    info = tflite_metadata.model_info(content)
    tensors = info["signatures"][signature]
    return {
        "file": path.name,
        "size_bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "min_runtime_version": info["min_runtime_version"],
        "runs_in": runtime_support(info["min_runtime_version"]),
        "operators": info["operators"],
        "tensors": {"inputs": tensors["inputs"], "outputs": tensors["outputs"]},
        **fidelity,
    }


def _measure_latency(out_dir, kind, signature, entries, inputs):
    """Best of LATENCY_ROUNDS medians of batch-1 calls on one thread, the modes interleaved round by round so
    a busy spell of the machine does not favour one of them."""
    from ai_edge_litert.interpreter import Interpreter

    one = {k: v[:1] for k, v in inputs.items()}
    runners = {}
    for mode in entries:
        runners[mode] = Interpreter(model_path=str(Path(out_dir) / file_name(kind, mode)), num_threads=1).get_signature_runner(signature)
        with logs.quiet_tflite():
            runners[mode](**one)  # the first call allocates tensors and prepares the delegate
    best = {mode: np.inf for mode in entries}
    for _ in range(LATENCY_ROUNDS):
        for mode, runner in runners.items():
            times = []
            for _ in range(LATENCY_RUNS):
                start = time.perf_counter()
                runner(**one)
                times.append(time.perf_counter() - start)
            best[mode] = min(best[mode], 1000 * float(np.median(times)))
    for mode, value in best.items():
        entries[mode]["latency_ms"] = value


def _write_atomically(path, content):
    from kerasvae.training import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_bytes(content))
