"""An embedded server speaking TF Serving's protocol: gRPC `tensorflow.serving.PredictionService`
(Predict, GetModelMetadata; Classify and Regress check the signature as TF Serving does and then answer
UNIMPLEMENTED, MultiInference is UNIMPLEMENTED), `ModelService.GetModelStatus`, and the REST API
(`/v1/models/<name>[/versions/<v>|/labels/<l>][:predict|:classify|:regress|/metadata]`) with TF Serving's
JSON: the proto JSON mapping for status and metadata, its row and columnar tensor formats, and its
`{"error": ...}` bodies and HTTP status codes.

For development, demos and tests where `tensorflow_model_server` is absent; clients cannot tell the two
apart. It loads SavedModels through their signatures only (no kerasvae model code runs), polls the
serving root for new versions, and shuts down gracefully on SIGTERM.

Client mistakes get TF Serving's status codes and never UNKNOWN or INTERNAL: a request that does not parse,
names a malformed model, or sends the wrong keys, dtypes, shapes or non-finite values is INVALID_ARGUMENT;
an unknown model or version NOT_FOUND; a request over the byte, batch or concurrency limits
RESOURCE_EXHAUSTED; one whose deadline passes DEADLINE_EXCEEDED. Tensors are checked against the signature
from their declared dtype and shape before any value is materialized, so memory stays bounded by the limits.
"""

import base64
import binascii
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import zlib
from concurrent import futures
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    regression_pb2,
)

from kerasvae.serving.batching import Batcher, BatchingParameters, ServingBatchError
from kerasvae.serving.models import ModelRegistry, ServingError, clip

log = logging.getLogger("kerasvae.serving")

