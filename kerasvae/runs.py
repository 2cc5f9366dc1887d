"""Run folders: what `kerasvae train` writes and every other command reads. Standard library only, so a
command given a wrong folder says so before TensorFlow loads."""

import dataclasses
import json
from pathlib import Path

RUN_FILES = ("model.keras", "config.json")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A run's config.json: how `kerasvae.training.train_run` trained it, the one record the command line,
    the applications and export read back (`read_config`, `kerasvae.training.load_run`).

    Attributes:
        model: str. The preset, in the CLI's spelling ("mlp-vae").
        dataset: str. A dataset name or path (kerasvae.data.load).
        classes: list of int or None. The labels it trained on; None is all.
        binarize: str or None. "static", "dynamic" or None.
        likelihood: str. The likelihood head it trained (a name in kerasvae.likelihoods.LIKELIHOODS, "auto"
            resolved to the one chosen); runs written before kerasvae recorded it trained a "bernoulli".
        seed: int. Seeds the training, and the static binarization of its evaluation images.
        epochs, latent_dim, batch_size, learning_rate, weight_averaging, early_stopping: the training settings.
        validation: str. The split validated on ("test", or the held-out "train[N:]").
        input_shape: list of int. Shape of one example.
        model_class: str. The model's class name.
        strategy, num_replicas, precision, xla: how it ran.
    """

    model: str
    dataset: str
    classes: list | None = None
    binarize: str | None = None
    likelihood: str = "bernoulli"
    seed: int = 0
    epochs: int | None = None
    latent_dim: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    weight_averaging: float | None = None
    early_stopping: int | None = None
    validation: str = "test"
    input_shape: list | None = None
    model_class: str | None = None
    strategy: str = "default"
    num_replicas: int = 1
    precision: str = "float32"
    xla: bool = False

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values):
        """From config.json's dict; keys written by other versions of kerasvae are ignored."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})


def read_config(run):
    """The RunConfig of a run folder (a one-line ValueError for a missing or broken config.json)."""
    path = Path(run) / "config.json"
    try:
        return RunConfig.from_json(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}).") from None
    except TypeError as error:  # a required key is missing
        raise ValueError(f"{path} is not a kerasvae run config ({error}).") from None


def check_run_folder(run):
    """Raises ValueError (one line) unless `run` holds the files of a finished run."""
    run = Path(run)
    if not run.exists():
        raise ValueError(f"{run} is not a kerasvae run folder: it does not exist (train one: kerasvae train --out {run})")
    missing = [name for name in RUN_FILES if not (run / name).is_file()]
    if missing:
        raise ValueError(f"{run} is not a kerasvae run folder: missing {', '.join(missing)}.")
    return run


def check_model_source(path):
    """Raises ValueError (one line) unless `path` is what `kerasvae export` takes: a finished run folder or
    an existing `.keras` model file."""
    path = Path(path)
    if path.suffix == ".keras" and not path.is_dir():
        if not path.is_file():
            raise ValueError(f"No model file {path} (a .keras file written by model.save, or a run folder).")
        return path
    if path.is_file():
        raise ValueError(f"{path} is neither a .keras model file nor a kerasvae run folder.")
    return check_run_folder(path)
