"""Deployment artifacts from a trained model: SavedModels for TF Serving (savedmodel.py), TFLite decoders
for on-device generation (tflite.py) and ONNX (onnx.py). `export_run` is what `kerasvae export` and the
scripts in the top-level export/ folder call."""

import json
import tempfile
from pathlib import Path

import numpy as np

from kerasvae import progress
from kerasvae.export.descriptions import describe_model
from kerasvae.export.savedmodel import export_savedmodel

TFLITE_MODES = ("float32", "dynamic", "float16", "int8")
CALIBRATION_EXAMPLES = 1000


def calibration_latents(model, x, seed=0, labels=None):
    """Decoder inputs that look like deployment traffic: draws from the aggregate posterior
    (1/N) sum_n q(z|x_n) of training images x (with their labels, for a conditional model), for int8
    calibration and fidelity checks."""
    if hasattr(model, "quantized_latents"):  # a VQ-VAE decodes codebook vectors, not posterior draws
        return np.asarray(model.quantized_latents(x), np.float32)
    return np.asarray(model.encode(x, labels=labels).sample(seed=(seed, 1)), np.float32)


def export_model_tflite(model, out_dir, modes, saved_model_dir=None, **options):
    """`tflite.export_tflite` for a Keras model, converted from `saved_model_dir` (its SavedModel export)
    when given, else from a scratch export. A model with recurrent layers is always re-exported with its
    recurrences unrolled (same weights and outputs): the converter cannot lower their while loops to
    builtin ops. Without a `description` in options, model.json describes the model (describe_model)."""
    from kerasvae.export.savedmodel import write_savedmodel
    from kerasvae.export.tflite import export_tflite
    from kerasvae.networks import unrolled

    options.setdefault("description", describe_model(model))
    with tempfile.TemporaryDirectory() as scratch, unrolled(model) as has_recurrence:
        source = saved_model_dir
        if has_recurrence or source is None:
            source = write_savedmodel(model, Path(scratch) / "savedmodel")
        return export_tflite(source, out_dir, modes, **options)


def export_run(run, to, version=None, force=False, tflite=(), onnx=False, tflite_batch=(1,), web=False,
               web_runtime=None, author="", license=""):
    """Export a run folder (written by `kerasvae train`) to the serving root folder `to` (its last part is
    the model name). Returns {"savedmodel": path, "tflite": report or None, "onnx": paths or None,
    "web": index.html or None}.

    Args:
        run: str or Path. Run folder with model.keras and config.json.
        to: str or Path. e.g. saved_models/fmnist.
        version: int or None. None exports the next free version.
        force: bool. Replace an existing version.
        tflite: iterable of str. TFLite decoder modes among TFLITE_MODES (float32 is always added as the
            reference of the fidelity report when any is asked for).
        onnx: bool. Also write onnx/decoder.onnx and onnx/encoder.onnx.
        tflite_batch: iterable of int. Static batch sizes of the TFLite files (1 always). Defaults to (1,).
        web: bool. Also write the browser demo (kerasvae.export.web) beside the TFLite files.
        web_runtime: str, Path or None. An installed `@litertjs/core` package folder for the demo; None
            looks for node_modules/@litertjs/core from the current folder up.
        author, license: str. Written into the TFLite Metadata, model.json and ONNX metadata_props.
    """
    from kerasvae import training
    from kerasvae.export.tflite import parse_batch_sizes

    unknown = sorted(set(tflite) - set(TFLITE_MODES))
    if unknown:
        raise ValueError(f"Unknown TFLite mode(s) {unknown}; expected some of {list(TFLITE_MODES)}.")
    tflite_batch = parse_batch_sizes(tflite_batch)
    if web and not tflite:
        raise ValueError("--web needs TFLite decoders: add --tflite MODES (e.g. --tflite int8).")
    model, config = training.load_run(run)
    if web:
        from kerasvae.export.web import check_demo_model, resolve_runtime

        check_demo_model(model)
        web_runtime = resolve_runtime(web_runtime)
    x_train = labels = None
    if tflite:  # read before anything is written: int8 calibration and the demo's latent ranking need it
        x_train, y_train = training.test_images(config, "train", limit=CALIBRATION_EXAMPLES, classes=config.get("classes"))
        labels = None if model.num_classes is None else np.asarray(y_train, np.int32)
    description = describe_model(model, x_train, labels, Path(to).name, author, license)
    history_path = Path(run) / "history.json"
    history = json.loads(history_path.read_text()) if history_path.is_file() else {}
    metadata = {"training_config": config, "final_metrics": {k: v[-1] for k, v in history.items() if v}}
    progress.step(f"SavedModel: writing {to}")
    target = export_savedmodel(model, to, version=version, force=force, metadata=metadata)
    result = {"savedmodel": str(target), "tflite": None, "onnx": None, "web": None}
    if tflite:
        modes = ["float32"] + [m for m in TFLITE_MODES if m in tflite and m != "float32"]
        z = calibration_latents(model, x_train, labels=labels)
        codes = np.asarray(model.codes(x_train), np.int32) if hasattr(model, "codes_to_latents") else None
        result["tflite"] = export_model_tflite(
            model, Path(to) / "tflite", modes, saved_model_dir=target, calibration_z=z, calibration_labels=labels,
            batch_sizes=tflite_batch, calibration_codes=codes, description=description,
        )
    if web:
        from kerasvae.export.web import write_web_demo

        result["web"] = str(write_web_demo(Path(to) / "tflite", runtime_dir=web_runtime))
    if onnx:
        from kerasvae.export.onnx import export_onnx

        result["onnx"] = [str(p) for p in export_onnx(target, Path(to) / "onnx", description=description)]
    return result
