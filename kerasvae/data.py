"""Datasets as `tf.data` pipelines that feed `fit`, offline first.

Sources, by name or path:
- "digits": scikit-learn's 8x8 digits (1797 images), always offline; a fixed stratified 80/20 train/test split.
- "fashion_mnist", "mnist": IDX files from $KERASVAE_DATA (the folder itself or a subfolder named after the
  dataset) or Debian's folder (`apt-get install dataset-fashion-mnist`); when none is found, TFDS, as for
  "tfds:fashion_mnist".
- "tfds:NAME[/CONFIG][:VERSION]" (TFDS's own spelling of a dataset, `pip install kerasvae[datasets]`): the
  copy prepared in `data_dir` (default $TFDS_DATA_DIR or ~/tensorflow_datasets), else downloaded and prepared
  there when the machine is online; offline, a ValueError at once instead of TFDS's minutes of retries.
- a path to `.npy`, `.npz` (arrays `x`/`x_<split>`, optional `y`/`y_<split>`), `.csv` (one example per
  row), a folder of IDX files, or a prepared TFDS dataset's folder (NAME/[CONFIG/]VERSION, holding
  dataset_info.json; `tfds.builder_from_directory`).

Images come back as float32 in [0, 1] with a channel axis ([n, H, W, 1]); 8-bit integer data is divided
by 255. A split may be sliced as in TFDS: "train[:55000]", "train[90%:]". `classes` keeps the examples of
some labels only, before slicing: "train[90%:]" of classes=[3] is the last tenth of the 3s.
"""

import difflib
import gzip
import os
import re
import socket
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasvae.choices import DATASET_NAMES

DEBIAN_FOLDERS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
BINARIZE_MODES = (None, "static", "dynamic")
NUMPY_MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK\x03\x04"}
TFDS_PREFIX = "tfds:"
TFDS_PROBE_SECONDS = 5  # a machine that cannot open a connection in 5 s cannot download a dataset either


def load(
    name_or_path,
    split="train",
    binarize=None,
    batch_size=128,
    shuffle=None,
    seed=0,
    with_labels=False,
    classes=None,
    data_dir=None,
):
    """A batched, prefetched `tf.data.Dataset` of images x (or (x, y) with `with_labels=True`).

    Args:
        name_or_path: str or Path. A dataset name ("digits", "fashion_mnist", "mnist"), a TFDS dataset
            ("tfds:NAME[/CONFIG][:VERSION]", e.g. "tfds:fashion_mnist" or "tfds:my_set/small:1.0.0") or a path
            (see module doc).
        split: str. "train" or "test" (a TFDS dataset: any of its splits), optionally sliced ("train[:90%]").
            Defaults to "train".
        binarize: None, "static" or "dynamic". "static" draws x_bin ~ Bernoulli(x) once with numpy's
            `default_rng(seed)`; "dynamic" draws a fresh binarization every epoch inside the pipeline
            (the usual protocol for likelihood numbers on binarized data). Defaults to None.
        batch_size: int. Defaults to 128.
        shuffle: bool or None. Reshuffle every epoch; None shuffles the train split only.
        seed: int. Seeds shuffling and binarization. Defaults to 0.
        with_labels: bool. Yield (x, y). Defaults to False.
        classes: int, sequence of ints or None. Keep only the examples with these labels (e.g. the normal
            class of an anomaly detector), before the split is sliced; a label the split lacks, an empty
            sequence or unlabelled data raise a ValueError. None keeps every example. Defaults to None.
        data_dir: str, Path or None. TFDS's data folder for "tfds:" sources and the TFDS fallback of
            "fashion_mnist"/"mnist": a dataset prepared there loads offline (`tfds build NAME --data_dir DIR`
            on a machine with internet, then copy DIR). None: $TFDS_DATA_DIR or ~/tensorflow_datasets.

    >>> ds = load("digits", binarize="dynamic", batch_size=32, classes=[3])
    """
    x, y = load_arrays(name_or_path, split, classes=classes, data_dir=data_dir)
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
    return without_autotuning(dataset.prefetch(tf.data.AUTOTUNE))


