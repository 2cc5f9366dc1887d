"""The models a server holds: SavedModel versions found under a serving root (or listed in a TF Serving
models.config), loaded through their signatures only, polled for new versions and swapped in atomically.

Like TF Serving's default version policy, each model serves its latest loadable version (a models.config may
ask for the latest N, all or specific versions, and label versions); a version folder that fails to load is
logged and skipped while the previous one keeps serving, and is tried again once its files change (a version
still being copied in loads when the copy is complete). A version whose folder is deleted, or that the policy
no longer names, is unloaded once another serves.

Model files are read as data: a version is screened before it loads (`screen_graph`), so a SavedModel whose
graph could touch the file system, run Python or open connections is refused, and nothing from a model
folder is imported or unpickled. Model names and versions in requests are looked up among the loaded
models, never joined to a path.
"""

import logging
import os
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2

from kerasvae.export.savedmodel import MODEL_NAME, WARMUP_FILE

log = logging.getLogger("kerasvae.serving")

MAX_WARMUP_RECORDS = 1000  # TF Serving's kMaxNumRecords (servables/tensorflow/saved_model_warmup_util.cc)
MESSAGE_CHARS = 64  # request-supplied text quoted in an error message is cut to this length

# Ops that read or write files, run Python callbacks, write summaries or debug dumps, or make remote calls.
# A kerasvae export has none of them in the functions it serves; a model that does is refused before it
# loads. (TF's own guidance: a SavedModel is a program, so run models from untrusted sources in a sandbox.
# This list narrows what a tampered model can do in-process; it is not a sandbox.)
DENIED_OPS = frozenset({
    "PyFunc", "PyFuncStateless", "EagerPyFunc",
    "ReadFile", "WriteFile", "MatchingFiles", "MatchingFilesDataset", "ImmutableConst", "FileSystemSetConfiguration",
    "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints",
    "LoadAndRemapMatrix", "GenerateVocabRemapping",
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
    "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "TFRecordReader",
    "TFRecordReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "LMDBReader",
    "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset", "LMDBDataset",
    "ExperimentalLMDBDataset", "SqlDataset", "ExperimentalSqlDataset", "ExperimentalMatchingFilesDataset",
    "SaveDataset", "SaveDatasetV2", "LoadDataset", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord",
    "SnapshotDataset", "SnapshotDatasetV2", "DistributedSave",
    "PrintV2",  # its output_stream may name a file
    "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteScalarSummary",
    "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary",
    "WriteRawProtoSummary", "ImportEvent", "FlushSummaryWriter", "CloseSummaryWriter",
    "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
    "DebugNumericSummaryV2",
    "DecodeProtoV2", "EncodeProto",  # their descriptor_source may name a file
    "Rpc", "TryRpc", "RpcClient", "RpcCall", "RpcServer", "RpcServerStart", "RpcServerRegister",
    "RpcCheckStatus", "RpcGetValue",
})


class ServingError(Exception):
    """A client mistake or a missing model, with the gRPC status code name TF Serving would answer."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def clip(text, limit=MESSAGE_CHARS):
    """Request-supplied text for an error message, cut to `limit` characters: a status message carrying a
    megabyte-long model name would overflow gRPC's metadata limit and reach the client as a transport error."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def screen_graph(saved_model):
    """Raise ValueError if a SavedModel proto uses a DENIED_OPS op anywhere the loader or a signature may run.

    In a TF2 SavedModel the saver's own save/restore functions (which write and read checkpoints, and which
    the Python loader never calls) are exempt; in a TF1 SavedModel the loader runs the saver's restore op,
    so everything is screened.
    """
    meta_graph = saved_model.meta_graphs[0]
    graph = meta_graph.graph_def
    functions = {f.signature.name: f for f in graph.library.function}
    saver_nodes = set()
    if meta_graph.object_graph_def.nodes:
        saver = meta_graph.saver_def
        saver_nodes = {saver.save_tensor_name.split(":")[0], saver.restore_op_name.lstrip("^")}
    nodes = [n for n in graph.node if n.name not in saver_nodes]
    roots = set(meta_graph.object_graph_def.concrete_functions) | _called_functions(nodes)
    seen, pending = set(), [name for name in roots if name in functions]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        nodes.extend(functions[name].node_def)
        pending.extend(f for f in _called_functions(functions[name].node_def) if f in functions and f not in seen)
    denied = sorted({n.op for n in nodes} & DENIED_OPS)
    if denied:
        raise ValueError(f"the graph uses ops a served model may not: {', '.join(denied)}")


