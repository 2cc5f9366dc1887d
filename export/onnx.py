"""Export a run folder written by `kerasvae train`; the same as `kerasvae export RUN --to DIR ...`.

    python export/onnx.py runs/fmnist --to saved_models/fmnist  --onnx

Every option of `kerasvae export` is accepted (--version N, --force, --tflite MODES, --onnx).
"""

import sys

from kerasvae.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
