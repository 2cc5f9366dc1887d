"""Deployment artifacts from a trained model: SavedModels for TF Serving (savedmodel.py), TFLite decoders
for on-device generation (tflite.py) and ONNX (onnx.py). `export` takes a model object, a `.keras` file or a
run folder; it is what `kerasvae export` and the scripts in the top-level export/ folder call."""

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from kerasvae import progress
from kerasvae.export.descriptions import describe_model
from kerasvae.export.savedmodel import export_savedmodel
from kerasvae.serving.batching import write_batching_parameters

TFLITE_MODES = ("float32", "dynamic", "float16", "int8")
CALIBRATION_EXAMPLES = 1000


def calibration_latents(model, x, seed=0, labels=None):
    """Decoder inputs that look like deployment traffic, for int8 calibration and fidelity checks: the
    model's `decoder_inputs` of training images x (with their labels, for a conditional model), draws
    from the aggregate posterior (1/N) sum_n q(z|x_n) (a VQ-VAE's quantized latents)."""
    return model.decoder_inputs(x, seed=seed, labels=labels)


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


def export(model_or_path, to, version=None, force=False, tflite=(), onnx=False, calibration_data=None,
           tflite_batch=(1,), web=False, web_runtime=None, author="", license=""):
    """Export a model to the serving root folder `to` (its last part is the model name): a versioned
    SavedModel, `to`/batching_parameters.txt for TF Serving's --enable_batching (kept if present), and the
    TFLite, ONNX and browser files asked for. What `kerasvae export` calls. Returns
    {"savedmodel": path, "tflite": report or None, "onnx": paths or None, "web": index.html or None}.

    Args:
        model_or_path: a kerasvae model, a `.keras` file (str or Path) or a run folder written by
            `kerasvae train`. A run folder's SavedModel metadata (assets.extra/kerasvae.json) records its
            training config and final metrics; every source's records the model's config.
        to: str or Path. e.g. saved_models/fmnist.
        version: int or None. None exports the next free version.
        force: bool. Replace an existing version.
        tflite: iterable of str. TFLite decoder modes among TFLITE_MODES (float32 is always added as the
            reference of the fidelity report when any is asked for).
        onnx: bool. Also write onnx/decoder.onnx and onnx/encoder.onnx.
        calibration_data: None, an array of training inputs, a tuple (inputs, labels), or a dataset name
            or path (anything `kv.data.load_arrays` takes, e.g. "digits" or "x.npy"; its train split). A seeded
            random CALIBRATION_EXAMPLES of the examples calibrate int8 and rank the web demo's latent dimensions; a
            conditional model needs their labels too. None takes a run folder's own training data, binarized
            as it trained; a model or file then has none, and int8, --web and a conditional model's TFLite
            files are refused.
        tflite_batch: iterable of int. Static batch sizes of the TFLite files (1 always). Defaults to (1,).
        web: bool. Also write the browser demo (kerasvae.export.web) beside the TFLite files.
        web_runtime: str, Path or None. An installed `@litertjs/core` package folder for the demo; None
            looks for node_modules/@litertjs/core from the current folder up.
        author, license: str. Written into the TFLite Metadata, model.json and ONNX metadata_props.

    Raises:
        ValueError: one line, before anything is written, for a bad source, mode, batch size or
            calibration data, or missing calibration data that the asked-for files need.
    """
    import keras

    from kerasvae.export.tflite import parse_batch_sizes

    unknown = sorted(set(tflite) - set(TFLITE_MODES))
    if unknown:
        raise ValueError(f"Unknown TFLite mode(s) {unknown}; expected some of {list(TFLITE_MODES)}.")
    tflite_batch = parse_batch_sizes(tflite_batch)
    if web and not tflite:
        raise ValueError("--web needs TFLite decoders: add --tflite MODES (e.g. --tflite int8).")
    model, config, history = _load_source(model_or_path)
    if calibration_data is None and config is None:
        _refuse_without_data(model, tflite, web)
    if web:
        from kerasvae.export.web import check_demo_model, resolve_runtime

        check_demo_model(model)
        web_runtime = resolve_runtime(web_runtime)
    x_train = labels = None
    if tflite:  # read before anything is written: int8 calibration and the demo's latent ranking need it
        x_train, labels = _calibration_examples(model, calibration_data, config)
    description = describe_model(model, x_train, labels, Path(to).name, author, license)
    # The .keras file's model config (no compile config: an optimizer is no part of a served model).
    metadata = {"model_config": {k: v for k, v in keras.saving.serialize_keras_object(model).items() if k != "compile_config"}}
    if config is not None:
        metadata.update(training_config=config.to_json(), final_metrics={k: v[-1] for k, v in history.items() if v})
    progress.step(f"SavedModel: writing {to}")
    target = export_savedmodel(model, to, version=version, force=force, metadata=metadata)
    write_batching_parameters(to)  # beside the versions, for --enable_batching --batching_parameters_file
    result = {"savedmodel": str(target), "tflite": None, "onnx": None, "web": None}
    if tflite:
        modes = ["float32"] + [m for m in TFLITE_MODES if m in tflite and m != "float32"]
        z = codes = None
        if x_train is not None:
            z = calibration_latents(model, x_train, labels=labels)
            codes = None if model.code_space is None else np.asarray(model.codes(x_train), np.int32)
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


