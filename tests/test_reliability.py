"""Reliability and security promises, each proven against the real thing: `kerasvae serve` as a subprocess
answers 300 fuzzed PredictRequests with client-error statuses only and keeps serving; model names cannot
reach outside the serving root; byte, batch, concurrency and deadline limits answer RESOURCE_EXHAUSTED or
DEADLINE_EXCEEDED; malformed REST traffic gets 4xx; corrupt, half-written, truncated and tampered version
folders are skipped with a log line while the previous version serves; SIGKILL during `kerasvae export`
leaves no visible version; every model family loads in Keras's safe mode; damaged data and model files
give one clear ValueError."""

import collections
import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import DIGITS_SHAPE, predict_request, small_vae
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

import kerasvae as kv
from kerasvae import cli, saving
from kerasvae.export.savedmodel import export_savedmodel, versions
from kerasvae.serving.models import ModelRegistry, ServingError
from kerasvae.serving.server import Limiter, Server

pytestmark = pytest.mark.slow  # processes killed mid-training and mid-export: the full suite runs them, `-m 'not slow'` does not

MAX_BATCH, MAX_BYTES, MAX_CONCURRENT = 64, 100_000, 8
CLIENT_ERRORS = {"INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION"}
INPUTS = {  # signature -> {key: (dtype, shape of one example)}
    "serving_default": {"x": (np.float32, DIGITS_SHAPE)},
    "encode": {"x": (np.float32, DIGITS_SHAPE)},
    "decode": {"z": (np.float32, (4,))},
    "reconstruct": {"x": (np.float32, DIGITS_SHAPE)},
    "score": {"x": (np.float32, DIGITS_SHAPE)},
    "sample": {"num_samples": (np.int32, None), "seed": (np.int32, None)},
}
Z = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def booting_server(tmp_path_factory):
    """`kerasvae serve` over "digits" (a small VAE) and "versions" (a copy the tests break), with small limits
    and its stderr (the log) in a file. Yielded while the subprocess still boots, so the test that asks for it
    first does its own slow work meanwhile; `served` waits until it is ready."""
    root = tmp_path_factory.mktemp("serving_root")
    export_savedmodel(small_vae(hidden=(16,)), root / "digits")
    shutil.copytree(root / "digits" / "1", root / "versions" / "1")
    log_path = root.parent / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kerasvae.cli", "serve", str(root), "--port", "0", "--rest-port", "0",
             "--poll-seconds", "0.2", "--max-batch-size", str(MAX_BATCH), "--max-request-bytes", str(MAX_BYTES),
             "--max-concurrent-requests", str(MAX_CONCURRENT)],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
    state = {"root": root, "process": process, "log": log_path}
    yield state
    if not state.get("ready"):  # only the screen test ran: let it finish booting, or SIGTERM lands before its handler
        process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


@pytest.fixture(scope="module")
def served(booting_server):
    line = booting_server["process"].stdout.readline()
    booting_server["ready"] = True
    assert line.startswith("kerasvae serve: gRPC on"), (line, booting_server["log"].read_text()[-2000:])
    grpc_target, rest_target = (part.split(" on ")[1].split(";")[0].strip() for part in line.split(", REST"))
    channel = grpc.insecure_channel(grpc_target)
    yield {**booting_server, "grpc": grpc_target, "rest": rest_target, "channel": channel,
           "stub": prediction_service_pb2_grpc.PredictionServiceStub(channel)}
    channel.close()


def status_of(call, request):
    try:
        call(request, timeout=60)
        return "OK"
    except grpc.RpcError as error:
        return error.code().name


def model_status(served, name, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE):
    """The versions of the model in `state` (AVAILABLE: those it serves), newest first."""
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    stub = model_service_pb2_grpc.ModelServiceStub(served["channel"])
    return [s.version for s in stub.GetModelStatus(request, timeout=30).model_version_status if s.state == state]


def wait_for(condition, what, seconds=60):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# === Export under SIGKILL ===


