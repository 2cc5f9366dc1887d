"""Export a run folder written by `kerasvae train`, or a `.keras` file written by `model.save`; the same as
`kerasvae export RUN_OR_FILE --to DIR ...`.

    python export/onnx.py runs/fmnist --to saved_models/fmnist --onnx
    python export/onnx.py fmnist.keras --to saved_models/fmnist --onnx

Every option of `kerasvae export` is accepted (--version N, --force, --tflite MODES, --calibration-data NAME|PATH,
--onnx). A .keras file has no training data of its own: int8 and --web need --calibration-data.
"""

import sys
from pathlib import Path

# Python puts this script's folder first on sys.path, where export/onnx.py would shadow the onnx package
# that tf2onnx imports.
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

from kerasvae.cli import main  # after the path is fixed

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
