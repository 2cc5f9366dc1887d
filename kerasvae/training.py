"""Training runs: a preset trained by `fit` on a dataset, with everything a run folder holds
(model.keras, config.json, history.json, TensorBoard logs, figures). The CLI's `train` and `demo` call
`train_run`; scripts can too.

Runs survive crashes: every file is written atomically (temp file + rename), and `backup/` holds the
state after the last finished epoch (`RunBackup`, Keras's BackupAndRestore), so the same call after a
crash, a SIGKILL or a preemption continues where the run stopped, with each epoch in history.json once.
They scale out through `tf.distribute` (kerasvae.distribute): the same `fit` on one device, on every
local GPU, or on every worker of a cluster.
"""

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from kerasvae import (
    _keras_compat,
    data,
    distribute,
    likelihoods,
    plots,
    presets,
    runs,
    saving,
)
from kerasvae import callbacks as kv_callbacks
from kerasvae.callbacks import ValidateAveragedWeights  # noqa: F401 (still importable from here)

# Settings that may change when a crashed run is resumed; any other change needs a fresh run folder.
RESUMABLE_CHANGES = ("epochs", "strategy", "num_replicas", "xla")
VALIDATION_SHARE = 1 / 6  # of the training images, held out to stop on when early stopping (60,000 -> 10,000)
RUN_FILES = ("config.json", "history.json", "model.keras", "reconstructions.png", "samples.png", "latent_map.png")


def atomic_write(path, write):
    """Call write(tmp_path), then rename onto `path`: readers never see a half-written file. The temporary
    name keeps all of path's suffixes (".weights.h5", ".keras", ".png"), which savers check."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix="".join(path.suffixes))
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; give the file the mode an ordinary open() would (0666 less the umask), so a
        # server running as another user can read what was written.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_json(path, obj):
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


class HistoryWriter(keras.callbacks.Callback):
    """Writes history.json after every epoch, so a run interrupted late still shows its curves, with each
    epoch's wall time under "epoch_seconds" (training and validation).

    A resumed run continues the file: the first epoch that `fit` runs cuts it to that many entries, so an
    epoch that ran again after a crash (killed after its history entry, before its backup) is recorded
    once. `history` holds the whole run's curves.
    """

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)
        self.history = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self._resumed = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._resumed:
            self.history = {key: values[:epoch] for key, values in self.history.items()}
            self._resumed = True
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        seconds = self.history.setdefault("epoch_seconds", [])
        seconds.extend([None] * (epoch - len(seconds)))  # a run resumed from a file written without timings
        seconds.append(round(time.perf_counter() - self._epoch_start, 3))
        write_json(self.path, self.history)


class RunBackup(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore (weights, optimizer state and epoch after every epoch; restored when `fit`
    starts again), with its files written atomically: a kill during a save leaves the previous backup
    whole, where Keras's in-place writes would leave a torn file that the next start cannot load.

    In a cluster every worker restores the chief's backup from `restore_dir` (the run folder, on storage
    that all workers share) and writes its own, identical one to `backup_dir`, a private folder, since
    saving reads the variables through collectives that every worker must join.

    Args:
        backup_dir: str or Path. Folder this process writes its backup to.
        restore_dir: str, Path or None. Folder to restore from. Defaults to backup_dir.
        delete_checkpoint: bool. Delete backup_dir when `fit` ends. Defaults to False: `train_run` deletes
            it once model.keras is written, so a kill in between still resumes.
    """

    def __init__(self, backup_dir, restore_dir=None, delete_checkpoint=False):
        super().__init__(str(backup_dir), delete_checkpoint=delete_checkpoint)
        restore_dir = Path(restore_dir or backup_dir)
        self._write_paths = tuple(Path(path) for path in _keras_compat.backup_paths(self))
        _keras_compat.restore_backup_from(self, *(restore_dir / path.name for path in self._write_paths))

    def _save_model(self):  # a private Keras hook, checked by kerasvae._keras_compat
        weights, metadata = self._write_paths
        # Weights first: a kill between the two renames repeats one epoch's training, never skips one.
        atomic_write(weights, self.model.save_weights)
        write_json(metadata, _keras_compat.backup_position(self))


