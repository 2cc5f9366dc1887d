"""Clients for TF Serving's PredictionService: gRPC (`Client`) and REST (`RestClient`). Both work against
a real `tensorflow_model_server` and against `kerasvae serve`; numpy in, numpy (or dicts of numpy) out.

    c = Client("localhost:8500", model_name="fmnist")
    c.encode(x); c.decode(z); c.reconstruct(x); c.sample(16, seed=(1, 2)); c.score(x); c.metadata()
"""

import json
import time
import urllib.error
import urllib.request

import numpy as np

BATCHED_SIGNATURES = ("encode", "decode", "reconstruct", "score", "serving_default")


class ServingClientError(RuntimeError):
    """The server refused a request; `code` is the gRPC status name (or HTTP status for REST)."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _SignatureClient:
    """The model-level API on top of one `predict(signature, inputs)` primitive, with large batches split
    into chunks of `max_batch` examples."""

    def __init__(self, model_name, version=None, max_batch=1024):
        self.model_name, self.version, self.max_batch = model_name, version, int(max_batch)

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

    def encode(self, x):
        """{"loc", "scale"} of q(z|x) (VQ-VAE: {"codes", "z"})."""
        return self.predict("encode", {"x": np.asarray(x, np.float32)})

    def decode(self, z):
        """{"mean", and the likelihood's parameters} of p(x|z)."""
        return self.predict("decode", {"z": np.asarray(z, np.float32)})

    def reconstruct(self, x):
        return self.predict("reconstruct", {"x": np.asarray(x, np.float32)})["reconstruction"]

    def sample(self, n, seed=(0, 0)):
        """n images from the model; the same seed gives the same images on every server."""
        inputs = {"num_samples": np.int32(n), "seed": np.asarray(seed, np.int32).reshape(2)}
        return self.predict("sample", inputs)["x"]

    def score(self, x):
        """{"elbo", "reconstruction_error", "anomaly_score"} per example."""
        return self.predict("score", {"x": np.asarray(x, np.float32)})


class Client(_SignatureClient):
    """gRPC client on TF Serving's generated stubs.

    Args:
        target: str. host:port of the gRPC endpoint.
        model_name: str.
        version: int or None. None asks for the latest version.
        timeout: float. Deadline of each call in seconds. Defaults to 30.
        max_batch: int. Examples per request; larger inputs are split. Defaults to 1024.
        retries: int. Retries of a call answered UNAVAILABLE (server starting or restarting), with
            exponential backoff; no other status is retried. Defaults to 3.
    """

    def __init__(self, target, model_name, version=None, timeout=30.0, max_batch=1024, retries=3):
        import grpc
        from tensorflow_serving.apis import (
            model_service_pb2_grpc,
            prediction_service_pb2_grpc,
        )

        super().__init__(model_name, version, max_batch)
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
        """{signature: {"inputs": {key: (dtype, shape)}, "outputs": {...}}} from GetModelMetadata."""
        import tensorflow as tf
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        response = self._call(self.predictions.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)

        def tensors(infos):
            return {k: (tf.dtypes.as_dtype(v.dtype).name, [d.size for d in v.tensor_shape.dim]) for k, v in infos.items()}

        return {
            name: {"inputs": tensors(sig.inputs), "outputs": tensors(sig.outputs)}
            for name, sig in signature_map.signature_def.items()
            if not name.startswith("__")
        }

    def status(self):
        """[{"version": int, "state": str}] from ModelService.GetModelStatus."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call(self.model_service.GetModelStatus, request)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [{"version": s.version, "state": state_name(s.state)} for s in response.model_version_status]

    def close(self):
        self.channel.close()


class RestClient(_SignatureClient):
    """REST client for TF Serving's JSON API (`POST /v1/models/<name>[/versions/<v>]:predict` with
    "signature_name" and columnar "inputs").

    Args:
        target: str. host:port (or http://host:port) of the REST endpoint.
        model_name, version, timeout, max_batch: as for `Client`.
    """

    def __init__(self, target, model_name, version=None, timeout=30.0, max_batch=256):
        super().__init__(model_name, version, max_batch)
        self.base = (target if target.startswith("http") else f"http://{target}").rstrip("/")
        self.timeout = float(timeout)

    def _url(self, suffix=""):
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.base}/v1/models/{self.model_name}{version}{suffix}"

    def _request(self, url, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            payload = error.read().decode(errors="replace")
            try:
                message = json.loads(payload).get("error", payload)
            except json.JSONDecodeError:
                message = payload
            raise ServingClientError(error.code, message) from None

    def _predict(self, signature, inputs):
        body = {"signature_name": signature, "inputs": {k: v.tolist() for k, v in inputs.items()}}
        outputs = self._request(self._url(":predict"), body)["outputs"]
        if not isinstance(outputs, dict):  # TF Serving unwraps a single output
            outputs = {self._single_output(signature): outputs}
        return {k: np.asarray(v, np.int32 if k == "codes" else np.float32) for k, v in outputs.items()}

    def _single_output(self, signature):
        return {"reconstruct": "reconstruction", "serving_default": "reconstruction", "sample": "x"}.get(signature, "output")

    def metadata(self):
        signatures = self._request(self._url("/metadata"))["metadata"]["signature_def"]["signature_def"]
        return {name: {"inputs": s["inputs"], "outputs": s["outputs"]} for name, s in signatures.items() if not name.startswith("__")}

    def status(self):
        return [{"version": int(s["version"]), "state": s["state"]} for s in self._request(self._url())["model_version_status"]]
