"""Clients for TF Serving's PredictionService: gRPC (`Client`) and REST (`RestClient`). Both work against
a real `tensorflow_model_server` and against `kerasvae serve`; numpy in, numpy (or dicts of numpy) out.

    c = RestClient("localhost:8501", model_name="fmnist")   # or Client("localhost:8500", ...)
    c.encode(x); c.decode(z); c.reconstruct(x); c.sample(16, seed=(1, 2)); c.score(x); c.metadata()

This module imports only numpy and the standard library: `RestClient` works where TensorFlow is not
installed. `Client` imports grpc and TF Serving's protos (which import TensorFlow) when it is created.
"""

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

BATCHED_SIGNATURES = ("encode", "decode", "reconstruct", "score", "serving_default")
# TF's DataType enum names, as TF Serving's JSON writes them, -> the dtype names metadata() returns.
DTYPES = {
    "DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16", "DT_BFLOAT16": "bfloat16",
    "DT_INT8": "int8", "DT_INT16": "int16", "DT_INT32": "int32", "DT_INT64": "int64", "DT_UINT8": "uint8",
    "DT_UINT16": "uint16", "DT_UINT32": "uint32", "DT_UINT64": "uint64", "DT_BOOL": "bool", "DT_STRING": "string",
}


class ServingClientError(RuntimeError):
    """The server refused a request; `code` is the gRPC status name (or HTTP status for REST)."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _SignatureClient:
    """The model-level API on top of one `predict(signature, inputs)` primitive, with large batches split
    into chunks of `max_batch` examples."""

    def __init__(self, model_name, version=None, max_batch=1024, label=None):
        if version is not None and label:
            raise ValueError("Name a version or a label, not both (TF Serving refuses requests with both).")
        self.model_name, self.version, self.label, self.max_batch = model_name, version, label, int(max_batch)

    def predict(self, signature, inputs):
        """Run a signature: {input key: array} -> {output key: array}, chunked along the batch axis."""
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        if signature not in BATCHED_SIGNATURES:
            return self._predict(signature, inputs)
        n = len(next(iter(inputs.values())))
        chunks = [
            self._predict(signature, {k: v[i : i + self.max_batch] for k, v in inputs.items()})
            for i in range(0, max(n, 1), self.max_batch)
        ]
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

    # A conditional model's signatures take its class labels as a "label" input: the methods' `labels` (one
    # int per example, or one for all; not the constructor's `label`, TF Serving's name for a version).

    def encode(self, x, labels=None):
        """{"loc", "scale"} of q(z|x) (VQ-VAE: {"codes", "z"}; a hierarchical VAE: every level's)."""
        return self.predict("encode", _with_labels({"x": np.asarray(x, np.float32)}, labels))

    def decode(self, z, labels=None, noise=None):
        """{"mean", and the likelihood's parameters} of p(x|z). `noise`: {name: array [n, ...]}, the inputs
        besides z that a model's decode signature declares (a hierarchical VAE's lower levels' standard
        normal noise noise_1, ...; zeros decode along the levels' means)."""
        inputs = _with_labels({"z": np.asarray(z, np.float32)}, labels)
        inputs.update({name: np.asarray(value, np.float32) for name, value in (noise or {}).items()})
        return self.predict("decode", inputs)

    def reconstruct(self, x, labels=None):
        return self.predict("reconstruct", _with_labels({"x": np.asarray(x, np.float32)}, labels))["reconstruction"]

    def sample(self, n, seed=(0, 0), labels=None):
        """n images from the model; the same seed gives the same images on every server. A conditional
        model's: of one class (an int) or one per image (n ints)."""
        inputs = {"num_samples": np.int32(n), "seed": np.asarray(seed, np.int32).reshape(2)}
        return self.predict("sample", _with_labels(inputs, None if labels is None else np.reshape(labels, -1)))["x"]

    def score(self, x, labels=None):
        """{"elbo", "reconstruction_error", "anomaly_score"} per example."""
        return self.predict("score", _with_labels({"x": np.asarray(x, np.float32)}, labels))


class Client(_SignatureClient):
    """gRPC client on TF Serving's generated stubs. Creating the first one in a process imports grpc and TF
    Serving's protos, and with them TensorFlow: about 4 s (importing `RestClient` takes about 0.07 s, numpy
    being most of it).

    Args:
        target: str. host:port of the gRPC endpoint.
        model_name: str.
        version: int or None. None asks for the latest version.
        timeout: float. Deadline of each call in seconds. Defaults to 30.
        label: str or None. A version label of the server's models.config ("stable", "canary") instead of
            a version.
        max_batch: int. Examples per request; larger inputs are split. Defaults to 1024.
        retries: int. Retries of a call answered UNAVAILABLE (server starting or restarting), with
            exponential backoff; no other status is retried. Defaults to 3.
    """

    def __init__(self, target, model_name, version=None, timeout=30.0, max_batch=1024, retries=3, label=None):
        import grpc
        from tensorflow_serving.apis import (
            model_service_pb2_grpc,
            prediction_service_pb2_grpc,
        )

        super().__init__(model_name, version, max_batch, label)
        self.timeout, self.retries = float(timeout), int(retries)
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 1 << 30), ("grpc.max_send_message_length", 1 << 30)]
        )
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_service = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def _spec(self, spec, signature=None):
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = int(self.version)
        elif self.label:
            spec.version_label = self.label
        if signature:
            spec.signature_name = signature

    def _call(self, method, request):
        import grpc

        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    time.sleep(0.2 * 2**attempt)
                    continue
                raise ServingClientError(error.code().name, error.details()) from None

    def _predict(self, signature, inputs):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature)
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self.predictions.Predict, request)
        return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}

    def metadata(self):
        """{signature: {"inputs": {key: (dtype name, shape)}, "outputs": {...}}} from GetModelMetadata; a
        shape is a list of sizes (-1 where any size goes), or None when even its rank is unknown."""
        import tensorflow as tf
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        response = self._call(self.predictions.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)

        def tensors(infos):
            return {
                key: (tf.dtypes.as_dtype(info.dtype).name, None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim])
                for key, info in infos.items()
            }

        return {
            name: {"inputs": tensors(sig.inputs), "outputs": tensors(sig.outputs)}
            for name, sig in signature_map.signature_def.items()
            if not name.startswith("__")
        }

    def status(self):
        """[{"version": int, "state": str}] from ModelService.GetModelStatus, newest first: AVAILABLE while
        served, END once unloaded; "error" holds the reason a version failed to load."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call(self.model_service.GetModelStatus, request)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [_version_status(s.version, state_name(s.state), s.status.error_message) for s in response.model_version_status]

    def close(self):
        self.channel.close()


class RestClient(_SignatureClient):
    """REST client for TF Serving's JSON API: `POST /v1/models/<name>[/versions/<v>]:predict` with
    "signature_name" and columnar "inputs". Needs numpy and the standard library only.

    TF Serving's JSON carries no dtypes and leaves out the name of a signature's only output, so the client
    reads the model's metadata once (one GET, on the first predict) to name and type what comes back.

    Args:
        target: str. host:port (or http://host:port) of the REST endpoint.
        model_name, version, label, timeout, max_batch: as for `Client`.
        retries: int. Retries of a call answered 503 or refused at connection (server starting, restarting or
            its queue full), with exponential backoff; a connection that still fails raises
            ServingClientError("UNAVAILABLE", ...), as `Client` does. Defaults to 3.
    """

    def __init__(self, target, model_name, version=None, timeout=30.0, max_batch=256, retries=3, label=None):
        super().__init__(model_name, version, max_batch, label)
        self.base = (target if target.startswith("http") else f"http://{target}").rstrip("/")
        self.timeout, self.retries = float(timeout), int(retries)
        self.signatures = None  # metadata(), once needed; read again when a version's outputs change

    def _url(self, suffix=""):
        quote = lambda text: urllib.parse.quote(str(text), safe="")
        version = (f"/versions/{self.version}" if self.version is not None else
                   f"/labels/{quote(self.label)}" if self.label else "")
        return f"{self.base}/v1/models/{quote(self.model_name)}{version}{suffix}"

    def _request(self, url, body=None):
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())  # TF Serving writes NaN and Infinity, which json reads
            except urllib.error.HTTPError as error:
                payload = error.read().decode(errors="replace")
                if error.code == 503 and attempt < self.retries:
                    time.sleep(0.2 * 2**attempt)
                    continue
                try:
                    message = json.loads(payload).get("error", payload)
                except (json.JSONDecodeError, AttributeError):
                    message = payload
                raise ServingClientError(error.code, message) from None
            except (urllib.error.URLError, ConnectionError) as error:  # refused, reset: nobody answered
                if attempt < self.retries:
                    time.sleep(0.2 * 2**attempt)
                    continue
                raise ServingClientError("UNAVAILABLE", str(getattr(error, "reason", error))) from None
        raise AssertionError("unreachable")

    def _predict(self, signature, inputs):
        body = {"signature_name": signature, "inputs": {k: v.tolist() for k, v in inputs.items()}}
        outputs = self._request(self._url(":predict"), body)["outputs"]
        for _ in range(2):  # a new version may have renamed or retyped the outputs: read the metadata again
            if self.signatures is None:
                self.signatures = self.metadata()
            specs = self.signatures.get(signature, {}).get("outputs", {})
            named = {next(iter(specs)): outputs} if len(specs) == 1 else outputs  # a single output comes unnamed
            if isinstance(named, dict) and specs and set(named) <= set(specs):
                return {key: _array(value, specs[key][0], key) for key, value in named.items()}
            self.signatures = None
        raise ServingClientError("FAILED_PRECONDITION", f"The answer of {signature!r} does not match its metadata")

    def metadata(self):
        """As `Client.metadata`, read from TF Serving's JSON (DT_FLOAT dtypes, sizes as strings)."""
        signatures = self._request(self._url("/metadata"))["metadata"]["signature_def"]["signature_def"]

        def tensors(infos):
            return {
                key: (DTYPES.get(info["dtype"], info["dtype"]),
                      None if info["tensor_shape"].get("unknown_rank") else [int(d["size"]) for d in info["tensor_shape"].get("dim", [])])
                for key, info in infos.items()
            }

        return {
            name: {"inputs": tensors(s.get("inputs", {})), "outputs": tensors(s.get("outputs", {}))}
            for name, s in signatures.items()
            if not name.startswith("__")
        }

    def status(self):
        """[{"version": int, "state": str}] from the model status endpoint, as `Client.status` gives them."""
        return [_version_status(s["version"], s["state"], s.get("status", {}).get("error_message"))
                for s in self._request(self._url())["model_version_status"]]


def _with_labels(inputs, labels):
    """inputs with the "label" input; one int labels every example of the first input's batch."""
    if labels is None:
        return inputs
    labels = np.asarray(labels, np.int32)
    if labels.ndim == 0:
        labels = np.full(len(next(iter(inputs.values()))), labels, np.int32)
    return {**inputs, "label": labels}


def _version_status(version, state, error_message):
    """One entry of the clients' `status()`: {"version", "state"}, and "error" when a load failed."""
    return {"version": int(version), "state": state, **({"error": error_message} if error_message else {})}


def _array(value, dtype, key):
    """A JSON output as numpy: strings as bytes objects (base64-decoded for a name ending in "_bytes", as TF
    Serving writes those), everything else in the signature's dtype."""
    if dtype != "string":
        return np.asarray(value, dtype=dtype)
    array = np.asarray(value, dtype=object)
    decode = (lambda v: base64.b64decode(v["b64"])) if key.endswith("_bytes") else (lambda v: v.encode())
    return np.vectorize(decode, otypes=[object])(array) if array.size else array
