"""Normal vs mixture vs VampPrior with the same network and budget on dynamically binarized Fashion-MNIST:
the classic 784-512-256-32 VAE, EPOCHS epochs each, test IWAE NLL (k importance samples) on the first N
test images binarized once with a fixed seed.

Usage: python benchmarks/priors_fmnist.py [--epochs 10] [--num-samples 1000] [--test-images 2000]
Prints one JSON object.
"""

import argparse
import json
import time

import keras
import numpy as np

import kerasvae as kv


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--test-images", type=int, default=2000)
    args = parser.parse_args()
    train = kv.data.load("fashion_mnist", "train", binarize="dynamic", batch_size=128, seed=0)
    x_test, _ = kv.data.load_arrays("fashion_mnist", "test")
    x_test = kv.data.binarize_static(x_test[: args.test_images], seed=1)
    report = {"epochs": args.epochs, "num_samples": args.num_samples, "test_images": len(x_test), "priors": {}}
    for prior in ("normal", "mixture", "vamp"):
        keras.utils.set_random_seed(0)
        model = kv.presets.mlp_vae(prior=prior, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        start = time.perf_counter()
        model.fit(train, epochs=args.epochs, verbose=0)
        seconds = time.perf_counter() - start
        nll = -model.log_likelihood(x_test, num_samples=args.num_samples, seed=0)
        report["priors"][prior] = {
            "test_nll": round(float(np.mean(nll)), 2),
            "test_elbo": round(float(np.mean(model.elbo(x_test, seed=0))), 2),
            "finite": bool(np.all(np.isfinite(nll))),
            "train_seconds": round(seconds, 1),
        }
        print(prior, report["priors"][prior], flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