def _called_functions(nodes):
    names = set()
    for node in nodes:
        for attr in node.attr.values():
            if attr.func.name:
                names.add(attr.func.name)
            names.update(f.name for f in attr.list.func)
    return names


class LoadedVersion:
    """One loaded SavedModel version: its callable signatures and their SignatureDefs."""

    def __init__(self, name, version, path, warmup=True):
        started = time.perf_counter()
        self.name, self.version, self.path = name, int(version), Path(path)
        saved_model = saved_model_pb2.SavedModel.FromString((self.path / "saved_model.pb").read_bytes())
        if not saved_model.meta_graphs:
            raise ValueError("saved_model.pb holds no MetaGraph")
        screen_graph(saved_model)
        self.module = tf.saved_model.load(str(path), tags=["serve"])
        # Every SignatureDef, "__saved_model_init_op" included, as TF Serving's GetModelMetadata reports them;
        # only the others can be called.
        self.signature_defs = dict(saved_model.meta_graphs[0].signature_def)
        self.functions = {key: self.module.signatures[key] for key in self.signature_defs if not key.startswith("__")}
        self._batchable = {}
        self.load_seconds = time.perf_counter() - started
        self.warmup_requests = self.replay_warmup() if warmup else 0
        self.warmup_seconds = time.perf_counter() - started - self.load_seconds

    def replay_warmup(self):
        """Run the Predict requests of assets.extra/tf_serving_warmup_requests (a TFRecord of PredictionLogs,
        as `kerasvae export` writes it), as TF Serving does under its default --enable_model_warmup, so the
        first real request of each signature does not pay for instantiating its function. Like TF Serving,
        a failing record fails the load and more than MAX_WARMUP_RECORDS records are refused. Returns the
        number of requests run."""
        path = self.path / "assets.extra" / WARMUP_FILE
        if not path.is_file():
            return 0
        from tensorflow_serving.apis import prediction_log_pb2

        count = 0
        for record in tf.data.TFRecordDataset(str(path)):
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise ValueError(f"{WARMUP_FILE} holds more than {MAX_WARMUP_RECORDS} records")
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if entry.WhichOneof("log_type") != "predict_log":  # classify/regress logs need tf.Example parsing
                log.warning("%s version %d: skipping a %s warmup record", self.name, self.version, entry.WhichOneof("log_type"))
                continue
            request = entry.predict_log.request
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
            try:
                self.run(request.model_spec.signature_name or "serving_default", inputs, max_batch_size=1 << 31)
            except ServingError as error:
                raise ValueError(f"warmup request {count} failed: {error.code}: {error.message}") from None
        return count

    def input_specs(self, signature):
        """{input key: tf.TensorSpec} of a signature; INVALID_ARGUMENT naming the signatures if it is unknown."""
        if signature not in self.functions:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Serving signature name: \"{clip(signature)}\" not found in signature def; available: {sorted(self.functions)}",
            )
        return self.functions[signature].structured_input_signature[1]

    def output_keys(self, signature, output_filter=()):
        """The output keys a request gets: all of the signature's, or the requested subset (TF Serving's
        INVALID_ARGUMENT for an unknown or repeated key)."""
        outputs = set(self.signature_defs[signature].outputs)
        if not output_filter:
            return outputs
        for i, key in enumerate(output_filter):
            if key not in outputs:
                raise ServingError(
                    "INVALID_ARGUMENT", f"output tensor alias not found in signature: {clip(key)}; outputs are {sorted(outputs)}"
                )
            if key in output_filter[:i]:
                raise ServingError("INVALID_ARGUMENT", f"duplicate output tensor alias: {clip(key)}")
        return set(output_filter)

    def check_inputs(self, signature, described, max_batch_size):
        """Check {key: (tf.DType, shape list)} against the signature before any value is materialized: the
        exact key set, each dtype and shape, and the batch limit (RESOURCE_EXHAUSTED above it)."""
        specs = self.input_specs(signature)
        if set(described) != set(specs):
            keys = [clip(k, 32) for k in sorted(described)[:8]] + (["..."] if len(described) > 8 else [])
            raise ServingError("INVALID_ARGUMENT", f"Signature \"{signature}\" takes inputs {sorted(specs)}; the request has {keys}")
        for key, spec in specs.items():
            dtype, shape = described[key]
            if dtype != spec.dtype:
                raise ServingError("INVALID_ARGUMENT", f"Input \"{key}\" of \"{signature}\" must be {spec.dtype.name}, got {dtype.name}")
            if not spec.shape.is_compatible_with(shape):
                raise ServingError(
                    "INVALID_ARGUMENT", f"Input \"{key}\" of \"{signature}\" must have shape {_shape(spec.shape)}, got {list(shape)}"
                )
            if spec.shape.rank and spec.shape[0] is None and shape[0] > max_batch_size:
                raise ServingError("RESOURCE_EXHAUSTED", f"Batch size {shape[0]} of \"{key}\" exceeds the limit {max_batch_size}")
        return specs

    def run(self, signature, inputs, max_batch_size):
        """Validate named numpy inputs against the signature and run it; numpy outputs by name."""
        self.check_values(signature, inputs, max_batch_size)
        return self.call(signature, inputs)

    def batchable(self, signature):
        """Whether requests for `signature` may be batched together (kerasvae.serving.batching.batchable):
        every input and output has an unknown leading dimension; `sample`'s scalar num_samples has none."""
        from kerasvae.serving.batching import batchable

        def dims(info):
            return None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]

        if signature not in self._batchable:
            definition = self.signature_defs[signature]
            self._batchable[signature] = batchable([dims(i) for i in definition.inputs.values()],
                                                   [dims(o) for o in definition.outputs.values()])
        return self._batchable[signature]

    def check_values(self, signature, inputs, max_batch_size):
        """`check_inputs` of named numpy inputs, then their values: finite floats, a num_samples in range."""
        described = {key: (_numpy_dtype(value), value.shape) for key, value in inputs.items()}
        specs = self.check_inputs(signature, described, max_batch_size)
        for key in specs:
            value = inputs[key]
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise ServingError("INVALID_ARGUMENT", f"Input \"{key}\" contains NaN or infinite values")
        if "num_samples" in inputs:
            num_samples = int(inputs["num_samples"])
            if num_samples < 0:
                raise ServingError("INVALID_ARGUMENT", f"num_samples must be >= 0, got {num_samples}")
            if num_samples > max_batch_size:
                raise ServingError("RESOURCE_EXHAUSTED", f"num_samples {num_samples} exceeds the batch limit {max_batch_size}")

    def call(self, signature, inputs):
        """Run a signature on inputs `check_values` accepted (or a batch of them); numpy outputs by name."""
        try:
            outputs = self.functions[signature](**{key: tf.constant(value) for key, value in inputs.items()})
        except tf.errors.InvalidArgumentError as error:  # values the graph rejects, e.g. a label out of range
            raise ServingError("INVALID_ARGUMENT", f"The model rejected the inputs: {clip(error.message, 300)}") from None
        except tf.errors.ResourceExhaustedError as error:
            raise ServingError("RESOURCE_EXHAUSTED", f"Out of memory running \"{signature}\": {clip(error.message, 300)}") from None
        # A scalar string comes out of .numpy() as bytes: make every output an array, strings of dtype object.
        return {key: np.asarray(value.numpy(), dtype=object if value.dtype == tf.string else None) for key, value in outputs.items()}

    def example_method_error(self, method, signature):
        """The ServingError a Classify or Regress call ("classify" or "regress") on `signature` gets: TF
        Serving's INVALID_ARGUMENT for a signature it could not run either (classifier.cc, regressor.cc, under
        its default --enable_signature_method_name_check=false), else UNIMPLEMENTED: this server does not
        parse tf.Examples."""
        definition = self.signature_defs.get(signature)
        kind = "classification" if method == "classify" else "regression"
        if definition is None:
            return ServingError("INVALID_ARGUMENT", f"No signature was found with the name: {clip(signature)}")
        if len(definition.inputs) != 1:
            return ServingError("INVALID_ARGUMENT", "Expected one input Tensor.")
        if method == "classify" and len(definition.outputs) not in (1, 2):
            return ServingError("INVALID_ARGUMENT", f"Expected one or two output Tensors, found {len(definition.outputs)}")
        if method == "regress" and len(definition.outputs) != 1:
            return ServingError("INVALID_ARGUMENT", "Expected one output Tensor.")
        text = clip(text_format.MessageToString(definition), 2000)
        if "inputs" not in definition.inputs:
            return ServingError("INVALID_ARGUMENT", f"No {kind} inputs found in SignatureDef: {text}")
        if method == "classify" and not {"classes", "scores"} & set(definition.outputs):
            return ServingError("INVALID_ARGUMENT", 'Expected classification signature outputs to contain at least one of '
                                f'"classes" or "scores". Signature was: {text}')
        if method == "regress" and "outputs" not in definition.outputs:
            return ServingError("INVALID_ARGUMENT", f"No regression outputs found in SignatureDef: {text}")
        return ServingError("UNIMPLEMENTED", f"{method.capitalize()} runs tf.Example signatures, which kerasvae serve does not; "
                            f"call :predict on \"{clip(signature)}\" instead")


