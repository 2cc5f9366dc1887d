"""Where a `fit` step of the classic VAE spends its time, from a TensorFlow profiler trace (not a guess).

Trains the `mlp_vae` preset (784-512-256-32, Bernoulli) with the classic Adam 1e-3 one warm-up epoch on
dynamically binarized Fashion-MNIST, then traces one more epoch with `tf.profiler.experimental` and sums
the kernels that ran on TensorFlow's compute threads by op type: matmuls, the Adam update, the
likelihood's element-wise ops and the rest. Kernels of one step run on two threads at once, so their sum exceeds the wall time.

    python benchmarks/profile_step.py [--limit 30000] [--batch-size 128] [--logdir /tmp/kerasvae_profile]

Prints one JSON object; the trace stays in --logdir for TensorBoard's profile plugin.
"""

import argparse
import collections
import glob
import json
import time

import keras
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

import kerasvae as kv

GROUPS = {  # op type -> what it belongs to
    "_MklMatMul": "matmul", "_MklNativeFusedMatMul": "matmul", "MatMul": "matmul", "_FusedMatMul": "matmul",
    "ResourceApplyAdam": "adam", "Softplus": "likelihood", "Sigmoid": "likelihood", "MulNoNan": "likelihood",
    "Neg": "likelihood", "StatelessRandomNormalV2": "sampling",
}


def kernel_seconds(xplane_path):
    """{op type: seconds} of the kernels on the host's tf_Compute threads."""
    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as file:
        space.ParseFromString(file.read())
    seconds = collections.Counter()
    for plane in space.planes:
        names = {key: value.name for key, value in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names[event.metadata_id]
                if ":" in name and not name.startswith("ExecutorState"):  # "op_name:OpType" kernels only
                    seconds[name.rsplit(":", 1)[1]] += event.duration_ps / 1e12
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=30000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--logdir", default="/tmp/kerasvae_profile")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    x = kv.data.load_arrays("fashion_mnist", f"train[:{args.limit}]")[0]
    data = kv.data.pipeline(x, binarize="dynamic", batch_size=args.batch_size, seed=0)
    model = kv.presets.mlp_vae(seed=0)
    model.compile(kv.optimizers.Adam(1e-3))  # the classic step the tables measured: no weight average
    model.fit(data, epochs=1, verbose=0)
    tf.profiler.experimental.start(args.logdir)
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    seconds = kernel_seconds(max(glob.glob(f"{args.logdir}/**/*.xplane.pb", recursive=True)))
    steps = -(-len(x) // args.batch_size)
    total = sum(seconds.values())
    groups = collections.Counter()
    for op, value in seconds.items():
        groups[GROUPS.get(op, "other")] += value
    print(json.dumps({
        "steps": steps, "wall_ms_per_step": round(1000 * wall / steps, 2),
        "kernel_ms_per_step": round(1000 * total / steps, 2),
        "share": {group: round(value / total, 3) for group, value in groups.most_common()},
        "top_ops_ms_per_step": {op: round(1000 * value / steps, 3) for op, value in seconds.most_common(12)},
    }, indent=1))


if __name__ == "__main__":
    main()
