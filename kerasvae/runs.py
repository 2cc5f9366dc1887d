"""Run folders: what `kerasvae train` writes and every other command reads. Standard library only, so a
command given a wrong folder says so before TensorFlow loads."""

from pathlib import Path

RUN_FILES = ("model.keras", "config.json")


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
