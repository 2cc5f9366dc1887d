"""Data loading: offline sources, IDX parsing, splits, binarization, and errors that name the file."""

import gzip
import struct

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
    x_train, y_train = data.load_arrays("digits", "train")
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
    raw = np.frombuffer(gzip.open(idx_folder / "train-images-idx3-ubyte.gz").read()[16:], np.uint8)
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


def test_missing_data_names_the_path_and_the_fix(tmp_path, monkeypatch):
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
