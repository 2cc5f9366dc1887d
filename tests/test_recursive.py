"""RecursiveAutoencoder (Socher et al. 2011): greedy trees against hand-computed and numpy references, masking,
saving, its SavedModel and TFLite node decoders in the on-device runtimes, and what its root codes are worth on
real data."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasvae as kv
from kerasvae.models.recursive import RecursiveAutoencoder


def hand_model():
    """features = code_dim = 2, no normalization: leaves c = tanh(x), parents p = tanh((c1 + c2) / 2), the
    decoder returns p for both children, the leaf decoder returns c."""
    model = RecursiveAutoencoder(features=2, code_dim=2, normalize=False)
    eye, zero = np.eye(2, dtype=np.float32), np.zeros(2, np.float32)
    model.leaf_encoder.set_weights([eye, zero])
    model.merger.set_weights([np.concatenate([eye, eye]) / 2, zero])
    model.splitter.set_weights([np.concatenate([eye, eye], 1), np.zeros(4, np.float32)])
    model.leaf_decoder.set_weights([eye, zero])
    return model


def hand_merge(a, b, na, nb):
    p = np.tanh((a + b) / 2)
    return p, na / (na + nb) * np.sum((a - p) ** 2) + nb / (na + nb) * np.sum((b - p) ** 2)


def test_greedy_tree_merges_the_cheapest_pair_and_its_loss_is_the_hand_computed_one():
    x = np.array([[[1.0, 0.0], [0.1, 0.1], [0.2, 0.1]]], np.float32)
    c = np.tanh(x[0])
    p01, e01 = hand_merge(c[0], c[1], 1, 1)
    p12, e12 = hand_merge(c[1], c[2], 1, 1)
    assert e12 < e01  # the two small steps merge first
    root, e_top = hand_merge(c[0], p12, 1, 2)  # then the first leaf (1 leaf) with their parent (2 leaves)
    tree = hand_model().tree(x)
    np.testing.assert_array_equal(tree["merges"], [[1, 0]])
    np.testing.assert_allclose(tree["root"][0], root, rtol=1e-6)
    np.testing.assert_allclose(tree["tree"], [(e12 + e_top) / 2], rtol=1e-5)
    np.testing.assert_allclose(tree["leaf"], [np.mean((c - x[0]) ** 2)], rtol=1e-5)
    # Unfolding the root: the decoder gives p for both children, so every leaf decodes to the root itself.
    unfold = np.mean((root - x[0]) ** 2)
    np.testing.assert_allclose(hand_model().reconstruct(x)[0], np.tile(root, (3, 1)), rtol=1e-6)
    terms = hand_model().loss_terms(x)
    np.testing.assert_allclose(terms["unfold"], unfold, rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], (e12 + e_top) / 2 + np.mean((c - x[0]) ** 2) + unfold, rtol=1e-5)
    # Padding: the two zero steps after the sequence would merge first, at error 0, if the search saw them.
    padded = hand_model().tree(np.concatenate([x, np.zeros((1, 2, 2), np.float32)], 1), lengths=[3])
    np.testing.assert_array_equal(padded["merges"], [[1, 0, -1, -1]])
    np.testing.assert_allclose(padded["root"][0], root, rtol=1e-6)
    np.testing.assert_allclose(padded["tree"], [(e12 + e_top) / 2], rtol=1e-5)
    # A given structure replaces the search: ((0 1) 2).
    root_given, e_given = hand_merge(p01, c[2], 2, 1)
    given = hand_model().tree(x, merges=[[0, 0]])
    np.testing.assert_allclose(given["root"][0], root_given, rtol=1e-6)
    np.testing.assert_allclose(given["tree"], [(e01 + e_given) / 2], rtol=1e-5)


def numpy_greedy(model, x, length):
    """Reference greedy search from the model's weights, one merge at a time over Python lists."""
    (wl, bl), (we, be), (wd, bd) = (layer.get_weights() for layer in (model.leaf_encoder, model.merger, model.splitter))
    norm = lambda v: v / max(np.linalg.norm(v), 1e-3)
    nodes = [norm(np.tanh(row @ wl + bl)) for row in x[:length]]
    sizes, order, total = [1.0] * length, [], 0.0
    while len(nodes) > 1:
        candidates = []
        for a, b, na, nb in zip(nodes, nodes[1:], sizes, sizes[1:]):
            p = norm(np.tanh(np.concatenate([a, b]) @ we + be))
            rec = p @ wd + bd
            d = len(a)
            candidates.append((p, na / (na + nb) * np.sum((a - rec[:d]) ** 2) + nb / (na + nb) * np.sum((b - rec[d:]) ** 2)))
        k = int(np.argmin([e for _, e in candidates]))
        order.append(k)
        total += candidates[k][1]
        nodes[k : k + 2], sizes[k : k + 2] = [candidates[k][0]], [sizes[k] + sizes[k + 1]]
    return nodes[0], order, total / max(length - 1, 1)


