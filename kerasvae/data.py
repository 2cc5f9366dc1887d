"""Datasets as `tf.data` pipelines that feed `fit`, offline first.

Sources, by name or path:
- "digits": scikit-learn's 8x8 digits (1797 images), always offline; a fixed stratified 80/20 train/test split.
- "fashion_mnist", "mnist": IDX files from $KERASVAE_DATA (the folder itself or a subfolder named after the
  dataset) or Debian's folder (`apt-get install dataset-fashion-mnist`); when none is found, TFDS
  (`pip install kerasvae[datasets]`) downloads them if it can reach the internet.
- a path to `.npy`, `.npz` (arrays `x`/`x_<split>`, optional `y`/`y_<split>`), `.csv` (one example per
  row) or a folder of IDX files.

Images come back as float32 in [0, 1] with a channel axis ([n, H, W, 1]); 8-bit integer data is divided
by 255. A split may be sliced as in TFDS: "train[:55000]", "train[90%:]".
"""

import difflib
import gzip
import os
import re
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

DEBIAN_FOLDERS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
BINARIZE_MODES = (None, "static", "dynamic")
NUMPY_MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK\x03\x04"}


def load(
    name_or_path,
    split="train",
    binarize=None,
    batch_size=128,
    shuffle=None,
    seed=0,
    with_labels=False,
):
    """A batched, prefetched `tf.data.Dataset` of images x (or (x, y) with `with_labels=True`).

    Args:
        name_or_path: str. A dataset name ("digits", "fashion_mnist", "mnist") or a path (see module doc).
        split: str. "train" or "test", optionally sliced ("train[:90%]"). Defaults to "train".
        binarize: None, "static" or "dynamic". "static" draws x_bin ~ Bernoulli(x) once with numpy's
            `default_rng(seed)`; "dynamic" draws a fresh binarization every epoch inside the pipeline
            (the usual protocol for likelihood numbers on binarized data). Defaults to None.
        batch_size: int. Defaults to 128.
        shuffle: bool or None. Reshuffle every epoch; None shuffles the train split only.
        seed: int. Seeds shuffling and binarization. Defaults to 0.
        with_labels: bool. Yield (x, y). Defaults to False.

    >>> ds = load("digits", binarize="dynamic", batch_size=32)
    """
    x, y = load_arrays(name_or_path, split)
    if with_labels and y is None:
        raise ValueError(f"{name_or_path} has no labels.")
    if shuffle is None:
        shuffle = split.startswith("train")
    return pipeline(x, y if with_labels else None, binarize, batch_size, shuffle, seed)


def pipeline(x, y=None, binarize=None, batch_size=128, shuffle=True, seed=0):
    """The `tf.data` pipeline of `load` over arrays already in memory: (x, y) pairs when y is given.
    Binarization, shuffling and batching as in `load`."""
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {BINARIZE_MODES}, got {binarize!r}.")
    if binarize is not None and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"Binarizing needs values in [0, 1]; the data span [{x.min()}, {x.max()}].")
    if binarize == "static":
        x = binarize_static(x, seed)
    dataset = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if binarize == "dynamic":
        # Dataset.random re-randomizes on each new iterator, i.e. each epoch of fit, and feeds stateless
        # draws: a fresh binarization per epoch that is still a pure function of `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(_binarize_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _binarize_batch(batch, seed):
    x, rest = (batch[0], batch[1:]) if isinstance(batch, tuple) else (batch, ())
    x_bin = tf.cast(tf.random.stateless_uniform(tf.shape(x), seed=seed) < x, x.dtype)
    return (x_bin, *rest) if rest else x_bin


def binarize_static(x, seed=0):
    """x_bin ~ Bernoulli(x), drawn once with numpy's default_rng(seed) (the fixed test-set protocol)."""
    return (np.random.default_rng(seed).random(x.shape) < x).astype(np.float32)


def load_arrays(name_or_path, split="train"):
    """(x, y): float32 images in [0, 1] and int64 labels (or None), for a name or a path; see `load`."""
    base_split, part = _parse_split(split)
    name = str(name_or_path).lower().replace("-", "_")
    if name == "digits":
        x, y = _digits(base_split)
    elif name in DEBIAN_FOLDERS:
        x, y = _named_idx(name, base_split)
    else:
        x, y = _from_path(Path(name_or_path), base_split)
    x = _as_images(x, name_or_path)
    y = None if y is None else _as_labels(y, len(x), name_or_path)
    start, stop = _slice_bounds(part, len(x))
    return x[start:stop], (None if y is None else y[start:stop])


