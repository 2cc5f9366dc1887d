"""Server-side batching (kerasvae.serving.batching) and model warmup: batched answers equal unbatched ones
for concurrent mixed-size gRPC and REST requests on a model trained on digits, padding to allowed batch sizes
is dropped, a full queue is refused UNAVAILABLE (HTTP 503) as TF Serving refuses it, non-batchable signatures
bypass the batcher, and batching_parameters.txt is TF Serving's text proto. Batches are made deterministic
by holding the one batch thread busy (or by filling a batch exactly), never by timing."""

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import fit, predict_request, small_vae
from tensorflow_serving.apis import prediction_service_pb2_grpc

import kerasvae as kv
from kerasvae.cli import main as cli_main
from kerasvae.serving.batching import (
    BATCHING_FILE,
    EXPORT_PARAMETERS,
    QUEUE_FULL,
    Batcher,
    BatchingParameters,
    ServingBatchError,
    batchable,
    batching_parameters_proto,
)
from kerasvae.serving.models import LoadedVersion
from kerasvae.serving.server import HTTP_STATUS, Server


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    """A VAE trained one epoch on digits, exported with `kv.export.export` (which writes batching_parameters.txt)."""
    root = tmp_path_factory.mktemp("batching_models")
    model = small_vae()
    fit(model, digits[0], epochs=1)
    kv.export.export(model, root / "digits")
    return {"root": root, "path": root / "digits" / "1", "x": digits[2][:32].astype(np.float32)}


@pytest.fixture(scope="module")
def loaded(exported):
    return LoadedVersion("digits", 1, exported["path"])


def hold_thread(batcher):
    """Occupy the batcher's only thread with a run that waits: returns the event that releases it."""
    started, release = threading.Event(), threading.Event()

    def blocked(inputs):
        started.set()
        release.wait(30)
        return {"y": inputs["x"]}

    batcher.submit("blocker", {"x": np.zeros((1, 1), np.float32)}, blocked)
    assert started.wait(30)
    return release


def test_batched_outputs_equal_unbatched_and_padding_is_dropped(loaded, exported):
    """Requests of 1, 2, 3 and 1 examples queued behind a busy thread run as one batch of 7, padded to 8."""
    batcher = Batcher(BatchingParameters(max_batch_size=16, num_batch_threads=1, allowed_batch_sizes=(4, 8, 16)))
    seen = []

    def run(inputs):
        seen.append(len(inputs["x"]))
        return loaded.call("score", inputs)

    try:
        release = hold_thread(batcher)
        x, sizes = exported["x"], (1, 2, 3, 1)
        parts = np.split(x[:7], np.cumsum(sizes)[:-1])
        futures = [batcher.submit("score", {"x": part}, run) for part in parts]
        release.set()
        results = [f.result(30) for f in futures]
    finally:
        batcher.stop()
    assert seen == [8] and batcher.batch_sizes[-1] == (4, 8)  # one run, padded from 7 to the allowed 8
    for part, result in zip(parts, results):
        alone = loaded.call("score", {"x": part})
        assert set(result) == {"elbo", "reconstruction_error", "anomaly_score"}
        for key, value in alone.items():
            assert result[key].shape == (len(part),)
            # Same examples, same shared noise: equal to float32 rounding, not bit for bit (oneDNN's matmul
            # sums in another order for another batch size: ELBOs of about -50 differ by up to 4e-6).
            np.testing.assert_allclose(result[key], value, rtol=1e-5, atol=1e-5, err_msg=key)


def test_a_full_queue_is_refused_unavailable_and_a_large_task_invalid():
    batcher = Batcher(BatchingParameters(max_batch_size=2, max_enqueued_batches=1, num_batch_threads=1))
    echo = lambda inputs: {"y": inputs["x"] * 2}
    try:
        release = hold_thread(batcher)
        first = batcher.submit("k", {"x": np.ones((1, 1))}, echo)
        second = batcher.submit("k", {"x": np.full((1, 1), 3.0)}, echo)  # joins the waiting batch: 2 of 2
        with pytest.raises(ServingBatchError) as full:
            batcher.submit("k", {"x": np.ones((1, 1))}, echo)  # would need a second waiting batch
        with pytest.raises(ServingBatchError) as large:
            batcher.submit("k", {"x": np.ones((3, 1))}, echo)
        release.set()
        assert first.result(30)["y"].tolist() == [[2.0]] and second.result(30)["y"].tolist() == [[6.0]]
    finally:
        batcher.stop()
    assert (full.value.code, full.value.message) == ("UNAVAILABLE", QUEUE_FULL) and HTTP_STATUS["UNAVAILABLE"] == 503
    assert large.value.code == "INVALID_ARGUMENT" and large.value.message == "Task size 3 is larger than maximum input batch size 2"