DEFAULT_LIMITS = {
    "max_request_bytes": 64 << 20,
    "max_batch_size": 4096,
    "max_concurrent_requests": 64,
    "request_timeout": 30.0,  # seconds; a gRPC client's own deadline applies when it is sooner
}
# gRPC status -> HTTP status, as TF Serving maps them (ToHTTPStatusCode in model_servers/http_server.cc).
HTTP_STATUS = {
    "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
    "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503,
    "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}
MODEL_RUN_THREADS = 16
LOG_FIELD = re.compile(r"[\w.:/@+%?=&,-]{1,200}")


class AccessLog:
    """`log_requests`: one line per REST or gRPC request on stderr, written when it is answered:

        2026-07-30T09:15:02.481Z 127.0.0.1:51234 REST "POST /v1/models/digits:predict" model=digits version=1
        signature=decode status=200 ms=4.2 in=412 out=2051

    (one line): time (UTC), peer, protocol, "method path" or gRPC method, what the request named or was
    served (- when unknown), the HTTP status or gRPC code, milliseconds, request and response bytes.
    Request-supplied text is quoted and clipped, so a request cannot break or forge a line.
    """

    def __init__(self):
        self.lock = threading.Lock()

    def write(self, peer, protocol, call, status, started, model=None, version=None, signature=None, bytes_in=0, bytes_out=0):
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = (f"{now} {_log_field(peer)} {protocol} {json.dumps(clip(call, 300))} model={_log_field(model)} "
                f"version={_log_field(version)} signature={_log_field(signature)} status={status} "
                f"ms={1000 * (time.perf_counter() - started):.1f} in={bytes_in} out={bytes_out}\n")
        with self.lock:  # sys.stderr is looked up per line: pytest and daemons may swap it
            sys.stderr.write(line)
            sys.stderr.flush()


def _log_field(value):
    text = "-" if value is None or value == "" else str(value)
    return text if LOG_FIELD.fullmatch(text) else json.dumps(clip(text))


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
        return self.wait(lambda: self.pool.submit(fn), deadline)

    def wait(self, submit, deadline):
        """The result of the Future `submit()` returns (a model run it queued) by `deadline`, holding a slot
        until the run is done, or a ServingError."""
        if time.monotonic() >= deadline:
            raise ServingError("DEADLINE_EXCEEDED", "The request's deadline passed before its model run could start")
        if not self.slots.acquire(blocking=False):
            raise ServingError("RESOURCE_EXHAUSTED", f"{self.max_concurrent} requests are in flight, the limit; retry later")
        try:
            future = submit()
        except RuntimeError:  # the pool is shut down
            self.slots.release()
            raise ServingError("UNAVAILABLE", "The server is shutting down") from None
        except BaseException:  # e.g. the batch queue is full
            self.slots.release()
            raise
        future.add_done_callback(lambda _: self.slots.release())
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except futures.TimeoutError:
            future.cancel()  # a run still queued never starts; a running one finishes in the background
            raise ServingError("DEADLINE_EXCEEDED", "The model run did not finish before the request's deadline") from None

    def shutdown(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


class ModelRunner:
    """How a Predict request, gRPC or REST, reaches its model: through the Limiter, and batched with
    concurrent requests (kerasvae.serving.batching.Batcher) when batching is on and the signature allows it.

    Args:
        limiter: Limiter.
        max_batch_size: int. The server's request batch limit (`limits["max_batch_size"]`).
        batching: BatchingParameters or None (no batching).
    """

    def __init__(self, limiter, max_batch_size, batching=None):
        self.limiter, self.max_batch_size = limiter, max_batch_size
        self.batcher = Batcher(batching) if batching is not None else None

    def predict(self, loaded, signature, inputs, deadline):
        """{output key: array} of `signature` on {input key: array} by `deadline`, or a ServingError."""
        if self.batcher is None or not loaded.batchable(signature):
            return self.limiter.run(lambda: loaded.run(signature, inputs, self.max_batch_size), deadline)
        loaded.check_values(signature, inputs, self.max_batch_size)  # a bad request never joins a batch
        # Requests batch together when they name the same loaded version and signature with the same dtypes
        # and non-batch shapes; the LoadedVersion object (not its number) keys the queue across a reload.
        key = (loaded, signature, tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(inputs.items())))
        try:
            return self.limiter.wait(lambda: self.batcher.submit(key, inputs, lambda batch: loaded.call(signature, batch)), deadline)
        except ServingBatchError as error:
            raise ServingError(error.code, error.message) from None

    def shutdown(self):
        if self.batcher is not None:
            self.batcher.stop()
        self.limiter.shutdown()


# === gRPC: TF Serving's PredictionService and ModelService ===


class PredictionService:
    def __init__(self, registry, runner, limits):
        self.registry, self.runner, self.limits = registry, runner, limits

    def Predict(self, request, context):
        remaining = context.time_remaining()  # None when the client set no deadline
        deadline = time.monotonic() + min(self.limits["request_timeout"], float("inf") if remaining is None else remaining)
        loaded = self.registry.get(request.model_spec.name, _version(request.model_spec), request.model_spec.version_label)
        signature = request.model_spec.signature_name or "serving_default"
        if signature not in loaded.signature_defs:  # predict_util.cc's answer (REST's, from the handler, differs)
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{clip(signature)}" not found.')
        max_batch_size = self.limits["max_batch_size"]
        loaded.check_inputs(signature, {key: _describe(key, proto) for key, proto in request.inputs.items()}, max_batch_size)
        output_keys = loaded.output_keys(signature, list(request.output_filter))
        try:  # dtypes and shapes are known good; what is left is content that does not fill them
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        except (TypeError, ValueError) as error:
            raise ServingError("INVALID_ARGUMENT", f"Cannot read the request's tensors (their values must fill their declared shapes): {clip(error, 200)}") from None
        outputs = self.runner.predict(loaded, signature, inputs, deadline)
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, loaded, signature)
        for key in output_keys:
            response.outputs[key].CopyFrom(as_proto_field(outputs[key]))
        return response

    def GetModelMetadata(self, request, context):
        if not request.metadata_field:
            raise ServingError("INVALID_ARGUMENT", "GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise ServingError("INVALID_ARGUMENT", f"Metadata field {clip(field)} is not supported")
        return metadata_response(self.registry.get(request.model_spec.name, _version(request.model_spec), request.model_spec.version_label))

    def Classify(self, request, context):
        return self._example_method("classify", request)

    def Regress(self, request, context):
        return self._example_method("regress", request)

    def _example_method(self, method, request):
        loaded = self.registry.get(request.model_spec.name, _version(request.model_spec), request.model_spec.version_label)
        raise loaded.example_method_error(method, request.model_spec.signature_name or "serving_default")


class ModelService:
    def __init__(self, registry):
        self.registry = registry

    def GetModelStatus(self, request, context):
        if not request.HasField("model_spec"):
            raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")  # get_model_status_impl.cc
        return status_response(self.registry.status(request.model_spec.name, _version(request.model_spec)))


def metadata_response(loaded):
    """GetModelMetadataResponse: every SignatureDef of the version, packed as TF Serving packs them."""
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in loaded.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature_def)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _fill_spec(response.model_spec, loaded)
    response.metadata["signature_def"].Pack(signature_map)
    return response


