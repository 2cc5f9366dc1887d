"""An embedded server speaking TF Serving's protocol: gRPC `tensorflow.serving.PredictionService`
(Predict, GetModelMetadata; Classify, Regress and MultiInference answer UNIMPLEMENTED),
`ModelService.GetModelStatus`, and the REST API (`/v1/models/<name>[/versions/<v>][:predict|/metadata]`).

For development, demos and tests where `tensorflow_model_server` is absent; clients cannot tell the two
apart. It loads SavedModels through their signatures only (no kerasvae model code runs), polls the
serving root for new versions, and shuts down gracefully on SIGTERM.
"""

import json
import logging
import re
import signal
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from kerasvae.serving.models import ModelRegistry, ServingError

log = logging.getLogger("kerasvae.serving")

DEFAULT_LIMITS = {"max_request_bytes": 64 << 20, "max_batch_size": 4096, "max_concurrent_requests": 64}
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "UNIMPLEMENTED": 501}


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry, limits):
        self.registry, self.limits = registry, limits

    def Predict(self, request, context):
        try:
            loaded = self.registry.get(request.model_spec.name, _version(request.model_spec))
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
            outputs = loaded.run(request.model_spec.signature_name or "serving_default", inputs, self.limits["max_batch_size"])
        except ServingError as error:
            context.abort(getattr(grpc.StatusCode, error.code), error.message)
        except (TypeError, ValueError) as error:  # an unparsable TensorProto
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Cannot read the request's tensors: {error}")
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, loaded, request.model_spec.signature_name or "serving_default")
        for key, value in outputs.items():
            if not request.output_filter or key in request.output_filter:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Metadata field signature_def is the only one supported")
        try:
            loaded = self.registry.get(request.model_spec.name, _version(request.model_spec))
        except ServingError as error:
            context.abort(getattr(grpc.StatusCode, error.code), error.message)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in loaded.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_spec(response.model_spec, loaded)
        response.metadata["signature_def"].Pack(signature_map)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry):
        self.registry = registry

    def GetModelStatus(self, request, context):
        try:
            loaded = self.registry.get(request.model_spec.name, _version(request.model_spec))
        except ServingError as error:
            context.abort(getattr(grpc.StatusCode, error.code), error.message)
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add(version=loaded.version)
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response


def _version(model_spec):
    return model_spec.version.value if model_spec.HasField("version") else None


def _fill_spec(spec, loaded, signature=None):
    spec.name = loaded.name
    spec.version.value = loaded.version
    if signature:
        spec.signature_name = signature


# === REST: TF Serving's JSON API ===

REST_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(?::(predict)|/(metadata))?$")


def rest_predict(loaded, body, max_batch_size):
    """TF Serving's :predict body -> response: row format ("instances" -> "predictions") or columnar
    ("inputs" -> "outputs"); a single-input signature takes plain values instead of dicts."""
    signature = body.get("signature_name", "serving_default")
    if signature not in loaded.functions:
        return loaded.run(signature, {}, max_batch_size)  # raises the standard INVALID_ARGUMENT
    specs = loaded.input_specs(signature)
    if ("instances" in body) == ("inputs" in body):
        raise ServingError("INVALID_ARGUMENT", 'The request must have exactly one of "instances" or "inputs"')
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise ServingError("INVALID_ARGUMENT", '"instances" must be a non-empty list')
        columns = {k: [row[k] for row in rows] for k in specs} if isinstance(rows[0], dict) else {next(iter(specs)): rows}
    else:
        columns = body["inputs"] if isinstance(body["inputs"], dict) else {next(iter(specs)): body["inputs"]}
    try:
        inputs = {k: np.asarray(v, dtype=specs[k].dtype.as_numpy_dtype) if k in specs else np.asarray(v) for k, v in columns.items()}
    except (KeyError, TypeError, ValueError) as error:
        raise ServingError("INVALID_ARGUMENT", f"Cannot read the request's values: {error}") from None
    outputs = loaded.run(signature, inputs, max_batch_size)
    if "instances" in body:
        keys = sorted(outputs)
        rows = [{k: outputs[k][i].tolist() for k in keys} for i in range(len(outputs[keys[0]]))]
        return {"predictions": [row[keys[0]] for row in rows] if len(keys) == 1 else rows}
    return {"outputs": {k: v.tolist() for k, v in outputs.items()} if len(outputs) > 1 else next(iter(outputs.values())).tolist()}