def test_batched_greedy_search_matches_a_one_merge_at_a_time_reference_and_ignores_padding():
    model = RecursiveAutoencoder(features=3, code_dim=5, seed=1)
    x = np.random.default_rng(0).random((3, 7, 3)).astype(np.float32)
    lengths = [7, 4, 1]
    x[1, 4:] = 50.0  # padding: must not reach the second sequence's tree
    tree = model.tree(x, lengths)
    for i, length in enumerate(lengths):
        root, order, loss = numpy_greedy(model, x[i], length)
        np.testing.assert_allclose(tree["root"][i], root, atol=2e-5)
        np.testing.assert_array_equal(tree["merges"][i], order + [-1] * (6 - len(order)))
        np.testing.assert_allclose(tree["tree"][i], loss, rtol=1e-4, atol=1e-6)
    # The short sequence alone, unpadded, and as a tf.RaggedTensor: the same root.
    np.testing.assert_allclose(model.encode(x[1:2, :4]), tree["root"][1:2], atol=1e-6)
    ragged = tf.RaggedTensor.from_tensor(x, lengths=lengths)
    np.testing.assert_allclose(model.encode(ragged), tree["root"], atol=1e-6)
    np.testing.assert_allclose(model.encode({"x": x, "lengths": lengths}), tree["root"], atol=1e-6)
    # Following its own greedy merges reproduces the greedy tree.
    np.testing.assert_allclose(model.encode(x, lengths, merges=tree["merges"]), tree["root"], atol=1e-6)


def test_decode_unfolds_a_root_along_its_merges():
    model = RecursiveAutoencoder(features=3, code_dim=4, seed=2)
    root = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    merges = np.array([[1, 0, 0], [0, 0, -1]], np.int32)  # lengths 4 and 3
    (wd, bd), (wo, bo) = model.splitter.get_weights(), model.leaf_decoder.get_weights()
    norm = lambda v: v / np.linalg.norm(v)
    for i, length in enumerate([4, 3]):
        nodes = [root[i]]
        for t in reversed(range(length - 1)):  # undo the last merge first
            k = merges[i, t]
            children = nodes[k] @ wd + bd
            nodes[k : k + 1] = [norm(children[:4]), norm(children[4:])]
        expected = np.stack(nodes) @ wo + bo
        got = model.decode(root, merges, [4, 3])[i]
        np.testing.assert_allclose(got[:length], expected, atol=1e-5)
        np.testing.assert_array_equal(got[length:], 0.0)
    # Without lengths they are read from the merges (the -1s after a sequence's last merge).
    np.testing.assert_array_equal(model.decode(root, merges), model.decode(root, merges, [4, 3]))


def test_balanced_merges_build_balanced_trees():
    merges = RecursiveAutoencoder.balanced_merges([5, 4, 1], 5)
    np.testing.assert_array_equal(merges, [[0, 1, 0, 0], [0, 1, 0, -1], [-1, -1, -1, -1]])