def test_sigkill_during_export_leaves_no_visible_version_and_the_next_export_succeeds(booting_server, tmp_path):
    model = small_vae(hidden=(16,))
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"model": "vae", "dataset": "digits", "seed": 0}))
    base = tmp_path / "saved_models" / "digits"
    shutil.copytree(booting_server["root"] / "digits" / "1", base / "1")  # an earlier export
    shutil.copy(booting_server["root"] / "models.config", base.parent / "models.config")
    process = subprocess.Popen([sys.executable, "-m", "kerasvae.cli", "export", str(run), "--to", str(base)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(base.glob(".tmp-2-*/savedmodel")):  # the SavedModel is being written
        assert process.poll() is None, "the export ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    assert versions(base) == [1] and [p.name for p in base.iterdir() if not p.name.startswith(".")] == ["1"]
    registry = ModelRegistry(base.parent)
    registry.poll()
    assert list(registry.models["digits"]) == [1] and not registry.failed
    assert 'name: "digits"' in (base.parent / "models.config").read_text()  # untouched: written after the rename

    target = export_savedmodel(model, base)
    assert target == base / "2" and versions(base) == [1, 2]
    decoded = tf.saved_model.load(str(target)).signatures["decode"](z=tf.constant(Z))["mean"].numpy()
    np.testing.assert_allclose(decoded, model.decode(Z).mean().numpy(), atol=1e-6)


# === Safe loading and damaged files ===

FAMILIES = {
    "vae_vamp_prior": lambda: kv.presets.mlp_vae(input_shape=DIGITS_SHAPE, latent_dim=2, hidden=(8,), prior="vamp"),
    "vae_mixture_gaussian": lambda: kv.presets.mlp_vae(input_shape=DIGITS_SHAPE, latent_dim=2, hidden=(8,), prior="mixture",
                                                       likelihood="gaussian"),
    "conv_vae_logistic": lambda: kv.presets.conv_vae(input_shape=DIGITS_SHAPE, latent_dim=2, filters=(4,), likelihood="logistic"),
    "sparse_ae": lambda: kv.presets.sparse_ae(input_shape=DIGITS_SHAPE, latent_dim=4, hidden=(8,)),
    "denoising_ae": lambda: kv.presets.denoising_ae(input_shape=DIGITS_SHAPE, latent_dim=4, hidden=(8,)),
    "vqvae": lambda: kv.presets.vqvae(input_shape=DIGITS_SHAPE, num_embeddings=4, embedding_dim=2, filters=(4,)),
    "binary_vae": lambda: kv.presets.binary_vae(input_shape=DIGITS_SHAPE, latent_dim=4, hidden=(8,)),
    "gumbel_vae": lambda: kv.presets.gumbel_vae(input_shape=DIGITS_SHAPE, num_latents=2, num_categories=3, hidden=(8,)),
    "conditional_vae": lambda: kv.presets.conditional_vae(input_shape=DIGITS_SHAPE, num_classes=3, latent_dim=2, hidden=(8,)),
    "sequence_vae": lambda: kv.presets.sequence_vae(input_shape=(6, 1), latent_dim=2, units=(4,)),
}


def test_every_model_family_loads_in_safe_mode_with_the_same_weights(tmp_path):
    for name, build in FAMILIES.items():
        model = build()
        model.save(tmp_path / f"{name}.keras")
        with zipfile.ZipFile(tmp_path / f"{name}.keras") as archive:
            config = archive.read("config.json").decode()
        assert "__lambda__" not in config and '"Lambda"' not in config, name
        reloaded = keras.saving.load_model(tmp_path / f"{name}.keras", safe_mode=True)
        assert type(reloaded) is type(model), name
        assert json.dumps(reloaded.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True), name
        for saved, loaded in zip(model.get_weights(), reloaded.get_weights(), strict=True):
            np.testing.assert_array_equal(saved, loaded, err_msg=name)


def test_damaged_keras_files_give_one_clear_value_error(tmp_path):
    path = tmp_path / "model.keras"
    small_vae(hidden=(8,)).save(path)
    raw = path.read_bytes()
    assert type(saving.load_model(path)).__name__ == "VAE"
    (tmp_path / "truncated.keras").write_bytes(raw[: len(raw) // 2])
    with zipfile.ZipFile(path) as archive, zipfile.ZipFile(tmp_path / "bad_weights.keras", "w") as out:
        for member in archive.namelist():
            out.writestr(member, archive.read(member)[:100] if member.endswith(".h5") else archive.read(member))
    with zipfile.ZipFile(path) as archive, zipfile.ZipFile(tmp_path / "bad_config.keras", "w") as out:
        for member in archive.namelist():
            out.writestr(member, b"{not json" if member == "config.json" else archive.read(member))
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF  # inside the weights: the member's CRC no longer matches
    (tmp_path / "flipped.keras").write_bytes(bytes(flipped))
    cases = {"truncated.keras": "not a .keras archive", "bad_weights.keras": "damaged", "bad_config.keras": "damaged",
             "flipped.keras": "damaged", "missing.keras": "No model file"}
    for name, fragment in cases.items():
        with pytest.raises(ValueError, match=fragment) as error:
            saving.load_model(tmp_path / name)
        assert name in str(error.value) and "\n" not in str(error.value)


def test_evaluate_on_a_run_with_damaged_weights_is_one_line_and_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    small_vae(hidden=(8,)).save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"model": "vae", "dataset": "digits", "seed": 0}))
    with zipfile.ZipFile(run / "model.keras") as archive:
        members = {m: archive.read(m) for m in archive.namelist()}
    with zipfile.ZipFile(run / "model.keras", "w") as out:
        for member, content in members.items():
            out.writestr(member, content[:100] if member.endswith(".h5") else content)
    assert cli.main(["evaluate", str(run), "--num-samples", "2", "--limit", "4"]) == 2
    assert "model.keras" in capsys.readouterr().err


def test_damaged_data_files_give_a_value_error_naming_the_file_and_the_cli_exits_2(tmp_path, capsys):
    np.savez(tmp_path / "good.npz", x=np.random.default_rng(0).random((10, 8, 8)), y=np.arange(10))
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "not_a_zip.npz").write_bytes(b"<html>404</html>")
    np.save(tmp_path / "full.npy", np.zeros((10, 8, 8)))
    (tmp_path / "truncated.npy").write_bytes((tmp_path / "full.npy").read_bytes()[:300])
    np.savez(tmp_path / "strings.npz", x=np.full((4, 3), "1"))
    np.savez(tmp_path / "short_labels.npz", x=np.zeros((10, 8, 8)), y=np.arange(3))
    np.savez(tmp_path / "float_labels.npz", x=np.zeros((10, 8, 8)), y=np.linspace(0, 1, 10))
    cases = {"truncated.npz": "corrupt", "not_a_zip.npz": "not a zip", "truncated.npy": "truncated.npy",
             "strings.npz": "numeric", "short_labels.npz": "10 labels", "float_labels.npz": "integers"}
    for name, fragment in cases.items():
        with pytest.raises(ValueError, match=fragment) as error:
            kv.data.load_arrays(tmp_path / name)
        assert name in str(error.value), str(error.value)
    x, y = kv.data.load_arrays(tmp_path / "good.npz")
    assert x.shape == (10, 8, 8, 1) and y.tolist() == list(range(10))
    assert cli.main(["train", "--dataset", str(tmp_path / "truncated.npz"), "--out", str(tmp_path / "run"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "truncated.npz" in err and "Traceback" not in err


# === Fuzzing ===


def declared_only(dims, dtype=types_pb2.DT_FLOAT, **fields):
    """A TensorProto that declares a shape without values to fill it (or with whatever `fields` give)."""
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **fields)


def fuzzed_tensor(rng, dtype, example_shape, key):
    """A random tensor for one input: mostly the right dtype and shape, often not; NaN and inf sprinkled in."""
    roll = rng.random()
    if roll < 0.06:  # declared shapes that would be gigabytes, negative, or unknown rank: never materialized
        return declared_only([int(rng.integers(10**6, 10**9)), *(example_shape or [])])
    if roll < 0.09:
        return declared_only([-3, 4])
    if roll < 0.11:
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(unknown_rank=True))
    if roll < 0.13:
        return declared_only([2, 4], dtype=77)  # not a DataType
    if roll < 0.16:
        return declared_only([2, *(example_shape or [2])], tensor_content=rng.bytes(int(rng.integers(1, 40))))
    if key == "num_samples":
        shape = () if rng.random() < 0.8 else (int(rng.integers(1, 3)),)
        value = rng.integers(-5, 2 * MAX_BATCH, size=shape)
    elif key == "seed":
        value = rng.integers(-(2**31), 2**31 - 1, size=2 if rng.random() < 0.8 else int(rng.integers(0, 4)))
    else:
        batch = int(rng.choice([0, 1, 2, 3, MAX_BATCH + int(rng.integers(1, 40))]))
        shape = (batch, *example_shape) if rng.random() < 0.75 else tuple(int(d) for d in rng.integers(0, 5, int(rng.integers(0, 5))))
        value = rng.random(shape)
        if value.size and rng.random() < 0.25:
            value.flat[int(rng.integers(value.size))] = rng.choice([np.nan, np.inf, -np.inf])
    if rng.random() < 0.2:
        dtype = rng.choice([np.float64, np.float16, np.int64, np.int32, np.bool_, np.uint8, np.complex64, np.bytes_])
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf cast to integers on purpose
        return tf.make_tensor_proto(np.asarray(value).astype(dtype))


def fuzzed_request(rng):
    name = rng.choice(["digits"] * 12 + ["", "nope", "../digits", "digits/../digits", "/etc/passwd", "..", "digits\n",
                                         "é" * 40, "a" * int(rng.integers(129, 50_000)), "versions"])
    signature = rng.choice([*INPUTS, *INPUTS, "", "transform", "__saved_model_init_op", "s" * 5000])
    specs = dict(INPUTS.get(signature or "serving_default", {"x": (np.float32, DIGITS_SHAPE)}))
    if rng.random() < 0.15 and specs:
        specs.pop(rng.choice(sorted(specs)))
    if rng.random() < 0.15:
        specs[rng.choice(["extra", "label", "x", "z", "k" * 300])] = (np.float32, (4,))
    inputs = {key: fuzzed_tensor(rng, dtype, shape, key) for key, (dtype, shape) in specs.items()}
    if rng.random() < 0.03:  # a message over --max-request-bytes
        inputs["z"] = tf.make_tensor_proto(rng.random((40, MAX_BYTES // 100)).astype(np.float32))
    version = rng.choice([None] * 8 + [1, 2, 0, -1, 2**62])
    request = predict_request(name, signature, inputs, None if version is None else int(version))
    if rng.random() < 0.05:
        request.model_spec.version_label = "stable"
    if rng.random() < 0.1:
        request.output_filter.extend(rng.choice(["mean", "logits", "x", "nope", "mean"], size=int(rng.integers(1, 3))))
    return request


def test_300_fuzzed_requests_get_only_client_error_statuses_and_the_server_keeps_serving(served):
    rng = np.random.default_rng(2024)
    requests = [fuzzed_request(rng) for _ in range(270)]
    raw_predict = served["channel"].unary_unary("/tensorflow.serving.PredictionService/Predict")
    valid = predict_request("digits", "decode", {"z": Z}).SerializeToString()
    # Bytes that are not a PredictRequest: random, a valid request cut short, and one with a bit flipped.
    raw = [rng.bytes(int(rng.integers(1, 200))) for _ in range(20)] + [valid[: int(rng.integers(1, len(valid)))] for _ in range(5)]
    raw += [bytes(b ^ (1 << int(rng.integers(8))) if i == 2 else b for i, b in enumerate(valid)) for _ in range(5)]
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda r: status_of(served["stub"].Predict, r), requests))
        statuses += list(pool.map(lambda r: status_of(raw_predict, r), raw))
    counts = collections.Counter(statuses)
    print(f"fuzz statuses over {len(statuses)} requests: {dict(counts)}")
    assert len(statuses) == 300
    assert set(counts) <= CLIENT_ERRORS | {"OK"}, counts
    assert counts["INVALID_ARGUMENT"] > 100 and counts["NOT_FOUND"] > 10 and counts["RESOURCE_EXHAUSTED"] > 5 and counts["OK"] > 5
    assert served["process"].poll() is None
    response = served["stub"].Predict(predict_request("digits", "decode", {"z": Z}), timeout=30)
    local = tf.saved_model.load(str(served["root"] / "digits" / "1")).signatures["decode"](z=tf.constant(Z))
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["mean"]), local["mean"].numpy(), atol=1e-6)


