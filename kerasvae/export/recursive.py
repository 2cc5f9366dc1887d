"""A RecursiveAutoencoder's deployment files: a versioned SavedModel for TF Serving and TFLite files of its
node decoders for devices. `kerasvae.export.export` takes LatentVariableModels (fixed-shape inputs, a
likelihood); this is the same layout for a model whose inputs are variable-length sequences.

SavedModel signatures (float32 unless said; T: a batch's padded length, variable):
    encode           x [None, T, features], lengths int32 [None] -> root [None, code_dim], merges int32 [None, T - 1]
                     (the greedy tree; -1 after a sequence's last merge)
    encode_along     x, lengths, merges int32 [None, T - 1] -> root (the tree given, e.g. a parse)
    decode           root [None, code_dim], merges int32 [None, T - 1], lengths int32 [None] -> x [None, T, features]
    decode_children  parent [None, code_dim] -> left, right [None, code_dim] (the network's decoder)
    decode_leaf      code [None, code_dim] -> x [None, features]
    reconstruct      x, lengths -> reconstruction [None, T, features] (decode along the greedy tree)
    score            x, lengths -> score, tree, leaf (, unfold) [None]: each sequence's loss and its terms (an
                     anomaly score)
    serving_default = reconstruct

TFLite files (`<to>/tflite/`, static batch 1, one signature each, as kerasvae's other on-device files):
    children_decoder_float32.tflite  decode_children: parent [1, code_dim] -> left, right
    leaf_decoder_float32.tflite      decode_leaf: code [1, code_dim] -> x [1, features]
    encoder_float32.tflite           with max_length: encode on x [1, max_length, features] padded, lengths int32
                                     [1] -> root [1, code_dim], merges int32 [1, max_length - 1] (the greedy tree
                                     search, a WHILE loop)
    model.json                       code_dim, features, max_length, and per file its signature, tensors,
                                     operators, size, sha256, runtimes and max_abs_error against the model
An app unfolds a root along its merge order (from `encode`) by calling the children decoder on the node at
merges[t] for t = length - 2 down to 0, putting left and right in its place, then the leaf decoder on each of
the `length` nodes.
"""

import json
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasvae.export import tflite
from kerasvae.export.savedmodel import publish_version, write_metadata, write_warmup

TFLITE_KINDS = {"children_decoder": "decode_children", "leaf_decoder": "decode_leaf"}
CHECK_SAMPLES = 64


def signature_functions(model):
    """{name: (fn, input_signature)} of the module docstring's signatures; fns return dicts of named tensors."""
    x = tf.TensorSpec([None, None, model.features], tf.float32, name="x")
    lengths = tf.TensorSpec([None], tf.int32, name="lengths")
    merges = tf.TensorSpec([None, None], tf.int32, name="merges")
    code = lambda name: tf.TensorSpec([None, model.code_dim], tf.float32, name=name)

    def encode(x, lengths):
        tree = model.tree(x, lengths)
        return {"root": tree["root"], "merges": tree["merges"]}

    def decode_children(parent):
        left, right = model.decode_children(parent)
        return {"left": left, "right": right}

    def reconstruct(x, lengths):
        return {"reconstruction": model.reconstruct(x, lengths)}

    def score(x, lengths):
        tree = model.tree(x, lengths)
        terms = {name: tree[name] for name in ("tree", "leaf", "unfold") if name in tree}
        return {"score": model.sequence_loss(tree), **terms}

    return {
        "serving_default": (reconstruct, [x, lengths]),
        "encode": (encode, [x, lengths]),
        "encode_along": (lambda x, lengths, merges: {"root": model.encode(x, lengths, merges)}, [x, lengths, merges]),
        "decode": (lambda root, merges, lengths: {"x": model.decode(root, merges, lengths)}, [code("root"), merges, lengths]),
        "decode_children": (decode_children, [code("parent")]),
        "decode_leaf": (lambda code: {"x": model.decode_leaf(code)}, [code("code")]),
        "reconstruct": (reconstruct, [x, lengths]),
        "score": (score, [x, lengths]),
    }


