"""Quiet TensorFlow start-up for the `kerasvae` command.

On a CPU machine TensorFlow 2.21 prints 6-7 lines to stderr on every start: the oneDNN banner twice,
"Could not find cuda drivers", and an E-level "failed call to cuInit" that reads like a failure. They are
written by absl's C++ logging while TensorFlow's shared libraries load (before absl::InitializeLog, which
TF_CPP_MIN_LOG_LEVEL cannot reach) and when the devices are first listed. So `start_tensorflow` runs
exactly those two steps with the process's stderr (file descriptor 2) captured, and writes back every
captured line that is not one of these known start-up lines: a real error while loading still shows.
Python-side, TensorFlow's deprecation notices (logged through its "tensorflow" logger, e.g. when tf2onnx
calls deprecated APIs) go quiet by raising that logger to ERROR. `kerasvae --verbose` skips all of this.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings

START_UP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit"
    r"|TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions:"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
)


@contextlib.contextmanager
def filtered_stderr(noise=START_UP_NOISE):
    """Captures what anything in the process (C++ included) writes to stderr inside the block, then writes
    back the lines that do not match `noise`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if line.strip() and not noise.search(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


# Lines TFLite's converter and interpreter print from C++ on every use.
TFLITE_NOISE = re.compile(r"Created TensorFlow Lite XNNPACK delegate for CPU|fully_quantize: \d+, inference_type:")
_quiet = False


@contextlib.contextmanager
def quiet_tflite():
    """Around TFLite conversion and interpreters, once `start_tensorflow` made the process quiet: their
    C++ lines are filtered as above, and the converter's "tf.lite.Interpreter is deprecated" warning (TF's
    calibrator uses it internally; ours is ai_edge_litert's) is ignored inside the block only."""
    if not _quiet:
        yield
        return
    with warnings.catch_warnings(), filtered_stderr(TFLITE_NOISE):
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated", category=UserWarning)
        yield


def start_tensorflow(verbose=False):
    """Imports TensorFlow and initializes its devices, quietly unless `verbose`."""
    if verbose:
        import tensorflow as tf

        tf.config.list_physical_devices()
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    global _quiet
    _quiet = True