def make_rest_handler(registry, limits):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep the access log off stderr
            pass

        def _answer(self, code, payload):
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self, method):
            match = REST_PATH.match(self.path)
            try:
                if not match or (method == "POST") != bool(match.group(3)):
                    raise ServingError("NOT_FOUND", f"Malformed request: {method} {self.path}")
                name, version = match.group(1), match.group(2)
                loaded = registry.get(name, int(version) if version else None)
                if match.group(3):
                    length = int(self.headers.get("Content-Length") or 0)
                    if length > limits["max_request_bytes"]:
                        raise ServingError("RESOURCE_EXHAUSTED", f"Request of {length} bytes exceeds {limits['max_request_bytes']}")
                    try:
                        body = json.loads(self.rfile.read(length) or b"{}")
                    except json.JSONDecodeError as error:
                        raise ServingError("INVALID_ARGUMENT", f"Malformed JSON: {error}") from None
                    return self._answer(200, rest_predict(loaded, body, limits["max_batch_size"]))
                if match.group(4):
                    return self._answer(200, {
                        "model_spec": {"name": name, "signature_name": "", "version": str(loaded.version)},
                        "metadata": {"signature_def": {"signature_def": {
                            k: _signature_json(v) for k, v in loaded.signature_defs.items()}}},
                    })
                return self._answer(200, {"model_version_status": [
                    {"version": str(loaded.version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
            except ServingError as error:
                self._answer(HTTP_STATUS.get(error.code, 400), {"error": error.message})

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

    return Handler


def _signature_json(signature_def):
    def tensors(infos):
        return {k: {"dtype": tf.dtypes.as_dtype(v.dtype).name, "tensor_shape": [d.size for d in v.tensor_shape.dim]} for k, v in infos.items()}

    return {"inputs": tensors(signature_def.inputs), "outputs": tensors(signature_def.outputs), "method_name": signature_def.method_name}


# === The server ===


class Server:
    """gRPC (and optionally REST) servers over one ModelRegistry, with a polling thread.

    Args:
        root: str or Path. Serving root (e.g. saved_models).
        port: int. gRPC port; 0 picks a free one (see `grpc_port`).
        rest_port: int or None. REST port; None serves no REST, 0 picks a free one.
        host: str. Interface to bind. Defaults to 127.0.0.1 (pass 0.0.0.0 to serve other machines).
        model_config: str or None. TF Serving models.config to serve instead of every folder under root.
        poll_seconds: float. How often to look for new versions. Defaults to 2.
        limits: dict. max_request_bytes, max_batch_size, max_concurrent_requests (see DEFAULT_LIMITS).
    """

    def __init__(self, root, port=8500, rest_port=None, host="127.0.0.1", model_config=None, poll_seconds=2.0, **limits):
        self.limits = {**DEFAULT_LIMITS, **limits}
        self.registry = ModelRegistry(root, model_config)
        self.registry.poll()
        if not self.registry.models:
            raise ValueError(f"No loadable model version under {model_config or root}.")
        self.poll_seconds = float(poll_seconds)
        self.stopped = threading.Event()
        options = [
            ("grpc.max_receive_message_length", self.limits["max_request_bytes"]),
            ("grpc.max_send_message_length", 1 << 30),
        ]
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            options=options,
            maximum_concurrent_rpcs=self.limits["max_concurrent_requests"],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self.registry, self.limits), self.grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.registry), self.grpc)
        self.grpc_port = self.grpc.add_insecure_port(f"{host}:{port}")
        if self.grpc_port == 0:
            raise ValueError(f"Cannot bind gRPC to {host}:{port}.")
        self.rest = None
        if rest_port is not None:
            self.rest = ThreadingHTTPServer((host, rest_port), make_rest_handler(self.registry, self.limits))
            self.rest.daemon_threads = True
        self.host = host

    @property
    def rest_port(self):
        return self.rest.server_address[1] if self.rest else None

    def start(self):
        self.grpc.start()
        if self.rest:
            threading.Thread(target=self.rest.serve_forever, daemon=True).start()
        threading.Thread(target=self._poll_forever, daemon=True).start()
        return self

    def _poll_forever(self):
        while not self.stopped.wait(self.poll_seconds):
            try:
                self.registry.poll()
            except Exception as error:  # noqa: BLE001 - polling must outlive a broken folder
                log.warning("polling failed: %s", error)

    def stop(self, grace=5.0):
        """Stop accepting requests, let in-flight ones finish (up to `grace` seconds), then stop."""
        self.stopped.set()
        if self.rest:
            self.rest.shutdown()
        self.grpc.stop(grace).wait()


def serve(root, port=8500, rest_port=None, **options):
    """Run a Server until SIGTERM or SIGINT; prints one line with the bound ports once ready."""
    server = Server(root, port=port, rest_port=rest_port, **options).start()
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    models = ", ".join(f"{m.name}:{m.version}" for m in server.registry.models.values())
    rest = f", REST on {server.host}:{server.rest_port}" if server.rest else ""
    print(f"kerasvae serve: gRPC on {server.host}:{server.grpc_port}{rest}; models {models}", flush=True)
    done.wait()
    server.stop()
    print("kerasvae serve: stopped", flush=True)
