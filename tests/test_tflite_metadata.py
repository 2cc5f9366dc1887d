"""TFLite Metadata (TFLITE_METADATA, schema M001) written into a converted decoder and read back: every field,
the tensor order the metadata spec requires, the converter's own entries, and the model still running
unchanged in the LiteRT interpreter. flatc, when installed, decodes the metadata as an independent reader."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import browser_harness
import tensorflow as tf
from ai_edge_litert import schema_py_generated as model_fb
from ai_edge_litert.interpreter import Interpreter

from kerasvae.export import _metadata_schema_py_generated as meta_fb
from kerasvae.export import tflite_metadata as tm

pytestmark = pytest.mark.slow  # TFLite conversions: the full suite runs them, `-m 'not slow'` does not

SCHEMA = Path(__file__).parent / "data" / "metadata_schema.fbs"
Z = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
LABEL = np.array([0, 2], np.int32)
METADATA = {
    "name": "tiny decoder",
    "description": "z, label -> 3x3 grayscale image",
    "version": "0.1.0",
    "author": "kerasvae tests",
    "license": "Apache-2.0",
    # Listed out of the subgraph's order (z, label; logits, mean with TF 2.21): add_metadata must reorder them.
    "inputs": [
        {"name": "label", "description": "class index", "range": [0, 2]},
        {"name": "z", "description": "latent code, N(0, I)", "range": None, "dimension_names": ["batch", "latent"]},
    ],
    "outputs": [
        {"name": "mean", "description": "pixel means", "range": [0, 1], "content": "image", "color_space": "GRAYSCALE"},
        {"name": "logits", "description": "Bernoulli logits", "range": None, "content": "feature"},
    ],
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(bytes with signature decode_b2, bytes with signatures decode_b1 and decode_b2): a tiny conditional
    decoder exported as a SavedModel and converted like kerasvae's TFLite export."""
    keras.utils.set_random_seed(0)
    z_in, label_in = keras.Input((4,)), keras.Input((3,))
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([z_in, label_in]))
    net = keras.Model([z_in, label_in], keras.layers.Reshape((3, 3, 1))(keras.layers.Dense(9)(hidden)))

    def decode(z, label):
        logits = net([z, tf.one_hot(label, 3)])
        return {"mean": tf.sigmoid(logits), "logits": logits}

    archive = keras.export.ExportArchive()
    archive.track(net)
    for batch in (1, 2):
        archive.add_endpoint(
            name=f"decode_b{batch}",
            fn=tf.function(decode),
            input_signature=[tf.TensorSpec([batch, 4], tf.float32, name="z"), tf.TensorSpec([batch], tf.int32, name="label")],
        )
    folder = str(tmp_path_factory.mktemp("tflite_metadata") / "savedmodel")
    archive.write_out(folder, verbose=False)
    one = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=["decode_b2"]).convert()
    two = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=["decode_b1", "decode_b2"]).convert()
    return one, two


@pytest.fixture(scope="module")
def annotated(converted):
    return tm.add_metadata(tm.rename_signature(converted[0], "decode"), METADATA)


def run(model_bytes, key):
    return Interpreter(model_content=model_bytes).get_signature_runner(key)(z=Z, label=LABEL)


def test_model_info_matches_the_interpreter(converted):
    info = tm.model_info(converted[0])
    interpreter = Interpreter(model_content=converted[0])
    signature = info["signatures"]["decode_b2"]
    assert {k: {"inputs": sorted(v["inputs"]), "outputs": sorted(v["outputs"])} for k, v in info["signatures"].items()} == {
        k: {"inputs": sorted(v["inputs"]), "outputs": sorted(v["outputs"])} for k, v in interpreter.get_signature_list().items()
    }
    runner = interpreter.get_signature_runner("decode_b2")
    details = {**runner.get_input_details(), **runner.get_output_details()}
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    for name, tensor in {**signature["inputs"], **signature["outputs"]}.items():
        assert tensor["index"] == details[name]["index"]
        assert tensor["shape"] == details[name]["shape"].tolist()
        assert tensor["dtype"] == np.dtype(details[name]["dtype"]).name
        assert tensor["name"] == tensors[tensor["index"]]["name"]
    assert signature["inputs"]["z"]["shape"] == [2, 4] and signature["inputs"]["label"]["dtype"] == "int32"
    assert signature["outputs"]["mean"]["shape"] == [2, 3, 3, 1]
    assert info["min_runtime_version"] and info["min_runtime_version"][0].isdigit()
    assert tm.metadata_buffers(converted[0])["min_runtime_version"].rstrip(b"\0").decode() == info["min_runtime_version"]
    assert info["metadata_names"][:2] == ["min_runtime_version", "CONVERSION_METADATA"]
    assert ["FULLY_CONNECTED", 1] in info["operators"] and info["operators"] == sorted(info["operators"])
    assert set(tm.model_info(converted[1])["signatures"]) == {"decode_b1", "decode_b2"}


