"""Training runs: a preset trained by `fit` on a dataset, with everything a run folder holds
(model.keras, config.json, history.json, TensorBoard logs, figures). The CLI's `train` and `demo` call
`train_run`; scripts can too."""

import json
import os
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from kerasvae import data, plots, presets


def atomic_write(path, write):
    """Call write(tmp_path), then rename onto `path`: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_json(path, obj):
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


class HistoryWriter(keras.callbacks.Callback):
    """Writes history.json after every epoch, so a run interrupted late still shows its curves."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        write_json(self.path, self.history)


def train_run(
    out,
    model="vae",
    dataset="digits",
    binarize=None,
    epochs=10,
    latent_dim=None,
    batch_size=128,
    learning_rate=1e-3,
    seed=0,
    verbose="auto",
    figures=True,
):
    """Train a preset on a dataset and fill the run folder `out`. Returns (model, history dict).

    The validation data are the test split (statically binarized with `seed` when binarizing): they are
    only monitored, never used to select anything.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    x_train, _ = data.load_arrays(dataset, "train")
    x_test, y_test = data.load_arrays(dataset, "test")
    train_ds = data.pipeline(x_train, binarize=binarize, batch_size=batch_size, shuffle=True, seed=seed)
    val_ds = data.pipeline(x_test, binarize=binarize and "static", batch_size=batch_size, shuffle=False, seed=seed)
    options = {"input_shape": x_train.shape[1:], "seed": seed}
    if latent_dim:
        options["latent_dim"] = int(latent_dim)
    vae = presets.get(model)(**options)
    vae.compile(optimizer=keras.optimizers.Adam(learning_rate))
    config = {
        "model": model,
        "dataset": str(dataset),
        "binarize": binarize,
        "epochs": epochs,
        "latent_dim": vae.latent_dim,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "input_shape": list(vae.data_shape),
        "model_class": type(vae).__name__,
    }
    write_json(out / "config.json", config)
    callbacks = [
        HistoryWriter(out / "history.json"),
        keras.callbacks.TensorBoard(log_dir=str(out / "logs")),
        keras.callbacks.TerminateOnNaN(),
    ]
    if verbose == "auto":  # a progress bar for a person, one line per epoch for logs
        verbose = 1 if sys.stdout.isatty() else 2
    history = vae.fit(train_ds, epochs=epochs, validation_data=val_ds, callbacks=callbacks, verbose=verbose)
    if hasattr(vae, "fit_code_prior"):  # a VQ-VAE generates from a code prior fitted to its training codes
        vae.fit_code_prior(data.binarize_static(x_train, seed) if binarize else x_train)
    atomic_write(out / "model.keras", vae.save)
    if figures:
        x_shown = data.binarize_static(x_test, seed) if binarize else x_test
        write_figures(vae, x_shown[:2000], None if y_test is None else y_test[:2000], out)
    return vae, history.history


def write_figures(model, x, labels, out):
    """reconstructions.png, samples.png and latent_map.png in `out`; returns their paths."""
    out = Path(out)
    paths = [
        plots.save_reconstructions(model, x, out / "reconstructions.png"),
        plots.save_samples(model, out / "samples.png"),
    ]
    if len(x) > 1:
        paths.append(plots.save_latent_map(model, x, labels, out / "latent_map.png"))
    return paths


def load_run(run):
    """(model, config) of a run folder written by `train_run`."""
    run = Path(run)
    missing = [name for name in ("model.keras", "config.json") if not (run / name).is_file()]
    if missing:
        raise ValueError(f"{run} is not a kerasvae run folder: missing {', '.join(missing)}.")
    config = json.loads((run / "config.json").read_text())
    return keras.saving.load_model(run / "model.keras"), config


def test_images(config, split="test", limit=None):
    """The evaluation images of a run, binarized the way it trained (static, seed from the config)."""
    x, y = data.load_arrays(config["dataset"], split)
    if config.get("binarize"):
        x = data.binarize_static(x, config.get("seed", 0))
    if limit:
        x, y = x[:limit], (None if y is None else y[:limit])
    return np.asarray(x), y
