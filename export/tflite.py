"""Export a run folder written by `kerasvae train`, or a `.keras` file written by `model.save`; the same as
`kerasvae export RUN_OR_FILE --to DIR ...`.

    python export/tflite.py runs/fmnist --to saved_models/fmnist --tflite float32,dynamic,float16,int8 --tflite-batch 1,16
    python export/tflite.py fmnist.keras --to saved_models/fmnist --tflite int8 --calibration-data fashion_mnist

Every option of `kerasvae export` is accepted (--version N, --force, --tflite MODES, --calibration-data NAME|PATH,
--tflite-batch SIZES, --onnx, --web, --web-runtime PATH, --author, --license). A .keras file has no training data of
its own: int8 and --web need --calibration-data.
"""

import sys
from pathlib import Path

# Python puts this script's folder first on sys.path, where export/onnx.py would shadow the onnx package
# that tf2onnx imports.
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

from kerasvae.cli import main  # after the path is fixed

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