@pytest.mark.slow
def test_fit_trains_on_padded_batches_of_varying_lengths_with_xla(digits):
    """Greedy trees under `fit` with XLA (test_root_codes_... trains without it)."""
    rows = digits[0][:256].reshape(-1, 8, 8)
    lengths = np.random.default_rng(0).integers(3, 9, len(rows)).astype(np.int32)
    model = RecursiveAutoencoder(features=8, code_dim=8)
    before = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True, steps_per_execution=4)
    history = model.fit({"x": rows, "lengths": lengths}, epochs=3, batch_size=64, verbose=0).history
    assert set(history) == {"loss", "tree", "leaf", "unfold"}
    assert history["loss"][-1] < history["loss"][0]
    assert all(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    model.jit_compile = False  # test_step without XLA: the same numbers as the eager loss terms
    evaluated = model.evaluate({"x": rows, "lengths": lengths}, batch_size=256, verbose=0, return_dict=True)
    terms = model.loss_terms({"x": rows, "lengths": lengths})
    for name, value in terms.items():
        np.testing.assert_allclose(evaluated[name], value, rtol=1e-4)


def test_keras_file_round_trip_gives_identical_roots(tmp_path, digits):
    rows = digits[0][:64].reshape(-1, 8, 8)
    model = RecursiveAutoencoder(features=8, code_dim=6, leaf_weight=0.5, unfold_weight=2.0, seed=3)
    assert RecursiveAutoencoder.from_config(json.loads(json.dumps(model.get_config()))).get_config() == model.get_config()
    model.save(tmp_path / "rae.keras")
    loaded = keras.saving.load_model(tmp_path / "rae.keras")
    assert isinstance(loaded, RecursiveAutoencoder) and loaded.unfold_weight == 2.0
    lengths = np.arange(len(rows)) % 8 + 1
    np.testing.assert_array_equal(model.encode(rows, lengths), loaded.encode(rows, lengths))
    np.testing.assert_array_equal(model.reconstruct(rows, lengths), loaded.reconstruct(rows, lengths))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from kerasvae.export.recursive import export_recursive

    model = RecursiveAutoencoder(features=8, code_dim=6, unfold_weight=1.0)
    root = tmp_path_factory.mktemp("recursive") / "rows"
    return model, root, export_recursive(model, root, max_length=8)


@pytest.mark.slow
def test_savedmodel_encodes_any_length_and_unfolds_roots(exported):
    model, root, result = exported
    assert result["savedmodel"] == str(root / "1")
    assert (root / "1" / "assets.extra" / "tf_serving_warmup_requests").is_file()
    info = json.loads((root / "1" / "assets.extra" / "kerasvae.json").read_text())
    assert info["model_class"] == "RecursiveAutoencoder" and info["code_dim"] == 6
    assert '"rows"' in (root.parent / "models.config").read_text()
    signatures = tf.saved_model.load(result["savedmodel"]).signatures
    rng = np.random.default_rng(0)
    for steps, lengths in [(5, [5, 2, 3]), (9, [9, 7])]:  # two padded lengths through one signature
        x = rng.random((len(lengths), steps, 8)).astype(np.float32)
        served = signatures["encode"](x=tf.constant(x), lengths=tf.constant(lengths, tf.int32))
        tree = model.tree(x, lengths)
        np.testing.assert_allclose(served["root"], tree["root"], atol=1e-5)
        np.testing.assert_array_equal(served["merges"], tree["merges"])
        decoded = signatures["decode"](root=served["root"], merges=served["merges"], lengths=tf.constant(lengths, tf.int32))
        np.testing.assert_allclose(decoded["x"], model.reconstruct(x, lengths), atol=1e-5)
        scores = signatures["score"](x=tf.constant(x), lengths=tf.constant(lengths, tf.int32))
        np.testing.assert_allclose(scores["score"], model.score(x, lengths), rtol=1e-5)


@pytest.mark.slow
def test_tflite_decoders_and_encoder_match_the_savedmodel_in_on_device_runtimes(exported):
    """LiteRT's Interpreter and CompiledModel, LiteRT.js and tfjs-tflite (in headless Chromium), first call each."""
    import browser_harness
    import compiled_model_run
    from ai_edge_litert.interpreter import Interpreter

    _, root, result = exported
    signatures = tf.saved_model.load(result["savedmodel"]).signatures
    sidecar = json.loads((root / "tflite" / "model.json").read_text())
    assert set(sidecar["files"]) == {"children_decoder", "leaf_decoder", "encoder"}
    rng = np.random.default_rng(3)
    code = rng.standard_normal((1, 6)).astype(np.float32)
    x = rng.random((1, 8, 8)).astype(np.float32)
    x[:, 5:] = 9.0  # padding past the length
    inputs = {"children_decoder": {"parent": code}, "leaf_decoder": {"code": code},
              "encoder": {"x": x, "lengths": np.array([5], np.int32)}}
    jobs = []
    for kind, entry in sidecar["files"].items():
        assert entry["max_abs_error"] < 1e-5
        path = root / "tflite" / entry["file"]
        expected = {k: v.numpy() for k, v in signatures[entry["signature"]](**{k: tf.constant(v) for k, v in inputs[kind].items()}).items()}
        got = Interpreter(model_path=str(path)).get_signature_runner(entry["signature"])(**inputs[kind])
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, atol=1e-5)
        jobs.append((path, entry["signature"], inputs[kind], expected))
    for outputs, (path, _, _, expected) in zip(compiled_model_run.run_files([j[:3] for j in jobs]), jobs):
        assert not isinstance(outputs, str), (path, outputs)
        for key, value in expected.items():
            np.testing.assert_allclose(outputs[key], value, atol=1e-5, err_msg=f"CompiledModel {path.name}")
    browser_harness.require()
    runs = [(runtime, job) for job in jobs for runtime in ("litertjs", "tfjs-tflite")]
    results = browser_harness.run([{"runtime": runtime, "file": str(p), "signature": s, "inputs": i} for runtime, (p, s, i, _) in runs])
    for outcome, (runtime, (path, _, _, expected)) in zip(results, runs):
        assert outcome["ok"], (runtime, path.name, outcome["error"])
        for key, value in expected.items():
            np.testing.assert_allclose(outcome["outputs"][key].reshape(value.shape), value, atol=1e-5, err_msg=f"{runtime} {path.name}")


