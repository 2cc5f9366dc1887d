"""Training throughput of `fit` against the classic PyTorch VAE, measured A/B in one run.

Each arm is a long-lived worker process (so imports and compilation happen once) that trains one epoch of
dynamically binarized Fashion-MNIST (784-512-256-32, Bernoulli, batch 128, Adam 1e-3) per command. The
driver warms every arm up with one epoch, then cycles through the arms ROUNDS times and reports each arm's
median samples/s and its ratio to the PyTorch arm. Alternating cancels most of the drift of a shared
machine; the ratios, not the absolute numbers, are the result.

    python benchmarks/train_speed.py --torch-python /work/torchvenv/bin/python [--rounds 5] [--limit 30000]
        [--arms torch,default,spe1,keras_adam+spe1,spe50,jit,bf16,bf16jit,conv]

Arms: torch (benchmarks/torch_reference_vae.py's model and loop, torch.set_num_threads(2)); default
(`kv.presets.mlp_vae` + compile + fit, as a user writes it, with the models' compile defaults: the fused
`kv.optimizers.Adam(1e-3)` and steps_per_execution=10); keras_adam (`keras.optimizers.Adam(1e-3)` instead);
speN (steps_per_execution=N; spe1 is Keras's default); jit (jit_compile=True, XLA); bf16 (keras
mixed_bfloat16 policy; losses and distributions stay float32); bf16jit (both); levers combine with '+',
e.g. keras_adam+spe1 is plain Keras; conv (`kv.presets.conv_vae`, for scale); floor and floor+bf16 (the
network's six matmuls alone, forward and backward, in TensorFlow: the fastest any step could be) and
torch_floor (the same in PyTorch). Prints one JSON object.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


# The network's weight matrices, encoder then decoder: the matmuls every implementation of the step must do.
LAYERS = [(784, 512), (512, 256), (256, 64), (32, 256), (256, 512), (512, 784)]


def torch_worker(arm, limit, batch_size):
    import torch

    sys.path.insert(0, str(HERE))
    from torch_reference_vae import VAE, find_data_dir, load_images, train_epoch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = torch.from_numpy(load_images(find_data_dir(None) / "train-images-idx3-ubyte.gz")[:limit])
    if arm == "torch_floor":
        weights = [(0.05 * torch.randn(*shape)).requires_grad_() for shape in LAYERS]
        batch = (x[:batch_size].reshape(batch_size, 784) > 0.5).float()

        def matmuls():  # forward and backward through the six matmuls and ReLUs, nothing else
            h = batch
            for index, w in enumerate(weights):
                h = torch.relu((h[:, :32] if index == 3 else h) @ w)
            h.sum().backward()
            for w in weights:
                w.grad = None  # as zero_grad(set_to_none=True): no accumulation pass

        return lambda: [matmuls() for _ in range(len(x) // batch_size)], len(x) // batch_size * batch_size
    model = VAE(32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return lambda: train_epoch(model, optimizer, x, batch_size), len(x)


def keras_worker(arm, limit, batch_size):
    import keras

    import kerasvae as kv

    levers = set(arm.split("+"))  # e.g. "bf16+spe10": several levers at once
    if levers & {"bf16", "bf16jit"}:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    if "floor" in levers:
        return matmul_floor("bf16" in levers, limit, batch_size)
    split = "train" if limit is None else f"train[:{limit}]"
    data = kv.data.load("fashion_mnist", split, binarize="dynamic", batch_size=batch_size, seed=0)
    count = sum(int(batch.shape[0]) for batch in data)
    model = kv.presets.conv_vae(seed=0) if "conv" in levers else kv.presets.mlp_vae(seed=0)
    options = {}
    for lever in levers:
        if lever.startswith("spe"):
            options["steps_per_execution"] = int(lever[3:])
    if levers & {"jit", "bf16jit"}:
        options["jit_compile"] = True
    # "keras_adam" passes Keras's own Adam; every other arm takes the models' default, kerasvae's fused Adam
    # (kerasvae.optimizers.Adam, learning rate 1e-3).
    model.compile(optimizer=keras.optimizers.Adam(1e-3) if "keras_adam" in levers else kv.optimizers.Adam(1e-3), **options)
    return lambda: model.fit(data, epochs=1, verbose=0), count


def matmul_floor(bfloat16, limit, batch_size):
    """An epoch of the network's matmuls alone, forward and backward, in one tf.function per step: no
    distributions, loss, optimizer, data pipeline or Keras. No TensorFlow step in this precision can be
    faster; against the torch arm it bounds the ratio any float32 (or bfloat16) kerasvae step can reach."""
    import tensorflow as tf

    dtype = tf.bfloat16 if bfloat16 else tf.float32
    weights = [tf.Variable(tf.random.normal(shape, stddev=0.05, seed=index)) for index, shape in enumerate(LAYERS)]
    batch = tf.cast(tf.random.uniform([batch_size, 784], seed=0) > 0.5, tf.float32)

    @tf.function
    def matmuls():
        with tf.GradientTape() as tape:
            h = tf.cast(batch, dtype)
            for index, w in enumerate(weights):
                h = tf.nn.relu((h[:, :32] if index == 3 else h) @ tf.cast(w, dtype))
            loss = tf.reduce_sum(tf.cast(h, tf.float32))
        return tape.gradient(loss, weights)

    steps = (limit or 60000) // batch_size
    return lambda: [matmuls() for _ in range(steps)][-1][0].numpy(), steps * batch_size


def serve(arm, limit, batch_size):
    """Worker loop: one epoch per input line, its seconds and sample count as one JSON line."""
    torch_arm = arm.startswith("torch")
    epoch, count = torch_worker(arm, limit, batch_size) if torch_arm else keras_worker(arm, limit, batch_size)
    print(json.dumps({"ready": True}), flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        epoch()
        print(json.dumps({"seconds": time.perf_counter() - start, "samples": count}), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--torch-python", default=sys.executable)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--limit", type=int, default=30000, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--arms", default="torch,default,spe1,keras_adam+spe1,bf16")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return serve(args.worker, args.limit, args.batch_size)

    arms = args.arms.split(",")
    workers = {}
    for arm in arms:
        python = args.torch_python if arm.startswith("torch") else sys.executable
        command = [python, __file__, "--worker", arm, "--limit", str(args.limit), "--batch-size", str(args.batch_size)]
        workers[arm] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        json.loads(workers[arm].stdout.readline())  # wait for ready, one arm at a time

    def one_epoch(arm):
        workers[arm].stdin.write("epoch\n")
        workers[arm].stdin.flush()
        result = json.loads(workers[arm].stdout.readline())
        return result["samples"] / result["seconds"]

    for arm in arms:
        one_epoch(arm)  # warm-up: tracing, XLA compilation, allocator growth
    rates = {arm: [] for arm in arms}
    for _ in range(args.rounds):
        for arm in arms:
            rates[arm].append(one_epoch(arm))
    for worker in workers.values():
        worker.stdin.close()
        worker.wait()
    medians = {arm: statistics.median(values) for arm, values in rates.items()}
    reference = medians.get("torch")
    print(json.dumps({
        "rounds": args.rounds, "images_per_epoch": args.limit, "batch_size": args.batch_size,
        "samples_per_second": {arm: round(v) for arm, v in medians.items()},
        "ratio_to_torch": {arm: round(v / reference, 3) for arm, v in medians.items()} if reference else None,
        "all_rates": {arm: [round(v) for v in values] for arm, values in rates.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
