"""Denoising and features with the presets' defaults, as a user starts: Fashion-MNIST grey levels (no
binarization), `compile()` and `fit` with nothing changed but the epochs (10).

For each preset: the linear-probe test accuracy of its posterior means (all 60,000 training labels, the
whole test set) against PCA of the same dimension fitted on the same images; and the PSNR gain of
`kv.apps.evaluate_denoising` at noise sigma 0.3 on the first `--test-images` test images (MAP decoding
from the encoder's guess, 100 steps; also the amortized reconstruction of the clipped noisy image and PCA
projection) against the noisy input. The denoising autoencoder trains on the first `--dae-images`
training images, as the issue measured it.

`--batch-size`, `--learning-rate` and `--weight-averaging` change one default each (the optimizer then is
the preset's recipe with that change), for measuring what a default costs.

Usage: python benchmarks/application_defaults.py [--presets mlp_vae vae denoising_ae] [--epochs 10]
       [--test-images 1000] [--dae-images 20000] [--likelihood auto] [--seed 0]
       [--batch-size 32] [--learning-rate 1e-3] [--weight-averaging 0.999]
Prints one JSON object.
"""

import argparse
import json
import time

import keras

import kerasvae as kv


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=["mlp_vae", "vae", "denoising_ae"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--dae-images", type=int, default=20000)
    parser.add_argument("--likelihood", default=None, help="default: each preset's own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None, help="default: fit's (Keras's 32)")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the preset recipe's")
    parser.add_argument("--weight-averaging", type=float, default=None, help="EMA momentum; default: the recipe's")
    args = parser.parse_args()
    x_train, y_train = kv.data.load_arrays("fashion_mnist", "train")
    x_test, y_test = kv.data.load_arrays("fashion_mnist", "test")
    report = {"settings": vars(args), "presets": {}}
    for name in args.presets:
        keras.utils.set_random_seed(args.seed)
        options = {} if args.likelihood is None else {"likelihood": args.likelihood}
        model = kv.presets.get(name)(seed=args.seed, **options)
        model.recipe = model.recipe.replace(learning_rate=args.learning_rate, weight_averaging=args.weight_averaging)
        model.compile()
        x_fit = x_train[: args.dae_images] if name == "denoising_ae" else x_train
        start = time.perf_counter()
        model.fit(x_fit, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
        row = {"likelihood": type(model.likelihood).__name__, "train_seconds": round(time.perf_counter() - start, 1)}
        features = model.latent_features(x_train)
        row["active_units"] = kv.evaluation.active_units(features)
        pca = kv.apps.PCABaseline(model.latent_dim).fit(x_train)
        row["probe"] = kv.apps.linear_probe(features, y_train, model.latent_features(x_test), y_test)
        row["probe_pca"] = kv.apps.linear_probe(pca.encode(x_train), y_train, pca.encode(x_test), y_test)
        denoising, _ = kv.apps.evaluate_denoising(model, x_test[: args.test_images], noise_stddev=0.3, x_fit=x_train[:5000])
        row.update({key: round(value, 3) for key, value in denoising.items() if key.startswith(("psnr", "gain"))})
        row["gain_amortized_db"] = round(denoising["psnr_amortized"] - denoising["psnr_noisy"], 3)
        report["presets"][name] = {key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()}
        print(name, json.dumps(report["presets"][name]), flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