def write_savedmodel(model, directory):
    """Write `model` as a SavedModel with every signature to `directory` (which must not exist)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    traced = {}  # serving_default and reconstruct share one tf.function: traced once
    for name, (fn, specs) in signature_functions(model).items():
        archive.add_endpoint(name=name, fn=traced.setdefault(fn, tf.function(fn)), input_signature=specs)
    archive.write_out(str(directory), verbose=False)
    return Path(directory)


def warmup_inputs(model, batch_size=2, length=3):
    """One small request per signature: {signature: {input key: numpy array}}."""
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, length, model.features)).astype(np.float32)
    lengths = np.full(batch_size, length, np.int32)
    codes = rng.standard_normal((batch_size, model.code_dim)).astype(np.float32)
    merges = np.zeros((batch_size, length - 1), np.int32)
    sequences = {"x": x, "lengths": lengths}
    return {
        "serving_default": sequences, "encode": sequences, "encode_along": {**sequences, "merges": merges},
        "decode": {"root": codes, "merges": merges, "lengths": lengths}, "decode_children": {"parent": codes},
        "decode_leaf": {"code": codes}, "reconstruct": sequences, "score": sequences,
    }


def export_recursive(model, to, version=None, force=False, tflite_files=True, max_length=None, metadata=None):
    """Export a RecursiveAutoencoder to `to/<version>/` (SavedModel) and `to/tflite/` (its node decoders).

    Args:
        model: a kerasvae.models.RecursiveAutoencoder.
        to: str or Path. The model's folder in the serving root, e.g. saved_models/rows; its name is the
            served model's name.
        version: int or None. None takes the next free version (1 for a new model).
        force: bool. Replace an existing version instead of refusing.
        tflite_files: bool. Also write and check the TFLite files. Defaults to True.
        max_length: int or None. Also write the TFLite encoder for sequences of up to this many steps (padded to
            it, with their lengths). Defaults to None.
        metadata: dict or None. Extra entries for assets.extra/kerasvae.json.

    Returns:
        {"savedmodel": path, "tflite": {kind: {"file", "size_bytes", "max_abs_error", ...}} or None}

    Raises:
        ValueError: a bad model name or version, or an existing version without `force`.
    """
    base_dir = Path(to)

    def build(folder):
        saved = write_savedmodel(model, folder)
        write_warmup(saved, warmup_inputs(model), base_dir.name)
        return write_metadata(saved, {
            "model_class": type(model).__name__,
            "features": model.features,
            "code_dim": model.code_dim,
            "signatures": list(signature_functions(model)),
            "model_config": {k: v for k, v in keras.saving.serialize_keras_object(model).items() if k != "compile_config"},
            **(metadata or {}),
        })

    target = publish_version(base_dir, build, version, force)
    report = export_decoders_tflite(model, base_dir / "tflite", max_length) if tflite_files else None
    return {"savedmodel": str(target), "tflite": report}


def export_decoders_tflite(model, out_dir, max_length=None, seed=0):
    """Write TFLITE_KINDS' float32 files (static batch 1), and with `max_length` the encoder file, check each
    against the model on CHECK_SAMPLES inputs (unit-length codes; sequences in [0, 1) of random lengths), and
    write model.json: {"format", "code_dim", "features", "max_length", "files": {kind: {"file", "signature",
    "size_bytes", "sha256", "max_abs_error", "runs_in", "operators", "tensors"}}}.

    They are converted from a SavedModel of these signatures alone, on a batch of 1 (converting a concrete
    function that captures Keras variables gives NaN; the served SavedModel's while loops make it slow to load).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.tflite"):
        stale.unlink()  # an earlier export's encoder: model.json lists exactly what is there
    functions = signature_functions(model)
    rng = np.random.default_rng(seed)
    codes = rng.standard_normal((CHECK_SAMPLES, model.code_dim)).astype(np.float32)
    codes /= np.linalg.norm(codes, axis=-1, keepdims=True)  # nodes are unit length in a normalized model
    specs = {signature: [tf.TensorSpec([1, model.code_dim], tf.float32, name=functions[signature][1][0].name)]
             for signature in TFLITE_KINDS.values()}
    inputs = {signature: {specs[signature][0].name: codes} for signature in TFLITE_KINDS.values()}
    kinds = dict(TFLITE_KINDS)
    if max_length is not None:
        kinds["encoder"] = "encode"
        specs["encode"] = [tf.TensorSpec([1, int(max_length), model.features], tf.float32, name="x"),
                           tf.TensorSpec([1], tf.int32, name="lengths")]
        inputs["encode"] = {"x": rng.random((CHECK_SAMPLES, int(max_length), model.features)).astype(np.float32),
                            "lengths": rng.integers(1, int(max_length) + 1, CHECK_SAMPLES).astype(np.int32)}
    entries = {}
    with tempfile.TemporaryDirectory() as scratch:
        archive = keras.export.ExportArchive()
        archive.track(model)
        for signature in kinds.values():
            archive.add_endpoint(name=signature, fn=tf.function(functions[signature][0]), input_signature=specs[signature])
        archive.write_out(str(Path(scratch) / "static"), verbose=False)
        for kind, signature in kinds.items():
            content = tflite.convert(Path(scratch) / "static", signature, "float32")
            path = out_dir / tflite.file_name(kind, "float32")
            tflite._write_atomically(path, content)
            expected = {k: np.asarray(v) for k, v in functions[signature][0](**inputs[signature]).items()}
            got = tflite._run_batched(path, signature, inputs[signature], 1)
            entries[kind] = {"signature": signature, **tflite._file_entry(path, content, signature, tflite._fidelity(got, expected, None))}
    sidecar = {"format": "kerasvae.recursive.tflite/1", "code_dim": model.code_dim, "features": model.features,
               "max_length": None if max_length is None else int(max_length), "files": entries}
    tflite._write_atomically(out_dir / "model.json", (json.dumps(sidecar, indent=2) + "\n").encode())
    return entries
