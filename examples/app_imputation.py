"""Imputation: the bottom half of each test image is missing; the VAE fills it from the posterior mode given
the observed half (and by pseudo-Gibbs), against filling in the training mean.

    python examples/app_imputation.py [--out docs/gallery]
"""

import argparse
from pathlib import Path

import numpy as np
from _common import gallery_vae

import kerasvae as kv
from kerasvae.apps import figures


def main(out):
    _, x_train, _, x_test, _, model = gallery_vae()

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