# === Names, limits, deadlines ===


def test_model_names_cannot_reach_outside_the_serving_root(served, tmp_path):
    outside = served["root"].parent / "outside"  # a loadable model next to the serving root
    shutil.copytree(served["root"] / "digits", outside)
    names = ["../outside", "../outside/", "..", ".", "digits/../../outside", "/etc/passwd", str(outside), "./digits",
             "digits\n", "digits\x00", "a" * 129, "a" * 50_000]
    for name in names:
        status = status_of(served["stub"].Predict, predict_request(name, "decode", {"z": Z}))
        assert status in ("NOT_FOUND", "INVALID_ARGUMENT"), (name[:40], status)
    connection = http.client.HTTPConnection(served["rest"], timeout=30)
    for path in ["/v1/models/../outside", "/v1/models/..%2Foutside", "/v1/models/%2e%2e", "/v1/models/" + "a" * 5000]:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status in (400, 404) and "error" in json.loads(response.read()), path
        connection.close()
    assert model_status(served, "digits") == [1]


def test_byte_batch_and_shape_limits_are_resource_exhausted_and_non_finite_is_invalid(served):
    stub = served["stub"]
    too_many_bytes = predict_request("digits", "decode", {"z": np.zeros((MAX_BYTES // 16 + 1, 4), np.float32)})
    assert status_of(stub.Predict, too_many_bytes) == "RESOURCE_EXHAUSTED"
    assert status_of(stub.Predict, predict_request("digits", "decode", {"z": np.zeros((MAX_BATCH + 1, 4), np.float32)})) == "RESOURCE_EXHAUSTED"
    sample = {"num_samples": np.int32(MAX_BATCH + 1), "seed": np.array([1, 2], np.int32)}
    assert status_of(stub.Predict, predict_request("digits", "sample", sample)) == "RESOURCE_EXHAUSTED"
    # 4e9 declared floats (16 GB) with no values: refused from the header, nothing is allocated.
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(predict_request("digits", "decode", {"z": declared_only([10**9, 4])}), timeout=30)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and str(MAX_BATCH) in error.value.details()
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(predict_request("digits", "decode", {"z": np.where(np.eye(3, 4) > 0, bad, 0).astype(np.float32)}), timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "NaN or infinite" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(predict_request("digits", "sample", {"num_samples": np.int32(-1), "seed": np.array([1, 2], np.int32)}), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "num_samples" in error.value.details()


def test_the_limiter_bounds_runs_in_flight_and_answers_by_the_deadline():
    limiter = Limiter(max_concurrent=1)
    release = threading.Event()
    with pytest.raises(ServingError) as error:
        limiter.run(release.wait, deadline=time.monotonic() + 0.2)
    assert error.value.code == "DEADLINE_EXCEEDED"
    with pytest.raises(ServingError) as error:  # the abandoned run still holds the only slot
        limiter.run(lambda: 1, deadline=time.monotonic() + 30)
    assert error.value.code == "RESOURCE_EXHAUSTED"
    release.set()

    def slot_free():
        try:
            return limiter.run(lambda: 42, deadline=time.monotonic() + 30) == 42
        except ServingError as refused:
            assert refused.code == "RESOURCE_EXHAUSTED"
            return False

    wait_for(slot_free, "the finished run to give its slot back")
    with pytest.raises(ServingError) as error:
        limiter.run(lambda: 1, deadline=time.monotonic() - 1)
    assert error.value.code == "DEADLINE_EXCEEDED"
    limiter.shutdown()


def test_concurrent_flood_gets_answers_or_resource_exhausted(served):
    request = predict_request("digits", "score", {"x": np.random.default_rng(3).random((MAX_BATCH, *DIGITS_SHAPE)).astype(np.float32)})
    with ThreadPoolExecutor(4 * MAX_CONCURRENT) as pool:
        statuses = collections.Counter(pool.map(lambda _: status_of(served["stub"].Predict, request), range(8 * MAX_CONCURRENT)))
    assert set(statuses) <= {"OK", "RESOURCE_EXHAUSTED"} and statuses["OK"] > 0, statuses
    assert status_of(served["stub"].Predict, predict_request("digits", "decode", {"z": Z})) == "OK"


def test_a_request_past_its_deadline_is_deadline_exceeded_and_cheap_calls_still_work(served, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(served["root"] / "digits", root / "digits")
    server = Server(root, port=0, request_timeout=1e-9).start()  # every model run is already late
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(predict_request("digits", "decode", {"z": Z}), timeout=30)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert kv.serving.Client(f"127.0.0.1:{server.grpc_port}", "digits").status() == [{"version": 1, "state": "AVAILABLE"}]
        channel.close()
    finally:
        server.stop(grace=1)


# === REST ===


def rest_call(served, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(served["rest"], timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        data = body.encode() if isinstance(body, str) else body
        headers = {"Content-Length": str(len(data or b"")), **(headers or {})}
        for key, value in headers.items():
            if value is not None:
                connection.putheader(key, value)
        connection.endheaders(data)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_malformed_rest_traffic_gets_4xx_and_the_server_keeps_serving(served):
    predict = "/v1/models/digits:predict"
    malformed = [
        ("not json", {}),
        ("[1, 2]", {}),
        ("[" * 20_000 + "]" * 20_000, {}),  # deeper than Python's recursion limit
        (b"\xff\xfe{", {}),
        ('{"signature_name": 5, "inputs": [[0, 0, 0, 0]]}', {}),
        ('{"signature_name": "sample", "inputs": {"num_samples": 1099511627776, "seed": [1, 2]}}', {}),
        ('{"signature_name": "decode", "instances": [{"z": [0, 0, 0, 0]}, {"q": 1}]}', {}),
        ('{"signature_name": "decode", "instances": [[0, 0, 0, 0], [0, 0]]}', {}),
        ('{"signature_name": "decode", "inputs": [[NaN, 0, 0, 0]]}', {}),
        ('{"signature_name": "decode", "inputs": [["a", "b", "c", "d"]]}', {}),
        ('{"signature_name": "decode", "inputs": {"z": [[0, 0, 0, 0]], "extra": {"b64": "AA=="}}}', {}),
        ('{"signature_name": "decode"}', {}),
        ("{}", {"Content-Length": "-1"}),
        ("{}", {"Content-Length": "two"}),
        ("{}", {"Transfer-Encoding": "chunked"}),
    ]
    for body, headers in malformed:
        status, payload = rest_call(served, "POST", predict, body, headers)
        assert status == 400 and "error" in payload, (body[:40], status, payload)
    status, payload = rest_call(served, "POST", predict, "", {"Content-Length": str(10 * MAX_BYTES)})
    assert status == 429 and str(MAX_BYTES) in payload["error"]
    status, payload = rest_call(served, "POST", predict, json.dumps({"signature_name": "decode", "inputs": Z.tolist()}))
    assert status == 200 and np.asarray(payload["outputs"]["mean"]).shape == (3, *DIGITS_SHAPE)
    assert served["process"].poll() is None


def test_idle_rest_connections_beyond_the_limit_get_429_and_the_slots_come_back(served):
    host, port = served["rest"].rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=30) for _ in range(MAX_CONCURRENT)]

    def refused_at_once():  # the server answers a connection over the limit before the client says anything
        with socket.create_connection((host, int(port)), timeout=5) as extra:
            try:
                return extra.recv(64).startswith(b"HTTP/1.1 429")
            except TimeoutError:
                return False

    try:
        wait_for(refused_at_once, "a connection over the limit to get 429")
    finally:
        for connection in idle:
            connection.close()
    wait_for(lambda: rest_call(served, "GET", "/v1/models/digits")[0] == 200, "the idle connections' slots to come back")


def test_output_filter_and_version_labels_follow_tf_serving(served):
    request = predict_request("digits", "decode", {"z": Z})
    request.output_filter.append("mean")
    assert set(served["stub"].Predict(request, timeout=30).outputs) == {"mean"}
    for bad_filter, fragment in ((["nope"], "alias not found"), (["mean", "mean"], "duplicate")):
        request = predict_request("digits", "decode", {"z": Z})
        request.output_filter.extend(bad_filter)
        with pytest.raises(grpc.RpcError) as error:
            served["stub"].Predict(request, timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in error.value.details()
    request = predict_request("digits", "decode", {"z": Z})
    request.model_spec.version_label = "stable"
    with pytest.raises(grpc.RpcError) as error:
        served["stub"].Predict(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "version label" in error.value.details()


# === Version folders ===


def test_corrupt_half_written_truncated_and_tampered_versions_are_skipped_while_the_last_good_one_serves(served, tmp_path):
    base, log = served["root"] / "versions", served["log"]
    good = base / "1"

    def skipped(version):
        return f"skipping versions version {version}" in log.read_text()

    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"not a protobuf")
    wait_for(lambda: skipped(2), "the corrupt version 2 to be logged and skipped")
    assert model_status(served, "versions") == [1]

    # A copy under way: saved_model.pb is there, the variables are not yet. Skipped, then loaded once complete.
    half = base / "3"
    half.mkdir()
    shutil.copy(good / "saved_model.pb", half / "saved_model.pb")
    wait_for(lambda: skipped(3), "the half-written version 3 to be logged and skipped")
    assert model_status(served, "versions") == [1]
    for part in good.iterdir():
        if part.name != "saved_model.pb":
            (shutil.copytree if part.is_dir() else shutil.copy)(part, half / part.name)
    wait_for(lambda: model_status(served, "versions") == [3], "the completed version 3 to be served")

    truncated = tmp_path / "4"
    shutil.copytree(good, truncated)
    for data in (truncated / "variables").glob("variables.data-*"):
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    truncated.rename(base / "4")
    wait_for(lambda: skipped(4), "the version with truncated variables to be logged and skipped")

    # A SavedModel whose signature would write a file: refused before it loads, so it can never run.
    target = tmp_path / "written_by_the_model"

    class Tampered(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="z")])
        def decode(self, z):
            tf.io.write_file(str(target), "the model ran")
            return {"mean": z}

    module = Tampered()
    tf.saved_model.save(module, str(tmp_path / "5"), signatures={"decode": module.decode})
    (tmp_path / "5").rename(base / "5")
    wait_for(lambda: skipped(5), "the tampered version 5 to be logged and skipped")
    assert "WriteFile" in log.read_text()
    assert model_status(served, "versions") == [3] and not target.exists()
    # As in TF Serving's status: the versions that failed to load, and the one unloaded, are END.
    assert model_status(served, "versions", get_model_status_pb2.ModelVersionStatus.END) == [5, 4, 2, 1]
    response = served["stub"].Predict(predict_request("versions", "decode", {"z": Z}), timeout=30)
    assert response.model_spec.version.value == 3 and tf.make_ndarray(response.outputs["mean"]).shape == (3, *DIGITS_SHAPE)
    assert served["process"].poll() is None


def test_the_screen_passes_an_export_and_refuses_python_callbacks(booting_server, tmp_path):
    registry = ModelRegistry(tmp_path)
    shutil.copytree(booting_server["root"] / "digits", tmp_path / "clean")

    class Callback(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def run(self, x):
            return {"y": tf.py_function(lambda v: v * 2, [x], tf.float32)}

    module = Callback()
    tf.saved_model.save(module, str(tmp_path / "callback" / "1"), signatures={"serving_default": module.run})
    assert registry.poll() == ["clean"] and registry.failed and next(iter(registry.failed))[0] == "callback"


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(served, tmp_path, capsys):
    shutil.copytree(served["root"] / "digits", tmp_path / "digits")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["serve", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(port) in err


def test_a_second_server_on_the_first_servers_grpc_port_refuses(served, tmp_path, capsys):
    """gRPC's default SO_REUSEPORT let a second `kerasvae serve --port P` bind P and take half the requests."""
    shutil.copytree(served["root"] / "digits", tmp_path / "digits")
    port = served["grpc"].rsplit(":", 1)[1]
    assert cli.main(["serve", str(tmp_path), "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and port in err