def status_response(states):
    """GetModelStatusResponse from ModelRegistry.status's [(version, None while served, else the END
    message: "" unloaded, the error of a failed load)]."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, ended in states:
        state = get_model_status_pb2.ModelVersionStatus.AVAILABLE if ended is None else get_model_status_pb2.ModelVersionStatus.END
        version_status = response.model_version_status.add(version=version, state=state)
        version_status.status.SetInParent()  # TF Serving always sets the health: error_code OK, error_message ""
        if ended:
            version_status.status.error_code = error_codes_pb2.UNKNOWN
            version_status.status.error_message = ended
    return response


class _Unparsable:
    """What the request deserializer hands on instead of raising (gRPC would answer INTERNAL)."""

    def __init__(self, error, size):
        self.error, self.size = error, size


def _method(name, handler, request_class, access_log):
    """A gRPC unary method around `handler(request, context) -> response`: bytes that do not parse and
    ServingErrors become their status codes; anything else is a server bug, logged and answered INTERNAL."""

    def parse(data):
        try:
            return request_class.FromString(data)
        except DecodeError as error:
            return _Unparsable(error, len(data))

    def call(request, context):
        started, code, response = time.perf_counter(), "OK", None
        try:
            if isinstance(request, _Unparsable):
                raise ServingError("INVALID_ARGUMENT", f"Cannot parse the {request_class.__name__}: {clip(request.error, 200)}")
            response = handler(request, context)
            return response
        except ServingError as error:
            code = error.code
            context.abort(getattr(grpc.StatusCode, error.code), error.message)
        except Exception:  # a bug must not take the server down or leak a traceback to clients
            code = "INTERNAL"
            log.exception("internal error in %s", name)
            context.abort(grpc.StatusCode.INTERNAL, "Internal server error; see the server log")
        finally:
            if access_log:
                parsed = not isinstance(request, _Unparsable)
                access_log.write(context.peer(), "gRPC", name, code, started, *(_served(request, response) if parsed else ()),
                                 bytes_in=request.ByteSize() if parsed else request.size,
                                 bytes_out=response.ByteSize() if response is not None else 0)

    return grpc.unary_unary_rpc_method_handler(call, request_deserializer=parse, response_serializer=lambda r: r.SerializeToString())


def _served(request, response):
    """(model, version, signature) for the access log: what was served where the response says, else what
    the request asked for."""
    spec = request.model_spec
    version, signature = _version(spec), spec.signature_name
    served = getattr(response, "model_spec", None)
    if served is not None and served.HasField("version"):
        version, signature = served.version.value, served.signature_name or signature
    elif getattr(response, "model_version_status", None):
        version = response.model_version_status[0].version
    return spec.name, version, signature


# Tensor::AsProtoField's typed field per dtype (tensor.cc's ProtoHelper); half_val holds 16-bit floats' bits,
# the complex fields interleave real and imaginary parts.
PROTO_FIELDS = {"float32": "float_val", "float64": "double_val", "int32": "int_val", "int16": "int_val",
                "int8": "int_val", "uint8": "int_val", "uint16": "int_val", "int64": "int64_val",
                "uint32": "uint32_val", "uint64": "uint64_val", "bool": "bool_val", "float16": "half_val",
                "bfloat16": "half_val", "complex64": "scomplex_val", "complex128": "dcomplex_val"}


def as_proto_field(value):
    """A Predict output as TF Serving writes it: Tensor::AsProtoField, every value in the dtype's typed
    field (float_val, int_val, ...; strings in string_val), not tensor_content, which the server uses only
    with --enable_serialization_as_tensor_content (predict_util.cc's RunPredict defaults to kAsProtoField).
    Clients that read outputs["x"].float_val, as the Go, Java and C++ examples do, find the values there."""
    array = np.asarray(value)
    field = PROTO_FIELDS.get(array.dtype.name)
    if field is None:  # strings: tf.make_tensor_proto fills string_val
        return tf.make_tensor_proto(array)
    proto = tf.make_tensor_proto(np.zeros((0,), array.dtype))  # the dtype enum as TensorFlow names it
    proto.tensor_shape.CopyFrom(tf.TensorShape(array.shape).as_proto())
    flat = array.reshape(-1)
    if field == "half_val":
        flat = flat.view(np.uint16)
    elif field in ("scomplex_val", "dcomplex_val"):
        flat = flat.view(np.float32 if field == "scomplex_val" else np.float64)
    getattr(proto, field).extend(flat.tolist())
    return proto


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
# Mirrors tensorflow_serving/model_servers/http_rest_api_handler.cc, http_rest_api_util.cc and
# util/json_tensor.cc: the same routes, checks, messages and JSON.

V1_PATH = re.compile(r"/v1/.*", re.IGNORECASE)  # what TF Serving's handler sees; the rest is a bare 404 page
PREDICTION_PATH = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE)
MODEL_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE)
NOT_FOUND_PAGE = b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n</BODY></HTML>\n"  # evhttp's
CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
DEBUG_CHARS = 256  # kMaxJsonDebugStringBytes: JSON quoted in an error message is cut to this
INT_RANGES = {  # integer dtype -> the JSON integers it takes (rapidjson's IsInt, IsInt64, IsUint, IsUint64)
    tf.int8: (-(2**31), 2**31 - 1), tf.int16: (-(2**31), 2**31 - 1), tf.int32: (-(2**31), 2**31 - 1),
    tf.uint8: (-(2**31), 2**31 - 1), tf.int64: (-(2**63), 2**63 - 1), tf.uint32: (0, 2**32 - 1), tf.uint64: (0, 2**64 - 1),
}
WRITABLE = {np.dtype(t) for t in (np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64, np.bool_)}


def _invalid(message):
    return ServingError("INVALID_ARGUMENT", message)


def _debug(value):
    """A JSON value as TF Serving quotes it in an error message (JsonValueToDebugString): its first 256
    characters, encoded lazily so quoting a 60 MB body costs nothing."""
    text = ""
    for chunk in json.JSONEncoder().iterencode(value):
        text += chunk
        if len(text) >= DEBUG_CHARS:
            break
    return text[:DEBUG_CHARS]


def _format_error(doc, message):
    return _invalid(f"JSON Value: {_debug(doc)} {message}")


def _json_type(value):
    if value is None or isinstance(value, bool):
        return str(value).replace("None", "Null")
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _type_name(dtype):
    """TF's DataTypeString, as TF Serving names dtypes in messages: float, double, int32, string, half..."""
    return types_pb2.DataType.Name(dtype.as_datatype_enum)[3:].lower()


def _type_error(value, dtype):
    return _invalid(f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of expected type: {_type_name(dtype)}")


def parse_json_body(raw):
    """A request body as TF Serving's ParseJson and FillSignature read it: one JSON object, NaN and Infinity
    allowed, anything after the object ignored, "signature_name" a string if present."""
    if not raw.strip(b" \t\r\n"):
        raise _invalid("JSON Parse error: The document is empty")
    try:
        doc = json.JSONDecoder().raw_decode(raw.decode().lstrip(" \t\r\n"))[0]
    except (ValueError, RecursionError) as error:  # bad JSON or UTF-8, or nesting deeper than Python's stack
        raise _invalid(f"JSON Parse error: {clip(error, 200)}") from None
    if not isinstance(doc, dict):
        raise _format_error(doc, "Is not object")
    if not isinstance(doc.get("signature_name", ""), str):
        raise _format_error(doc, "not formatted correctly. 'signature_name' key must be a string value.")
    return doc


# JSON -> tensors (FillPredictRequestFromJson). Dense numeric values take numpy's one-pass reading; anything
# else is walked element by element as json_tensor.cc walks it, which finds TF Serving's error (or reads strings).


CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")


def _read_chunked(rfile, limit):
    """A Transfer-Encoding: chunked body (RFC 9112 section 7.1) of at most `limit` bytes; trailers are read
    and dropped."""
    body = bytearray()
    while True:
        line = rfile.readline(1 << 12)
        size_text = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not CHUNK_SIZE.fullmatch(size_text):
            raise _invalid("Malformed chunked request body")
        size = int(size_text, 16)
        if size == 0:
            for _ in range(64):
                if rfile.readline(1 << 12) in (b"\r\n", b"\n", b""):
                    return bytes(body)
            raise _invalid("Malformed chunked request body: too many trailers")
        if len(body) + size > limit:
            raise ServingError("RESOURCE_EXHAUSTED", f"Request of more than {limit} bytes")
        chunk = rfile.read(size)
        if len(chunk) < size or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise _invalid("Malformed chunked request body")
        body += chunk


def _gunzip(raw, limit):
    """A gzip request body, inflated to at most `limit` bytes (a small body must not inflate without bound)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as error:
        raise _invalid(f"Cannot gunzip the request body: {error}") from None
    if len(body) > limit or inflater.unconsumed_tail:
        raise ServingError("RESOURCE_EXHAUSTED", f"Request inflates to more than {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise _invalid("Cannot gunzip the request body: it ends early, or goes on past its end")
    return body


def _is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_named(value):
    """An object of named tensors (a {"b64": ...} object is a value, not names)."""
    return isinstance(value, dict) and not _is_b64(value)


def _fast_array(value, dtype):
    """`value` read by numpy in one pass if it is a dense array of JSON values `dtype` takes, else None."""
    if dtype not in INT_RANGES and dtype not in (tf.float32, tf.float64, tf.bool):
        return None
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError):  # ragged lists
        return None
    kind = array.dtype.kind
    if dtype == tf.bool:
        takes = kind == "b"
    elif dtype.is_floating:
        takes = kind in "iuf"  # a JSON number, whole or not
    else:
        low, high = INT_RANGES[dtype]
        takes = kind in "iu" and (array.size == 0 or (low <= array.min() and array.max() <= high))
    return array.astype(dtype.as_numpy_dtype, copy=False) if takes else None


def _element(value, dtype):
    """One JSON value as an element of a `dtype` tensor (AddValueToTensor), or TF Serving's error."""
    if isinstance(value, dict):  # only a {"b64": ...} object, and only in a string tensor
        if dtype != tf.string:
            raise _type_error(value, dtype)
        if not _is_b64(value):
            raise _format_error(value, "not formatted correctly for base64 data")
        text = value["b64"]
        if "=" not in text:  # absl::Base64Unescape takes unpadded input; padding that is there must be right
            text += "=" * (-len(text) % 4)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("Unable to base64 decode") from None
    if dtype in INT_RANGES:
        low, high = INT_RANGES[dtype]
        takes = type(value) is int and low <= value <= high
    elif dtype in (tf.float32, tf.float64):
        takes = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif dtype in (tf.bool, tf.string):
        takes = isinstance(value, bool if dtype == tf.bool else str)
    else:
        raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {_debug(value)} to type: {_type_name(dtype)}")
    if not takes:
        raise _type_error(value, dtype)
    return value.encode() if isinstance(value, str) else value


def _walk(value, dtype):
    """(shape, flat element list) of one JSON tensor (FillTensorProto): the shape is read down the first
    elements (GetDenseTensorShape) and every list must fill it."""
    shape, probe = [], value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat = []

    def fill(value, level):
        if not isinstance(value, list):
            if level != len(shape):
                raise _invalid(f"JSON Value: {_debug(value)} found at incorrect level: {level + 1} in the JSON DOM. Expected at level: {len(shape)}")
            flat.append(_element(value, dtype))
        elif level >= len(shape):
            raise _invalid(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
        elif len(value) != shape[level]:
            raise _invalid(f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}")
        else:
            for item in value:
                fill(item, level + 1)

    fill(value, 0)
    return shape, flat


def _array(shape, flat, dtype):
    try:
        if dtype == tf.string:
            return np.array(flat, dtype=object).reshape(shape)
        return np.array(flat).astype(dtype.as_numpy_dtype).reshape(shape)
    except (ValueError, OverflowError) as error:  # e.g. beyond numpy's 64 dimensions
        raise _invalid(f"Cannot read the request's values: {clip(error, 200)}") from None


def _read_tensor(value, dtype):
    array = _fast_array(value, dtype)
    return array if array is not None else _array(*_walk(value, dtype), dtype)


def _read_examples(items, dtype, key):
    """One input's per-example values, stacked along a new batch axis (AddInstanceItem): every example
    must have the first one's size and shape."""
    array = _fast_array(items, dtype)
    if array is not None:
        return array
    first, flat = None, []
    for i, item in enumerate(items):
        try:
            shape, values = _walk(item, dtype)
            if first is None:
                first = shape, len(values)
            elif len(values) != first[1]:
                raise _invalid(f"Expecting tensor size: {first[1]} but got: {len(values)}")
            elif shape != first[0]:
                raise _invalid(f"Expecting shape [{','.join(map(str, first[0]))}] but got: [{','.join(map(str, shape))}]")
        except ServingError as error:
            named = f"key: {clip(key)} " if key else ""
            raise _invalid(f"Failed to process element: {i} {named}of 'instances' list. Error: {error.code}: {error.message}") from None
        flat.extend(values)
    return _array([len(items), *first[0]], flat, dtype)


def _read_instances(rows, specs):
    """Row format, "instances" -> {input key: array} (FillTensorMapFromInstancesList)."""
    if not isinstance(rows[0], dict) and len(specs) > 1:
        raise _invalid("instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map")
    if not _is_named(rows[0]):
        for i, row in enumerate(rows):
            if _is_named(row):
                raise _invalid(f"Expecting value/list but got object at item {i} of input list")
        key = next(iter(specs))
        return {key: _read_examples(rows, specs[key].dtype, None)}
    for i, row in enumerate(rows):
        if not _is_named(row):
            raise _invalid(f"Expecting object but got list at item {i} of input list")
        for key in row:
            if key not in specs:
                raise _invalid(f"Failed to process element: {i} key: {clip(key)} of 'instances' list. "
                               f"Error: INVALID_ARGUMENT: JSON object: does not have named input: {clip(key)}")
        if len(row) != len(specs):
            raise _invalid(f"Failed to process element: {i} of 'instances' list. JSON object: {_debug(row)} "
                           f"keys must be equal to: {','.join(sorted(specs))}")
    return {key: _read_examples([row[key] for row in rows], spec.dtype, key) for key, spec in specs.items()}


def _read_inputs(value, specs):
    """Columnar format, "inputs" -> {input key: array} (FillTensorMapFromInputsMap)."""
    if not _is_named(value):
        if len(specs) > 1:
            raise _invalid("inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map")
        key = next(iter(specs))
        return {key: _read_tensor(value, specs[key].dtype)}
    for key in sorted(specs):
        if key not in value:
            raise _invalid(f"Missing named input: {key} in 'inputs' object.")
    extra = sorted(set(value) - set(specs))
    if extra:  # TF Serving drops these unread; we refuse them, as both servers refuse extra gRPC inputs
        raise _invalid(f"Unknown inputs {[clip(k, 32) for k in extra[:8]]} in 'inputs' object; the signature takes {sorted(specs)}")
    return {key: _read_tensor(value[key], spec.dtype) for key, spec in specs.items()}


# Tensors -> JSON (MakeJsonFromTensors).


def _float32_decimals(values):
    """float32 values as the float64s nearest the decimals TF Serving writes for them (WriteDecimal: 6
    significant digits, or 9 when 6 do not read back as the same float32), so json.dumps writes 0.1 where
    TF Serving writes 0.1, not 0.10000000149011612. Values whose scaling would be inexact stay as they are."""
    x = values.astype(np.float64)
    result = x.copy()
    with np.errstate(all="ignore"):  # zeros, NaN and infinities take no part
        magnitude = np.floor(np.log10(np.abs(x)))
        for digits in (9, 6):
            places = digits - 1 - magnitude  # decimal places that keep `digits` significant digits
            exact = np.isfinite(places) & (np.abs(places) <= 22)  # 10**places is exact, so rounding once is exact
            scale = 10.0 ** np.where(exact, np.abs(places), 0)
            rounded = np.where(places >= 0, np.round(x * scale) / scale, np.round(x / scale) * scale)
            result = np.where(exact & (rounded.astype(np.float32) == values), rounded, result)
    return result


def _json_values(array, key):
    """An output as nested JSON values (AddTensorValues): strings as text, or {"b64": ...} for an output
    whose name ends in "_bytes"; dtypes TF Serving cannot write are refused as it refuses them."""
    if array.dtype == np.float32:
        return _float32_decimals(array).tolist()
    if array.dtype in WRITABLE:
        return array.tolist()
    if array.dtype == object:
        if key.endswith("_bytes"):
            leaves = [{"b64": base64.b64encode(v).decode()} for v in array.flat]
        else:
            leaves = [v.decode(errors="replace") for v in array.flat]
        return np.array(leaves, dtype=object).reshape(array.shape).tolist()
    raise _invalid(f"Failed to write JSON value for tensor type: {_type_name(tf.as_dtype(array.dtype))}")


def _predictions(outputs):
    """Row format (MakeRowFormatJsonFromTensors): one entry per example, a dict of outputs only when there are several."""
    batch = None
    for key, value in sorted(outputs.items()):
        if value.ndim == 0:
            raise _invalid(f"Tensor name: {key} has no shape information ")
        if batch is not None and len(value) != batch:
            raise _invalid(f"Tensor name: {key} has inconsistent batch size: {len(value)} expecting: {batch}")
        batch = len(value)
    columns = {key: _json_values(value, key) for key, value in sorted(outputs.items())}
    if len(columns) == 1:
        return next(iter(columns.values()))
    return [{key: column[i] for key, column in columns.items()} for i in range(batch)]


def _outputs(outputs):
    """Columnar format (MakeColumnarFormatJsonFromTensors): the one output's value, or a dict of several."""
    columns = {key: _json_values(value, key) for key, value in sorted(outputs.items())}
    return columns if len(columns) > 1 else next(iter(columns.values()))


def rest_predict(loaded, doc, max_batch_size, predict=None):
    """A :predict body, parsed by `parse_json_body`, -> TF Serving's response: row format ("instances" ->
    "predictions") or columnar ("inputs" -> "outputs"). `predict(signature, inputs)` runs the model (the
    server passes its ModelRunner's); None calls it directly."""
    signature = doc.get("signature_name") or "serving_default"
    specs = loaded.input_specs(signature)
    if not specs:
        raise _invalid(f"Failed to get input map for signature: {doc.get('signature_name') or 'DEFAULT'}")
    if "instances" in doc:
        rows = doc["instances"]
        if "inputs" in doc:
            raise _format_error(doc, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ")
        if not isinstance(rows, list):
            raise _format_error(doc, "Expecting 'instances' to be an list/array")
        if not rows:
            raise _format_error(doc, "No values in 'instances' array")
        inputs = _read_instances(rows, specs)
    elif "inputs" in doc:
        inputs = _read_inputs(doc["inputs"], specs)
    else:
        raise _invalid("Missing 'inputs' or 'instances' key")
    outputs = (predict or (lambda signature, inputs: loaded.run(signature, inputs, max_batch_size)))(signature, inputs)
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    return {"predictions": _predictions(outputs)} if "instances" in doc else {"outputs": _outputs(outputs)}


def check_examples(doc):
    """What FillClassifyRegressRequestFromJson checks of a :classify or :regress body, in its order, before
    the model is looked up. (Feature values are not checked: nothing here runs them.)"""

    def check(example):
        if not isinstance(example, dict):
            raise _invalid(f"Example must be JSON object but got JSON {_json_type(example)}")

    if "context" in doc:
        check(doc["context"])
    if "examples" not in doc:  # TF Serving says "classify" for both methods
        raise _format_error(doc, "When method is classify, key 'examples' is expected and was not found")
    if not isinstance(doc["examples"], list):
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not doc["examples"]:
        raise _format_error(doc, "'examples' value is an empty array")
    for example in doc["examples"]:
        check(example)


def status_json(states):
    """GetModelStatusResponse in TF Serving's JSON (ToJsonString in http_rest_api_util.cc): every field
    printed; the names are the proto's json_names, which are snake_case."""
    return json_format.MessageToDict(status_response(states), always_print_fields_with_no_presence=True)


def metadata_json(loaded):
    """GetModelMetadataResponse in TF Serving's JSON: model_spec and the unpacked SignatureDefMap are printed
    separately with proto field names (so "metadata" holds no "@type") and every field."""
    response = metadata_response(loaded)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    options = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}
    return {
        "model_spec": json_format.MessageToDict(response.model_spec, **options),
        "metadata": {"signature_def": json_format.MessageToDict(signature_map, **options)},
    }


def make_rest_handler(registry, limits, runner=None, access_log=None):
    runner = runner or ModelRunner(Limiter(limits["max_concurrent_requests"]), limits["max_batch_size"])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = limits["request_timeout"]  # socket timeout: a client that stalls mid-request is dropped

        def log_message(self, *args):  # http.server's own lines; AccessLog writes ours
            pass

        def _begin(self):
            self.started, self.logged, self.bytes_in, self.served = time.perf_counter(), False, 0, {}

        def _log(self, status, bytes_out):
            """The access line, written before the answer goes out, so it exists once the client has it."""
            if access_log and not self.logged:
                self.logged = True
                access_log.write(f"{self.client_address[0]}:{self.client_address[1]}", "REST", f"{self.command} {self.path}",
                                 status, self.started, self.served.get("model"), self.served.get("version"),
                                 self.served.get("signature"), self.bytes_in, bytes_out)

        def _send(self, code, body, content_type="application/json"):
            self._log(code, len(body))
            self.send_response(code)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            unread = self.command != "POST" and (self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length", "0") != "0")
            if code != 200 or unread:
                # After an error, or a GET that declared a body, the rest of the request may still be unread:
                # never parse it as a request (a proxy in front could smuggle one in it).
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":  # a HEAD answer carries the headers of the answer to a GET, no body
                self.wfile.write(body)

        def _body(self):
            encoding = self.headers.get("Transfer-Encoding")
            if encoding:
                if self.headers.get("Content-Length") is not None:  # RFC 9112 6.3: a sign of request smuggling
                    raise _invalid("A request may not carry both Transfer-Encoding and Content-Length")
                if encoding.strip().lower() != "chunked":
                    raise _invalid(f"Unsupported Transfer-Encoding {clip(encoding)!r}")
                raw = _read_chunked(self.rfile, limits["max_request_bytes"])  # as libevent's evhttp reads them
                self.bytes_in = len(raw)
                return self._inflated(raw)
            text = self.headers.get("Content-Length") or "0"
            if not CONTENT_LENGTH.fullmatch(text):
                raise _invalid(f"Content-Length must be a non-negative integer, got {clip(text)!r}")
            length = int(text)
            if length > limits["max_request_bytes"]:
                raise ServingError("RESOURCE_EXHAUSTED", f"Request of {length} bytes exceeds {limits['max_request_bytes']}")
            raw = self.rfile.read(length)
            self.bytes_in = len(raw)
            if len(raw) < length:
                raise _invalid(f"The body ended after {len(raw)} of {length} bytes")
            return self._inflated(raw)

        def _inflated(self, raw):
            if "gzip" in self.headers.get("Content-Encoding", "").lower():  # evhttp_request.cc gunzips such bodies
                return _gunzip(raw, limits["max_request_bytes"])
            return raw

        def _process(self, path, deadline):
            """(response, indent) for a request under /v1/ (HttpRestApiHandler::ProcessRequest)."""
            method = self.command
            match = {"POST": PREDICTION_PATH, "GET": MODEL_PATH}.get(method)
            match = match and match.fullmatch(path)
            malformed = _invalid(f"Malformed request: {method} {clip(path, 200)}")
            if not match:
                raise malformed
            name, label = unquote(match[1] or ""), unquote(match[3] or "")
            version = int(match[2]) if match[2] else None
            if version is not None and version >= 2**63:
                raise _invalid(f"Failed to convert version: {clip(match[2])} to numeric.")
            self.served.update(model=name, version=version)
            if method == "POST":
                if match[4] not in ("predict", "classify", "regress"):  # ":PREDICT" matches the pattern, names no method
                    raise malformed
                doc = parse_json_body(self._body())
                signature = doc.get("signature_name") or "serving_default"
                if match[4] != "predict":
                    check_examples(doc)
                loaded = registry.get(name, version, label)
                self.served.update(version=loaded.version, signature=signature)
                if match[4] != "predict":
                    raise loaded.example_method_error(match[4], signature)
                predict = lambda signature, inputs: runner.predict(loaded, signature, inputs, deadline)
                return rest_predict(loaded, doc, limits["max_batch_size"], predict), None
            if not name:
                raise _invalid("Missing model name in request.")
            if match[4] == "metadata":  # "/METADATA" matches the pattern but asks for the status, as in TF Serving
                loaded = registry.get(name, version, label)
                self.served.update(version=loaded.version)
                return metadata_json(loaded), 1
            states = registry.status(name, version)
            self.served.update(version=states[0][0])
            return status_json(states), 1  # TF Serving pretty-prints proto JSON with one-space indents

        def _handle(self):
            self._begin()
            # evhttp hands TF Serving's handler the path with its query (evhttp_request.cc's path_and_query), and
            # its patterns must match all of it: ":predict?x=1" is malformed there, "/models/m?x=1" names "m?x=1".
            path = self.path
            try:
                if not V1_PATH.fullmatch(path):
                    return self._send(404, NOT_FOUND_PAGE, "text/html")
                try:
                    payload, indent = self._process(path, time.monotonic() + limits["request_timeout"])
                    self._send(200, json.dumps(payload, indent=indent).encode())
                except ServingError as error:
                    self._send(HTTP_STATUS.get(error.code, 500), json.dumps({"error": error.message}).encode())
                except OSError:
                    raise
                except Exception:  # a bug must not drop the connection without an answer
                    log.exception("internal error in REST %s %s", self.command, clip(path))
                    self._send(500, json.dumps({"error": "Internal server error; see the server log"}).encode())
            except OSError:  # the client timed out or went away mid-request: nobody is left to answer
                self.close_connection = True
                self._log("-", 0)

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = _handle  # all but GET and POST are malformed requests

        def do_OPTIONS(self):
            """A CORS preflight: TF Serving answers 200 when Origin names an http(s) origin, else 400, both empty."""
            self._begin()
            self._send(200 if re.search(r"https?://", self.headers.get("Origin", "")) else 400, b"", content_type=None)

    return Handler


class RestServer(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` at once; a connection beyond that is answered
    429 at once and closed, so a flood of connections cannot exhaust threads or memory."""

    daemon_threads = True
    allow_reuse_port = False  # Python 3.13.0-3.13.4 set it: a second server could then share the port
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
        log_requests: bool. Write one access line per REST and gRPC request to stderr (see AccessLog).
        batching: None, False, True, a BatchingParameters or a path. Server-side batching of concurrent
            Predict requests (kerasvae.serving.batching; TF Serving's --enable_batching): True uses TF
            Serving's defaults, a path reads a TF Serving batching_parameters.txt. None or False: each
            request runs on its own. Defaults to None.
        model_warmup: bool. Replay each version's assets.extra/tf_serving_warmup_requests before serving it
            (TF Serving's --enable_model_warmup). Defaults to True.
        limits: max_request_bytes, max_batch_size, max_concurrent_requests (model runs in flight, gRPC and
            REST together; also the cap on gRPC calls and on REST connections), request_timeout (seconds a
            request may take; see DEFAULT_LIMITS).

    Example (batches of up to 64 requests, each waiting at most 1 ms for others):

        Server("saved_models", port=0, batching=BatchingParameters(max_batch_size=64, batch_timeout_micros=1000)).start()
    """

    def __init__(self, root, port=8500, rest_port=None, host="127.0.0.1", model_config=None, poll_seconds=2.0,
                 log_requests=False, batching=None, model_warmup=True, **limits):
        unknown = sorted(set(limits) - set(DEFAULT_LIMITS))
        if unknown:
            raise ValueError(f"Unknown server limit(s) {unknown}; expected some of {sorted(DEFAULT_LIMITS)}.")
        self.limits = {**DEFAULT_LIMITS, **{k: v for k, v in limits.items() if v is not None}}
        for name, value in self.limits.items():
            if not value > 0:
                raise ValueError(f"Server limit {name} must be > 0, got {value}.")
        if batching is True:
            batching = BatchingParameters()
        elif isinstance(batching, (str, os.PathLike)):
            batching = BatchingParameters.read(batching)
        elif batching is False:
            batching = None
        elif batching is not None and not isinstance(batching, BatchingParameters):
            raise TypeError(f"batching must be None, a bool, a BatchingParameters or a path; got {type(batching).__name__}.")
        self.batching = batching
        self.registry = ModelRegistry(root, model_config, warmup=model_warmup)
        self.registry.poll()
        if not self.registry.models:
            raise ValueError(f"No loadable model version under {model_config or root}.")
        self.poll_seconds = float(poll_seconds)
        self.stopped = threading.Event()
        self.limiter = Limiter(self.limits["max_concurrent_requests"])
        self.runner = ModelRunner(self.limiter, self.limits["max_batch_size"], batching)
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
        self.access_log = AccessLog() if log_requests else None
        prediction, models = PredictionService(self.registry, self.runner, self.limits), ModelService(self.registry)
        services = {
            "tensorflow.serving.PredictionService": {
                "Predict": (prediction.Predict, predict_pb2.PredictRequest),
                "GetModelMetadata": (prediction.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest),
                "Classify": (prediction.Classify, classification_pb2.ClassificationRequest),
                "Regress": (prediction.Regress, regression_pb2.RegressionRequest),
            },
            "tensorflow.serving.ModelService": {
                "GetModelStatus": (models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest),
            },
        }
        self.grpc.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler(service, {
                method: _method(f"/{service}/{method}", handler, request_class, self.access_log)
                for method, (handler, request_class) in methods.items()
            })
            for service, methods in services.items()
        ])
        try:
            self.grpc_port = self.grpc.add_insecure_port(f"{host}:{port}")
        except RuntimeError:  # recent grpcio raises where older ones returned 0
            self.grpc_port = 0
        if self.grpc_port == 0:
            raise ValueError(f"Cannot bind gRPC to {host}:{port} (in use, or not an address of this machine).")
        self.rest = None
        if rest_port is not None:
            handler = make_rest_handler(self.registry, self.limits, self.runner, self.access_log)
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
            self.rest.server_close()  # free the port now, not when the object is collected
        self.grpc.stop(grace).wait()
        self.runner.shutdown()


def serve(root, port=8500, rest_port=None, log_requests=False, **options):
    """Run a Server until SIGTERM or SIGINT; prints one line with the bound ports once ready. `log_requests`
    writes an access line per request to stderr; `options` are the other `Server` arguments."""
    server = Server(root, port=port, rest_port=rest_port, log_requests=log_requests, **options).start()
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    models = ", ".join(f"{name}:{','.join(map(str, sorted(versions)))}" for name, versions in server.registry.models.items())
    rest = f", REST on {server.host}:{server.rest_port}" if server.rest else ""
    batching = "" if server.batching is None else "; batching " + ", ".join(f"{k}={v}" for k, v in vars(server.batching).items())
    print(f"kerasvae serve: gRPC on {server.host}:{server.grpc_port}{rest}; models {models}{batching}", flush=True)
    # Waking up each second runs the handler: a SIGTERM the kernel delivers to another thread (gRPC's, TF's)
    # only flags it, and an untimed wait would block the main thread past it for ever (seen in the tests).
    while not done.wait(1.0):
        pass
    server.stop()
    batcher = server.runner.batcher
    batched = f" ({batcher.requests_run} requests batched in {batcher.batches_run} runs)" if batcher else ""
    print(f"kerasvae serve: stopped{batched}", flush=True)
