"""Run .tflite and .onnx files in headless Chromium with the runtimes web pages use: LiteRT.js (@litertjs/core,
CPU/wasm), tfjs-tflite (wasm) and onnxruntime-web (wasm execution provider), all from tests/browser/node_modules.

    import browser_harness
    browser_harness.require()                      # skip the test (or fail it when $CI is set) if unavailable
    results = browser_harness.run([
        {"runtime": "litertjs", "file": "/abs/decoder_float32.tflite", "signature": "decode",
         "inputs": {"z": np.zeros((1, 32), np.float32)}, "repeats": 20},
        {"runtime": "onnxruntime-web", "file": "/abs/decoder.onnx", "inputs": {"z": ...}},
    ])
    results[0]["ok"], results[0]["error"], results[0]["outputs"]["mean"], results[0]["latency_ms"]

A job: runtime, file (absolute path), inputs ({name: float32 or int32 array}), and optionally signature (tflite;
default the file's first signature), repeats (time that many calls after the first two; median ms),
input_names ({signature input name: raw tensor name}) and output_names ({raw tensor name: signature output
name}) for tfjs-tflite, which only knows raw tensor names: when absent they are read from the file with
ai_edge_litert (`tflite_tensor_names`).
A result: ok, error (text or None), outputs (first call, {name: array of the runtime-reported shape}),
second_outputs (a second call with the same inputs), latency_ms (median or None), stage (where it stopped:
"load", "run", "second_run", "timing", "done", "harness") and info (runtime details, e.g. load_ms).
All jobs of one call share one browser launch; each job runs in its own fresh page.
"""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
SCRIPT = BROWSER_DIR / "run_models.mjs"
RUNTIMES = ("litertjs", "tfjs-tflite", "onnxruntime-web")
PACKAGES = ("@litertjs/core", "@tensorflow/tfjs-tflite", "@tensorflow/tfjs-core", "@tensorflow/tfjs-backend-cpu",
            "onnxruntime-web", "puppeteer-core")
DTYPES = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "int8": np.int8, "int16": np.int16,
          "float64": np.float64, "int64": np.int64}


def chromium():
    """Path of the Chromium binary: $CHROMIUM, else /usr/bin/chromium, else chromium on PATH; None if none."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def unavailable():
    """None when chromium, node and tests/browser/node_modules are all present, else a one-line reason."""
    if chromium() is None:
        return "browser tests need Chromium (/usr/bin/chromium or $CHROMIUM): apt-get install chromium"
    if shutil.which("node") is None:
        return "browser tests need node on PATH"
    missing = [p for p in PACKAGES if not (BROWSER_DIR / "node_modules" / p / "package.json").is_file()]
    if missing:
        return f"browser tests need {', '.join(missing)}: npm ci --ignore-scripts --prefix tests/browser"
    return None


def require():
    """Skip the calling test when the browser runtimes are unavailable, or fail it when $CI is set (CI installs
    them, so their absence there is a bug)."""
    reason = unavailable()
    if reason is not None:
        skip_or_fail(reason)


def skip_or_fail(reason):
    """pytest.skip(reason) where a real part a test needs is absent, but a failure on CI, which installs every
    part."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason)


def tflite_tensor_names(path, signature=None):
    """{"inputs": {signature name: raw tensor name}, "outputs": {raw tensor name: signature name}} of one
    signature of a .tflite file (its first if None), from ai_edge_litert's Interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    signatures = interpreter.get_signature_list()
    if not signatures:
        return {"inputs": {}, "outputs": {}}
    runner = interpreter.get_signature_runner(signature or next(iter(signatures)))
    return {
        "inputs": {name: d["name"] for name, d in runner.get_input_details().items()},
        "outputs": {d["name"]: name for name, d in runner.get_output_details().items()},
    }


def _encode(array):
    array = np.asarray(array)
    if array.dtype.kind == "f":
        array = array.astype("<f4", copy=False)
        dtype = "float32"
    elif array.dtype.kind in "iub":
        array = array.astype("<i4", copy=False)
        dtype = "int32"
    else:
        raise TypeError(f"unsupported input dtype {array.dtype}")
    return {"dtype": dtype, "shape": list(array.shape),
            "data": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")}


def _decode(value):
    dtype = np.dtype(DTYPES[value["dtype"]]).newbyteorder("<")
    array = np.frombuffer(base64.b64decode(value["data"]), dtype=dtype).astype(dtype.newbyteorder("="))
    return array.reshape(value["shape"])


def _prepare(job, index):
    job = dict(job)
    if job.get("runtime") not in RUNTIMES:
        raise ValueError(f"job {index}: runtime must be one of {RUNTIMES}, got {job.get('runtime')!r}")
    job["file"] = str(Path(job["file"]).resolve())
    if job["runtime"] == "tfjs-tflite" and ("output_names" not in job or "input_names" not in job):
        try:
            names = tflite_tensor_names(job["file"], job.get("signature"))
        except Exception as error:  # noqa: BLE001 - unreadable file: the browser reports the load error itself
            print(f"browser_harness: tensor names of {job['file']} unavailable: {error}", file=sys.stderr)
            names = {"inputs": {}, "outputs": {}}
        job.setdefault("input_names", names["inputs"])
        job.setdefault("output_names", names["outputs"])
    job["inputs"] = {name: _encode(value) for name, value in job.get("inputs", {}).items()}
    return job


def run(jobs, timeout=300):
    """Run every job in one headless Chromium launch and return one result per job, in order (see the module
    docstring for both formats). A job that fails to load or run gives ok=False with the runtime's error text;
    a harness failure (no browser, node crash) raises RuntimeError, and running past `timeout` seconds
    TimeoutError."""
    jobs = [_prepare(job, i) for i, job in enumerate(jobs)]
    if not jobs:
        return []
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    env = dict(os.environ, CHROMIUM=chromium())
    with tempfile.TemporaryDirectory(prefix="browser_harness_") as tmp:
        spec = Path(tmp) / "jobs.json"
        spec.write_text(json.dumps({"timeout": timeout, "jobs": jobs}))
        process = subprocess.Popen(["node", str(SCRIPT), str(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=env, cwd=BROWSER_DIR, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # node and the Chromium it started
            stdout, stderr = process.communicate()
            sys.stderr.write(stderr.decode(errors="replace"))
            raise TimeoutError(f"browser harness ran past {timeout} s") from None
    sys.stderr.write(stderr.decode(errors="replace"))
    if process.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-20:]
        raise RuntimeError(f"run_models.mjs exited with {process.returncode}:\n" + "\n".join(tail))
    results = json.loads(stdout)
    for result in results:
        for key in ("outputs", "second_outputs"):
            result[key] = {name: _decode(value) for name, value in result.get(key, {}).items()}
        for key in ("latency_ms", "mean_latency_ms"):  # JSON writes a whole-millisecond median as an int
            if result.get(key) is not None:
                result[key] = float(result[key])
    return results