def _parse_split(split):
    match = re.fullmatch(r"(\w+)(?:\[(-?\d*%?):(-?\d*%?)\])?", split)
    if not match or match.group(1) not in ("train", "test"):
        raise ValueError(f"Unknown split {split!r}; expected 'train' or 'test', optionally sliced like 'train[:90%]'.")
    return match.group(1), (match.group(2) or "", match.group(3) or "")


def _slice_bounds(part, n):
    def bound(text, default):
        if not text:
            return default
        return round(n * int(text[:-1]) / 100) if text.endswith("%") else int(text)

    return bound(part[0], 0), bound(part[1], n)


def _digits(split):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x, y = digits.images / 16.0, digits.target
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return (x_train, y_train) if split == "train" else (x_test, y_test)


def _named_idx(name, split):
    folders = []
    if os.environ.get("KERASVAE_DATA"):
        root = Path(os.environ["KERASVAE_DATA"])
        folders += [root / name, root / name.replace("_", "-"), root]
    folders.append(Path(DEBIAN_FOLDERS[name]))
    for folder in folders:
        if _idx_file(folder, IDX_FILES[split][0]) is not None:
            return _read_idx_split(folder, split)
    try:
        return _tfds(name, split)
    except Exception as error:  # noqa: BLE001 - any TFDS failure means: no offline copy and no download
        looked = ", ".join(str(f) for f in folders)
        hint = "apt-get install dataset-fashion-mnist, or " if name == "fashion_mnist" else ""
        raise ValueError(
            f"No {name} IDX files found (looked in {looked}) and TFDS could not provide them ({error}). "
            f"Fix: {hint}put the IDX files in a folder and set KERASVAE_DATA to it, or "
            f"pip install 'kerasvae[datasets]' on a machine with internet access."
        ) from None


def _tfds(name, split):
    import tensorflow_datasets as tfds

    images, labels = tfds.as_numpy(tfds.load(name, split=split, batch_size=-1, as_supervised=True))
    return images, labels


def _idx_file(folder, stem):
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_split(folder, split):
    images_stem, labels_stem = IDX_FILES[split]
    images = read_idx(_idx_file(folder, images_stem))
    labels_path = _idx_file(folder, labels_stem)
    labels = read_idx(labels_path) if labels_path is not None else None
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{labels_path} has {len(labels)} labels for {len(images)} images.")
    return images, labels