@pytest.mark.slow
def test_root_codes_probe_better_than_mean_pooled_leaves_on_digit_rows(digits):
    """Each 8x8 digit as a sequence of 8 rows, trained and encoded along balanced trees: the roots
    against the mean of the same model's leaf codes, through the same linear probe. (Greedy trees, 20 epochs:
    0.72 vs 0.68; 10 epochs: 0.67 vs 0.68. Their shapes differ from digit to digit, which a linear probe
    cannot undo.)"""
    x_train, y_train, x_test, y_test = digits
    rows_train, rows_test = x_train[:1408, ..., 0], x_test[..., 0]  # 22 full batches: one call per epoch
    tree = lambda rows: {"x": rows, "merges": RecursiveAutoencoder.balanced_merges(np.full(len(rows), 8), 8)}
    keras.utils.set_random_seed(0)
    model = RecursiveAutoencoder(features=8, code_dim=32)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False, steps_per_execution=22)
    history = model.fit(tree(rows_train), epochs=5, batch_size=64, verbose=0).history
    assert history["unfold"][-1] < 0.5 * history["unfold"][0]
    probe = lambda codes: kv.apps.linear_probe(codes(rows_train), y_train[:1408], codes(rows_test), y_test)
    root, mean = probe(lambda rows: model(tree(rows))), probe(model.mean_leaves)
    print(f"linear probe on digit rows: root {root:.3f}, mean-pooled leaves {mean:.3f}")
    assert root > mean + 0.1


