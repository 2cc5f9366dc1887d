"""Imputation: the bottom half of each test image is missing; the VAE fills it from the posterior mode given
the observed half (and by pseudo-Gibbs), against filling in the training mean.

    python examples/app_imputation.py [--out docs/gallery]
"""

import argparse
from pathlib import Path

import keras
import numpy as np

import kerasvae as kv
from kerasvae.apps import figures


def main(out):
    fashion = kv.data.fashion_mnist_available()
    dataset = "fashion_mnist" if fashion else "digits"
    x_train, _ = kv.data.load_arrays(dataset, "train[:3000]")
    x_test, _ = kv.data.load_arrays(dataset, "test[:500]")

    keras.utils.set_random_seed(0)
    model = kv.presets.mlp_vae(input_shape=x_train.shape[1:], latent_dim=16 if fashion else 8, hidden=(256, 64),
                               likelihood=kv.likelihoods.Gaussian(0.1), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(x_train, epochs=15 if fashion else 50, batch_size=64, verbose=0)

    for name, missing in (("random 50%", kv.apps.random_mask(x_test.shape, 0.5)), ("bottom half", kv.apps.block_mask(x_test.shape, 0.5))):
        report, images = kv.apps.evaluate_imputation(model, x_test, missing, x_train)
        print(f"{name}: RMSE on missing pixels: map {report['rmse_map']:.4f}, pseudo-Gibbs {report['rmse_pseudo_gibbs']:.4f}, "
              f"mean imputation {report['rmse_mean']:.4f}")
    shown = {"original": x_test, "observed": np.where(missing, 0.5, x_test), "VAE (MAP)": images["map"],
             "pseudo-Gibbs": images["pseudo_gibbs"], "mean": images["mean"]}
    title = f"bottom half missing; RMSE: MAP {report['rmse_map']:.3f}, pseudo-Gibbs {report['rmse_pseudo_gibbs']:.3f}, mean {report['rmse_mean']:.3f}"
    print("figure:", figures.image_rows(shown, Path(out) / "imputation.png", title=title))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/gallery")
    main(parser.parse_args().out)