def export_run(run, to, version=None, force=False, tflite=(), onnx=False, tflite_batch=(1,), web=False,
               web_runtime=None, author="", license=""):
    """`export` of a run folder, calibrated on the run's own data (the signature `kerasvae export` had
    before it took models and `.keras` files)."""
    return export(run, to, version, force, tflite, onnx, tflite_batch=tflite_batch, web=web,
                  web_runtime=web_runtime, author=author, license=license)


# Models that are kerasvae's but not LatentVariableModels export with their own function.
OTHER_EXPORTERS = " (a RecursiveAutoencoder exports with kerasvae.export.recursive.export_recursive)"


def _load_source(model_or_path):
    """(model, training config or None, history or None) of a model, a `.keras` file or a run folder."""
    from kerasvae import runs, saving, training
    from kerasvae.models import LatentVariableModel

    if not isinstance(model_or_path, (str, os.PathLike)):
        source = model_or_path
        if not isinstance(source, LatentVariableModel):  # the signatures call the kerasvae model API
            raise TypeError(f"Expected a kerasvae model, a .keras file or a run folder; got {type(source).__name__}{OTHER_EXPORTERS}.")
        return source, None, None
    if runs.check_model_source(model_or_path).is_dir():
        model, config = training.load_run(model_or_path)
        history_path = Path(model_or_path) / "history.json"
        return model, config, json.loads(history_path.read_text()) if history_path.is_file() else {}
    loaded = saving.load_model(model_or_path)
    if not isinstance(loaded, LatentVariableModel):  # a file's content is bad input (ValueError: exit 2 in the CLI)
        raise ValueError(f"{model_or_path} holds a {type(loaded).__name__}, not a kerasvae model{OTHER_EXPORTERS}.")  # noqa: TRY004
    return loaded, None, None


def _calibration_examples(model, calibration_data, config):
    """(x, labels or None): up to CALIBRATION_EXAMPLES training examples (a seeded random subset of larger
    data), or (None, None) without any."""
    from kerasvae import data, training

    if calibration_data is None and config is not None:  # a run folder: the data it trained on, as it trained
        x, y = training.test_images(config, "train", classes=config.classes)
    elif calibration_data is None:
        return None, None
    elif isinstance(calibration_data, (str, os.PathLike)):
        x, y = data.load_arrays(calibration_data, "train")
    elif isinstance(calibration_data, tuple):
        x, y = calibration_data
    else:
        x, y = calibration_data, None
    x = np.asarray(x)
    if len(x) > CALIBRATION_EXAMPLES:  # a seeded random subset: data sorted by class must not calibrate on a few classes
        rows = np.sort(np.random.default_rng(0).choice(len(x), CALIBRATION_EXAMPLES, replace=False))
        x, y = x[rows], None if y is None else np.asarray(y)[rows]
    x = x.astype(np.float32)
    if x.shape[1:] != tuple(model.data_shape):
        raise ValueError(f"Calibration data holds examples of shape {x.shape[1:]}; the model takes {tuple(model.data_shape)}.")
    if model.num_classes is None:
        return x, None
    if y is None:
        raise ValueError(f"{type(model).__name__} is conditional: pass calibration_data=(inputs, labels), or a dataset with labels.")
    return x, np.asarray(y, np.int32)


def _refuse_without_data(model, tflite, web):
    """Raise ValueError if the asked-for files need training examples: int8 calibrates on them, the web demo
    ranks its sliders' latent dimensions on them, and a conditional decoder's fidelity check needs labels."""
    needs = {"int8 TFLite files": "int8" in tflite, "the web demo": web,
             f"{type(model).__name__}'s TFLite files": bool(tflite) and model.num_classes is not None}
    needed = [files for files, need in needs.items() if need]
    if needed:
        raise ValueError(f"No calibration data for {' and '.join(needed)} (noise is never used instead): pass calibration_data "
                         "(training inputs as an array, or a dataset name or path such as 'digits'; --calibration-data in the CLI).")