def _numpy_dtype(value):
    if value.dtype.kind in "OSU":  # strings: bytes objects as tf.make_ndarray and the REST reader give them
        return tf.string
    try:
        return tf.dtypes.as_dtype(value.dtype)
    except TypeError:  # e.g. object arrays of JSON values
        raise ServingError("INVALID_ARGUMENT", f"Inputs must be numeric tensors, got numpy dtype {value.dtype}") from None


def _shape(shape):
    return [-1 if d is None else d for d in shape.as_list()]


class ModelConfig:
    """What a model serves: its base folder, TF Serving's version policy and its version labels.

    Args:
        base: Path. The folder of integer version folders.
        policy: "latest", "all" or "specific" (models.config's model_version_policy; default latest).
        num_versions: int. How many of the newest versions "latest" serves (at least 1, as TF Serving reads 0).
        versions: tuple of ints. The versions "specific" serves.
        labels: {label: version} (models.config's version_labels).
    """

    def __init__(self, base, policy="latest", num_versions=1, versions=(), labels=None):
        self.base, self.policy = Path(base), policy
        self.num_versions, self.versions = max(int(num_versions), 1), tuple(int(v) for v in versions)
        self.labels = dict(labels or {})

    @classmethod
    def from_proto(cls, config):
        """From a ModelServerConfig's ModelConfig (tensorflow_serving/config/model_server_config.proto)."""
        policy = config.model_version_policy.WhichOneof("policy_choice") or "latest"
        return cls(config.base_path, policy, num_versions=config.model_version_policy.latest.num_versions,
                   versions=config.model_version_policy.specific.versions, labels=config.version_labels)

    def wanted(self, on_disk):
        """The versions the policy asks for among `on_disk`, newest first (file_system_storage_path_source.cc's
        AspireLatestVersions / AspireAllVersions / AspireSpecificVersions)."""
        on_disk = sorted(on_disk, reverse=True)
        if self.policy == "all":
            return on_disk
        if self.policy == "specific":
            return [v for v in on_disk if v in self.versions]
        return on_disk[: self.num_versions]


