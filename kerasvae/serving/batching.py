"""Server-side batching, as TF Serving does it under `--enable_batching`: concurrent Predict requests for
the same model version and signature, with the same dtypes and non-batch shapes, are queued, concatenated
along axis 0 into one model run of at most `max_batch_size` examples, and the outputs split back.

    kerasvae serve saved_models --enable-batching --batching-parameters-file saved_models/batching_parameters.txt
    Server("saved_models", batching=BatchingParameters(max_batch_size=64, batch_timeout_micros=1000))

The knobs and their defaults are TF Serving's `BatchingParameters` (session_bundle_config.proto) as its
SharedBatchScheduler reads them:

    max_batch_size        largest batch formed, and largest request accepted (INVALID_ARGUMENT "Task size
                          N is larger than maximum input batch size M" above it). Defaults to 1000.
    batch_timeout_micros  how long a non-full batch waits for more requests once a thread is free; 0 runs
                          whatever is queued as soon as a thread is free, so batches form only while every
                          thread is busy (the latency-neutral choice on CPU). Defaults to 0.
    max_enqueued_batches  batches that may wait for a thread; a request that needs one more is refused
                          UNAVAILABLE (HTTP 503) "The batch scheduling queue to which this task was submitted
                          is full". Defaults to 10.
    num_batch_threads     batches run at once. Defaults to the number of CPUs.
    allowed_batch_sizes   if given, increasing, ending at max_batch_size: a batch is padded (with copies of
                          its last request's first example) up to the next allowed size, and the padding's
                          outputs are dropped.

A signature is batched only when every input and every output has an unknown leading (batch) dimension:
`sample` (a scalar num_samples and a [2] seed) runs unbatched. The models compute each example on its own
(the `score` signature draws one stateless noise for the whole batch and shares it across examples), so a
request's outputs do not depend on what it was batched with; they are equal to an unbatched run's up to the
float32 rounding of kernels that sum in a different order for a different batch size.

`batching_parameters.txt` files are read and written in the text format of TF Serving's proto (the
message `tensorflow.serving.BatchingParameters`, rebuilt here from its field numbers when tensorflow-serving-api
does not ship the class), so one file configures both servers.
"""

import dataclasses
import itertools
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path

import numpy as np

log = logging.getLogger("kerasvae.serving")

