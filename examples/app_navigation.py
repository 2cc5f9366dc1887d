"""Latent navigation: linear and spherical interpolation between two test images, and a traversal of the
most informative latent dimensions of a beta-VAE (beta = 4, the disentanglement setting of Higgins et al.).

    python examples/app_navigation.py [--out docs/gallery]
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
    x_train, _ = kv.data.load_arrays(dataset, "train[:5000]")
    x_test, _ = kv.data.load_arrays(dataset, "test[:100]")

    keras.utils.set_random_seed(0)
    model = kv.presets.mlp_vae(input_shape=x_train.shape[1:], latent_dim=10, hidden=(256, 64), beta=4.0, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(x_train, epochs=15 if fashion else 60, batch_size=64, verbose=0)

    steps = 9
    rows = {method: kv.apps.interpolate(model, x_test[0], x_test[1], steps, method) for method in ("linear", "spherical")}
    path = figures.image_table(np.stack(list(rows.values())), Path(out) / "interpolation.png", row_labels=list(rows),
                               column_labels=[f"t={t:.2f}" for t in np.linspace(0, 1, steps)], title="interpolation between two test images")
    print("figure:", path)

    values = np.linspace(-2.5, 2.5, 9)
    kl = np.mean(np.asarray(kv.objectives.kl_per_dimension(model.encode(x_test), model.prior)), axis=0)
    dims = kv.apps.informative_dimensions(model, x_test)[:6]
    print("mean KL per dimension (nats):", [round(float(v), 2) for v in kl], "- traversed, most informative first:", dims)
    images, dims = kv.apps.traverse(model, x_test[0], dims, values)
    path = figures.image_table(images, Path(out) / "traversal.png", row_labels=[f"z{d} ({kl[d]:.1f} nats)" for d in dims],
                               column_labels=[f"{v:+.1f}" for v in values], title="beta-VAE (beta=4): one latent at a time, in prior std")
    print("figure:", path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/gallery")
    main(parser.parse_args().out)
