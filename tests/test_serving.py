"""`kerasvae serve` as a subprocess on loopback, answered with raw TF Serving protos and with our clients:
every signature, metadata and status, TF Serving's status codes, new versions picked up under load,
concurrency, REST, and a clean SIGTERM. The same protocol checks run against a real
`tensorflow_model_server` when one is on PATH (or KERASVAE_TFSERVING=host:port names one)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

import kerasvae as kv
from conftest import fit, predict_request, small_vae
from kerasvae.export.savedmodel import SIGNATURES, export_savedmodel

X = np.random.default_rng(0).random((5, 8, 8, 1)).astype(np.float32)
Z = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
REQUESTS = {
    "serving_default": {"x": X},
    "encode": {"x": X},
    "decode": {"z": Z},
    "reconstruct": {"x": X},
    "sample": {"num_samples": np.int32(3), "seed": np.array([4, 2], np.int32)},
    "score": {"x": X},
}


def start_server(root, *extra):
    process = subprocess.Popen(
        [sys.executable, "-m", "kerasvae.cli", "serve", str(root), "--port", "0", "--rest-port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = process.stdout.readline()
    assert line.startswith("kerasvae serve: gRPC on"), line
    grpc_target, rest_target = (part.split(" on ")[1].split(";")[0] for part in line.split(", REST"))
    return process, grpc_target.strip(), rest_target.strip()


def stop_server(process):
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert "stopped" in process.stdout.read()


@pytest.fixture(scope="module")
def served(digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_models")
    model = small_vae()
    fit(model, digits[0], epochs=2)
    export_savedmodel(model, root / "digits")
    export_savedmodel(small_vae(hidden=(16,)), root / "swap")
    process, grpc_target, rest_target = start_server(root, "--poll-seconds", "0.3", "--max-batch-size", "256")
    yield {"root": root, "grpc": grpc_target, "rest": rest_target, "process": process}
    if process.poll() is None:
        stop_server(process)


def stub(target):
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))


def raw_predict(target, model, signature, inputs, version=None):
    response = stub(target).Predict(predict_request(model, signature, inputs, version), timeout=30)
    return response, {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


def check_protocol(target, model_name, saved_model_path):
    """The assertions any TF Serving must pass for an exported kerasvae model."""
    local = tf.saved_model.load(str(saved_model_path)).signatures
    for signature, inputs in REQUESTS.items():
        response, outputs = raw_predict(target, model_name, signature, inputs)
        expected = {k: v.numpy() for k, v in local[signature](**{k: tf.constant(v) for k, v in inputs.items()}).items()}
        assert set(outputs) == set(expected), signature
        for key in expected:
            np.testing.assert_allclose(outputs[key], expected[key], atol=1e-5, err_msg=f"{signature}/{key}")
        assert response.model_spec.name == model_name and response.model_spec.version.value == 1
    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata_request.model_spec.name = model_name
    metadata = stub(target).GetModelMetadata(metadata_request, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signature_map)
    assert set(SIGNATURES) <= set(signature_map.signature_def)
    assert set(signature_map.signature_def["sample"].inputs) == {"num_samples", "seed"}
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = model_name
    status = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(target)).GetModelStatus(status_request, timeout=30)
    assert [(s.version, s.state) for s in status.model_version_status] == [(1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    bad_requests = [
        (("nope", "decode", {"z": Z}), grpc.StatusCode.NOT_FOUND, "nope"),
        ((model_name, "decode", {"z": Z}, 7), grpc.StatusCode.NOT_FOUND, "7"),
        ((model_name, "transform", {"z": Z}), grpc.StatusCode.INVALID_ARGUMENT, "transform"),
        ((model_name, "decode", {"latent": Z}), grpc.StatusCode.INVALID_ARGUMENT, "z"),
        ((model_name, "decode", {"z": Z[:, :3]}), grpc.StatusCode.INVALID_ARGUMENT, "z"),
        ((model_name, "decode", {"z": Z.astype(np.float64)}), grpc.StatusCode.INVALID_ARGUMENT, "float"),
    ]
    for args, code, fragment in bad_requests:
        with pytest.raises(grpc.RpcError) as error:
            raw_predict(target, *args)
        assert error.value.code() == code, (args[:2], error.value.details())
        assert fragment in error.value.details()
    assert raw_predict(target, model_name, "decode", {"z": Z})[1]["mean"].shape == (5, 8, 8, 1)  # still serving


def test_every_signature_metadata_status_and_error_codes_over_raw_protos(served):
    check_protocol(served["grpc"], "digits", served["root"] / "digits" / "1")


def test_clients_agree_with_the_savedmodel_over_grpc_and_rest(served):
    local = tf.saved_model.load(str(served["root"] / "digits" / "1")).signatures
    grpc_client = kv.serving.Client(served["grpc"], "digits", max_batch=2)  # 5 examples -> 3 requests
    rest_client = kv.serving.RestClient(served["rest"], "digits", max_batch=2)
    expected_mean = local["decode"](z=tf.constant(Z))["mean"].numpy()
    expected_elbo = local["score"](x=tf.constant(X))["elbo"].numpy()
    expected_samples = local["sample"](num_samples=tf.constant(3), seed=tf.constant([4, 2]))["x"].numpy()
    for client in (grpc_client, rest_client):
        np.testing.assert_allclose(client.decode(Z)["mean"], expected_mean, atol=1e-5)
        np.testing.assert_allclose(client.score(X)["elbo"], expected_elbo, atol=1e-4)
        np.testing.assert_allclose(client.sample(3, seed=(4, 2)), expected_samples, atol=1e-5)
        assert client.reconstruct(X).shape == X.shape and client.encode(X)["loc"].shape == (5, 4)
        assert client.status() == [{"version": 1, "state": "AVAILABLE"}]
        assert set(client.metadata()) >= set(SIGNATURES)
    with pytest.raises(kv.serving.ServingClientError, match="NOT_FOUND"):
        kv.serving.Client(served["grpc"], "missing").decode(Z)
    with pytest.raises(kv.serving.ServingClientError, match="shape"):
        rest_client.decode(Z[:, :2])


def test_rest_row_format_like_curl(served):
    import json
    import urllib.request

    body = json.dumps({"signature_name": "decode", "instances": Z[:2].tolist()}).encode()
    request = urllib.request.Request(f"http://{served['rest']}/v1/models/digits:predict", data=body)
    predictions = json.loads(urllib.request.urlopen(request, timeout=30).read())["predictions"]
    assert len(predictions) == 2 and np.asarray(predictions[0]["mean"]).shape == (8, 8, 1)


def test_batch_limit_is_resource_exhausted(served):
    with pytest.raises(grpc.RpcError) as error:
        raw_predict(served["grpc"], "digits", "decode", {"z": np.zeros((257, 4), np.float32)})
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "256" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        raw_predict(served["grpc"], "digits", "decode", {"z": np.full((2, 4), np.nan, np.float32)})
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sixteen_concurrent_clients_get_no_errors(served):
    def hammer(worker):
        client = kv.serving.Client(served["grpc"], "digits")
        z = np.random.default_rng(worker).standard_normal((1, 4)).astype(np.float32)
        return sum(client.decode(z)["mean"].shape == (1, 8, 8, 1) for _ in range(100))

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(hammer, range(16))) == [100] * 16


def test_a_new_version_is_picked_up_under_load_with_zero_failures(served):
    client = kv.serving.Client(served["grpc"], "swap")
    versions, failures, stop = [], [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                response, _ = raw_predict(served["grpc"], "swap", "decode", {"z": Z})
                versions.append(response.model_spec.version.value)
            except grpc.RpcError as error:
                failures.append(error.details())

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    export_savedmodel(small_vae(hidden=(16,), seed=1), served["root"] / "swap")
    deadline = time.time() + 60
    while time.time() < deadline and client.status()[0]["version"] != 2:
        time.sleep(0.2)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == []
    assert versions[0] == 1 and versions[-1] == 2 and client.status() == [{"version": 2, "state": "AVAILABLE"}]


def test_a_broken_version_is_skipped_and_the_previous_keeps_serving(served):
    broken = served["root"] / "digits" / "9"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    time.sleep(1.5)
    assert kv.serving.Client(served["grpc"], "digits").status() == [{"version": 1, "state": "AVAILABLE"}]
    shutil.rmtree(broken)


def test_sigterm_exits_cleanly_and_a_missing_root_is_exit_2(tmp_path, served):
    stop_server(served["process"])
    result = subprocess.run([sys.executable, "-m", "kerasvae.cli", "serve", str(tmp_path / "none"), "--port", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is not a folder" in result.stderr


def test_model_config_limits_what_is_served(served, tmp_path):
    config = tmp_path / "only_digits.config"
    config.write_text(f'model_config_list {{ config {{ name: "digits" base_path: "{served["root"] / "digits"}" '
                      'model_platform: "tensorflow" } }')
    process, grpc_target, _ = start_server(served["root"], "--model-config", str(config))
    try:
        assert kv.serving.Client(grpc_target, "digits").status()[0]["state"] == "AVAILABLE"
        with pytest.raises(kv.serving.ServingClientError, match="NOT_FOUND"):
            kv.serving.Client(grpc_target, "swap").status()
    finally:
        stop_server(process)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not (shutil.which("tensorflow_model_server") or os.environ.get("KERASVAE_TFSERVING")),
    reason="no tensorflow_model_server on PATH and KERASVAE_TFSERVING unset",
)
def test_real_tensorflow_model_server_speaks_the_same_protocol(digits, tmp_path):
    model = small_vae()
    fit(model, digits[0], epochs=1)
    path = export_savedmodel(model, tmp_path / "digits")
    if os.environ.get("KERASVAE_TFSERVING"):  # a server someone started on a copy of this export
        check_protocol(os.environ["KERASVAE_TFSERVING"], "digits", path)
        return
    port = free_port()
    server = subprocess.Popen(["tensorflow_model_server", f"--port={port}", f"--model_config_file={tmp_path / 'models.config'}"])
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        time.sleep(2)
        check_protocol(f"127.0.0.1:{port}", "digits", path)
    finally:
        server.terminate()
        server.wait(timeout=30)
