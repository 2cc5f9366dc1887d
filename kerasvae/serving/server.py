"""An embedded server speaking TF Serving's protocol: gRPC `tensorflow.serving.PredictionService`
(Predict, GetModelMetadata; Classify, Regress and MultiInference answer UNIMPLEMENTED),
`ModelService.GetModelStatus`, and the REST API (`/v1/models/<name>[/versions/<v>][:predict|/metadata]`).

For development, demos and tests where `tensorflow_model_server` is absent; clients cannot tell the two
apart. It loads SavedModels through their signatures only (no kerasvae model code runs), polls the
serving root for new versions, and shuts down gracefully on SIGTERM.

Client mistakes get TF Serving's status codes and never UNKNOWN or INTERNAL: a request that does not parse,
names a malformed model, or sends the wrong keys, dtypes, shapes or non-finite values is INVALID_ARGUMENT;
an unknown model or version NOT_FOUND; a request over the byte, batch or concurrency limits
RESOURCE_EXHAUSTED; one whose deadline passes DEADLINE_EXCEEDED. Tensors are checked against the signature
from their declared dtype and shape before any value is materialized, so memory stays bounded by the limits.
"""

import json
import logging
import re
import signal
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from kerasvae.serving.models import ModelRegistry, ServingError, clip

log = logging.getLogger("kerasvae.serving")

DEFAULT_LIMITS = {
    "max_request_bytes": 64 << 20,
    "max_batch_size": 4096,
    "max_concurrent_requests": 64,
    "request_timeout": 30.0,  # seconds; a gRPC client's own deadline applies when it is sooner
}
# gRPC status -> HTTP status, as Google's APIs map them.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}
MODEL_RUN_THREADS = 16


class Limiter:
    """Admission control shared by gRPC and REST: at most `max_concurrent` model runs in flight (queued or
    running); each caller gets its answer or DEADLINE_EXCEEDED by its deadline. TF cannot interrupt a running
    function, so a run past its deadline finishes in the background and holds its slot until then: memory
    stays bounded by the limits however many callers give up."""

    def __init__(self, max_concurrent):
        self.max_concurrent = int(max_concurrent)
        self.slots = threading.BoundedSemaphore(self.max_concurrent)
        self.pool = futures.ThreadPoolExecutor(min(MODEL_RUN_THREADS, self.max_concurrent), thread_name_prefix="kerasvae-run")

    def run(self, fn, deadline):
        """fn() by `deadline` (a time.monotonic() value), or a ServingError."""
        if time.monotonic() >= deadline:
            raise ServingError("DEADLINE_EXCEEDED", "The request's deadline passed before its model run could start")
        if not self.slots.acquire(blocking=False):
            raise ServingError("RESOURCE_EXHAUSTED", f"{self.max_concurrent} requests are in flight, the limit; retry later")
        try:
            future = self.pool.submit(fn)
        except RuntimeError:  # the pool is shut down
            self.slots.release()
            raise ServingError("UNAVAILABLE", "The server is shutting down") from None
        future.add_done_callback(lambda _: self.slots.release())
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except futures.TimeoutError:
            future.cancel()  # a run still queued never starts; a running one finishes in the background
            raise ServingError("DEADLINE_EXCEEDED", "The model run did not finish before the request's deadline") from None

    def shutdown(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


# === gRPC: TF Serving's PredictionService and ModelService ===


class PredictionService:
    def __init__(self, registry, limiter, limits):
        self.registry, self.limiter, self.limits = registry, limiter, limits

    def Predict(self, request, context):
        remaining = context.time_remaining()  # None when the client set no deadline
        deadline = time.monotonic() + min(self.limits["request_timeout"], float("inf") if remaining is None else remaining)
        loaded = self.registry.get(request.model_spec.name, _version(request.model_spec), request.model_spec.version_label)
        signature = request.model_spec.signature_name or "serving_default"
        max_batch_size = self.limits["max_batch_size"]
        loaded.check_inputs(signature, {key: _describe(key, proto) for key, proto in request.inputs.items()}, max_batch_size)
        output_keys = loaded.output_keys(signature, list(request.output_filter))
        try:  # dtypes and shapes are known good; what is left is content that does not fill them
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        except (TypeError, ValueError) as error:
            raise ServingError("INVALID_ARGUMENT", f"Cannot read the request's tensors (their values must fill their declared shapes): {clip(error, 200)}") from None
        outputs = self.limiter.run(lambda: loaded.run(signature, inputs, max_batch_size), deadline)
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, loaded, signature)
        for key in output_keys:
            response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
        return response

    def GetModelMetadata(self, request, context):
        if list(request.metadata_field) != ["signature_def"]:
            raise ServingError("INVALID_ARGUMENT", "Metadata field signature_def is the only one supported")
        loaded = self.registry.get(request.model_spec.name, _version(request.model_spec), request.model_spec.version_label)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in loaded.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_spec(response.model_spec, loaded)
        response.metadata["signature_def"].Pack(signature_map)
        return response