def test_rename_signature_runs_under_the_new_key(converted):
    renamed = tm.rename_signature(converted[0], "decode")
    interpreter = Interpreter(model_content=renamed)
    assert list(interpreter.get_signature_list()) == ["decode"]
    expected = run(converted[0], "decode_b2")
    outputs = run(renamed, "decode")
    assert sorted(outputs) == ["logits", "mean"]
    for name in outputs:
        np.testing.assert_array_equal(outputs[name], expected[name])
    assert tm.model_info(renamed)["signatures"]["decode"] == tm.model_info(converted[0])["signatures"]["decode_b2"]
    with pytest.raises(ValueError, match="exactly one signature"):
        tm.rename_signature(converted[1], "decode")
    with pytest.raises(ValueError, match="TFL3"):
        tm.rename_signature(b"\0" * 64, "decode")


def test_metadata_round_trips(annotated):
    read = tm.read_metadata(annotated)
    assert read["min_parser_version"] == "1.0.0"
    for key in ("name", "description", "version", "author", "license"):
        assert read[key] == METADATA[key]
    described = {item["name"]: item for item in read["inputs"] + read["outputs"]}
    assert described["z"] == {**METADATA["inputs"][1], "content": "feature"}
    assert described["label"] == {**METADATA["inputs"][0], "range": [0.0, 2.0], "content": "feature", "dimension_names": None}
    assert described["mean"] == {**METADATA["outputs"][0], "range": [0.0, 1.0], "dimension_names": None}
    assert described["logits"] == {**METADATA["outputs"][1], "dimension_names": None}


def test_tensor_metadata_follows_the_subgraph_order(annotated):
    """TensorMetadata i describes subgraph input (output) i, named by the signature name of that tensor."""
    model = model_fb.Model.GetRootAs(annotated, 0)
    subgraph, signature = model.Subgraphs(0), model.SignatureDefs(0)
    assert signature.SignatureKey() == b"decode"
    names = {}
    for getter, count in ((signature.Inputs, signature.InputsLength()), (signature.Outputs, signature.OutputsLength())):
        names.update({getter(i).TensorIndex(): getter(i).Name().decode() for i in range(count)})
    buffer = tm.metadata_buffers(annotated)["TFLITE_METADATA"]
    graph = meta_fb.ModelMetadata.GetRootAs(buffer, 0).SubgraphMetadata(0)
    listed = [[item["name"] for item in METADATA[key]] for key in ("inputs", "outputs")]
    assert listed != [[names[subgraph.Inputs(i)] for i in range(2)], [names[subgraph.Outputs(i)] for i in range(2)]]
    assert graph.InputTensorMetadataLength() == subgraph.InputsLength() == 2
    assert graph.OutputTensorMetadataLength() == subgraph.OutputsLength() == 2
    read = tm.read_metadata(annotated)
    for i in range(subgraph.InputsLength()):
        assert graph.InputTensorMetadata(i).Name().decode() == names[subgraph.Inputs(i)] == read["inputs"][i]["name"]
    for i in range(subgraph.OutputsLength()):
        assert graph.OutputTensorMetadata(i).Name().decode() == names[subgraph.Outputs(i)] == read["outputs"][i]["name"]
    mean = [i for i in range(subgraph.OutputsLength()) if names[subgraph.Outputs(i)] == "mean"][0]
    content = graph.OutputTensorMetadata(mean).Content()
    assert content.ContentPropertiesType() == meta_fb.ContentProperties.ImageProperties
    image = meta_fb.ImageProperties()
    image.Init(content.ContentProperties().Bytes, content.ContentProperties().Pos)
    assert image.ColorSpace() == meta_fb.ColorSpaceType.GRAYSCALE


def test_annotated_model_runs_unchanged(converted, annotated):
    expected = run(converted[0], "decode_b2")
    outputs = run(annotated, "decode")
    assert sorted(outputs) == sorted(expected)
    for name in outputs:
        np.testing.assert_array_equal(outputs[name], expected[name])


def test_metadata_entry_identifier_and_idempotence(converted, annotated):
    before, after = tm.metadata_buffers(converted[0]), tm.metadata_buffers(annotated)
    names = tm.model_info(annotated)["metadata_names"]
    assert names == ["min_runtime_version", "CONVERSION_METADATA", "TFLITE_METADATA"]
    for name in ("min_runtime_version", "CONVERSION_METADATA"):  # the converter's entries are kept as they were
        assert after[name] == before[name]
    assert after["TFLITE_METADATA"][4:8] == b"M001"
    assert meta_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(after["TFLITE_METADATA"], 0)

    again = tm.add_metadata(annotated, METADATA)
    assert tm.model_info(again)["metadata_names"].count("TFLITE_METADATA") == 1
    assert len(again) == len(annotated) and tm.read_metadata(again) == tm.read_metadata(annotated)
    changed = tm.add_metadata(annotated, {**METADATA, "description": "replaced"})
    assert tm.model_info(changed)["metadata_names"].count("TFLITE_METADATA") == 1
    assert tm.read_metadata(changed)["description"] == "replaced"
    assert tm.read_metadata(converted[0]) is None


