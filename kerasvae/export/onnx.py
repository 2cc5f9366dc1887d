"""ONNX models converted from an exported SavedModel's signatures with tf2onnx, each checked in onnxruntime:

    decoder.onnx  z [batch, latent_dim] -> mean [batch, *input_shape] + the likelihood's parameters
    encoder.onnx  x [batch, *input_shape] -> loc, scale [batch, latent_dim]

Inputs and outputs carry the signature's names (no ":0" suffix) and a symbolic "batch" first dimension.
Each file's `metadata_props` and the `model.json` sidecar beside them describe the model, the tensors
(shapes, layout, range) and the runtime the files need, as the TFLite sidecar does.
`tf2onnx.convert.from_keras` does not handle Keras 3 models, hence the SavedModel route, the same one as
`python -m tf2onnx.convert --saved-model DIR --signature_def decode`.
"""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasvae import progress

FILES = {"decode": "decoder.onnx", "encode": "encoder.onnx"}
TOLERANCE = 1e-4
CHECK_BATCH = 16
# onnxruntime implements opset 17 from 1.13 and 18 from 1.14.
MIN_ONNXRUNTIME = {17: "1.13", 18: "1.14"}


def convert(saved_model_dir, signature, opset=17):
    """One signature of a SavedModel as an onnx.ModelProto with the signature's input and output names."""
    from tf2onnx import convert as tf2onnx_convert
    from tf2onnx import tf_loader

    # Freezes the signature's variables into constants and maps graph tensor names ("z:0", "Identity:0") to
    # the signature's keys, which the conversion then applies.
    graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
        str(saved_model_dir), None, None, tag=["serve"], signatures=[signature], return_tensors_to_rename=True
    )
    model, _ = tf2onnx_convert.from_graph_def(
        graph_def, name=signature, input_names=inputs, output_names=outputs, opset=opset, tensors_to_rename=renames
    )
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return model


def export_onnx(saved_model_dir, out_dir, opset=17, seed=0, description=None):
    """Write out_dir/decoder.onnx and out_dir/encoder.onnx, check each against the SavedModel in
    onnxruntime, and write out_dir/model.json. Returns the two paths.

    Args:
        saved_model_dir: str or Path. SavedModel with `decode` and `encode` signatures.
        out_dir: str or Path. Created if missing.
        opset: int. ONNX opset, at most 18 (what tf2onnx 1.17 targets). Defaults to 17.
        seed: int. Seeds the check inputs.
        description: dict or None. What the files say about the model (kerasvae.export.describe_model);
            None: the SavedModel's assets.extra/kerasvae.json.

    Raises:
        ValueError: if an output differs from the SavedModel's by more than TOLERANCE, or a name is missing.
    """
    import onnx

    from kerasvae.export.descriptions import (
        FORMAT,
        saved_description,
        tensor_descriptions,
    )
    from kerasvae.training import atomic_write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    signatures = tf.saved_model.load(str(saved_model_dir)).signatures
    description = {k: v for k, v in (description or saved_description(saved_model_dir)).items() if k != "demo"}
    sidecar = {"format": FORMAT.replace("tflite", "onnx"), **{k: v for k, v in description.items() if k != "support"},
               "opset": opset, "min_onnxruntime_version": MIN_ONNXRUNTIME.get(opset, "1.14")}
    paths = []
    for signature, filename in FILES.items():
        path = out_dir / filename
        tensors = tensor_descriptions(description, signatures[signature])
        for value in tensors["inputs"].values():
            value["shape"][0] = "batch"
        props = {
            "kerasvae.format": sidecar["format"],
            "kerasvae.signature": signature,
            "kerasvae.model": json.dumps({k: v for k, v in sidecar.items() if k != "format"}),
            "kerasvae.inputs": json.dumps(tensors["inputs"]),
            "kerasvae.outputs": json.dumps(tensors["outputs"]),
        }

        def write_checked(tmp, signature=signature, props=props):  # checked before it replaces the previous file
            model = convert(saved_model_dir, signature, opset)
            for key, value in props.items():
                model.metadata_props.add(key=key, value=value)
            model.doc_string = f"kerasvae {description.get('name') or ''} {signature}: see metadata_props and model.json".replace("  ", " ")
            onnx.save(model, str(tmp))
            return check(tmp, signatures[signature], seed)

        outputs = {}
        progress.step(f"ONNX: converting {signature} to {filename}")
        atomic_write(path, lambda tmp, w=write_checked: outputs.update(w(tmp)))
        for name, value in tensors["outputs"].items():
            value["shape"] = ["batch", *outputs[name]]
        sidecar[Path(filename).stem] = {"file": filename, "signature": signature, **tensors}
        paths.append(path)
    atomic_write(out_dir / "model.json", lambda tmp: Path(tmp).write_text(json.dumps(sidecar, indent=2) + "\n"))
    return paths


def check(path, signature_fn, seed=0):
    """Run an ONNX file in onnxruntime and compare every output with the SavedModel signature it came from, on
    random inputs (N(0, 1) latents and lower-level noise, uniform [0, 1] images). Returns {output name: shape
    without the batch}."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, spec in signature_fn.structured_input_signature[1].items():
        shape = (CHECK_BATCH, *spec.shape[1:])
        if spec.dtype.is_integer:  # labels
            feeds[name] = rng.integers(0, 2, shape).astype(spec.dtype.as_numpy_dtype)
        else:
            latent = name == "z" or name.startswith("noise_")  # a hierarchical decoder's lower levels: N(0, I) too
            feeds[name] = (rng.standard_normal(shape) if latent else rng.random(shape)).astype(np.float32)
    expected = {k: v.numpy() for k, v in signature_fn(**{k: tf.constant(v) for k, v in feeds.items()}).items()}
    inputs, names = sorted(i.name for i in session.get_inputs()), [o.name for o in session.get_outputs()]
    if inputs != sorted(feeds) or sorted(names) != sorted(expected):
        raise ValueError(f"{path} maps {inputs} to {sorted(names)}; expected {sorted(feeds)} to {sorted(expected)}.")
    shapes = {}
    for name, value in zip(names, session.run(names, feeds)):
        error = float(np.abs(value - expected[name]).max())
        if not error <= TOLERANCE:
            raise ValueError(f"{path}: output {name!r} differs from the SavedModel by {error:.3g} > {TOLERANCE}.")
        shapes[name] = list(value.shape[1:])
    return shapes
