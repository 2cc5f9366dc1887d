"""Export a run folder written by `kerasvae train`; the same as `kerasvae export RUN --to DIR ...`.

    python export/tflite.py runs/fmnist --to saved_models/fmnist --tflite float32,dynamic,float16,int8 --tflite-batch 1,16

Every option of `kerasvae export` is accepted (--version N, --force, --tflite MODES, --tflite-batch SIZES, --onnx,
--web, --web-runtime PATH, --author, --license).
"""

import sys

from kerasvae.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