class StopAtBestValidation(keras.callbacks.EarlyStopping):
    """Keras's EarlyStopping on val_loss with restore_best_weights, keeping the weights that validation saw:
    with a weight average, the best epoch's average (not its last step's weights, which no validation
    scored). With `best_path`, the best epoch's weights are also written there, and a run resumed from a
    backup continues the count: the best weights from `restore_path` (default: best_path), the best loss
    and the epochs since from the val_loss in `history_path` (a run's history.json).
    """

    def __init__(self, patience, best_path=None, restore_path=None, history_path=None, verbose=1):
        super().__init__(monitor="val_loss", mode="min", patience=patience, restore_best_weights=True, verbose=verbose)
        self._best_path = best_path and Path(best_path)
        self._restore_path = Path(restore_path or best_path) if best_path else None
        self._history_path = history_path and Path(history_path)

    def on_epoch_begin(self, epoch, logs=None):
        resumable = self._history_path and self._restore_path and self._restore_path.is_file()
        if not (epoch and self.best_weights is None and resumable):
            return
        losses = json.loads(self._history_path.read_text()).get("val_loss", [])[:epoch]
        if losses:  # resumed at `epoch`
            with np.load(self._restore_path) as saved:
                self.best_weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
            self.best_epoch = int(np.argmin(losses))
            self.best, self.wait = losses[self.best_epoch], epoch - 1 - self.best_epoch

    def on_epoch_end(self, epoch, logs=None):
        trained = kv_callbacks.swap_in_weight_average(self.model)
        try:
            super().on_epoch_end(epoch, logs)
        finally:
            kv_callbacks.restore_weights(self.model, trained)
        if self._best_path and self.best_epoch == epoch:
            atomic_write(self._best_path, lambda tmp: np.savez(tmp, *self.best_weights))


