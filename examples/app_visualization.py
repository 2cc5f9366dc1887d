"""Latent visualization: posterior means of test images mapped to 2-D by PCA and by t-SNE, coloured by
label, and the decoded manifold of a VAE with a 2-D latent space.

    python examples/app_visualization.py [--out docs/gallery]
"""

import argparse
from pathlib import Path

import keras

import kerasvae as kv
from kerasvae.apps import figures


def train(x, latent_dim, epochs):
    keras.utils.set_random_seed(0)
    model = kv.presets.mlp_vae(input_shape=x.shape[1:], latent_dim=latent_dim, hidden=(256, 64), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(x, epochs=epochs, batch_size=64, verbose=0)
    return model


def main(out):
    fashion = kv.data.fashion_mnist_available()
    dataset = "fashion_mnist" if fashion else "digits"
    x_train, _ = kv.data.load_arrays(dataset, "train[:10000]")
    x_test, y_test = kv.data.load_arrays(dataset, "test[:1000]")
    epochs = 10 if fashion else 60

    model = train(x_train, 16, epochs)
    for method, name in (("pca", "PCA"), ("tsne", "t-SNE")):
        coordinates, axis = kv.apps.embed(model, x_test, method, dims=2)
        path = figures.latent_scatter(coordinates, y_test, Path(out) / f"latent_{method}.png", axis,
                                      title=f"posterior means of {len(x_test)} test images ({name} of 16-d)")
        print("figure:", path)

    two_d = train(x_train, 2, epochs)
    images, (z1, z2) = kv.apps.manifold(two_d, n=12)
    print("figure:", figures.manifold_figure(images, z1, z2, Path(out) / "manifold.png", title="decoded 2-D latent space"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/gallery")
    main(parser.parse_args().out)
