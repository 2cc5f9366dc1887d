"""Loading `.keras` files in Keras's safe mode, with errors that say which file is damaged and how.

`keras.saving.load_model` reports a truncated archive as "File not found", a damaged config as a bare JSON
error and damaged weights as an h5py OSError; `load_model` here turns each into one ValueError naming the
file, and never lets the archive deserialize Python code (lambdas): kerasvae models need none.

>>> model = load_model("runs/fmnist/model.keras")   # doctest: +SKIP
"""

import json
import re
import zipfile
import zlib
from pathlib import Path

import keras

# What a damaged archive raises from inside Keras: zip and zlib errors for a bad container, KeyError for a
# missing member, JSONDecodeError for a bad config, OSError from h5py for bad weights, TypeError when the
# config no longer fits the classes' constructors.
DAMAGED = (OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile, zlib.error, json.JSONDecodeError)


def load_model(path):
    """The model saved at `path` (a `.keras` file), loaded with `safe_mode=True`.

    Args:
        path: str or Path. A file written by `model.save("....keras")`.

    Raises:
        ValueError: naming the file, if it is missing, not a `.keras` archive, truncated or damaged, or if
            it asks to deserialize code (what safe mode refuses).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No model file {path}.")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a .keras archive (truncated, or not a zip file); save the model again.")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged_member = archive.testzip()  # checks every member's CRC: catches truncation inside the zip
        if damaged_member is not None:
            raise ValueError(f"{path} is damaged ({damaged_member} fails its checksum); save the model again.")
        return keras.saving.load_model(path, safe_mode=True)
    except DAMAGED as error:
        missing = re.search(r"Could not locate \w+ '[^']+'", str(error))
        if missing:  # a class of the user's own that this process has not registered: the file is fine
            raise ValueError(f"{path} needs a class that is not registered here ({missing[0]}); import the module "
                             "that defines it (with @keras.saving.register_keras_serializable) before loading.") from None
        raise ValueError(f"{path} is damaged and cannot be loaded ({type(error).__name__}: {error}); save the model again.") from None
