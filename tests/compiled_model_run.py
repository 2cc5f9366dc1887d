"""Run TFLite files with LiteRT's CompiledModel API (what Android recommends), in a process of its own: the
API has crashed the interpreter process outright (a segmentation fault after resizing a dynamic batch), and a
crash must fail one test, not the session.

    python compiled_model_run.py jobs.npz out.npz

jobs.npz holds, for job i, `i/file` (path), `i/signature` and `i/in/<name>` arrays; out.npz gets `i/out/<name>`
(the first run's outputs, shaped as the signature's output tensors) or `i/error`.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def run_files(jobs, timeout=300):
    """Run [(path, signature, {input name: array}), ...] with CompiledModel in a fresh process; returns one
    {output name: array} per job, or the job's error text (a str)."""
    with tempfile.TemporaryDirectory(prefix="compiled_model_") as tmp:
        packed = {}
        for i, (path, signature, inputs) in enumerate(jobs):
            packed.update({f"{i}/file": str(path), f"{i}/signature": signature})
            packed.update({f"{i}/in/{name}": value for name, value in inputs.items()})
        np.savez(Path(tmp) / "jobs.npz", **packed)
        done = subprocess.run([sys.executable, __file__, str(Path(tmp) / "jobs.npz"), str(Path(tmp) / "out.npz")],
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"CompiledModel process exited with {done.returncode}: {done.stderr[-2000:]}")
        results = np.load(Path(tmp) / "out.npz")
        return [
            str(results[f"{i}/error"]) if f"{i}/error" in results.files
            else {key.split("/")[2]: results[key] for key in results.files if key.startswith(f"{i}/out/")}
            for i in range(len(jobs))
        ]


def run(path, signature, inputs):
    from ai_edge_litert.compiled_model import CompiledModel, TensorBuffer

    model = CompiledModel.from_file(path)
    details = model.get_output_tensor_details(signature)
    input_buffers = {}
    for name, value in inputs.items():
        buffer = model.create_input_buffer_by_name(signature, name)
        buffer.write(np.ascontiguousarray(value))
        input_buffers[name] = buffer
    output_buffers = {name: model.create_output_buffer_by_name(signature, name) for name in details}
    model.run_by_name(signature, input_buffers, output_buffers)
    outputs = {}
    for name, buffer in output_buffers.items():
        shape = details[name]["shape"]
        dtype = np.dtype(details[name]["dtype"]) if not isinstance(details[name]["dtype"], type) else details[name]["dtype"]
        outputs[name] = buffer.read(int(np.prod(shape)), dtype).reshape(shape)
    del TensorBuffer
    return outputs


def main(jobs_path, out_path):
    jobs = np.load(jobs_path)
    count = len({key.split("/")[0] for key in jobs.files})
    results = {}
    for i in range(count):
        inputs = {key.split("/")[2]: jobs[key] for key in jobs.files if key.startswith(f"{i}/in/")}
        try:
            for name, value in run(str(jobs[f"{i}/file"]), str(jobs[f"{i}/signature"]), inputs).items():
                results[f"{i}/out/{name}"] = value
        except Exception as error:  # reported per job: one file's failure does not hide the others'
            results[f"{i}/error"] = np.array(f"{type(error).__name__}: {error}")
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(*sys.argv[1:3])