class ModelState(NamedTuple):
    """One model as requests see it, replaced whole by a poll: the versions it serves {version:
    LoadedVersion}, its labels {label: version} and its END versions {version: "" once unloaded, else the
    error of a failed load}."""

    serving: dict
    labels: dict
    ended: dict


UNKNOWN_MODEL = ModelState({}, {}, {})  # shared, never mutated: states are replaced, not edited


class ModelRegistry:
    """The versions each model serves, its version labels and the states of the versions it no longer serves,
    refreshed by `poll()` (called by a background thread).

    Args:
        root: str or Path. Serving root holding one folder per model (integer version folders inside), as
            written by `kerasvae export`; folders whose names are not valid model names are ignored.
        model_config: str, Path or None. A TF Serving models.config (text ModelServerConfig): serve exactly
            its models, from their base_path, with their model_version_policy and version_labels, instead of
            the latest version of every folder under root. It is read again at every poll.
        warmup: bool. Replay each version's warmup requests before serving it (`LoadedVersion.replay_warmup`;
            TF Serving's --enable_model_warmup). Defaults to True.
    """

    MAX_ENDED = 100  # END versions kept per model, newest first: a status must not grow with every push

    def __init__(self, root, model_config=None, warmup=True):
        self.root = Path(root)
        self.warmup = bool(warmup)
        self.model_config = model_config
        # name -> ModelState. Only poll() (one thread) replaces it, with one assignment of a new dict, so a
        # request reads one consistent state of its model without a lock.
        self.states = {}
        self.failed = {}  # (name, version) -> fingerprint of the folder when it failed to load
        self.warned = set()  # (name, label, version) of labels already reported as not available

    @property
    def models(self):
        """{name: {version: LoadedVersion}} of the models that serve."""
        return {name: state.serving for name, state in self.states.items() if state.serving}

    def configs(self):
        """{model name: ModelConfig} of what to serve now; None for a models.config that lists no models (a
        file caught mid-write reads as empty: TF Serving also takes no action for an empty config)."""
        if self.model_config is None:
            if not self.root.is_dir():
                raise ValueError(f"Serving root {self.root} is not a folder.")
            return {p.name: ModelConfig(p) for p in sorted(self.root.iterdir()) if p.is_dir() and MODEL_NAME.fullmatch(p.name)}
        from tensorflow_serving.config import model_server_config_pb2

        config = model_server_config_pb2.ModelServerConfig()
        try:
            text_format.Parse(Path(self.model_config).read_text(), config)
        except (OSError, UnicodeDecodeError, text_format.ParseError) as error:
            raise ValueError(f"Cannot read model config {self.model_config}: {error}") from None
        if not config.HasField("model_config_list"):
            return None
        names = [c.name for c in config.model_config_list.config]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"Model config {self.model_config} names {repeated} more than once.")
        return {c.name: ModelConfig.from_proto(c) for c in config.model_config_list.config}

    def poll(self):
        """Bring each model's served versions in line with its policy and the folders on disk, and drop the
        models no longer configured. Returns the names whose served versions or labels changed."""
        configs = self.configs()
        if configs is None:
            log.warning("model config %s lists no models: taking no action", self.model_config)
            return []
        states, changed = dict(self.states), []
        for name, config in configs.items():
            old = states.get(name, UNKNOWN_MODEL)
            try:
                state = self._poll_model(name, config, old)
            except OSError as error:  # an unreadable model folder must not stop the other models' polling
                log.warning("cannot poll %s (%s): %s", name, config.base, error)
                continue
            if state is not None:
                if state.serving.keys() != old.serving.keys() or state.labels != old.labels:
                    changed.append(name)
                states[name] = state  # a failed load alone changes only the END states
        for name in [name for name, state in states.items() if name not in configs and state.serving]:
            states[name] = _ended(name, states[name], {}, {}, {})
            log.info("unloaded %s: no longer configured", name)
            changed.append(name)
        self.states = states
        return changed

    def _poll_model(self, name, config, state):
        """The model's new ModelState, or None when nothing changed."""
        base, current = config.base, state.serving
        if not base.is_dir():  # an unmounted or replaced folder: TF Serving changes nothing on such an error
            if current:
                log.warning("base path %s of %s is not a folder: keeping its versions", base, name)
            return None
        on_disk = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
        self.failed = {key: value for key, value in self.failed.items() if key[0] != name or key[1] in on_disk}
        wanted, failures = config.wanted(on_disk), {}
        serving = {v: current[v] for v in wanted if v in current}
        for version in wanted:
            if version not in serving:
                loaded = self._load(name, version, base / str(version), failures)
                if loaded is not None:
                    serving[version] = loaded
        if wanted and not serving:
            # Nothing the policy names loads (a broken newest version). TF Serving's availability-preserving
            # policy keeps the newest version that serves now; at start, with none, the latest policy here
            # also tries older versions, so a bad copy never keeps a model down. With nothing wanted (every
            # version folder deleted, or a policy naming none on disk) everything is unloaded, as in TF Serving.
            if current:
                serving = {max(current): current[max(current)]}
            elif config.policy == "latest":
                for version in sorted(set(on_disk) - set(wanted), reverse=True):
                    loaded = self._load(name, version, base / str(version), failures)
                    if loaded is not None:
                        serving = {version: loaded}
                        break
        labels = self._labels(name, config, serving, state.labels)
        if serving.keys() == current.keys() and labels == state.labels and not failures:
            return None
        return _ended(name, state, serving, labels, failures)

    def _load(self, name, version, path, failures):
        """The LoadedVersion, or None with the error in `failures` (a failure unchanged since is not retried)."""
        fingerprint = _fingerprint(path)
        if self.failed.get((name, version)) == fingerprint:
            return None
        try:
            loaded = LoadedVersion(name, version, path, warmup=self.warmup)
        except Exception as error:  # noqa: BLE001 - a broken folder must never stop the server
            log.warning("skipping %s version %d (%s): %s", name, version, path, clip(error, 500))
            self.failed[(name, version)] = fingerprint
            failures[version] = clip(error, 500)
            return None
        self.failed.pop((name, version), None)
        log.info("serving %s version %d from %s (loaded in %.2f s, %d warmup requests in %.2f s)", name, version,
                 loaded.path, loaded.load_seconds, loaded.warmup_requests, loaded.warmup_seconds)
        return loaded

    def _labels(self, name, config, serving, previous):
        """The model's labels: each configured label whose version serves (loaded in this poll included); one
        naming a version that does not serve keeps its previous version, as TF Serving refuses such a config
        change and keeps its old map (a request for it then finds that version, or NOT_FOUND)."""
        labels = {}
        for label, version in config.labels.items():
            if version in serving:
                labels[label] = version
                continue
            if (name, label, version) not in self.warned:
                self.warned.add((name, label, version))
                log.warning("label %s of %s names version %d, which does not serve; it stays at %s", label, name,
                            version, previous.get(label, "none"))
            if label in previous:
                labels[label] = previous[label]
        return labels

    def get(self, name, version=None, label=""):
        """The LoadedVersion a request names: the newest served version, the one `version` names or the one
        `label` maps to. INVALID_ARGUMENT for an unknown label (TF Serving looks labels up before the model),
        NOT_FOUND for a model or version not served (a name that no export could have is only looked up)."""
        state = self.states.get(name, UNKNOWN_MODEL)
        if label:
            version = state.labels.get(label)
            if version is None:
                raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {clip(label)}")
        served = state.serving
        loaded = served.get(max(served) if version is None and served else version)
        if loaded is None:
            request = f"Latest({clip(name)})" if version is None else f"Specific({clip(name)}, {version})"
            raise ServingError("NOT_FOUND", f"Servable not found for request: {request}")
        return loaded

    def status(self, name, version=None):
        """[(version, error message or None while served)] newest first: every version the model serves, then
        those unloaded ("") or that failed to load (the error), as GetModelStatus lists AVAILABLE and END
        versions; TF Serving's NOT_FOUND messages. Like TF Serving's, it ignores version labels."""
        state = self.states.get(name, UNKNOWN_MODEL)
        states = {**state.ended, **{v: None for v in state.serving}}
        if not states:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {clip(name)}")
        if version is not None:
            if version not in states:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model {clip(name)}")
            return [(version, states[version])]
        return sorted(states.items(), reverse=True)


def _ended(name, state, serving, labels, failures):
    """The ModelState after a poll: `serving` and `labels`, and END for the versions that left (OK) or failed."""
    ended = {**state.ended, **failures}
    for version in state.serving:
        if version not in serving:
            ended[version] = ""
            log.info("unloaded %s version %d", name, version)
    ended = dict(sorted(((v, m) for v, m in ended.items() if v not in serving), reverse=True)[: ModelRegistry.MAX_ENDED])
    return ModelState(serving, labels, ended)


def _fingerprint(path):
    """(relative path, size, mtime) of every file under a version folder: changes while a copy is under way."""
    files = []
    for folder, _, names in os.walk(path):
        for file_name in names:
            stat = os.stat(os.path.join(folder, file_name))
            files.append((os.path.relpath(os.path.join(folder, file_name), path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(files))
