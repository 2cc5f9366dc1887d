"""The .kvz entropy coder: constriction's range coder (Rust) against the pure-Python bit-by-bit arithmetic
coder kerasvae used before (kerasvae/apps/entropy_coding.py, read from git history), on the same quantized
latents of real images under the same discretized-Gaussian prior: encode and decode time, payload size,
and the ideal code length sum(-log2 P(k)) both aim at.

    python benchmarks/compression_coders.py                     # Fashion-MNIST when installed, else digits
    python benchmarks/compression_coders.py --run RUN --num 1000 --deltas 0.25,0.5,1

Without --run, trains a 16-d MLP VAE (Gaussian likelihood) on 3000 training images for 5 epochs (about
20 s on 2 cores). Times are the best of --repeats runs. Prints a markdown table and the ratios.
"""

import argparse
import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import kerasvae as kv
from kerasvae import training
from kerasvae.apps import compression

ROOT = Path(__file__).resolve().parent.parent
# The commit that added the old coder; the file was never changed after it.
OLD_CODER = "63ed3e6f58543290ff4c1ab622328d9fd308992a:kerasvae/apps/entropy_coding.py"


def old_coder_module():
    source = subprocess.run(["git", "show", OLD_CODER], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "old_entropy_coding.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def trained_model(run, dataset):
    if run:
        model, config = training.load_run(run)
        return model, config.dataset, training.test_images(config, "test")[0]
    import keras

    x_train = kv.data.load_arrays(dataset, "train[:3000]")[0]
    keras.utils.set_random_seed(0)
    model = kv.presets.mlp_vae(input_shape=x_train.shape[1:], latent_dim=16, hidden=(256, 64), likelihood=kv.likelihoods.Gaussian(0.1), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(x_train, epochs=5, batch_size=64, verbose=0)
    return model, dataset, kv.data.load_arrays(dataset, "test")[0]


def best_time(repeats, function, *args):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(model, x, delta, old, repeats):
    bins = compression.quantize(model, x, delta)
    new_code = compression.latent_code(model, delta)
    old_code = old.DiscretizedGaussianCoder(new_code.mean * delta, new_code.std * delta, delta)
    row = {"delta": delta, "symbols": bins.size, "ideal_bytes": float(np.sum(new_code.code_length(bins))) / 8}
    for name, code in (("constriction", new_code), ("python", old_code)):
        encode_s, payload = best_time(repeats, code.encode, bins)
        decode_s, decoded = best_time(repeats, code.decode, payload, len(bins))
        assert np.array_equal(decoded, code.clamp(bins)), name
        row[name] = {"encode_s": encode_s, "decode_s": decode_s, "bytes": len(payload)}
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a run folder written by `kerasvae train` (default: train a small VAE)")
    parser.add_argument("--dataset", default="fashion_mnist" if kv.data.fashion_mnist_available() else "digits")
    parser.add_argument("--num", type=int, default=1000, help="the first N test images")
    parser.add_argument("--deltas", default="0.25,0.5,1", help="comma-separated bin widths")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model, dataset, x = trained_model(args.run, args.dataset)
    x = x[: args.num]
    old = old_coder_module()
    print(f"{dataset}, {len(x)} test images, {model.latent_dim}-d latents\n")
    print("| delta | coder | encode (s) | decode (s) | payload bytes | ideal bytes |")
    print("|---|---|---|---|---|---|")
    for delta in (float(d) for d in args.deltas.split(",")):
        row = measure(model, x, delta, old, args.repeats)
        for name in ("constriction", "python"):
            r = row[name]
            print(f"| {delta:g} | {name} | {r['encode_s']:.4f} | {r['decode_s']:.4f} | {r['bytes']} | {row['ideal_bytes']:.1f} |")
        new, ours = row["constriction"], row["python"]
        print(f"|   | python / constriction | {ours['encode_s'] / new['encode_s']:.0f}x | {ours['decode_s'] / new['decode_s']:.0f}x "
              f"| {ours['bytes'] / new['bytes']:.4f} | |")


if __name__ == "__main__":
    main()