class ModelService:
    def __init__(self, registry):
        self.registry = registry

    def GetModelStatus(self, request, context):
        loaded = self.registry.get(request.model_spec.name, _version(request.model_spec), request.model_spec.version_label)
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add(version=loaded.version)
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response


class _Unparsable:
    """What the request deserializer hands on instead of raising (gRPC would answer INTERNAL)."""

    def __init__(self, error):
        self.error = error


def _method(handler, request_class):
    """A gRPC unary method around `handler(request, context) -> response`: bytes that do not parse and
    ServingErrors become their status codes; anything else is a server bug, logged and answered INTERNAL."""

    def parse(data):
        try:
            return request_class.FromString(data)
        except DecodeError as error:
            return _Unparsable(error)

    def call(request, context):
        try:
            if isinstance(request, _Unparsable):
                raise ServingError("INVALID_ARGUMENT", f"Cannot parse the {request_class.__name__}: {clip(request.error, 200)}")
            return handler(request, context)
        except ServingError as error:
            context.abort(getattr(grpc.StatusCode, error.code), error.message)
        except Exception:  # a bug must not take the server down or leak a traceback to clients
            log.exception("internal error in %s", handler.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "Internal server error; see the server log")

    return grpc.unary_unary_rpc_method_handler(call, request_deserializer=parse, response_serializer=lambda r: r.SerializeToString())


def _describe(key, proto):
    """(tf.DType, shape) a TensorProto declares, read without materializing its values."""
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:
        raise ServingError("INVALID_ARGUMENT", f"Input \"{clip(key)}\" has an unknown dtype enum {proto.dtype}") from None
    if proto.tensor_shape.unknown_rank or any(d.size < 0 for d in proto.tensor_shape.dim):
        raise ServingError("INVALID_ARGUMENT", f"Input \"{clip(key)}\" must have a fully defined shape")
    return dtype, [d.size for d in proto.tensor_shape.dim]


def _version(model_spec):
    return model_spec.version.value if model_spec.HasField("version") else None


def _fill_spec(spec, loaded, signature=None):
    spec.name = loaded.name
    spec.version.value = loaded.version
    if signature:
        spec.signature_name = signature


# === REST: TF Serving's JSON API ===

REST_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d{1,18}))?(?::(predict)|/(metadata))?$")
CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")


def rest_predict(loaded, body, max_batch_size, run=None):
    """TF Serving's :predict body -> response: row format ("instances" -> "predictions") or columnar
    ("inputs" -> "outputs"); a single-input signature takes plain values instead of dicts. `run(fn)` runs
    the model (the server passes its Limiter); None calls it directly."""
    signature = body.get("signature_name", "serving_default")
    if not isinstance(signature, str):
        raise ServingError("INVALID_ARGUMENT", '"signature_name" must be a string')
    specs = loaded.input_specs(signature)
    if ("instances" in body) == ("inputs" in body):
        raise ServingError("INVALID_ARGUMENT", 'The request must have exactly one of "instances" or "inputs"')
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise ServingError("INVALID_ARGUMENT", '"instances" must be a non-empty list')
        if isinstance(rows[0], dict):
            if not all(isinstance(row, dict) and set(row) == set(specs) for row in rows):
                raise ServingError("INVALID_ARGUMENT", f"Every instance must be an object with exactly the inputs {sorted(specs)}")
            columns = {k: [row[k] for row in rows] for k in specs}
        else:
            columns = {next(iter(specs)): rows}
    else:
        columns = body["inputs"] if isinstance(body["inputs"], dict) else {next(iter(specs)): body["inputs"]}
    try:
        inputs = {k: np.asarray(v, dtype=specs[k].dtype.as_numpy_dtype) if k in specs else np.asarray(v) for k, v in columns.items()}
    except (TypeError, ValueError, OverflowError) as error:  # ragged lists, strings, ints beyond int32
        raise ServingError("INVALID_ARGUMENT", f"Cannot read the request's values: {clip(error, 200)}") from None
    outputs = (run or (lambda fn: fn()))(lambda: loaded.run(signature, inputs, max_batch_size))
    if "instances" in body:
        keys = sorted(outputs)
        rows = [{k: outputs[k][i].tolist() for k in keys} for i in range(len(outputs[keys[0]]))]
        return {"predictions": [row[keys[0]] for row in rows] if len(keys) == 1 else rows}
    return {"outputs": {k: v.tolist() for k, v in outputs.items()} if len(outputs) > 1 else next(iter(outputs.values())).tolist()}


