"""`kerasvae serve` as a subprocess on loopback, answered with raw TF Serving protos and with our clients:
every signature, metadata and status, TF Serving's status codes, new versions picked up under load,
concurrency, REST, and a clean SIGTERM. The same protocol checks run against a real
`tensorflow_model_server` when one is on PATH (or KERASVAE_TFSERVING=host:port names one).

The REST API is checked against goldens: request/response pairs copied from TF Serving's own tests and
docs (each cites its file at tensorflow/serving commit TFS below), replayed on rebuilds of the test models
they were written for. `RestClient` runs in a process where TensorFlow cannot be imported."""

import gzip
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import WITHOUT_TENSORFLOW, fit, predict_request, small_vae
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

import kerasvae as kv
from kerasvae.export.savedmodel import SIGNATURES, export_savedmodel
from kerasvae.serving.batching import write_batching_parameters

TFS = "9d981c5c2708d23c5407c7c1e30309e6f9798874"  # the tensorflow/serving commit the goldens are copied from

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


def check_protocol(target, model_name, saved_model_path, tf_serving_batching=False):
    """The assertions any TF Serving must pass for an exported kerasvae model. Under TF Serving's
    --enable_batching every signature is batched, so `sample` (a scalar num_samples) is refused by
    batching_util.h's ComputeTensorBatchSize; kerasvae serve runs it unbatched."""
    local = tf.saved_model.load(str(saved_model_path)).signatures
    for signature, inputs in REQUESTS.items():
        if tf_serving_batching and signature == "sample":
            with pytest.raises(grpc.RpcError) as error:
                raw_predict(target, model_name, signature, inputs)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at least one dimension" in error.value.details()
            continue
        response, outputs = raw_predict(target, model_name, signature, inputs)
        expected = {k: v.numpy() for k, v in local[signature](**{k: tf.constant(v) for k, v in inputs.items()}).items()}
        assert set(outputs) == set(expected), signature
        for key, value in expected.items():
            np.testing.assert_allclose(outputs[key], value, atol=1e-5, err_msg=f"{signature}/{key}")
            # predict_util.cc writes Tensor::AsProtoField: values in the typed field that Go, Java and C++
            # clients read (float_val for float32), never tensor_content.
            proto = response.outputs[key]
            assert not proto.tensor_content, f"{signature}/{key}"
            if value.dtype == np.float32:
                np.testing.assert_allclose(np.array(proto.float_val, np.float32).reshape(value.shape), value, atol=1e-5)
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
    model_service = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(target))
    status = model_service.GetModelStatus(status_request, timeout=30)
    with pytest.raises(grpc.RpcError) as error:  # get_model_status_impl.cc
        model_service.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "Missing ModelSpec" in error.value.details()
    assert [(s.version, s.state) for s in status.model_version_status] == [(1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    bad_requests = [
        (("nope", "decode", {"z": Z}), grpc.StatusCode.NOT_FOUND, "nope"),
        ((model_name, "decode", {"z": Z}, 7), grpc.StatusCode.NOT_FOUND, "7"),
        ((model_name, "transform", {"z": Z}), grpc.StatusCode.FAILED_PRECONDITION, "transform"),  # predict_util.cc
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
        # Requests of 2 examples sum ~500 nats in another order than one call of 5: float32 rounding, ~3e-7 relative.
        np.testing.assert_allclose(client.score(X)["elbo"], expected_elbo, rtol=2e-6, atol=1e-4)
        np.testing.assert_allclose(client.sample(3, seed=(4, 2)), expected_samples, atol=1e-5)
        assert client.reconstruct(X).shape == X.shape and client.encode(X)["loc"].shape == (5, 4)
        assert client.status() == [{"version": 1, "state": "AVAILABLE"}]
        assert set(client.metadata()) >= set(SIGNATURES)
    with pytest.raises(kv.serving.ServingClientError, match="NOT_FOUND"):
        kv.serving.Client(served["grpc"], "missing").decode(Z)
    with pytest.raises(kv.serving.ServingClientError, match="shape"):
        rest_client.decode(Z[:, :2])


def test_rest_row_format_like_curl(served):
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
    assert versions[0] == 1 and versions[-1] == 2
    assert client.status() == [{"version": 2, "state": "AVAILABLE"}, {"version": 1, "state": "END"}]  # as TF Serving lists them


def test_a_broken_version_is_skipped_and_the_previous_keeps_serving(served):
    broken = served["root"] / "digits" / "9"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    time.sleep(1.5)
    (ended, serving) = kv.serving.Client(served["grpc"], "digits").status()
    assert serving == {"version": 1, "state": "AVAILABLE"}
    assert ended["version"] == 9 and ended["state"] == "END" and "Error parsing message" in ended["error"], ended
    assert kv.serving.RestClient(served["rest"], "digits").status() == [ended, serving]
    shutil.rmtree(broken)


@pytest.mark.slow
def test_sigterm_exits_cleanly_and_a_missing_root_is_exit_2(tmp_path, served):
    stop_server(served["process"])
    result = subprocess.run([sys.executable, "-m", "kerasvae.cli", "serve", str(tmp_path / "none"), "--port", "0"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "is not a folder" in result.stderr


@pytest.mark.slow
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
    batching = write_batching_parameters(tmp_path / "digits")  # as kerasvae export writes it: TF Serving must parse it
    if os.environ.get("KERASVAE_TFSERVING"):  # a server someone started on a copy of this export
        check_protocol(os.environ["KERASVAE_TFSERVING"], "digits", path)
        return
    port = free_port()
    server = subprocess.Popen(["tensorflow_model_server", f"--port={port}", f"--model_config_file={tmp_path / 'models.config'}",
                               "--enable_batching", f"--batching_parameters_file={batching}"])
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        time.sleep(2)
        check_protocol(f"127.0.0.1:{port}", "digits", path, tf_serving_batching=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


# === REST goldens: TF Serving's own request/response pairs, replayed on its test models rebuilt in TF2 ===


class HalfPlusTwo(tf.Module):
    """TF Serving's test model half_plus_two (y = 0.5 x + 2; half_plus_three adds 3), with the signatures of
    its metadata golden that a TF2 export can have. TF1 graphs accept any shape for x, so x has none here."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
    def serving_default(self, x):
        return {"y": 0.5 * x + self.offset}

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
    def regress_x2_to_y3(self, inputs):
        return {"outputs": 0.5 * inputs + 3}

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
    def classify_x2_to_y3(self, inputs):
        return {"scores": 0.5 * inputs + 3}


class JsonTensors(tf.Module):
    """Signatures that output the tensors of json_tensor_test.cc's MakeJsonFromTensors goldens, and take the
    inputs of its FillPredictRequestFromJson goldens (echoed back)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def multiple_named_tensors(self, x):
        return {
            "int_tensor": tf.constant([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], tf.int32),
            "str_tensor": tf.constant([["foo", "bar"], ["baz", "bat"]]),
            "float_tensor": tf.constant([[1.0], [2.0]], tf.float32),
            "double_scalar_tensor": tf.constant([8.0, 9.0], tf.float64),
            "str_tensor_bytes": tf.constant([["hello", "world"], ["tf", "serving"]]),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def single_tensor(self, x):
        return {"int_tensor": tf.constant([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], tf.int32)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def six_digit_precision(self, x):
        return {"float_tensor": tf.constant([[9000000, 999999, 0.50000], [0.0003, 0.00003, 555557.5]], tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def non_finite(self, x):
        return {"float_tensor": tf.constant([[np.nan, np.inf], [3, -np.inf]], tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.int32)])
    def int_input(self, default):
        return {"default": default}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.int32), tf.TensorSpec(None, tf.string), tf.TensorSpec(None, tf.string)])
    def named_inputs(self, int_tensor, str_tensor, bin_tensor):
        return {"int_tensor": int_tensor, "str_tensor": str_tensor, "bin_tensor": bin_tensor}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.int32), tf.TensorSpec(None, tf.string)])
    def int_and_str(self, int_tensor, str_tensor):
        return {"int_tensor": int_tensor, "str_tensor": str_tensor}


HALF_PLUS_TWO = "saved_model_half_plus_two_2_versions"  # the handler test's model, served at version 123


def save_module(module, path):
    names = [name for name, value in vars(type(module)).items() if hasattr(value, "get_concrete_function")]  # its tf.functions
    tf.saved_model.save(module, str(path), signatures={name: getattr(module, name) for name in names})


def test_models_config_version_policies_labels_and_unloading_as_tf_serving(tmp_path, caplog):
    """models.config's model_version_policy (specific, latest N) and version_labels, read again at each poll;
    versions the policy drops or whose folders go are unloaded (END) once another serves, as TF Serving's
    availability-preserving policy does; a label may only move to a version that serves."""
    from kerasvae.serving.models import ModelRegistry, ServingError

    for version in (1, 2, 3):
        save_module(HalfPlusTwo(float(version)), tmp_path / "hp" / str(version))  # y = x / 2 + version
    config = tmp_path / "models.config"

    def configure(policy, labels):
        labels = " ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
        config.write_text(f'model_config_list {{ config {{ name: "hp" base_path: "{tmp_path / "hp"}" model_platform: '
                          f'"tensorflow" model_version_policy {{ {policy} }} {labels} }} }}')
        return registry.poll()

    def answer(**request):
        return float(registry.get("hp", **request).call("serving_default", {"x": np.float32(0.0)})["y"])

    registry = ModelRegistry(tmp_path, config, warmup=False)
    assert configure("specific { versions: 1 versions: 3 }", {"stable": 1, "canary": 3}) == ["hp"]
    assert sorted(registry.models["hp"]) == [1, 3] and registry.status("hp") == [(3, None), (1, None)]
    assert answer() == 3.0 and answer(label="stable") == 1.0 and answer(label="canary") == 3.0 and answer(version=1) == 1.0
    with pytest.raises(ServingError, match=r"Servable not found for request: Specific\(hp, 2\)"):
        registry.get("hp", 2)
    with pytest.raises(ServingError, match="Unrecognized servable version label: beta"):
        registry.get("hp", label="beta")

    configure("latest { num_versions: 2 }", {"stable": 2})  # 1 leaves, 2 arrives, stable moves to it
    assert registry.status("hp") == [(3, None), (2, None), (1, "")] and answer(label="stable") == 2.0
    assert registry.status("hp", 1) == [(1, "")]
    configure("latest { num_versions: 2 }", {"stable": 1})  # 1 does not serve: the label stays on 2
    assert answer(label="stable") == 2.0 and caplog.text.count("does not serve") == 1
    configure("latest { num_versions: 2 }", {"stable": 1})
    assert caplog.text.count("does not serve") == 1  # said once, not at every poll

    shutil.rmtree(tmp_path / "hp" / "3")  # the newest folder goes: 1 comes back, 3 ends
    configure("latest { num_versions: 2 }", {})
    assert registry.status("hp") == [(3, ""), (2, None), (1, None)] and answer() == 2.0
    with pytest.raises(ServingError, match="Unrecognized servable version label: stable"):
        registry.get("hp", label="stable")
    assert configure("latest { num_versions: 2 }", {}) == []  # nothing changed

    config.write_text("")  # a config caught mid-write: no action, as TF Serving takes none for an empty config
    assert registry.poll() == [] and sorted(registry.models["hp"]) == [1, 2]
    (tmp_path / "hp").rename(tmp_path / "hp_moved")  # the base folder unmounted or replaced: keep serving
    assert configure("latest { num_versions: 2 }", {}) == [] and sorted(registry.models["hp"]) == [1, 2]
    (tmp_path / "hp_moved").rename(tmp_path / "hp")
    config.write_text('model_config_list { config { name: "hp" base_path: "/a" } config { name: "hp" base_path: "/b" } }')
    with pytest.raises(ValueError, match=r"names \['hp'\] more than once"):
        registry.poll()
    config.write_text("model_config_list { }")  # the model leaves the config: every version unloads
    assert registry.poll() == ["hp"] and registry.models == {}
    assert registry.status("hp") == [(3, ""), (2, ""), (1, "")]
    with pytest.raises(ServingError, match=r"Servable not found for request: Latest\(hp\)"):
        registry.get("hp")


def test_clients_ask_for_a_label_and_the_rest_client_reports_a_refused_connection(tmp_path):
    for version in (1, 2):
        save_module(HalfPlusTwo(float(version)), tmp_path / "hp" / str(version))  # y = x / 2 + version
    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "hp" base_path: "{tmp_path / "hp"}" model_platform: '
                      '"tensorflow" model_version_policy { all {} } version_labels { key: "stable" value: 1 } } }')
    server = kv.serving.Server(tmp_path, port=0, rest_port=0, model_config=config, model_warmup=False).start()
    grpc_target, rest_target = f"127.0.0.1:{server.grpc_port}", f"127.0.0.1:{server.rest_port}"
    x = {"x": np.array([0.0], np.float32)}
    try:
        for client_type, target in ((kv.serving.Client, grpc_target), (kv.serving.RestClient, rest_target)):
            assert client_type(target, "hp", label="stable").predict("serving_default", x)["y"].tolist() == [1.0]
            assert client_type(target, "hp").predict("serving_default", x)["y"].tolist() == [2.0]  # the newest
            with pytest.raises(kv.serving.ServingClientError, match="Unrecognized servable version label: beta"):
                client_type(target, "hp", label="beta").predict("serving_default", x)
        with pytest.raises(ValueError, match="version or a label"):
            kv.serving.RestClient(rest_target, "hp", version=1, label="stable")
    finally:
        server.stop(grace=1)
    with pytest.raises(kv.serving.ServingClientError, match="UNAVAILABLE") as error:
        kv.serving.RestClient(rest_target, "hp", retries=1).status()  # stopped: its port refuses connections
    assert error.value.code == "UNAVAILABLE"


def test_clients_pass_a_conditional_models_labels_and_a_hierarchical_decoders_noise(tmp_path):
    """The signatures of these families take inputs besides x and z: `label`, and noise_1 for a two-level
    decoder. The clients' methods pass them, and the answers are the SavedModel's."""
    conditional = kv.presets.conditional_vae(input_shape=(8, 8, 1), num_classes=3, latent_dim=4, hidden=(16,), seed=0)
    hierarchical = kv.presets.hvae(input_shape=(8, 8, 1), latent_dim=2, lower_dims=(3,), encoder_filters=None, hidden=(16,),
                                   level_hidden=(8,), seed=0)
    export_savedmodel(conditional, tmp_path / "conditional")
    export_savedmodel(hierarchical, tmp_path / "hierarchical")
    local = {name: tf.saved_model.load(str(tmp_path / name / "1")) for name in ("conditional", "hierarchical")}
    labels, noise = np.array([0, 2, 1, 1, 0], np.int32), np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    x, z = tf.constant(X), tf.constant(Z[:, :2])
    expected = {
        "encode": local["conditional"].signatures["encode"](x=x, label=labels)["loc"].numpy(),
        "decode": local["conditional"].signatures["decode"](z=tf.constant(Z), label=labels)["mean"].numpy(),
        "reconstruct": local["conditional"].signatures["reconstruct"](x=x, label=labels)["reconstruction"].numpy(),
        "score": local["conditional"].signatures["score"](x=x, label=labels)["elbo"].numpy(),
        "sample": local["conditional"].signatures["sample"](num_samples=tf.constant(2), seed=tf.constant([1, 2]),
                                                           label=tf.constant([2]))["x"].numpy(),
        "noise": local["hierarchical"].signatures["decode"](z=z, noise_1=noise)["mean"].numpy(),
    }
    server = kv.serving.Server(tmp_path, port=0, rest_port=0, model_warmup=False).start()
    try:
        for client_type, port in ((kv.serving.Client, server.grpc_port), (kv.serving.RestClient, server.rest_port)):
            client = client_type(f"127.0.0.1:{port}", "conditional", max_batch=2)
            np.testing.assert_allclose(client.encode(X, labels=labels)["loc"], expected["encode"], atol=1e-5)
            np.testing.assert_allclose(client.decode(Z, labels=labels)["mean"], expected["decode"], atol=1e-5)
            np.testing.assert_allclose(client.reconstruct(X, labels=labels), expected["reconstruct"], atol=1e-5)
            np.testing.assert_allclose(client.score(X, labels=labels)["elbo"], expected["score"], rtol=1e-5)
            np.testing.assert_allclose(client.sample(2, seed=(1, 2), labels=2), expected["sample"], atol=1e-5)
            np.testing.assert_allclose(client.reconstruct(X[:2], labels=1), client.reconstruct(X[:2], labels=[1, 1]))
            with pytest.raises(kv.serving.ServingClientError, match="label"):
                client.decode(Z)
            decoded = client_type(f"127.0.0.1:{port}", "hierarchical").decode(Z[:, :2], noise={"noise_1": noise})
            np.testing.assert_allclose(decoded["mean"], expected["noise"], atol=1e-5)
    finally:
        server.stop(grace=1)


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """An in-process Server, with access logging on, over TF Serving's test models and a kerasvae export."""
    root = tmp_path_factory.mktemp("golden_models")
    save_module(HalfPlusTwo(2.0), root / HALF_PLUS_TWO / "123")
    save_module(HalfPlusTwo(3.0), root / "saved_model_half_plus_three" / "123")
    save_module(JsonTensors(), root / "json_tensor" / "1")
    export_savedmodel(small_vae(), root / "digits")
    server = kv.serving.Server(root, port=0, rest_port=0, log_requests=True).start()
    yield {"root": root, "server": server, "rest": f"127.0.0.1:{server.rest_port}", "grpc": f"127.0.0.1:{server.grpc_port}"}
    server.stop(grace=1)


def rest(golden, method, path, body=None):
    """(HTTP status, parsed JSON) of one REST call; `body` is sent as it is if str, else as JSON."""
    data = body.encode() if isinstance(body, str) else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{golden['rest']}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_json_equal(actual, expected, path="$"):
    """Same JSON structure, key for key and item for item; numbers equal up to float32 rounding, NaN == NaN."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), (path, actual, expected)
        for key in expected:
            assert_json_equal(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (path, actual, expected)
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_json_equal(a, e, f"{path}[{i}]")
    elif isinstance(expected, float) or isinstance(actual, float):
        assert type(actual) in (int, float) and np.isclose(actual, expected, rtol=1e-6, equal_nan=True), (path, actual, expected)
    else:
        assert type(actual) is type(expected) and actual == expected, (path, actual, expected)


# tensorflow_serving/model_servers/http_rest_api_handler_test.cc @ TFS, TEST_F(HttpRestApiHandlerTest, GetStatus),
# and tensorflow_serving/g3doc/api_rest.md @ TFS, "Get status of the model"
STATUS_GOLDEN = {"model_version_status": [{"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def test_model_status_matches_tf_serving(golden):
    for path in (f"/v1/models/{HALF_PLUS_TWO}", f"/v1/models/{HALF_PLUS_TWO}/versions/123",
                 f"/v1/models/{HALF_PLUS_TWO}/labels/Version_Label",  # TF Serving's status ignores the label
                 "/v1/models/saved_model_half_plus_three"):
        assert rest(golden, "GET", path) == (200, STATUS_GOLDEN), path
    assert rest(golden, "GET", f"/v1/models/{HALF_PLUS_TWO}/versions/7") == (
        404, {"error": f"Could not find version 7 of model {HALF_PLUS_TWO}"})  # get_model_status_impl.cc


# tensorflow_serving/servables/tensorflow/testdata/saved_model_half_plus_two_2_versions_metadata.json @ TFS: its
# model_spec, the signatures a TF2 export can reproduce, and the form of an unknown-rank shape (classify_x_to_y's input)
METADATA_GOLDEN = json.loads("""{"model_spec": {"name": "saved_model_half_plus_two_2_versions", "signature_name": "", "version": "123"}, "classify_x2_to_y3": {"inputs": {"inputs": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": false}, "name": "x2:0"}}, "outputs": {"scores": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": false}, "name": "y3:0"}}, "method_name": "tensorflow/serving/classify", "defaults": {}}, "regress_x2_to_y3": {"inputs": {"inputs": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": false}, "name": "x2:0"}}, "outputs": {"outputs": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": false}, "name": "y3:0"}}, "method_name": "tensorflow/serving/regress", "defaults": {}}, "classify_x_to_y.inputs": {"inputs": {"dtype": "DT_STRING", "tensor_shape": {"dim": [], "unknown_rank": true}, "name": "tf_example:0"}}}""")


def test_model_metadata_matches_tf_serving(golden):
    status, metadata = rest(golden, "GET", f"/v1/models/{HALF_PLUS_TWO}/metadata")
    assert status == 200 and set(metadata) == {"model_spec", "metadata"} and set(metadata["metadata"]) == {"signature_def"}
    assert metadata["model_spec"] == METADATA_GOLDEN["model_spec"]
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    # TF Serving reports every SignatureDef of the MetaGraph, a TF2 export's init op included.
    assert set(signatures) == {"serving_default", "regress_x2_to_y3", "classify_x2_to_y3", "__saved_model_init_op"}

    def tf2_export(signature):  # a TF2 export names tensors after its functions and writes method_name predict
        for info in (*signature["inputs"].values(), *signature["outputs"].values()):
            assert re.fullmatch(r"[\w/]+:\d+", info.pop("name"))
        return {**signature, "method_name": "tensorflow/serving/predict"}

    for name in ("regress_x2_to_y3", "classify_x2_to_y3"):
        assert tf2_export(signatures[name]) == tf2_export(METADATA_GOLDEN[name])
    unknown_rank = METADATA_GOLDEN["classify_x_to_y.inputs"]["inputs"]["tensor_shape"]
    assert signatures["serving_default"]["inputs"]["x"]["tensor_shape"] == unknown_rank
    assert signatures["serving_default"]["inputs"]["x"]["dtype"] == "DT_FLOAT"


PREDICT_GOLDENS = [
    # tensorflow_serving/model_servers/http_rest_api_handler_test.cc @ TFS, TEST_F(HttpRestApiHandlerTest, Predict)
    (f"/v1/models/{HALF_PLUS_TWO}:predict", {"instances": [[1.0, 2.0], [3.0, 4.0]]}, {"predictions": [[2.5, 3.0], [3.5, 4.0]]}),
    (f"/v1/models/{HALF_PLUS_TWO}/versions/123:predict", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
    (f"/v1/models/{HALF_PLUS_TWO}/versions/123:predict", {"signature_name": "serving_default", "instances": [3.0, 4.0]}, {"predictions": [3.5, 4.0]}),
    (f"/v1/models/{HALF_PLUS_TWO}/versions/123:predict", {"signature_name": "serving_default", "inputs": [3.0, 4.0]}, {"outputs": [3.5, 4.0]}),
    # tensorflow_serving/g3doc/api_rest.md @ TFS, "A predict call would look as follows"
    ("/v1/models/saved_model_half_plus_three:predict", {"instances": [1.0, 2.0, 5.0]}, {"predictions": [3.5, 4.0, 5.5]}),
    # tensorflow_serving/util/json_tensor_test.cc @ TFS, TEST(JsontensorTest, FromJsonMultipleNamedTensors)
    ("/v1/models/json_tensor:predict", {"signature_name": "multiple_named_tensors", "instances": [0, 0]}, json.loads("""{
    "predictions": [
      {
        "double_scalar_tensor": 8.0,
        "float_tensor": [1.0],
        "int_tensor": [[1, 2], [3, 4], [5, 6]],
        "str_tensor": ["foo", "bar"],
        "str_tensor_bytes": [ {"b64": "aGVsbG8="}, {"b64": "d29ybGQ="} ]
      },
      {
        "double_scalar_tensor": 9.0,
        "float_tensor": [2.0],
        "int_tensor": [[7, 8], [9, 0], [1, 2]],
        "str_tensor": ["baz", "bat"],
        "str_tensor_bytes": [ {"b64": "dGY="}, {"b64": "c2VydmluZw=="} ]
      }
    ]}""")),
    ("/v1/models/json_tensor:predict", {"signature_name": "multiple_named_tensors", "inputs": [0, 0]}, json.loads("""{
    "outputs": {
      "double_scalar_tensor": [8.0, 9.0],
      "float_tensor": [[1.0], [2.0]],
      "int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]],
      "str_tensor": [["foo", "bar"], ["baz", "bat"]],
      "str_tensor_bytes": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                           [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]
    }}""")),
    # json_tensor_test.cc @ TFS, TEST(JsontensorTest, FromJsonSingleTensor)
    ("/v1/models/json_tensor:predict", {"signature_name": "single_tensor", "instances": [0]},
     {"predictions": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]}),
    ("/v1/models/json_tensor:predict", {"signature_name": "single_tensor", "inputs": [0]},
     {"outputs": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]}),
    # json_tensor_test.cc @ TFS, TEST(JsontensorTest, FromJsonSingleFloatTensorNonFinite)
    ("/v1/models/json_tensor:predict", {"signature_name": "non_finite", "instances": [0]},
     json.loads("""{"predictions": [[NaN, Infinity], [3.0, -Infinity]]}""")),
    # json_tensor_test.cc @ TFS, TEST(JsontensorTest, SingleUnnamedTensorColumnarFormat): both spellings of the
    # request must give the TensorProto of shape [1, 3, 2] it expects, which the signature echoes
    ("/v1/models/json_tensor:predict", {"signature_name": "int_input", "inputs": {"default": [[[1, 2], [3, 4], [5, 6]]]}},
     {"outputs": [[[1, 2], [3, 4], [5, 6]]]}),
    ("/v1/models/json_tensor:predict", {"signature_name": "int_input", "inputs": [[[1, 2], [3, 4], [5, 6]]]},
     {"outputs": [[[1, 2], [3, 4], [5, 6]]]}),
    # json_tensor_test.cc @ TFS, TEST(JsontensorTest, MultipleNamedTensorColumnarFormat): a {"b64": ...} value is
    # read as bytes ("hello"), echoed back as text (its name does not end in "_bytes")
    ("/v1/models/json_tensor:predict", {"signature_name": "named_inputs", "inputs": {
        "int_tensor": [[[1, 2], [3, 4], [5, 6]]], "str_tensor": ["foo", "bar"], "bin_tensor": {"b64": "aGVsbG8="}}},
     {"outputs": {"int_tensor": [[[1, 2], [3, 4], [5, 6]]], "str_tensor": ["foo", "bar"], "bin_tensor": "hello"}}),
    # the same without base64's padding, which absl::Base64Unescape (json_tensor.cc's decoder) does not require
    ("/v1/models/json_tensor:predict", {"signature_name": "named_inputs", "inputs": {
        "int_tensor": [[[1, 2], [3, 4], [5, 6]]], "str_tensor": ["foo", "bar"], "bin_tensor": {"b64": "aGVsbG8"}}},
     {"outputs": {"int_tensor": [[[1, 2], [3, 4], [5, 6]]], "str_tensor": ["foo", "bar"], "bin_tensor": "hello"}}),
]


@pytest.mark.parametrize(("path", "body", "expected"), PREDICT_GOLDENS, ids=range(len(PREDICT_GOLDENS)))
def test_predict_matches_tf_serving(golden, path, body, expected):
    status, response = rest(golden, "POST", path, body)
    assert status == 200, response
    assert_json_equal(response, expected)


def test_gzip_request_bodies_are_inflated_as_tf_serving_does(golden):
    """evhttp_request.cc inflates a body sent with Content-Encoding: gzip; ours is capped after inflating."""
    def post(body):
        request = urllib.request.Request(f"http://{golden['rest']}/v1/models/{HALF_PLUS_TWO}:predict", data=body,
                                         headers={"Content-Encoding": "gzip"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    assert post(gzip.compress(json.dumps({"instances": [1.0, 2.0]}).encode())) == (200, {"predictions": [2.5, 3.0]})
    limit = golden["server"].limits["max_request_bytes"]
    status, answer = post(gzip.compress(b" " * (limit + 1)))  # 64 MiB of spaces in 64 KiB
    assert status == 429 and "inflates to more than" in answer["error"]
    status, answer = post(b"not gzip")
    assert status == 400 and "gunzip" in answer["error"]


def test_chunked_request_bodies_are_read_as_evhttp_reads_them(golden):
    """Streaming clients (Go's and Node's for bodies of unknown length, requests' generators) send chunks."""

    body = json.dumps({"instances": [1.0, 2.0]}).encode()
    connection = http.client.HTTPConnection(golden["rest"], timeout=30)
    connection.request("POST", f"/v1/models/{HALF_PLUS_TWO}:predict", body=iter([body[:7], body[7:]]), encode_chunked=True)
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"predictions": [2.5, 3.0]})
    connection.request("POST", f"/v1/models/{HALF_PLUS_TWO}:predict", body=iter([gzip.compress(body)]),
                       headers={"Content-Encoding": "gzip"}, encode_chunked=True)
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"predictions": [2.5, 3.0]})
    connection.close()
    limit = golden["server"].limits["max_request_bytes"]
    for raw, status, fragment in [
        (b"zz\r\n{}\r\n0\r\n\r\n", 400, "Malformed chunked"),  # a size that is not hex
        (b"2\r\n{}0\r\n\r\n", 400, "Malformed chunked"),  # a chunk longer than its size
        (b"%x\r\n" % (limit + 1), 429, "more than"),  # refused before it is read
        (b"2;ext=1\r\n{}\r\n0\r\nTrailer: x\r\n\r\n", 400, "Missing 'inputs'"),  # extensions and trailers are read past: {} parsed
    ]:
        with socket.create_connection(golden["rest"].split(":"), timeout=30) as raw_connection:
            raw_connection.sendall(b"POST /v1/models/%s:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   % HALF_PLUS_TWO.encode() + raw)
            head, _, payload = raw_connection.makefile("rb").read().partition(b"\r\n\r\n")
        assert int(head.split()[1]) == status and fragment in json.loads(payload)["error"], (raw, head, payload)


def test_floats_carry_the_decimals_tf_serving_writes(golden):
    # json_tensor_test.cc @ TFS, TEST(JsontensorTest, FromJsonSingleFloatTensorSixDigitPrecision): compared there
    # as strings; here each number must be the same decimal, so exactly the same float64 once parsed
    golden_text = """{
    "predictions": [
      [9e+06, 999999.0, 0.5],
      [0.0003, 3e-05, 555557.5]
    ]}"""
    body = {"signature_name": "six_digit_precision", "instances": [0]}
    assert rest(golden, "POST", "/v1/models/json_tensor:predict", body) == (200, json.loads(golden_text))
    _status, response = rest(golden, "POST", f"/v1/models/{HALF_PLUS_TWO}:predict", {"inputs": [0.2, -1.4e-4]})
    assert response == {"outputs": [2.1, 1.99993]}  # TF Serving's "%g": not 2.0999999046325684


ERROR_GOLDENS = [
    # tensorflow_serving/model_servers/http_rest_api_handler_test.cc @ TFS, TEST_F(HttpRestApiHandlerTest, UnsupportedApiCalls)
    ("GET", "/v1/foo", "", 400, "Malformed request"),
    ("POST", "/v1/foo", "", 400, "Malformed request"),
    ("GET", "/v1/models", "", 400, "Missing model name"),
    ("GET", "/v1/models/debug/model_name", "", 400, "Malformed request"),
    ("POST", "/v1/models", "", 400, "Malformed request"),
    ("GET", "/v1/models/foo:predict", "", 400, "Malformed request"),
    ("GET", "/v1/models/foo/version/50:predict", "", 400, "Malformed request"),
    ("POST", "/v1/models/foo/version/50:regress", "", 400, "Malformed request"),
    ("POST", "/v1/models/foo/versions/HELLO:regress", "", 400, "Malformed request"),
    ("POST", f"/v1/models/foo/versions/{2**64 - 1}:regress", "", 400, "Failed to convert version"),
    ("POST", "/v1/models/foo/metadata", "", 400, "Malformed request"),
    ("POST", "/v1/models/foo/label/some_label:regress", "", 400, "Malformed request"),
    ("POST", "/v1/models/foo/versions/50/labels/some_label:regress", "", 400, "Malformed request"),
    ("POST", "/v1/models/foo/versions/some_label:regress", "", 400, "Malformed request"),
    # ... TEST_F(HttpRestApiHandlerTest, PredictModelNameVersionErrors)
    ("POST", "/v1/models/foo:predict", '{ "instances": [1] }', 404, "Servable not found"),
    ("POST", "/v1/models/foo/versions/50:predict", '{ "instances": [1] }', 404, "Servable not found"),
    ("POST", f"/v1/models/{HALF_PLUS_TWO}99:predict", '{ "instances": [1] }', 404, "Servable not found"),
    # ... TEST_F(HttpRestApiHandlerTest, PredictRequestErrors) (rapidjson's "Invalid value" is Python's "Expecting value")
    ("POST", f"/v1/models/{HALF_PLUS_TWO}:predict", "", 400, "JSON Parse error: The document is empty"),
    ("POST", f"/v1/models/{HALF_PLUS_TWO}:predict", "instances = [1, 2]", 400, "JSON Parse error: "),
    ("POST", f"/v1/models/{HALF_PLUS_TWO}:predict", '{ "instances": ["x", "y"] }', 400, "not of expected type: float"),
    ("POST", f"/v1/models/{HALF_PLUS_TWO}/labels/Version_Nonexistent:predict", '{ "instances": ["x", "y"] }', 400,
     "Unrecognized servable version label"),
    ("POST", f"/v1/models/{HALF_PLUS_TWO}:predict", '{ "signature_name": 100 }', 400, "'signature_name' key must be a string value."),
    # tensorflow_serving/g3doc/api_rest.md @ TFS, the curl -i example: the whole body
    ("POST", "/v1/models/half:predict", '{"instances": [1.0,5.0]}', 404, "Servable not found for request: Latest(half)"),
    # tensorflow_serving/util/json_tensor_test.cc @ TFS, TEST(JsontensorTest, SingleUnnamedTensorErrors)
    ("POST", "/v1/models/json_tensor:predict", '{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}', 400, "must be a string value"),
    ("POST", "/v1/models/json_tensor:predict", ('{"signature_name": "int_input", "instances": [[1,2],[3,4],[5,6,7]], '
     '"inputs": [[1,2],[3,4],[5,6,7]]}'), 400, "Not formatted correctly"),
    ("POST", "/v1/models/json_tensor:predict", '{"signature_name": "int_input", "instances": [[1,2],[3,4],[5,6,7]]}', 400,
     "Expecting tensor size"),
    ("POST", "/v1/models/json_tensor:predict", '{"signature_name": "int_input", "instances": [[1,2],[3,4],[[5,6]]]}', 400,
     "Expecting shape"),
    ("POST", "/v1/models/json_tensor:predict", '{"signature_name": "int_input", "instances": [1, [1]]}', 400, "Expecting shape"),
    ("POST", "/v1/models/json_tensor:predict", '{"signature_name": "int_input", "instances": [[1,2],["a", "b"]]}', 400,
     "not of expected type"),
    # json_tensor_test.cc @ TFS, TEST(JsontensorTest, MultipleNamedTensorErrors)
    ("POST", "/v1/models/json_tensor:predict", ('{"signature_name": "int_and_str", "instances": ['
     '{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]}, '
     '{"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}'), 400, "Expecting shape"),
    ("POST", "/v1/models/json_tensor:predict", ('{"signature_name": "int_and_str", "instances": ['
     '{"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]}, '
     '{"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}]}'), 400, "Expecting tensor size"),
    ("POST", "/v1/models/json_tensor:predict", ('{"signature_name": "int_and_str", "instances": ['
     '{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]}, [1, 20, 30], '
     '{"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}'), 400, "Expecting object but got list"),
    ("POST", "/v1/models/json_tensor:predict", '{"signature_name": "int_input", "instances": [[1, 2], {"default": [1, 2]}]}',
     400, "Expecting value/list but got object"),
]


@pytest.mark.parametrize(("method", "path", "body", "code", "fragment"), ERROR_GOLDENS, ids=range(len(ERROR_GOLDENS)))
def test_errors_match_tf_serving(golden, method, path, body, code, fragment):
    status, response = rest(golden, method, path, body if method == "POST" else None)
    assert status == code and list(response) == ["error"] and fragment in response["error"], response


def test_routing_outside_the_api_and_cors_preflight_answer_as_tf_serving(golden):
    # model_servers/http_server.cc @ TFS: only paths matching (?i)/v1/.* reach the handler; evhttp answers the
    # rest with its own 404 page. An OPTIONS preflight is 200 with an http(s) Origin, else 400, both empty.
    for path in ("/", "/v2/models/digits", "/index.html"):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"http://{golden['rest']}{path}", timeout=30)
        assert error.value.code == 404 and b"<H1>Not Found</H1>" in error.value.read()
    assert rest(golden, "GET", f"/V1/MODELS/{HALF_PLUS_TWO}") == (200, STATUS_GOLDEN)  # case-insensitive
    # evhttp_request.cc @ TFS hands the handler the path with its query: after ":predict" it matches no API
    # pattern, and after a model name it is part of the name ([^/:]+)
    path = f"/v1/models/{HALF_PLUS_TWO}:predict?ignored=1"
    assert rest(golden, "POST", path, {"instances": [1.0]}) == (400, {"error": f"Malformed request: POST {path}"})
    assert rest(golden, "GET", f"/v1/models/{HALF_PLUS_TWO}?ignored=1") == (
        404, {"error": f"Could not find any versions of model {HALF_PLUS_TWO}?ignored=1"})
    # a HEAD is a malformed request under /v1/ and evhttp's 404 elsewhere, answered with headers only
    for path, code in ((f"/v1/models/{HALF_PLUS_TWO}", 400), ("/", 404)):
        connection = http.client.HTTPConnection(golden["rest"], timeout=30)
        connection.request("HEAD", path)
        answer = connection.getresponse()
        assert answer.status == code and answer.read() == b"" and int(answer.headers["Content-Length"]) > 0
        connection.close()
    for origin, code in (("https://example.com", 200), (None, 400)):
        request = urllib.request.Request(f"http://{golden['rest']}/v1/models/digits:predict", method="OPTIONS",
                                         headers={"Origin": origin} if origin else {})
        try:
            response = urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as refused:
            response = refused
        assert response.status == code and response.read() == b""