def test_a_request_the_model_rejects_fails_alone():
    batcher = Batcher(BatchingParameters(max_batch_size=8, num_batch_threads=1))

    def run(inputs):
        if (inputs["x"] < 0).any():
            raise ServingBatchError("INVALID_ARGUMENT", "negative")
        return {"y": inputs["x"] + 1}

    try:
        release = hold_thread(batcher)
        good, bad = (batcher.submit("k", {"x": np.full((2, 1), v)}, run) for v in (1.0, -1.0))
        release.set()
        assert good.result(30)["y"].tolist() == [[2.0], [2.0]]
        with pytest.raises(ServingBatchError, match="negative"):
            bad.result(30)
    finally:
        batcher.stop()


def test_only_signatures_batched_on_axis_0_are_batchable(loaded):
    assert batchable([[None, 8, 8, 1]], [[-1], [-1, 4]]) and not batchable([[], [2]], [[-1, 8, 8, 1]])
    assert not batchable([None], [[-1]]) and not batchable([[None, 3]], [[5]])
    assert {s: loaded.batchable(s) for s in sorted(loaded.functions)} == {
        "decode": True, "encode": True, "reconstruct": True, "sample": False, "score": True, "serving_default": True}


def test_batching_parameters_file_is_tf_servings_text_proto(exported, tmp_path):
    path = exported["root"] / "digits" / BATCHING_FILE
    text = path.read_text()
    proto = batching_parameters_proto()()
    from google.protobuf import text_format

    text_format.Parse(text, proto)  # the message tensorflow.serving.BatchingParameters, by its field numbers
    assert proto.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert (proto.max_batch_size.value, proto.batch_timeout_micros.value, proto.max_enqueued_batches.value) == (1024, 5000, 64)
    assert not proto.HasField("num_batch_threads")  # each server: one batch thread per core
    assert BatchingParameters.read(path) == EXPORT_PARAMETERS.replace(num_batch_threads=BatchingParameters().num_batch_threads)
    # The field numbers of session_bundle_config.proto, checked on the wire: field 1 (max_batch_size), a
    # wrapper holding varint 7, is bytes 0a 02 08 07; repeated allowed_batch_sizes (6) is packed: 32 02 01 07.
    wire = BatchingParameters(max_batch_size=7, allowed_batch_sizes=(1, 7)).to_text()
    message = batching_parameters_proto()()
    text_format.Parse(wire, message)
    assert message.SerializeToString().startswith(bytes([0x0A, 0x02, 0x08, 0x07]))
    assert bytes([0x32, 0x02, 0x01, 0x07]) in message.SerializeToString()
    bad = tmp_path / "bad.txt"
    bad.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 6\n")
    with pytest.raises(ValueError, match="must equal max_batch_size"):
        BatchingParameters.read(bad)
    assert cli_main(["serve", str(exported["root"]), "--port", "0", "--batching-parameters-file", str(path)]) == 2


def test_concurrent_grpc_and_rest_requests_batch_together_with_unbatched_answers(exported, loaded):
    """Six mixed-size requests (gRPC and REST) that fill max_batch_size=16 exactly run as one batch (the
    long timeout means a batch runs only when full), and each gets what an unbatched call gives; sample
    bypasses the batcher."""
    params = BatchingParameters(max_batch_size=16, batch_timeout_micros=20_000_000, num_batch_threads=1)
    server = Server(exported["root"], port=0, rest_port=0, batching=params).start()
    x = exported["x"]
    sizes = [1, 3, 2, 5, 1, 4]
    parts = np.split(x[:16], np.cumsum(sizes)[:-1])

    def ask(i):
        if i % 2:  # REST, row format
            body = json.dumps({"signature_name": "score", "instances": parts[i].tolist()}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}/v1/models/digits:predict", data=body)
            rows = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
            return {key: np.array([row[key] for row in rows], np.float32) for key in rows[0]}
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        response = stub.Predict(predict_request("digits", "score", {"x": parts[i]}), timeout=60)
        return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}

    try:
        with ThreadPoolExecutor(len(parts)) as pool:
            results = list(pool.map(ask, range(len(parts))))
        samples = kv.serving.Client(f"127.0.0.1:{server.grpc_port}", "digits").sample(3, seed=(4, 2))
        batches = list(server.runner.batcher.batch_sizes)
    finally:
        server.stop()
    assert batches == [(6, 16)]  # one batch of all six requests; sample never reached the batcher
    expected = loaded.call("sample", {"num_samples": np.int32(3), "seed": np.array([4, 2], np.int32)})["x"]
    np.testing.assert_array_equal(samples, expected)
    for i, (part, result) in enumerate(zip(parts, results)):
        alone = loaded.call("score", {"x": part})
        for key, value in alone.items():
            # float32 rounding as above (REST's JSON carries TF Serving's 6-9 significant digits, exact too).
            np.testing.assert_allclose(result[key], value, rtol=1e-5, atol=1e-5, err_msg=f"{i} {key}")


