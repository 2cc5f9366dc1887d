"""Features: a linear probe on VAE posterior means, and the M1 semi-supervised recipe (a VAE trained
without labels, a linear classifier on 100 or 1000 labelled examples) against PCA of the same dimension
and raw pixels.

    python examples/app_features.py [--out docs/gallery]
"""

import argparse
from pathlib import Path

from _common import gallery_vae

import kerasvae as kv
from kerasvae.apps import figures


def main(out):
    dataset, x_train, y_train, x_test, y_test, model = gallery_vae(test="test[:2000]", fashion_epochs=10)
    latent_dim = model.latent_dim

    probe = kv.apps.probe_report(model, x_train, y_train, x_test, y_test)
    print(f"{dataset}, linear probe with all {len(x_train)} labels: latent {probe['latent']:.4f}, "
          f"PCA-{latent_dim} {probe['pca']:.4f}, pixels {probe['pixels']:.4f}")
    rows = kv.apps.semi_supervised(model, x_train, y_train, x_test, y_test, budgets=(100, 1000), repeats=3)
    for row in rows:
        print(f"{row['labels']:>5} labels: latent {row['latent']:.4f} ± {row['latent_std']:.4f}, "
              f"PCA {row['pca']:.4f} ± {row['pca_std']:.4f}, pixels {row['pixels']:.4f} ± {row['pixels_std']:.4f}")
    names = {"latent": f"VAE latents ({latent_dim}-d)", "pca": f"PCA ({latent_dim}-d)", "pixels": "pixels"}
    path = figures.curves(
        [r["labels"] for r in rows], {label: [r[n] for r in rows] for n, label in names.items()}, Path(out) / "features.png",
        "labelled training examples", "test accuracy", f"M1: linear classifier on few labels ({'Fashion-MNIST' if dataset == 'fashion_mnist' else 'digits'})", xscale="log",
        errors={label: [r[f"{n}_std"] for r in rows] for n, label in names.items()},
    )
    print("figure:", path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/gallery")
    main(parser.parse_args().out)