def read_idx(path):
    """An IDX file (optionally gzipped) as a numpy array; ValueError naming the file if it is corrupt."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as error:  # zlib.error: damaged gzip data
        raise ValueError(f"Cannot read IDX file {path}: {error}. Re-download or reinstall it.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number). Re-download or reinstall it.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: header says shape {shape} ({expected} bytes), file has {len(raw)} bytes."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


DATASET_NAMES = ("digits", "fashion_mnist", "mnist")


def _from_path(path, split):
    if not path.exists():
        close = difflib.get_close_matches(str(path), DATASET_NAMES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"No dataset named {str(path)!r} and no such file or folder; {hint}names: {', '.join(DATASET_NAMES)}.")
    if path.is_dir():
        if _idx_file(path, IDX_FILES[split][0]) is None:
            raise ValueError(f"{path} holds no IDX file {IDX_FILES[split][0]}[.gz] for split {split!r}.")
        return _read_idx_split(path, split)
    suffix = path.suffix.lower()
    try:
        if suffix in NUMPY_MAGIC:
            # np.load unpickles a file that is neither .npy nor zip; with allow_pickle=False that fails with a
            # message about pickles, so say what the file should have been instead.
            with open(path, "rb") as f:
                head = f.read(len(NUMPY_MAGIC[suffix]))
            if head != NUMPY_MAGIC[suffix]:
                kind = "a zip of .npy arrays" if suffix == ".npz" else "a .npy array"
                raise ValueError(f"not {kind} (it starts with {head!r}); the file is corrupt or misnamed.")
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                x_key = next((k for k in (f"x_{split}", "x", "images") if k in arrays), None)
                if x_key is None:
                    raise ValueError(f"{path} has no array named x_{split}, x or images (it has {sorted(arrays)}).")
                y_key = next((k for k in (f"y_{split}", "y", "labels") if k in arrays), None)
                return arrays[x_key], (arrays[y_key] if y_key else None)
        if suffix == ".csv":
            try:
                return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float32), None
            except ValueError:
                return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float32, skiprows=1), None
    except ValueError as error:
        raise ValueError(f"Cannot read {path}: {error}") from None
    except MemoryError as error:  # numpy allocates the shape a (damaged) header declares before reading
        raise ValueError(f"Cannot read {path}: it declares an array larger than memory ({error}).") from None
    except Exception as error:  # noqa: BLE001
        # Damaged bytes surface from numpy and zipfile as almost any type (OSError, EOFError, BadZipFile,
        # zlib.error, NotImplementedError for odd zip versions, SyntaxError/TokenError and TypeError from
        # parsing a .npy header): whatever it is, the file could not be read.
        raise ValueError(f"Cannot read {path}: corrupt or unreadable ({type(error).__name__}: {error}).") from None
    raise ValueError(f"Unsupported data file {path}; expected .npy, .npz, .csv or a folder of IDX files.")


def _as_images(x, source):
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{source}: expected numeric data (bool, int or float), got dtype {x.dtype}.")
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{source}: expected at least one example of at least one feature, got an array of shape {x.shape}.")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / (255.0 if x.max() > 1 else 1.0)
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{source}: the data contain NaN or infinite values.")
    return x[..., None] if x.ndim == 3 else x


def _as_labels(y, n, source):
    """Labels as int64 [n]: integers (or integral floats), one per example."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{source}: expected {n} labels of shape [{n}] (one per example), got shape {list(y.shape)}.")
    if y.dtype.kind not in "biuf" or (y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y)))):
        raise ValueError(f"{source}: labels must be integers, got dtype {y.dtype}.")
    return y.astype(np.int64)


def fashion_mnist_available():
    """Whether Fashion-MNIST loads offline (IDX files in $KERASVAE_DATA or Debian's folder)."""
    try:
        load_arrays("fashion_mnist", "test[:1]")
        return True
    except ValueError:
        return False


SERIES_KINDS = ("sine", "sawtooth", "square")


def synthetic_series(n, length=64, kinds=("sine", "sawtooth"), noise=0.05, seed=0):
    """n periodic series [n, length, 1] with random period, phase and amplitude, plus Gaussian noise, and
    their kind index: a small real-valued benchmark for sequence autoencoders, generated offline.

    Args:
        n: int. Number of series.
        length: int. Steps per series. Defaults to 64.
        kinds: tuple of str. Waveforms among SERIES_KINDS. Defaults to ("sine", "sawtooth").
        noise: float. Standard deviation of the added noise. Defaults to 0.05.
        seed: int. Defaults to 0.
    """
    unknown = set(kinds) - set(SERIES_KINDS)
    if unknown:
        raise ValueError(f"Unknown series kinds {sorted(unknown)}; expected some of {SERIES_KINDS}.")
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(kinds), n)
    period = rng.uniform(12, 32, (n, 1))
    phase = rng.uniform(0, 1, (n, 1))
    amplitude = rng.uniform(0.5, 1.0, (n, 1))
    cycles = np.arange(length)[None, :] / period + phase
    waves = {
        "sine": np.sin(2 * np.pi * cycles),
        "sawtooth": 2 * (cycles - np.floor(cycles + 0.5)),
        "square": np.sign(np.sin(2 * np.pi * cycles)),
    }
    series = np.choose(kind[:, None], [waves[k] for k in kinds]) * amplitude
    series = series + noise * rng.standard_normal(series.shape)
    return series[..., None].astype(np.float32), kind


def inject_spikes(series, fraction=0.5, magnitude=1.5, seed=0):
    """A copy of `series` [n, length, channels] where a random `fraction` of the series get one spike of
    +-magnitude at a random step; returns (series, is_anomalous)."""
    rng = np.random.default_rng(seed)
    series = np.array(series, copy=True)
    anomalous = rng.random(len(series)) < fraction
    for i in np.flatnonzero(anomalous):
        series[i, rng.integers(0, series.shape[1]), :] += magnitude * rng.choice([-1.0, 1.0])
    return series, anomalous