class TerminateOnNonFinite(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN watching every logged term, not only the loss, and remembering where training diverged
    and which terms were non-finite, so `message` can say what to change."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.diverged = None  # (epoch, batch, {term: value})

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = {name: float(value) for name, value in (logs or {}).items() if not np.isfinite(float(value))}
        if bad and self.diverged is None:
            self.diverged = (self.epoch, batch, bad)
            self.model.stop_training = True

    def message(self, learning_rate=None, precision="float32"):
        epoch, batch, bad = self.diverged
        terms = sorted(bad, key=lambda name: (name == "loss", name))  # the loss is the sum: name its parts first
        lr = f", now {learning_rate:g}" if learning_rate is not None else ""
        hints = [f"lower the learning rate (--learning-rate{lr})"]
        if "reconstruction" in bad:
            hints.append("for a Gaussian or logistic likelihood raise its scale floor (min_scale) or fix its scale, so p(x|z) cannot collapse onto the data")
        if "kl" in bad:
            hints.append("raise the posterior's scale floor (min_scale) or warm the KL up (kl_warmup_steps)")
        if "vq_loss" in bad:
            hints.append("use EMA codebook updates (ema_decay=0.99) or a smaller commitment_cost")
        if precision == "mixed_float16":
            hints.append("float16 overflows past 65504: try --precision mixed_bfloat16 or float32")
        values = ", ".join(f"{name} = {bad[name]}" for name in terms)
        return f"training diverged in epoch {epoch + 1}, batch {batch + 1}: {values}. To fix it, " + "; ".join(hints) + "."


def train_run(
    out,
    model="vae",
    dataset="digits",
    classes=None,
    binarize=None,
    likelihood="auto",
    epochs=None,
    latent_dim=None,
    batch_size=None,
    learning_rate=None,
    weight_averaging=None,
    early_stopping=None,
    seed=0,
    verbose="auto",
    figures=True,
    strategy="default",
    precision="float32",
    xla=None,
    force=False,
):
    """Train a preset on a dataset and fill the run folder `out`. Returns (model, history dict of every
    epoch, those of a resumed run's earlier start included).

    The validation data are the test split (statically binarized with `seed` when binarizing), only
    monitored, never used to select anything; with `early_stopping` they are the last sixth of the
    training images instead (VALIDATION_SHARE; Fashion-MNIST's last 10,000), held out from training. A
    folder holding a crashed run's backup resumes it (with the same settings; `epochs` may grow). A run
    whose loss terms go non-finite stops and raises a ValueError saying which terms and what to change.

    Args:
        classes: int, sequence of ints or None. Train on the examples of these labels only (e.g. the normal
            class of an anomaly detector); the validation data are those classes' too, and config.json
            records them under "classes" (None: every class). `test_images` still returns whole splits.
        likelihood: str. A name in kerasvae.likelihoods.LIKELIHOODS. "auto" takes the one
            `kerasvae.likelihoods.choose` picks for the training images as the model sees them (binarized
            or not): a Bernoulli on binary images, the discretized logistic on grey levels. config.json
            records the head trained, "auto" resolved. Defaults to "auto".
        epochs, batch_size, learning_rate, weight_averaging: None takes the preset's
            (kerasvae.presets.training_defaults). A preset's KL warm-up is shortened to 40% of the run's
            steps where it is longer, so a short run still ends on the full bound.
        weight_averaging: float or None. The momentum of an exponential moving average of the weights
            (Keras's optimizer `use_ema`): the saved model and every validation during training see the
            average, not the last step's weights. 0 turns it off.
        early_stopping: int or None. Patience in epochs: stop when the held-out loss has not improved for
            that many epochs, and keep the weights of the best epoch (StopAtBestValidation). None or 0: train
            every epoch on all training images.
        strategy: str or tf.distribute.Strategy. "default", "mirrored", "multi-worker" or "parameter-server"
            (see kerasvae.distribute); `batch_size` is the global batch, split over the replicas. In a cluster
            every worker makes the same call; the chief writes `out`, the others a temporary folder. Under
            "parameter-server" the worker and ps tasks serve and never return (the launcher stops them),
            and the chief trains through `kerasvae.distribute.fit`.
        precision: str. "float32", "mixed_float16" or "mixed_bfloat16" (kerasvae.distribute.precision).
        xla: bool or None. Compile the train step with XLA; None lets Keras choose (on with a GPU).
        force: bool. Train over a finished run in `out` (model.keras and no crash backup) instead of refusing.
    """
    out = Path(out)
    finished = (out / "model.keras").is_file() and not (out / "backup").exists()
    if finished and not force:
        raise ValueError(f"{out} holds a finished run; pass --force to train over it, or choose another --out.")
    # The preset's recipe with what the caller set: the model carries it, and compile() and fit() apply it
    # as they do in a Keras script.
    recipe = presets.get(model).recipe.replace(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
    if weight_averaging is not None:
        recipe = dataclasses.replace(recipe, weight_averaging=weight_averaging or None)  # 0: none
    epochs, batch_size = recipe.epochs, recipe.batch_size
    learning_rate, weight_averaging = recipe.learning_rate, recipe.weight_averaging
    early_stopping = early_stopping or None
    if early_stopping is not None and (int(early_stopping) != early_stopping or early_stopping < 1):
        raise ValueError(f"early_stopping must be a patience of at least 1 epoch, or 0 for none; got {early_stopping}")
    # First: the multi-worker strategy sets up TensorFlow's runtime for the cluster before any op runs.
    strat = distribute.strategy(strategy) if isinstance(strategy, str) else strategy
    chief = distribute.is_chief(strat)
    if finished and chief:  # forced: the old model must not outlive a new run killed before its first backup
        (out / "model.keras").unlink()
    keras.utils.set_random_seed(seed)
    classes = data.class_list(classes)
    x_train, _ = data.load_arrays(dataset, "train", classes=classes)
    x_test, y_test = data.load_arrays(dataset, "test", classes=classes)
    held_out = round(len(x_train) * VALIDATION_SHARE) if early_stopping else 0
    validation = f"train[{len(x_train) - held_out}:]" if held_out else "test"
    x_train, x_val = (x_train[:-held_out], x_train[-held_out:]) if held_out else (x_train, x_test)
    # Every worker shuffles with the same seed and keeps its own share of the batches (sharding by data).
    train_ds = data.pipeline(x_train, binarize=binarize, batch_size=batch_size, shuffle=True, seed=seed)
    val_ds = data.pipeline(x_val, binarize=binarize and "static", batch_size=batch_size, shuffle=False, seed=seed)
    train_ds, val_ds = (distribute.shard(ds, strategy=strat) for ds in (train_ds, val_ds))
    parameter_server = distribute.is_parameter_server(strat)
    if parameter_server:  # each worker builds its own pipeline, shuffled its own way (see distribute.fit)
        x_fit, mode = (data.binarize_static(x_train, seed), None) if binarize == "static" else (x_train, binarize)
        train_ds = lambda context: data.pipeline(x_fit, binarize=mode, batch_size=batch_size, seed=None)
        xla = bool(xla)  # XLA cannot compile steps that read variables on other machines
    options = {"input_shape": x_train.shape[1:], "seed": seed, "likelihood": likelihood}
    if latent_dim:
        options["latent_dim"] = int(latent_dim)
    with distribute.precision(precision), strat.scope():
        vae = presets.get(model)(**options, recipe=recipe)
        vae.compile(jit_compile="auto" if xla is None else bool(xla))
    # "auto" chooses now, as the first fit would (a script's run and this one stay the same): config.json
    # then names the head, and the parameter-server chief, which trains without model.fit, gets it too.
    sample = data.binarize_static(x_train[:1024], seed) if binarize else x_train[:1024]
    vae.choose_likelihood(sample)
    vae.start_prior_from_data(x_train, seed=seed)  # the images as loaded, as benchmarks/hvae.py measured
    likelihood = likelihoods.choose(sample) if likelihood == "auto" else likelihood
    config = runs.RunConfig(
        model=model.replace("_", "-"),  # the CLI's spelling, whichever the caller used
        dataset=str(dataset),
        classes=classes,
        binarize=binarize,
        likelihood=likelihood,
        epochs=epochs,
        latent_dim=vae.latent_dim,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_averaging=weight_averaging,
        early_stopping=early_stopping,
        validation=validation,
        seed=seed,
        input_shape=list(vae.data_shape),
        model_class=type(vae).__name__,
        strategy=strategy if isinstance(strategy, str) else type(strat).__name__,
        num_replicas=strat.num_replicas_in_sync,
        precision=precision,
        xla=bool(vae.jit_compile),
    )
    _check_resumable(out, config)
    with _writable_folder(out, chief, distribute.task_name(strat)) as folder:
        write_json(folder / "config.json", config.to_json())
        history = HistoryWriter(folder / "history.json")
        guard = TerminateOnNonFinite()
        # The history entry and the best weights before the backup: a kill between them repeats the epoch.
        stopper = early_stopping and StopAtBestValidation(early_stopping, folder / "backup" / "best.npz",
                                                          out / "backup" / "best.npz", out / "history.json",
                                                          verbose=int(verbose != 0))
        callbacks = [
            history,
            keras.callbacks.TensorBoard(log_dir=str(folder / "logs")),
            # Pictures each epoch for a person watching TensorBoard, on one machine: in a cluster every
            # worker would write them, each from its own copy of the model.
            *([kv_callbacks.ImageSummaries(folder / "logs" / "images", data.binarize_static(x_val[:8], seed) if binarize else x_val[:8])]
              if figures and strategy in ("default", "mirrored") else []),
            guard,
            *([stopper] if stopper else []),
            RunBackup(folder / "backup", restore_dir=out / "backup"),
            kv_callbacks.ValidateAveragedWeights(),
        ]
        if verbose == "auto":  # a progress bar for a person, one line per epoch for logs
            verbose = 1 if sys.stdout.isatty() else 2
        # The pipeline shuffles; fit's own shuffle=True only makes Keras warn that it ignores it for datasets.
        fit = functools.partial(distribute.fit, vae) if parameter_server else functools.partial(vae.fit, shuffle=False)
        fit(train_ds, epochs=epochs, validation_data=val_ds, callbacks=callbacks, verbose=verbose)
        if guard.diverged:
            shutil.rmtree(folder / "backup", ignore_errors=True)  # the run is over: a rerun starts afresh
            raise ValueError(guard.message(learning_rate, precision))
        if hasattr(vae, "fit_code_prior"):  # a VQ-VAE generates from a code prior fitted to its training codes
            vae.fit_code_prior(data.binarize_static(x_train, seed) if binarize else x_train)
        atomic_write(folder / "model.keras", vae.save)
        if figures and chief:
            x_shown = data.binarize_static(x_test, seed) if binarize else x_test
            write_figures(vae, x_shown[:2000], None if y_test is None else y_test[:2000], folder, name=model, dataset=dataset)
        shutil.rmtree(folder / "backup", ignore_errors=True)  # only now: a kill before model.keras still resumes
    return vae, history.history


@contextlib.contextmanager
def _writable_folder(out, chief, task):
    """The folder this process writes: `out` for the chief; for another worker a temporary folder of its own
    inside it (as Keras 2's `workertemp_<id>`), emptied first (a killed worker's leftovers go with its next
    start) and removed at the end. Stale temporary files of atomic writes that a kill interrupted go too."""
    folder = out if chief else out / f".{task}-tmp"
    if not chief:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        for stale in folder.glob(f".{name}.*"):
            stale.unlink()
    try:
        yield folder
    finally:
        if not chief:
            shutil.rmtree(folder, ignore_errors=True)


def _check_resumable(out, config):
    """A backup in `out` resumes only the run that wrote it: a ValueError names the settings that differ."""
    previous = out / "config.json"
    if not (out / "backup").is_dir() or not previous.is_file():
        return
    old, new = json.loads(previous.read_text()), json.loads(json.dumps(config.to_json()))
    old.setdefault("likelihood", runs.RunConfig.likelihood)  # written before it was recorded: the "bernoulli" then
    changed = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if changed:
        differences = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(
            f"{out} holds an interrupted run with other settings ({differences}); resume it with the same settings, "
            f"or delete {out / 'backup'} to start afresh."
        )


def write_figures(model, x, labels, out, name=None, dataset=None):
    """reconstructions.png, samples.png and latent_map.png in `out`, each written atomically and titled with
    the preset `name` (else the model's class); returns their paths."""
    out = Path(out)
    title = f"{name} ({model.latent_dim}-d latent)" if name else plots.model_title(model)
    paths = [
        atomic_write(out / "reconstructions.png",
                     lambda tmp: plots.save_reconstructions(model, x, tmp, title=f"{title}: inputs and their reconstructions")),
        atomic_write(out / "samples.png", lambda tmp: plots.save_samples(model, tmp, title=f"{title}: samples from the prior")),
    ]
    if len(x) > 1:
        paths.append(atomic_write(out / "latent_map.png", lambda tmp: plots.save_latent_map(
            model, x, labels, tmp, class_names=plots.class_names(dataset), title=f"{title}: posterior means")))
    return paths


def load_run(run):
    """(model, kerasvae.runs.RunConfig) of a run folder written by `train_run`."""
    run = runs.check_run_folder(run)
    config = runs.read_config(run)
    return saving.load_model(run / "model.keras"), config


def test_images(config, split="test", limit=None, classes=None):
    """(x, y): a split of a run's dataset, binarized the way it trained (static, seed from the config).

    Every class by default, also for a run trained on some classes only: its test set stays whole, so that
    the other classes can be scored as anomalies. Pass classes=config.classes for the run's own classes
    (the data it trained on, e.g. to calibrate on); `limit` counts the examples kept.

    Args:
        config: kerasvae.runs.RunConfig, or its dict (config.json's content).
    """
    config = config if isinstance(config, runs.RunConfig) else runs.RunConfig.from_json(config)
    x, y = data.load_arrays(config.dataset, split, classes=classes)
    if config.binarize:
        x = data.binarize_static(x, config.seed)
    if limit:
        x, y = x[:limit], (None if y is None else y[:limit])
    return np.asarray(x), y