def test_classify_and_regress_answer_as_tf_serving_for_an_unsupported_signature(golden):
    # The body of TF Serving's Regress and Classify goldens (http_rest_api_handler_test.cc @ TFS): TF Serving runs
    # its tf.Example signatures; we check signatures as it does (classifier.cc, regressor.cc) and then say 501.
    model = f"/v1/models/{HALF_PLUS_TWO}"
    assert rest(golden, "POST", f"{model}:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}) == (
        400, {"error": "No signature was found with the name: regress_x_to_y"})
    status, response = rest(golden, "POST", f"{model}:regress", {"signature_name": "regress_x2_to_y3", "examples": [{"x": 80.0}]})
    assert status == 501 and "tf.Example" in response["error"]
    status, response = rest(golden, "POST", f"{model}:classify", {"examples": [{"x": 20.0}]})
    assert status == 400 and response["error"].startswith("No classification inputs found in SignatureDef: ")
    status, response = rest(golden, "POST", "/v1/models/digits:regress", {"signature_name": "score", "examples": [{"x": 1.0}]})
    assert status == 400 and response["error"] == "Expected one output Tensor."
    status, response = rest(golden, "POST", f"{model}:classify", {"signature_name": "classify_x2_to_y3"})
    assert status == 400 and "key 'examples' is expected and was not found" in response["error"]
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = HALF_PLUS_TWO, "classify_x2_to_y3"
    with pytest.raises(grpc.RpcError) as error:
        stub(golden["grpc"]).Classify(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_rest_client_reads_tf_serving_json(golden):
    client = kv.serving.RestClient(golden["rest"], HALF_PLUS_TWO)
    assert client.metadata()["regress_x2_to_y3"] == {"inputs": {"inputs": ("float32", [-1, 1])}, "outputs": {"outputs": ("float32", [-1, 1])}}
    assert client.metadata()["serving_default"]["inputs"] == {"x": ("float32", None)}
    y = client.predict("serving_default", {"x": np.array([1.0, 2.0], np.float32)})["y"]  # a single output comes back unnamed
    assert y.dtype == np.float32 and y.tolist() == [2.5, 3.0]
    assert client.status() == [{"version": 123, "state": "AVAILABLE"}]
    tensors = kv.serving.RestClient(golden["rest"], "json_tensor").predict("multiple_named_tensors", {"x": np.zeros(2, np.float32)})
    assert tensors["int_tensor"].dtype == np.int32 and tensors["double_scalar_tensor"].dtype == np.float64
    assert tensors["str_tensor"].tolist() == [[b"foo", b"bar"], [b"baz", b"bat"]]
    assert tensors["str_tensor_bytes"].tolist() == [[b"hello", b"world"], [b"tf", b"serving"]]


FIELD = r'(?:"(?:[^"\\]|\\.)*"|[^\s"]+)'  # a bare word, or JSON-quoted text
LOG_LINE = re.compile(
    rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z (?P<peer>{FIELD}) (?P<protocol>REST|gRPC) (?P<call>{FIELD}) model=(?P<model>{FIELD}) "
    rf"version=(?P<version>{FIELD}) signature=(?P<signature>{FIELD}) status=(?P<status>\S+) ms=\d+\.\d in=(?P<bytes_in>\d+) "
    r"out=(?P<bytes_out>\d+)"
)


def test_log_requests_writes_one_access_line_per_request(golden, capsys):
    capsys.readouterr()
    body = {"signature_name": "decode", "inputs": Z[:2].tolist()}
    _status, response = rest(golden, "POST", "/v1/models/digits:predict", body)
    rest(golden, "GET", "/v1/models/nope/metadata")
    raw_predict(golden["grpc"], "digits", "decode", {"z": Z})
    with pytest.raises(grpc.RpcError):
        raw_predict(golden["grpc"], "nope\nforged line", "decode", {"z": Z})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4, lines
    entries = [LOG_LINE.fullmatch(line) for line in lines]
    assert all(entries), lines
    rest_ok, rest_missing, grpc_ok, grpc_missing = (entry.groupdict() for entry in entries)
    assert rest_ok["peer"].startswith("127.0.0.1:") and rest_ok["call"] == '"POST /v1/models/digits:predict"'
    assert (rest_ok["model"], rest_ok["version"], rest_ok["signature"], rest_ok["status"]) == ("digits", "1", "decode", "200")
    assert int(rest_ok["bytes_in"]) == len(json.dumps(body)) and int(rest_ok["bytes_out"]) == len(json.dumps(response))
    assert (rest_missing["model"], rest_missing["status"]) == ("nope", "404")
    assert grpc_ok["peer"].startswith("ipv4:127.0.0.1:") and grpc_ok["call"] == '"/tensorflow.serving.PredictionService/Predict"'
    assert (grpc_ok["model"], grpc_ok["version"], grpc_ok["signature"], grpc_ok["status"]) == ("digits", "1", "decode", "OK")
    assert int(grpc_ok["bytes_in"]) > Z.nbytes and int(grpc_ok["bytes_out"]) > 0
    assert grpc_missing["model"] == '"nope\\nforged line"' and grpc_missing["status"] == "NOT_FOUND"  # as TF Serving: only looked up


def test_rest_client_works_where_tensorflow_cannot_be_imported(golden):
    script = WITHOUT_TENSORFLOW + """
import json, time
started = time.perf_counter()
from kerasvae.serving import RestClient
import_seconds = time.perf_counter() - started
client = RestClient(sys.argv[1], "digits", max_batch=2)
z = json.loads(sys.stdin.read())
mean = client.decode(z)["mean"]
metadata = client.metadata()
print(json.dumps({"mean": mean.tolist(), "dtype": str(mean.dtype), "decode": metadata["decode"], "import_seconds": import_seconds,
                  "loaded": sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)}))
"""
    result = subprocess.run([sys.executable, "-c", script, golden["rest"]], input=json.dumps(Z.tolist()), capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout)
    print(f"RestClient import without TensorFlow: {output['import_seconds']:.3f} s")
    local = tf.saved_model.load(str(golden["root"] / "digits" / "1")).signatures["decode"](z=tf.constant(Z))
    assert output["dtype"] == "float32" and output["loaded"] == []
    np.testing.assert_allclose(output["mean"], local["mean"].numpy(), atol=1e-6)
    assert output["decode"]["inputs"] == {"z": ["float32", [-1, 4]]}