def make_rest_handler(registry, limits, limiter=None):
    limiter = limiter or Limiter(limits["max_concurrent_requests"])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = limits["request_timeout"]  # socket timeout: a client that stalls mid-request is dropped

        def log_message(self, *args):  # keep the access log off stderr
            pass

        def _answer(self, code, payload):
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if code != 200:
                # After an error the rest of the request body may still be unread: never parse it as a request.
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def _body(self):
            if self.headers.get("Transfer-Encoding"):
                raise ServingError("INVALID_ARGUMENT", "Chunked request bodies are not supported; send Content-Length")
            text = self.headers.get("Content-Length") or "0"
            if not CONTENT_LENGTH.fullmatch(text):
                raise ServingError("INVALID_ARGUMENT", f"Content-Length must be a non-negative integer, got {clip(text)!r}")
            length = int(text)
            if length > limits["max_request_bytes"]:
                raise ServingError("RESOURCE_EXHAUSTED", f"Request of {length} bytes exceeds {limits['max_request_bytes']}")
            raw = self.rfile.read(length)
            if len(raw) < length:
                raise ServingError("INVALID_ARGUMENT", f"The body ended after {len(raw)} of {length} bytes")
            try:
                body = json.loads(raw or b"{}")
            except (ValueError, RecursionError) as error:  # bad JSON or UTF-8, or nesting deeper than Python's stack
                raise ServingError("INVALID_ARGUMENT", f"Malformed JSON: {clip(error, 200)}") from None
            if not isinstance(body, dict):
                raise ServingError("INVALID_ARGUMENT", "The request body must be a JSON object")
            return body

        def _route(self, method):
            deadline = time.monotonic() + limits["request_timeout"]
            match = REST_PATH.match(self.path)
            try:
                if not match or (method == "POST") != bool(match.group(3)):
                    raise ServingError("NOT_FOUND", f"Malformed request: {method} {clip(self.path)}")
                name, version = match.group(1), match.group(2)
                loaded = registry.get(name, int(version) if version else None)
                if match.group(3):
                    body = self._body()
                    run = lambda fn: limiter.run(fn, deadline)
                    return self._answer(200, rest_predict(loaded, body, limits["max_batch_size"], run))
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
            except OSError:
                raise
            except Exception:  # a bug must not drop the connection without an answer
                log.exception("internal error in REST %s %s", method, clip(self.path))
                self._answer(500, {"error": "Internal server error; see the server log"})

        def _handle(self, method):
            try:
                self._route(method)
            except OSError:  # the client timed out or went away mid-request: nobody is left to answer
                self.close_connection = True

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

    return Handler


class RestServer(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` at once; a connection beyond that is answered
    429 at once and closed, so a flood of connections cannot exhaust threads or memory."""

    daemon_threads = True
    TOO_MANY_BODY = b'{"error": "Too many connections; retry later"}'
    TOO_MANY = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(TOO_MANY_BODY), TOO_MANY_BODY))

    def __init__(self, address, handler, max_connections):
        self.connections = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self.connections.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(self.TOO_MANY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.connections.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()


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
        limits: max_request_bytes, max_batch_size, max_concurrent_requests (model runs in flight, gRPC and
            REST together; also the cap on gRPC calls and on REST connections), request_timeout (seconds a
            request may take; see DEFAULT_LIMITS).
    """

    def __init__(self, root, port=8500, rest_port=None, host="127.0.0.1", model_config=None, poll_seconds=2.0, **limits):
        unknown = sorted(set(limits) - set(DEFAULT_LIMITS))
        if unknown:
            raise ValueError(f"Unknown server limit(s) {unknown}; expected some of {sorted(DEFAULT_LIMITS)}.")
        self.limits = {**DEFAULT_LIMITS, **{k: v for k, v in limits.items() if v is not None}}
        for name, value in self.limits.items():
            if not value > 0:
                raise ValueError(f"Server limit {name} must be > 0, got {value}.")
        self.registry = ModelRegistry(root, model_config)
        self.registry.poll()
        if not self.registry.models:
            raise ValueError(f"No loadable model version under {model_config or root}.")
        self.poll_seconds = float(poll_seconds)
        self.stopped = threading.Event()
        self.limiter = Limiter(self.limits["max_concurrent_requests"])
        options = [
            ("grpc.max_receive_message_length", self.limits["max_request_bytes"]),
            ("grpc.max_send_message_length", 1 << 30),
            # gRPC sets SO_REUSEPORT by default: a second server on a taken port would bind, and requests would
            # be split between the two without a word. Without it the bind fails and we say so.
            ("grpc.so_reuseport", 0),
        ]
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MODEL_RUN_THREADS),
            options=options,
            maximum_concurrent_rpcs=self.limits["max_concurrent_requests"],
        )
        prediction, models = PredictionService(self.registry, self.limiter, self.limits), ModelService(self.registry)
        self.grpc.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
                "Predict": _method(prediction.Predict, predict_pb2.PredictRequest),
                "GetModelMetadata": _method(prediction.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest),
            }),
            grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", {
                "GetModelStatus": _method(models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest),
            }),
        ])
        try:
            self.grpc_port = self.grpc.add_insecure_port(f"{host}:{port}")
        except RuntimeError:  # recent grpcio raises where older ones returned 0
            self.grpc_port = 0
        if self.grpc_port == 0:
            raise ValueError(f"Cannot bind gRPC to {host}:{port} (in use, or not an address of this machine).")
        self.rest = None
        if rest_port is not None:
            handler = make_rest_handler(self.registry, self.limits, self.limiter)
            try:
                self.rest = RestServer((host, rest_port), handler, self.limits["max_concurrent_requests"])
            except OSError as error:
                raise ValueError(f"Cannot bind REST to {host}:{rest_port}: {error.strerror or error}.") from None
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
        self.limiter.shutdown()


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