def without_autotuning(dataset):
    """`dataset` without tf.data's autotuner. Deleting an autotuned iterator can block until the autotuner's
    next timed wake-up (1.27 s, 2.55 s, 5.11 s... after the iterator started), and fit makes an iterator per
    epoch, so epochs snapped to multiples of 2.56 s (benchmarks/tfdata_stall.py reproduces it in TensorFlow
    alone). AUTOTUNE values then take tf.data's fixed defaults, as fast for data held in memory."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _binarize_batch(batch, seed):
    x, rest = (batch[0], batch[1:]) if isinstance(batch, tuple) else (batch, ())
    x_bin = tf.cast(tf.random.stateless_uniform(tf.shape(x), seed=seed) < x, x.dtype)
    return (x_bin, *rest) if rest else x_bin


def binarize_static(x, seed=0):
    """x_bin ~ Bernoulli(x), drawn once with numpy's default_rng(seed) (the fixed test-set protocol)."""
    return (np.random.default_rng(seed).random(x.shape) < x).astype(np.float32)


def load_arrays(name_or_path, split="train", classes=None, data_dir=None):
    """(x, y): float32 images in [0, 1] and int64 labels (or None), for a name or a path; see `load`."""
    base_split, part = _parse_split(split)
    source = str(name_or_path)
    name = source.lower().replace("-", "_")
    if source.startswith(TFDS_PREFIX):
        x, y = _tfds(source.removeprefix(TFDS_PREFIX), base_split, data_dir)
    elif (Path(source) / "dataset_info.json").is_file():  # a prepared TFDS dataset's folder
        x, y = _tfds(Path(source), base_split)
    elif base_split not in IDX_FILES:  # only TFDS datasets have other splits
        raise ValueError(f"Unknown split {split!r}; expected 'train' or 'test', optionally sliced like 'train[:90%]'.")
    elif name == "digits":
        x, y = _digits(base_split)
    elif name in DEBIAN_FOLDERS:
        x, y = _named_idx(name, base_split, data_dir)
    else:
        x, y = _from_path(Path(name_or_path), base_split)
    x = _as_images(x, name_or_path)
    y = None if y is None else _as_labels(y, len(x), name_or_path)
    if classes is not None:
        x, y = _select_classes(x, y, class_list(classes), f"{source} {base_split}")
    start, stop = _slice_bounds(part, len(x))
    return x[start:stop], (None if y is None else y[start:stop])


def class_list(classes):
    """`classes` (an int or a sequence of ints) as a sorted list of distinct ints; None stays None."""
    if classes is None:
        return None
    values = np.asarray(classes)
    if values.ndim > 1 or values.dtype.kind not in "iu" or values.size == 0:
        raise ValueError(f"classes must be an int or a non-empty sequence of ints (labels), got {classes!r}.")
    return sorted({int(value) for value in values.ravel()})


def _select_classes(x, y, classes, source):
    if y is None:
        raise ValueError(f"{source} has no labels, so classes {classes} cannot be selected.")
    labels = np.unique(y)
    missing = sorted(set(classes) - set(labels.tolist()))
    if missing:
        present = labels.tolist() if len(labels) <= 20 else f"{len(labels)} labels from {labels[0]} to {labels[-1]}"
        raise ValueError(f"classes {missing} are not labels of {source} (its labels: {present}).")
    keep = np.isin(y, classes)
    return x[keep], y[keep]


def _parse_split(split):
    match = re.fullmatch(r"(\w+)(?:\[(-?\d*%?):(-?\d*%?)\])?", split)
    if not match:
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