BATCHING_FILE = "batching_parameters.txt"
PROTO_NAME = "tensorflow.serving.BatchingParameters"
# (field, number, wrapper type or None for a plain field) of session_bundle_config.proto's BatchingParameters.
PROTO_FIELDS = (
    ("max_batch_size", 1, "Int64Value"), ("batch_timeout_micros", 2, "Int64Value"),
    ("max_enqueued_batches", 3, "Int64Value"), ("num_batch_threads", 4, "Int64Value"),
    ("thread_pool_name", 5, "StringValue"), ("allowed_batch_sizes", 6, None),
    ("pad_variable_length_inputs", 7, None), ("enable_large_batch_splitting", 8, "BoolValue"),
    ("max_execution_batch_size", 9, "Int64Value"),
)
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's batching knobs (see the module docstring); unset ones take TF Serving's defaults.

    Args:
        max_batch_size: int. Largest batch a run gets, and largest request accepted. Defaults to 1000.
        batch_timeout_micros: int. Microseconds a non-full batch waits for more requests. Defaults to 0.
        max_enqueued_batches: int. Batches that may wait for a thread before requests are refused. Defaults
            to 10.
        num_batch_threads: int or None. Batches run at once; None: the number of CPUs.
        allowed_batch_sizes: tuple of int. Sizes batches are padded to; empty pads nothing. Defaults to ().

    Example:

    >>> params = BatchingParameters(max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    >>> BatchingParameters.from_text(params.to_text()) == params
    True
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = None
    allowed_batch_sizes: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "allowed_batch_sizes", tuple(int(s) for s in self.allowed_batch_sizes))
        if self.num_batch_threads is None:
            object.__setattr__(self, "num_batch_threads", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Batching parameter {name} must be >= 1, got {getattr(self, name)}.")
        if int(self.batch_timeout_micros) < 0:
            raise ValueError(f"Batching parameter batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}.")
        sizes = self.allowed_batch_sizes
        if sizes:  # BatchingSession's checks
            if any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
                raise ValueError(f"allowed_batch_sizes must be positive and increasing, got {list(sizes)}.")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(f"The last entry of allowed_batch_sizes ({sizes[-1]}) must equal max_batch_size ({self.max_batch_size}).")

    def replace(self, **overrides):
        """A copy with the given knobs changed; None values change nothing (unset command-line flags)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def padded_size(self, size):
        """The batch size a batch of `size` examples runs at: the next allowed size, or `size` itself."""
        return next((s for s in self.allowed_batch_sizes if s >= size), size)

    @classmethod
    def from_text(cls, text):
        """Parse a text-format TF Serving BatchingParameters. Fields this server cannot honour
        (pad_variable_length_inputs, enable_large_batch_splitting) raise ValueError; thread_pool_name is
        ignored."""
        from google.protobuf import text_format

        message = batching_parameters_proto()()
        try:
            text_format.Parse(text, message)
        except text_format.ParseError as error:
            raise ValueError(f"Not a TF Serving BatchingParameters text proto: {error}") from None
        if message.pad_variable_length_inputs or message.enable_large_batch_splitting.value:
            raise ValueError("pad_variable_length_inputs and enable_large_batch_splitting are not supported by kerasvae serve.")
        values = {name: getattr(message, name).value for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                                                                    "num_batch_threads") if message.HasField(name)}
        return cls(**values, allowed_batch_sizes=tuple(message.allowed_batch_sizes))

    @classmethod
    def read(cls, path):
        """`from_text` of a file (TF Serving's --batching_parameters_file)."""
        try:
            return cls.from_text(Path(path).read_text())
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    def to_text(self, num_batch_threads=True):
        """This as a text-format TF Serving BatchingParameters; num_batch_threads=False leaves that knob
        unset, so each server uses its own CPU count."""
        from google.protobuf import text_format

        message = batching_parameters_proto()()
        for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches") + (("num_batch_threads",) if num_batch_threads else ()):
            getattr(message, name).value = int(getattr(self, name))
        message.allowed_batch_sizes.extend(self.allowed_batch_sizes)
        return text_format.MessageToString(message)


# What `kerasvae export` writes beside the versions. max_batch_size 1024 accepts every chunk kerasvae's
# clients send (TF Serving refuses a larger request); a 5 ms batch_timeout_micros lets a CPU-bound server
# gather concurrent requests (on 2 cores, 16 batch-1 clients: 0.4x the server CPU per request and
# 1.4-1.6x the throughput; timeout 0, TF Serving's CPU starting point, gathered too few; BENCHMARKS.md),
# at the cost of up to 5 ms for a lone request; max_enqueued_batches 64 = kerasvae serve's default
# --max-concurrent-requests; num_batch_threads is left to each server (its CPU count).
EXPORT_PARAMETERS = BatchingParameters(max_batch_size=1024, batch_timeout_micros=5000, max_enqueued_batches=64, num_batch_threads=1)


def write_batching_parameters(folder, params=EXPORT_PARAMETERS):
    """Write `folder`/batching_parameters.txt for `tensorflow_model_server --enable_batching
    --batching_parameters_file=...` and `kerasvae serve --enable-batching --batching-parameters-file ...`,
    unless one is there (it may have been tuned by hand). Returns its path."""
    path = Path(folder) / BATCHING_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        header = ("# TF Serving BatchingParameters (tensorflow_serving/servables/tensorflow/session_bundle_config.proto),\n"
                  "# written by kerasvae export. Use with --enable_batching --batching_parameters_file=<this file>.\n"
                  "# num_batch_threads is unset: each server runs one batch per CPU core.\n")
        temp = path.with_name(f".{BATCHING_FILE}.tmp")
        temp.write_text(header + params.to_text(num_batch_threads=False))
        temp.replace(path)
    return path


_PROTO_CLASS = []


def batching_parameters_proto():
    """The message class of tensorflow.serving.BatchingParameters: tensorflow-serving-api's if it ships one,
    else one built from the same field names, numbers and types (text format depends on nothing else)."""
    if _PROTO_CLASS:
        return _PROTO_CLASS[0]
    try:
        from tensorflow_serving.servables.tensorflow.session_bundle_config_pb2 import (
            BatchingParameters as proto,
        )
    except ImportError:
        from google.protobuf import (
            descriptor_pb2,
            descriptor_pool,
            message_factory,
            wrappers_pb2,
        )

        pool = descriptor_pool.DescriptorPool()  # private: never clashes with a class someone else registers
        wrappers = descriptor_pb2.FileDescriptorProto()
        wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
        pool.Add(wrappers)
        file = descriptor_pb2.FileDescriptorProto(name="kerasvae/batching_parameters.proto", package="tensorflow.serving",
                                                  syntax="proto3", dependency=[wrappers.name])
        message = file.message_type.add(name="BatchingParameters")
        field_type = descriptor_pb2.FieldDescriptorProto
        for name, number, wrapper in PROTO_FIELDS:
            field = message.field.add(name=name, number=number, json_name=name)
            if wrapper:
                field.type, field.type_name, field.label = field_type.TYPE_MESSAGE, f".google.protobuf.{wrapper}", field_type.LABEL_OPTIONAL
            elif name == "allowed_batch_sizes":
                field.type, field.label = field_type.TYPE_INT64, field_type.LABEL_REPEATED
            else:
                field.type, field.label = field_type.TYPE_BOOL, field_type.LABEL_OPTIONAL
        pool.Add(file)
        proto = message_factory.GetMessageClass(pool.FindMessageTypeByName(PROTO_NAME))
    _PROTO_CLASS.append(proto)
    return proto


def batchable(input_shapes, output_shapes):
    """Whether a signature may be batched: every input and output has a known rank >= 1 and an unknown
    leading dimension (lists of dimensions, None or -1 for unknown; None for an unknown rank)."""
    shapes = list(input_shapes) + list(output_shapes)
    return bool(input_shapes) and all(s is not None and len(s) >= 1 and s[0] in (None, -1) for s in shapes)


class ServingBatchError(Exception):
    """A request the scheduler refuses or cannot answer, with its gRPC status code name."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


class _Task:
    __slots__ = ("future", "inputs", "size")

    def __init__(self, inputs, size):
        self.inputs, self.size, self.future = inputs, size, Future()


class _Queue:
    """One kind of request (model version, signature, dtypes and non-batch shapes): its batches, the first
    of which may still be filling, and the function that runs a batch."""

    def __init__(self, run):
        self.run = run
        self.batches = deque()  # each a list of _Task; only the last one is open
        self.sizes = deque()  # examples in each batch
        self.opened = 0.0  # time.monotonic() when the open batch got its first task


class Batcher:
    """TF Serving's SharedBatchScheduler over one set of `num_batch_threads` threads: a queue per kind of
    request, batches taken round-robin from the queues, a batch runnable once it is full, once a newer batch
    was started behind it, or once it has waited `batch_timeout_micros`.

    `submit(key, inputs, run)` queues a request ({input key: array with the batch on axis 0}) and returns a
    concurrent.futures.Future of its outputs; `run(inputs) -> {output key: array}` runs a whole batch (it is
    taken from the first request of a queue: requests with equal keys must be interchangeable). A batch
    whose run raises an error with code INVALID_ARGUMENT is retried one request at a time, so a bad request
    fails alone.
    """

    def __init__(self, params=None):
        self.params = params or BatchingParameters()
        self.queues = {}
        self.order = itertools.count()  # round-robin position
        self.cond = threading.Condition()
        self.stopped = False
        self.batch_sizes = []  # (requests, examples) of each batch run, for tests and benchmarks; last 1000
        self.requests_run = self.batches_run = 0  # totals since start: requests / batches is the mean batch
        self.threads = [threading.Thread(target=self._work, name=f"kerasvae-batch-{i}", daemon=True)
                        for i in range(self.params.num_batch_threads)]
        for thread in self.threads:
            thread.start()

    def submit(self, key, inputs, run):
        size = len(next(iter(inputs.values())))
        p = self.params
        if size > p.max_batch_size:
            raise ServingBatchError("INVALID_ARGUMENT", f"Task size {size} is larger than maximum input batch size {p.max_batch_size}")
        task = _Task(inputs, size)
        with self.cond:
            if self.stopped:
                raise ServingBatchError("UNAVAILABLE", "The server is shutting down")
            queue = self.queues.get(key)
            if queue is None:
                queue = self.queues[key] = _Queue(run)
            if not queue.batches or queue.sizes[-1] + size > p.max_batch_size:
                if len(queue.batches) >= p.max_enqueued_batches:
                    if not queue.batches:
                        del self.queues[key]
                    raise ServingBatchError("UNAVAILABLE", QUEUE_FULL)
                queue.batches.append([])
                queue.sizes.append(0)
                queue.opened = time.monotonic()
            queue.batches[-1].append(task)
            queue.sizes[-1] += size
            self.cond.notify()
        return task.future

    def _next_batch(self):
        """(queue, tasks) of a runnable batch, or (None, seconds until one may become runnable)."""
        now, wait = time.monotonic(), None
        timeout = self.params.batch_timeout_micros / 1e6
        keys = list(self.queues)
        start = next(self.order) % len(keys) if keys else 0
        for key in keys[start:] + keys[:start]:
            queue = self.queues[key]
            full = queue.sizes[0] >= self.params.max_batch_size or len(queue.batches) > 1
            due = queue.opened + timeout
            if full or now >= due:
                queue.sizes.popleft()
                tasks = queue.batches.popleft()
                if not queue.batches:
                    del self.queues[key]  # a version that is no longer served leaves nothing behind
                return queue, tasks
            wait = due - now if wait is None else min(wait, due - now)
        return None, wait

    def _work(self):
        while True:
            with self.cond:
                while True:
                    if self.stopped:
                        return
                    queue, tasks = self._next_batch()
                    if queue is not None:
                        break
                    self.cond.wait(tasks)
            self._run(queue.run, [t for t in tasks if t.future.set_running_or_notify_cancel()])

    def _run(self, run, tasks):
        if not tasks:
            return
        try:
            outputs = self.run_batch(run, [t.inputs for t in tasks])
        except Exception as error:  # noqa: BLE001 - every waiting request must get an answer
            if len(tasks) > 1 and getattr(error, "code", None) == "INVALID_ARGUMENT":
                for task in tasks:  # find the request(s) the model rejects; the others are answered
                    self._run_alone(run, task)
                return
            for task in tasks:
                task.future.set_exception(error)
            return
        for task, output in zip(tasks, outputs):
            task.future.set_result(output)

    def _run_alone(self, run, task):
        try:
            task.future.set_result(self.run_batch(run, [task.inputs])[0])
        except Exception as error:  # noqa: BLE001
            task.future.set_exception(error)

    def run_batch(self, run, requests):
        """Run several requests as one batch: concatenate each input along axis 0, pad to the next allowed
        batch size with copies of the last request's first example (as TF Serving's BatchingSession does),
        run, and split each output back into the requests' rows, dropping the padding's."""
        sizes = [len(next(iter(r.values()))) for r in requests]
        total = sum(sizes)
        padding = self.params.padded_size(total) - total
        inputs = {}
        for key in requests[0]:
            parts = [r[key] for r in requests]
            if padding:
                parts.append(np.repeat(parts[-1][:1], padding, axis=0))
            inputs[key] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        with self.cond:
            self.batch_sizes = self.batch_sizes[-999:] + [(len(requests), total + padding)]
            self.requests_run += len(requests)
            self.batches_run += 1
        outputs = run(inputs)
        for key, value in outputs.items():
            if value.ndim == 0 or len(value) != total + padding:
                raise ServingBatchError("FAILED_PRECONDITION", f"Batched output tensor {key!r} does not have the batch's {total + padding} rows")
        offsets = np.cumsum([0, *sizes])
        return [{key: value[offsets[i]:offsets[i + 1]] for key, value in outputs.items()} for i in range(len(requests))]

    def stop(self):
        """Refuse new requests, answer queued ones UNAVAILABLE, and let the threads end after their batch."""
        with self.cond:
            self.stopped = True
            pending = [t for q in self.queues.values() for batch in q.batches for t in batch]
            self.queues.clear()
            self.cond.notify_all()
        for task in pending:
            if task.future.set_running_or_notify_cancel():
                task.future.set_exception(ServingBatchError("UNAVAILABLE", "The server is shutting down"))