def test_queue_full_is_grpc_unavailable_and_http_503_through_the_server(exported):
    params = BatchingParameters(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    server = Server(exported["root"], port=0, rest_port=0, batching=params).start()
    version = server.registry.get("digits")
    started, release, real_call = threading.Event(), threading.Event(), version.call

    def held_call(signature, inputs):
        started.set()
        release.wait(30)
        return real_call(signature, inputs)

    version.call = held_call
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    z = np.zeros((1, 4), np.float32)
    try:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(stub.Predict, predict_request("digits", "decode", {"z": z}), timeout=60)
            assert started.wait(30)
            waiting = pool.submit(stub.Predict, predict_request("digits", "decode", {"z": z}), timeout=60)
            while not server.runner.batcher.queues:  # the second request is queued behind the held run
                threading.Event().wait(0.01)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(predict_request("digits", "decode", {"z": z}), timeout=60)
            body = json.dumps({"signature_name": "decode", "instances": z.tolist()}).encode()
            with pytest.raises(urllib.error.HTTPError) as http:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{server.rest_port}/v1/models/digits:predict", data=body), timeout=60)
            release.set()
            assert running.result().outputs["mean"].tensor_shape.dim[0].size == 1 and waiting.result().outputs
    finally:
        release.set()
        server.stop()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and refused.value.details() == QUEUE_FULL
    assert http.value.code == 503 and json.loads(http.value.read()) == {"error": QUEUE_FULL}


def test_warmup_replays_every_signature_and_changes_no_answer(exported, loaded):
    cold = LoadedVersion("digits", 1, exported["path"], warmup=False)
    assert loaded.warmup_requests == 6 and cold.warmup_requests == 0  # one record per signature
    x = exported["x"][:3]
    for signature in ("decode", "score"):
        inputs = {"z": np.ones((3, 4), np.float32)} if signature == "decode" else {"x": x}
        warm, first = loaded.call(signature, inputs), cold.call(signature, inputs)
        for key in warm:
            np.testing.assert_array_equal(warm[key], first[key], err_msg=f"{signature}/{key}")


def test_cli_flags_override_the_file_and_need_enable_batching(exported, tmp_path, monkeypatch):
    import kerasvae.serving.server as server_module

    calls = []
    monkeypatch.setattr(server_module, "serve", lambda *args, **kwargs: calls.append(kwargs))
    path = exported["root"] / "digits" / BATCHING_FILE
    args = ["serve", str(exported["root"]), "--enable-batching", "--batching-parameters-file", str(path)]
    assert cli_main([*args, "--max-batch-size", "8", "--allowed-batch-sizes", "2,4,8", "--num-batch-threads", "3"]) == 0
    assert calls[-1]["batching"] == BatchingParameters(max_batch_size=8, batch_timeout_micros=5000, max_enqueued_batches=64,
                                                       num_batch_threads=3, allowed_batch_sizes=(2, 4, 8))
    assert calls[-1]["max_batch_size"] == 8 and calls[-1]["model_warmup"] is True
    assert cli_main(["serve", str(exported["root"]), "--enable-batching", "--no-enable-model-warmup"]) == 0
    assert calls[-1]["batching"] == BatchingParameters() and calls[-1]["model_warmup"] is False
    assert cli_main(["serve", str(exported["root"]), "--max-batch-size", "8"]) == 0  # the request limit alone
    assert calls[-1]["batching"] is None and calls[-1]["max_batch_size"] == 8
    assert cli_main(["serve", str(exported["root"]), "--batch-timeout-micros", "100"]) == 2 and len(calls) == 3
    assert cli_main([*args, "--max-batch-size", "8", "--allowed-batch-sizes", "2,4"]) == 2  # must end at 8