def test_metadata_must_describe_the_signature(converted):
    renamed = tm.rename_signature(converted[0], "decode")
    with pytest.raises(ValueError, match="each signature output once"):
        tm.add_metadata(renamed, {**METADATA, "outputs": METADATA["outputs"][:1]})
    with pytest.raises(ValueError, match="each signature input once"):
        tm.add_metadata(renamed, {**METADATA, "inputs": METADATA["inputs"] + [{"name": "x"}]})
    with pytest.raises(ValueError, match="color_space"):
        tm.add_metadata(renamed, {**METADATA, "outputs": [{**METADATA["outputs"][0], "color_space": None}, METADATA["outputs"][1]]})
    with pytest.raises(ValueError, match="exactly one signature"):
        tm.add_metadata(converted[1], METADATA)


def test_min_parser_version_follows_tflite_support():
    """The port of GetMinimumMetadataParserVersion: 1.0.0 fields only -> 1.0.0, newer fields raise it."""
    metadata = meta_fb.ModelMetadataT()
    graph = meta_fb.SubGraphMetadataT()
    graph.inputTensorMetadata = [meta_fb.TensorMetadataT()]
    metadata.subgraphMetadata = [graph]
    assert tm.min_parser_version(metadata) == "1.0.0"
    graph.inputTensorGroups = [meta_fb.TensorGroupT()]
    assert tm.min_parser_version(metadata) == "1.2.0"
    unit = meta_fb.ProcessUnitT()
    unit.optionsType = meta_fb.ProcessUnitOptions.RegexTokenizerOptions
    graph.inputTensorMetadata[0].processUnits = [unit]
    assert tm.min_parser_version(metadata) == "1.2.1"
    graph.customMetadata = [meta_fb.CustomMetadataT()]
    assert tm.min_parser_version(metadata) == "1.5.0"


def test_large_model_is_fast(annotated):
    """A 2 MB weight buffer goes through the object API round trip in well under a second."""
    model = tm.read_model(annotated)
    big = model_fb.BufferT()
    big.data = np.arange(2 * 2**20, dtype=np.uint8)
    model.buffers.append(big)
    large = tm.write_model(model)
    assert len(large) > 2 * 2**20
    start = time.perf_counter()
    again = tm.add_metadata(tm.rename_signature(large, "decode"), {**METADATA, "version": "0.2.0"})
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed
    assert tm.read_metadata(again)["version"] == "0.2.0"
    assert tm.metadata_buffers(again).keys() == tm.metadata_buffers(annotated).keys()
    assert bytes(tm.read_model(again).buffers[-1].data) == bytes(big.data)


def test_flatc_decodes_the_metadata(annotated, tmp_path):
    """flatc (Debian's flatbuffers-compiler) as an independent reader of the metadata flatbuffer."""
    flatc = shutil.which("flatc")
    if flatc is None:  # CI installs it: there its absence fails the test
        browser_harness.skip_or_fail("flatc not installed (apt-get install flatbuffers-compiler)")
    (tmp_path / "metadata.bin").write_bytes(tm.metadata_buffers(annotated)["TFLITE_METADATA"])
    subprocess.run(
        [flatc, "--json", "--strict-json", "--raw-binary", "-o", str(tmp_path), str(SCHEMA), "--", str(tmp_path / "metadata.bin")],
        check=True,
        capture_output=True,
    )
    decoded = json.loads((tmp_path / "metadata.json").read_text())
    read = tm.read_metadata(annotated)
    assert decoded["name"] == METADATA["name"] and decoded["license"] == METADATA["license"]
    assert decoded["min_parser_version"] == "1.0.0"
    graph = decoded["subgraph_metadata"][0]
    assert [t["name"] for t in graph["input_tensor_metadata"]] == [t["name"] for t in read["inputs"]]
    assert [t["name"] for t in graph["output_tensor_metadata"]] == [t["name"] for t in read["outputs"]]
    mean = [t for t in graph["output_tensor_metadata"] if t["name"] == "mean"][0]
    assert mean["content"]["content_properties_type"] == "ImageProperties"
    assert mean["content"]["content_properties"]["color_space"] == "GRAYSCALE"
    assert mean["stats"] == {"max": [1.0], "min": [0.0]}
    z = [t for t in graph["input_tensor_metadata"] if t["name"] == "z"][0]
    assert z["dimension_names"] == ["batch", "latent"] and z["content"]["content_properties_type"] == "FeatureProperties"
