"""Run TFLite files with LiteRT's CompiledModel API (what Android recommends), in a process of its own: the
API has crashed the interpreter process outright (a segmentation fault after resizing a dynamic batch), and a
crash must fail one test, not the session.

    python compiled_model_run.py jobs.npz out.npz

jobs.npz holds, for job i, `i/file` (path), `i/signature` and `i/in/<name>` arrays; out.npz gets `i/out/<name>`
(the first run's outputs, shaped as the signature's output tensors) or `i/error`.
"""

import sys

import numpy as np


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
