"""Importance-weighted NLL (`model.log_likelihood`, what `kerasvae evaluate` runs) against its floor: the
decoder's matmuls alone for the same n * k latents, in the same precision, in one run.

The estimate decodes k latents per image, so its cost is the decoder's Dense matmuls on n * k rows plus
what surrounds them (sampling q, the likelihood's log_prob over every pixel, the prior and q log-densities,
the logsumexp). The floor arm runs only those matmuls, chunk by chunk, in one tf.function per chunk: no
implementation of the estimate in that precision can be faster. Arms alternate for `--rounds` rounds and
each reports its median seconds and its ratio to the float32 floor; the NLL arms also report the mean NLL
they estimate with the same seed, so bfloat16's difference from float32 is measured on a trained model.

    python benchmarks/eval_speed.py [--preset mlp_vae] [--images 500] [--num-samples 1000] [--rounds 3]
        [--model runs/fmnist/model.keras] [--arms floor,floor_bf16,float32,bfloat16]

Without --model, the preset is trained for --epochs epochs on 20,000 dynamically binarized Fashion-MNIST
images first (the NLL difference needs a trained decoder; the speed does not). Prints one JSON object.
"""

import argparse
import json
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

import kerasvae as kv
from kerasvae.models.probabilistic import decoder_layers


def decoder_denses(model):
    """The Dense layers a decoded latent passes through (the decoder's and the likelihood head's)."""
    return [layer for layer in decoder_layers(model) if isinstance(layer, keras.layers.Dense)]


def floor_arm(model, rows, chunk_rows, dtype):
    """Seconds for the decoder's matmuls on `rows` rows, `chunk_rows` at a time, in `dtype`."""
    kernels = [tf.cast(layer.kernel, dtype) for layer in decoder_denses(model)]
    inputs = [tf.cast(tf.random.normal([chunk_rows, kernel.shape[0]], seed=i), dtype) for i, kernel in enumerate(kernels)]

    @tf.function
    def chunk():  # every matmul, each result reduced so none is pruned
        return tf.add_n([tf.reduce_sum(tf.cast(tf.matmul(h, w), tf.float32)[:1]) for h, w in zip(inputs, kernels)])

    chunk().numpy()
    chunks = -(-rows // chunk_rows)

    def run():
        start = time.perf_counter()
        for _ in range(chunks - 1):
            chunk()
        chunk().numpy()
        return time.perf_counter() - start, None

    return run


def nll_arm(model, x, num_samples, precision, chunk_size):
    options = {} if precision is None else {"precision": precision}  # None: the model's own (float32) policy

    def run():
        start = time.perf_counter()
        nll = -np.mean(model.log_likelihood(x, num_samples=num_samples, seed=0, chunk_size=chunk_size, **options))
        return time.perf_counter() - start, float(nll)

    run()  # traces
    return run


def trained_model(args):
    if args.model:
        return keras.saving.load_model(args.model)
    keras.utils.set_random_seed(0)
    model = getattr(kv.presets, args.preset)(seed=0)
    data = kv.data.load("fashion_mnist", "train[:20000]", binarize="dynamic", batch_size=128, seed=0)
    model.compile()
    model.fit(data, epochs=args.epochs, verbose=0)
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="mlp_vae")
    parser.add_argument("--model", default=None, help="a trained .keras file instead of a short training run")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--chunk-size", type=int, default=None, help="log_likelihood's chunk_size (default: its own)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", default="floor,floor_bf16,float32,bfloat16")
    args = parser.parse_args()

    model = trained_model(args)
    x = kv.data.binarize_static(kv.data.load_arrays("fashion_mnist", "test")[0][: args.images], 1)
    rows = len(x) * args.num_samples
    chunk_rows = 1 << 16
    makers = {
        "floor": lambda: floor_arm(model, rows, chunk_rows, tf.float32),
        "floor_bf16": lambda: floor_arm(model, rows, chunk_rows, tf.bfloat16),
        "float32": lambda: nll_arm(model, x, args.num_samples, None, args.chunk_size),
        "bfloat16": lambda: nll_arm(model, x, args.num_samples, "bfloat16", args.chunk_size),
    }
    arms = {name: makers[name]() for name in args.arms.split(",")}
    seconds = {name: [] for name in arms}
    nll = {}
    for _ in range(args.rounds):
        for name, run in arms.items():
            elapsed, value = run()
            seconds[name].append(elapsed)
            if value is not None:
                nll[name] = value
    median = {name: statistics.median(values) for name, values in seconds.items()}
    flops = 2 * rows * sum(int(np.prod(layer.kernel.shape)) for layer in decoder_denses(model))
    report = {
        "preset": args.preset, "model": args.model, "images": len(x), "num_samples": args.num_samples,
        "decoder_tflop": round(flops / 1e12, 3),
        "seconds": {name: round(value, 3) for name, value in median.items()},
        "rounds": {name: [round(v, 3) for v in values] for name, values in seconds.items()},
        "gflops": {name: round(flops / value / 1e9, 1) for name, value in median.items()},
        "nll": {name: round(value, 3) for name, value in nll.items()},
    }
    for arm, floor in (("float32", "floor"), ("bfloat16", "floor_bf16"), ("bfloat16", "floor")):
        if arm in median and floor in median:
            report[f"{arm}/{floor}"] = round(median[arm] / median[floor], 3)
    if {"float32", "bfloat16"} <= set(nll):
        report["nll_bfloat16_minus_float32"] = round(nll["bfloat16"] - nll["float32"], 4)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
