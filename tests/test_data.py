"""Data loading: offline sources, IDX parsing, splits, binarization, and errors that name the file."""

import gzip
import socket
import struct
import time
import urllib.request

import browser_harness
import numpy as np
import pytest

import kerasvae as kv
from kerasvae import data


def write_idx(path, array, compress=False):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(payload)
    return path


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    for stem, n in (("train", 30), ("t10k", 10)):
        write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 4, 5)), compress=True)
        write_idx(tmp_path / f"{stem}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    return tmp_path


def test_digits_are_offline_images_in_unit_range_with_a_stratified_split():
    x_train, _ = data.load_arrays("digits", "train")
    x_test, y_test = data.load_arrays("digits", "test")
    assert x_train.shape == (1437, 8, 8, 1) and x_test.shape == (360, 8, 8, 1)
    assert x_train.dtype == np.float32 and x_train.min() == 0.0 and x_train.max() == 1.0
    assert np.bincount(y_test).min() >= 35


def test_split_slices_follow_tfds_syntax():
    x, _ = data.load_arrays("digits", "train")
    np.testing.assert_array_equal(data.load_arrays("digits", "train[:100]")[0], x[:100])
    np.testing.assert_array_equal(data.load_arrays("digits", "train[90%:]")[0], x[round(0.9 * len(x)) :])
    with pytest.raises(ValueError, match="split"):
        data.load_arrays("digits", "validation")


def test_idx_folder_gzipped_and_raw_files_with_labels(idx_folder):
    x, y = data.load_arrays(idx_folder, "train")
    raw = np.frombuffer(gzip.decompress((idx_folder / "train-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    assert x.shape == (30, 4, 5, 1) and y.shape == (30,)
    np.testing.assert_allclose(x.ravel(), raw / 255.0, rtol=1e-6)


def test_named_dataset_is_found_through_kerasvae_data(idx_folder, monkeypatch):
    monkeypatch.setenv("KERASVAE_DATA", str(idx_folder))
    x, y = data.load_arrays("fashion_mnist", "test")
    assert x.shape == (10, 4, 5, 1) and y.shape == (10,)


def test_truncated_idx_file_names_the_file(idx_folder):
    path = idx_folder / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*truncated"):
        data.load_arrays(idx_folder, "test")


def test_file_that_is_not_idx_names_the_file(idx_folder):
    (idx_folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"<html>not found</html>"))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz.*magic"):
        data.load_arrays(idx_folder, "train")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network (every name lookup fails, no proxy) and an empty TFDS data folder, online machines included."""

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(urllib.request, "getproxies", dict)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tensorflow_datasets"))


def test_missing_data_names_the_path_and_the_fix(tmp_path, monkeypatch, offline):
    with pytest.raises(ValueError, match="nothing-here.npy"):
        data.load_arrays(tmp_path / "nothing-here.npy")
    monkeypatch.setenv("KERASVAE_DATA", str(tmp_path))
    monkeypatch.setattr(data, "DEBIAN_FOLDERS", {**data.DEBIAN_FOLDERS, "mnist": str(tmp_path / "none")})
    with pytest.raises(ValueError, match=f"mnist IDX files.*{tmp_path}.*KERASVAE_DATA"):
        data.load_arrays("mnist", "train")


def test_corrupt_npy_names_the_file(tmp_path):
    path = tmp_path / "broken.npy"
    path.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="broken.npy"):
        data.load_arrays(path)


def test_npz_csv_and_npy_files(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 3, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=images, y_train=np.arange(6), x_test=images[:2])
    x, y = data.load_arrays(tmp_path / "d.npz", "train")
    assert x.shape == (6, 3, 3, 1) and list(y) == list(range(6))
    np.testing.assert_allclose(x[..., 0], images / 255.0, rtol=1e-6)
    assert data.load_arrays(tmp_path / "d.npz", "test")[0].shape == (2, 3, 3, 1)
    table = rng.random((5, 4))
    np.savetxt(tmp_path / "t.csv", table, delimiter=",", header="a,b,c,d", comments="")
    np.testing.assert_allclose(data.load_arrays(tmp_path / "t.csv")[0], table, rtol=1e-6)
    np.save(tmp_path / "v.npy", table.astype(np.float32))
    assert data.load_arrays(tmp_path / "v.npy")[0].shape == (5, 4)


def epoch(dataset):
    return np.concatenate(list(dataset.as_numpy_iterator()))


def test_dynamic_binarization_differs_between_epochs_and_matches_the_grey_levels():
    dataset = data.load("digits", "train", binarize="dynamic", batch_size=256, shuffle=False, seed=3)
    first, second = epoch(dataset), epoch(dataset)
    x, _ = data.load_arrays("digits", "train")
    assert set(np.unique(first)) == {0.0, 1.0}
    assert np.mean(first != second) > 0.05
    assert np.mean(first) == pytest.approx(np.mean(x), abs=0.01)
    again = data.load("digits", "train", binarize="dynamic", batch_size=256, shuffle=False, seed=3)
    np.testing.assert_array_equal(epoch(again), first)  # a pure function of the seed
    # Without tf.data's autotuner, whose iterators can take until its next wake-up to delete (a stall of up to
    # 1.3 s per epoch of fit; benchmarks/tfdata_stall.py), with the parallel map's output unchanged.
    assert dataset.options().autotune.enabled is False


def test_static_binarization_is_fixed_and_shuffling_reshuffles():
    dataset = data.load("digits", "test", binarize="static", batch_size=64, seed=0)
    np.testing.assert_array_equal(epoch(dataset), epoch(dataset))
    x, _ = data.load_arrays("digits", "test")
    np.testing.assert_array_equal(epoch(dataset), data.binarize_static(x, 0))
    shuffled = data.load("digits", "train", batch_size=64)
    assert not np.array_equal(epoch(shuffled), epoch(shuffled))


def test_labels_come_along_when_asked():
    x, y = next(iter(data.load("digits", "test", batch_size=10, with_labels=True)))
    assert x.shape == (10, 8, 8, 1) and y.shape == (10,)


def test_bad_binarize_mode_and_range():
    with pytest.raises(ValueError, match="binarize"):
        data.load("digits", binarize="threshold")


@pytest.mark.skipif(not data.fashion_mnist_available(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_the_debian_package():
    x, y = data.load_arrays("fashion_mnist", "test")
    assert x.shape == (10000, 28, 28, 1) and y.shape == (10000,) and x.max() == 1.0
    assert np.bincount(y).tolist() == [1000] * 10


def test_a_model_fits_straight_from_the_pipeline():
    model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=2, hidden=(16,))
    model.compile(optimizer="adam")
    history = model.fit(data.load("digits", binarize="dynamic", batch_size=128), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2


def test_classes_keep_the_examples_of_those_labels_in_order_before_slicing():
    from sklearn.datasets import load_digits

    (x3_train, y3_train), (x3_test, y3_test) = (data.load_arrays("digits", split, classes=[3]) for split in ("train", "test"))
    assert set(y3_train) == set(y3_test) == {3}
    assert len(x3_train) + len(x3_test) == np.sum(load_digits().target == 3) == 183  # scikit-learn's 183 threes
    x_train, y_train = data.load_arrays("digits", "train")
    np.testing.assert_array_equal(x3_train, x_train[y_train == 3])
    np.testing.assert_array_equal(data.load_arrays("digits", "train[-10:]", classes=3)[0], x3_train[-10:])  # the last ten threes
    _, y = next(iter(data.load("digits", "test", classes=(7, 1), with_labels=True, shuffle=False, batch_size=1000)))
    _, y_test = data.load_arrays("digits", "test")
    np.testing.assert_array_equal(y, y_test[np.isin(y_test, [1, 7])])


@pytest.mark.parametrize("classes, message", [
    ([3, 11], r"classes \[11\] are not labels of digits train \(its labels: \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\]\)"),
    ([], "non-empty sequence of ints"),
    ("3", "an int or a non-empty sequence of ints"),
    ([1.5], "an int or a non-empty sequence of ints"),
])
def test_bad_classes_are_one_line_errors(classes, message):
    with pytest.raises(ValueError, match=message) as error:
        data.load_arrays("digits", "train", classes=classes)
    assert "\n" not in str(error.value)


def test_classes_of_unlabelled_data_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="has no labels, so classes \\[0\\] cannot be selected"):
        data.load_arrays(tmp_path / "x.npy", classes=0)


def tfds_or_skip():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        browser_harness.skip_or_fail("tensorflow-datasets is not installed: pip install 'kerasvae[datasets]'")
    return tfds


@pytest.fixture
def tfds_dataset(tmp_path):
    """(data_dir, {split: (images, labels)}): a real TFDS dataset "kv_tiny/small:1.0.0" that TFDS's own
    store_as_tfds_dataset wrote from these arrays into data_dir, in their order."""
    import tensorflow as tf

    tfds = tfds_or_skip()
    rng = np.random.default_rng(0)
    arrays = {split: (rng.integers(0, 256, (n, 4, 5, 1), dtype=np.uint8), rng.integers(0, 3, n)) for split, n in (("train", 24), ("test", 9))}
    features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(4, 5, 1)), "label": tfds.features.ClassLabel(num_classes=3)})
    tfds.dataset_builders.store_as_tfds_dataset(
        name="kv_tiny", version="1.0.0", config="small", features=features, data_dir=tmp_path, disable_shuffling=True,
        split_datasets={split: tf.data.Dataset.from_tensor_slices({"image": x, "label": y}) for split, (x, y) in arrays.items()},
    )
    return tmp_path, arrays


def test_a_tfds_dataset_stored_from_arrays_loads_back_exactly(tfds_dataset):
    data_dir, arrays = tfds_dataset
    for split, (images, labels) in arrays.items():
        x, y = data.load_arrays("tfds:kv_tiny/small:1.0.0", split, data_dir=data_dir)
        np.testing.assert_array_equal(x, images.astype(np.float32) / 255.0)
        np.testing.assert_array_equal(y, labels)
    images, labels = arrays["train"]
    # the prepared folder itself (tfds.builder_from_directory), with classes and a slice
    x, y = data.load_arrays(data_dir / "kv_tiny" / "small" / "1.0.0", "train[:4]", classes=[0, 2])
    kept = np.isin(labels, [0, 2])
    np.testing.assert_array_equal(x, images[kept][:4].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(y, labels[kept][:4])
    x, y = next(iter(data.load("tfds:kv_tiny", "test", data_dir=data_dir, with_labels=True, shuffle=False, batch_size=100)))
    np.testing.assert_array_equal(y, arrays["test"][1])
    with pytest.raises(ValueError, match="kv_tiny has no split 'validation'; its splits: train, test"):
        data.load_arrays("tfds:kv_tiny", "validation", data_dir=data_dir)


def test_an_unprepared_tfds_dataset_fails_at_once_offline_naming_the_offline_sources(tmp_path, offline):
    tfds_or_skip()
    start = time.monotonic()  # TFDS's own download retries each file for minutes (measured: 204 s)
    with pytest.raises(ValueError, match=rf"tfds:fashion_mnist is not prepared in {tmp_path} and this machine is offline "
                       r".*tfds build fashion_mnist --data_dir DIR.*apt-get install dataset-fashion-mnist.*'digits'") as error:
        data.load_arrays("tfds:fashion_mnist", "test", data_dir=tmp_path)
    assert time.monotonic() - start < 10 and "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"Dataset fashion_mnst not found.*did you mean 'tfds:fashion_mnist'\?$"):
        data.load_arrays("tfds:fashion_mnst", data_dir=tmp_path)