@pytest.mark.slow
@pytest.mark.skipif(not kv.data.fashion_mnist_available(), reason="needs dataset-fashion-mnist")
def test_root_codes_probe_better_than_mean_pooled_leaves_on_fashion_mnist_rows():
    """Fashion-MNIST images as sequences of 28 rows of 28 pixels, along balanced trees (3,008 training
    images, 10 epochs): 0.766-0.771 against 0.714-0.719 over seeds and reruns. Greedy trees lose here (0.51
    against 0.72; BENCHMARKS.md): they grow as chains, most rows 20-odd unfoldings below the root."""
    x_train, y_train = kv.data.load_arrays("fashion_mnist", "train[:3008]")
    x_test, y_test = kv.data.load_arrays("fashion_mnist", "test[:2000]")
    rows_train, rows_test = x_train[..., 0], x_test[..., 0]
    tree = lambda rows: {"x": rows, "merges": RecursiveAutoencoder.balanced_merges(np.full(len(rows), 28), 28)}
    keras.utils.set_random_seed(0)
    model = RecursiveAutoencoder(features=28, code_dim=32, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False, steps_per_execution=47)  # one call per epoch
    model.fit(tree(rows_train), epochs=10, batch_size=64, verbose=0)
    probe = lambda codes: kv.apps.linear_probe(codes(rows_train), y_train, codes(rows_test), y_test)
    root, mean = probe(lambda rows: model(tree(rows)).numpy()), probe(lambda rows: model.mean_leaves(rows).numpy())
    print(f"linear probe on Fashion-MNIST rows: root {root:.3f}, mean-pooled leaves {mean:.3f}")
    assert root > mean + 0.03


@pytest.mark.slow
def test_root_codes_beat_mean_pooled_leaves_on_the_synthetic_series():
    """The project's synthetic series (sine, sawtooth, square; 32 steps, one step a leaf), trained along
    balanced trees: the roots against the mean of the same model's leaf codes, through the same linear probe
    of the waveform and the same anomaly score for series with one spike (mean distance to the 5 nearest
    training codes). The mean of one-step leaves is a histogram of the values, blind to the shape
    (benchmarks/recursive.py: 0.714 vs 0.635 and AUROC 0.650 vs 0.577 here; 64 steps, 20 epochs: 0.716 vs
    0.616 and 0.623 vs 0.568)."""
    from sklearn.metrics import roc_auc_score

    from kerasvae.apps.anomaly_scores import neighbor_distance

    x_train, y_train = kv.data.synthetic_series(1024, length=32, kinds=kv.data.SERIES_KINDS, seed=0)
    x_test, y_test = kv.data.synthetic_series(1024, length=32, kinds=kv.data.SERIES_KINDS, seed=1)
    spiked, anomalous = kv.data.inject_spikes(x_test, seed=2)
    tree = lambda x: {"x": x, "merges": RecursiveAutoencoder.balanced_merges(np.full(len(x), 32), 32)}
    keras.utils.set_random_seed(0)
    model = RecursiveAutoencoder(features=1, code_dim=32)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False, steps_per_execution=16)
    model.fit(tree(x_train), epochs=10, batch_size=64, verbose=0)
    results = {}
    for name, codes in {"root": lambda x: model(tree(x)).numpy(), "mean": lambda x: model.mean_leaves(x).numpy()}.items():
        reference = codes(x_train)
        results[name] = (kv.apps.linear_probe(reference, y_train, codes(x_test), y_test),
                         roc_auc_score(anomalous, neighbor_distance(codes(spiked), reference, 5).numpy()))
    print(f"synthetic series, probe / spike AUROC: root {results['root']}, mean-pooled leaves {results['mean']}")
    assert results["root"][0] > results["mean"][0] + 0.03
    assert results["root"][1] > results["mean"][1] + 0.03


def test_generic_export_points_to_export_recursive(tmp_path):
    with pytest.raises(TypeError, match="export_recursive"):
        kv.export.export(RecursiveAutoencoder(features=4), tmp_path / "rae")
    assert not (tmp_path / "rae").exists()