def _named_idx(name, split, data_dir=None):
    folders = []
    if os.environ.get("KERASVAE_DATA"):
        root = Path(os.environ["KERASVAE_DATA"])
        folders += [root / name, root / name.replace("_", "-"), root]
    folders.append(Path(DEBIAN_FOLDERS[name]))
    folders = list(dict.fromkeys(folders))  # "mnist" has no dash form
    for folder in folders:
        if _idx_file(folder, IDX_FILES[split][0]) is not None:
            return _read_idx_split(folder, split)
    looked = ", ".join(str(f) for f in folders)
    try:
        return _tfds(name, split, data_dir)
    except OfflineError as error:  # it already names every offline source
        raise ValueError(f"No {name} IDX files found (looked in {looked}), and {error}") from None
    except Exception as error:  # noqa: BLE001 - any TFDS failure means: no offline copy and no download
        hint = "apt-get install dataset-fashion-mnist, or " if name == "fashion_mnist" else ""
        raise ValueError(
            f"No {name} IDX files found (looked in {looked}) and TFDS could not provide them ({error}). "
            f"Fix: {hint}put the IDX files in a folder and set KERASVAE_DATA to it, or "
            f"pip install 'kerasvae[datasets]' on a machine with internet access."
        ) from None


class OfflineError(ValueError):
    """A TFDS dataset that is not prepared locally, on a machine that cannot download it."""


def _tfds(name, split, data_dir=None):
    """(images, labels or None) of a TFDS dataset: a name ("NAME[/CONFIG][:VERSION]") prepared in data_dir,
    or downloaded there when online, or a prepared dataset's folder (a Path)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ValueError("TFDS datasets need tensorflow-datasets: pip install 'kerasvae[datasets]'.") from None
    if isinstance(name, Path):
        builder, name = tfds.builder_from_directory(name), str(name)
    else:
        builder = _tfds_builder(tfds, name, data_dir)
    splits = list(builder.info.splits)
    if split not in splits:
        raise ValueError(f"{name} has no split {split!r}; its splits: {', '.join(splits)}.")
    # Catalog datasets name their (image, label) pair; datasets stored from arrays
    # (tfds.dataset_builders.store_as_tfds_dataset) cannot, so the usual feature names stand in.
    image_key, label_key = builder.info.supervised_keys or ("image", "label")
    if image_key not in builder.info.features:
        raise ValueError(f"{name} has no image feature {image_key!r} (its features: {', '.join(builder.info.features)}).")
    arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    return arrays[image_key], arrays.get(label_key)


def _tfds_builder(tfds, name, data_dir):
    """TFDS's builder of `name`, prepared: downloaded first if need be, or a one-line ValueError at once offline,
    where TFDS's own download would retry every file for minutes."""
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")  # TFDS reads it once, at import
    where = data_dir or "~/tensorflow_datasets"
    base = re.split(r"[/:]", name)[0]
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError as error:  # DatasetNotFoundError's message goes on to list the whole catalog
        close = difflib.get_close_matches(base, tfds.list_builders(with_community_datasets=False), n=1)
        hint = f"; did you mean 'tfds:{close[0]}'?" if close else ""
        raise ValueError(f"tfds:{name}: {str(error).splitlines()[0].rstrip('.')} (neither in TFDS's catalog nor prepared in {where}){hint}") from None
    if builder.is_prepared():
        return builder
    host = urllib.parse.urlparse(builder.info.homepage or "").hostname or "storage.googleapis.com"
    if not urllib.request.getproxies() and not _reachable(host):  # behind a proxy only TFDS's own download can tell
        apt = "apt-get install dataset-fashion-mnist, or " if base == "fashion_mnist" else ""
        idx = f" or {base!r} from IDX files ({apt}KERASVAE_DATA)," if base in DEBIAN_FOLDERS else ""
        raise OfflineError(
            f"tfds:{name} is not prepared in {where} and this machine is offline ({host} unreachable). Offline, load it "
            f"prepared elsewhere (`tfds build {name} --data_dir DIR` where there is internet, copy DIR here, pass "
            f"data_dir=DIR or set TFDS_DATA_DIR),{idx} or 'digits' (always offline)."
        )
    builder.download_and_prepare()
    return builder


def _reachable(host):
    try:
        socket.create_connection((host, 443), timeout=TFDS_PROBE_SECONDS).close()
        return True
    except OSError:
        return False


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




def _from_path(path, split):
    if not path.exists():
        close = difflib.get_close_matches(str(path), DATASET_NAMES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"No dataset named {str(path)!r} and no such file or folder; {hint}names: {', '.join(DATASET_NAMES)}, or tfds:NAME."
        )
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
