"""The models a server holds: SavedModel versions found under a serving root (or listed in a TF Serving
models.config), loaded through their signatures only, polled for new versions and swapped in atomically.

Like TF Serving's default version policy, each model serves its latest loadable version; a version folder
that fails to load is logged and skipped while the previous one keeps serving."""

import logging
import threading
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2

log = logging.getLogger("kerasvae.serving")


class ServingError(Exception):
    """A client mistake or a missing model, with the gRPC status code name TF Serving would answer."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class LoadedVersion:
    """One loaded SavedModel version: its callable signatures and their SignatureDefs."""

    def __init__(self, name, version, path):
        self.name, self.version, self.path = name, int(version), Path(path)
        self.module = tf.saved_model.load(str(path), tags=["serve"])
        saved_model = saved_model_pb2.SavedModel.FromString((self.path / "saved_model.pb").read_bytes())
        self.signature_defs = {
            key: value for key, value in saved_model.meta_graphs[0].signature_def.items() if not key.startswith("__")
        }
        self.functions = {key: self.module.signatures[key] for key in self.signature_defs}

    def input_specs(self, signature):
        return self.functions[signature].structured_input_signature[1]

    def run(self, signature, inputs, max_batch_size):
        """Validate named numpy inputs against the signature and run it; numpy outputs by name."""
        if signature not in self.functions:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Serving signature name: \"{signature}\" not found in signature def; available: {sorted(self.functions)}",
            )
        specs = self.input_specs(signature)
        if set(inputs) != set(specs):
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Signature \"{signature}\" takes inputs {sorted(specs)}; the request has {sorted(inputs)}",
            )
        tensors = {}
        for key, spec in specs.items():
            value = inputs[key]
            if value.dtype != spec.dtype.as_numpy_dtype:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Input \"{key}\" of \"{signature}\" must be {spec.dtype.name}, got {value.dtype.name}",
                )
            if not spec.shape.is_compatible_with(value.shape):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Input \"{key}\" of \"{signature}\" must have shape {_shape(spec.shape)}, got {list(value.shape)}",
                )
            if spec.shape.rank and spec.shape[0] is None and value.shape[0] > max_batch_size:
                raise ServingError(
                    "RESOURCE_EXHAUSTED", f"Batch size {value.shape[0]} of \"{key}\" exceeds the limit {max_batch_size}"
                )
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise ServingError("INVALID_ARGUMENT", f"Input \"{key}\" contains NaN or infinite values")
            tensors[key] = tf.constant(value)
        if "num_samples" in tensors and not 0 <= int(tensors["num_samples"]) <= max_batch_size:
            raise ServingError("INVALID_ARGUMENT", f"num_samples must be in [0, {max_batch_size}]")
        return {key: value.numpy() for key, value in self.functions[signature](**tensors).items()}


def _shape(shape):
    return [-1 if d is None else d for d in shape.as_list()]


class ModelRegistry:
    """{model name: latest LoadedVersion}, refreshed by `poll()` (called by a background thread).

    Args:
        root: str or Path. Serving root holding one folder per model (integer version folders inside), as
            written by `kerasvae export`.
        model_config: str, Path or None. A TF Serving models.config (text ModelServerConfig): serve exactly
            its models, from their base_path, instead of every folder under root.
    """

    def __init__(self, root, model_config=None):
        self.root = Path(root)
        self.model_config = model_config
        self.models = {}
        self.lock = threading.Lock()
        self.failed = set()

    def base_paths(self):
        if self.model_config is None:
            if not self.root.is_dir():
                raise ValueError(f"Serving root {self.root} is not a folder.")
            return {p.name: p for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
        from tensorflow_serving.config import model_server_config_pb2

        config = model_server_config_pb2.ModelServerConfig()
        try:
            text_format.Parse(Path(self.model_config).read_text(), config)
        except (OSError, text_format.ParseError) as error:
            raise ValueError(f"Cannot read model config {self.model_config}: {error}") from None
        return {c.name: Path(c.base_path) for c in config.model_config_list.config}

    def poll(self):
        """Load each model's newest version if it is not the one being served. Returns names that changed."""
        changed = []
        for name, base in self.base_paths().items():
            versions = sorted((int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True) if base.is_dir() else []
            current = self.models.get(name)
            for version in versions:
                if current is not None and version <= current.version:
                    break
                if (name, version) in self.failed:
                    continue
                try:
                    loaded = LoadedVersion(name, version, base / str(version))
                except Exception as error:  # noqa: BLE001 - a broken folder must never stop the server
                    log.warning("skipping %s version %d (%s): %s", name, version, base / str(version), error)
                    self.failed.add((name, version))
                    continue
                with self.lock:  # requests in flight keep their reference to the old version
                    self.models = {**self.models, name: loaded}
                log.info("serving %s version %d from %s", name, version, loaded.path)
                changed.append(name)
                break
        return changed

    def get(self, name, version=None):
        models = self.models
        if name not in models:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
        loaded = models[name]
        if version is not None and version != loaded.version:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({name}, {version})")
        return loaded
