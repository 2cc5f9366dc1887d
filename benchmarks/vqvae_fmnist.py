"""VQ-VAE on Fashion-MNIST in a short CPU run: test reconstruction PSNR, codebook perplexity, and a grid of
samples from the fitted code prior (look at it).

Usage: python benchmarks/vqvae_fmnist.py [--epochs 5] [--filters 32,64] [--out vq_samples.png]
Prints one JSON object.
"""

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

import kerasvae as kv
from kerasvae import plots


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--filters", default=None, help="encoder filters, e.g. 32,64 (7x7 codes) or 64 (14x14)")
    parser.add_argument("--num-embeddings", type=int, default=None)
    parser.add_argument("--embedding-dim", type=int, default=None)
    parser.add_argument("--out", default="vq_samples.png")
    args = parser.parse_args()
    x, _ = kv.data.load_arrays("fashion_mnist", "train")
    x_test, _ = kv.data.load_arrays("fashion_mnist", "test")
    options = {} if args.filters is None else {"filters": tuple(int(f) for f in args.filters.split(","))}
    options.update({k: v for k, v in (("num_embeddings", args.num_embeddings), ("embedding_dim", args.embedding_dim)) if v})
    keras.utils.set_random_seed(0)
    model = kv.presets.vqvae(input_shape=(28, 28, 1), seed=0, **options)
    model.compile(keras.optimizers.Adam(1e-3))
    start = time.perf_counter()
    history = model.fit(x, epochs=args.epochs, batch_size=128, verbose=0).history
    train_seconds = time.perf_counter() - start
    model.fit_code_prior(x)
    model.save(Path(args.out).with_suffix(".keras"))
    mse = float(np.mean((model.reconstruct(x_test) - x_test) ** 2))
    codes = np.ravel(model.codes(x_test))
    usage = np.bincount(codes, minlength=model.quantizer.num_embeddings) / len(codes)
    test_perplexity = float(np.exp(-np.sum(usage[usage > 0] * np.log(usage[usage > 0]))))
    plots.image_grid(model.sample(64, seed=(0, 1)), args.out, title="VQ-VAE samples (code prior)")
    print(json.dumps({
        "preset": "vqvae", **options, "epochs": args.epochs, "train_seconds": round(train_seconds, 1),
        "codes_per_image": int(model.codes(x_test[:1]).shape[-1]),
        "test_psnr_db": round(10 * np.log10(1.0 / mse), 2), "test_perplexity": round(test_perplexity, 1),
        "train_perplexity_last_epoch": round(history["perplexity"][-1], 1), "samples": args.out,
    }))


if __name__ == "__main__":
    main()
