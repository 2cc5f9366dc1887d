"""Shared argument parsing for the examples: every example trains on digits by default (always offline, a
minute on a laptop CPU) or on Fashion-MNIST with --dataset fashion_mnist, and writes into --out."""

import argparse
from pathlib import Path

import kerasvae as kv


def parse(description, epochs):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", default="digits", choices=["digits", "fashion_mnist", "mnist"])
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--out", default="examples_out")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return args


def images(args):
    """(x_train, y_train, x_test, y_test, input_shape)."""
    x_train, y_train = kv.data.load_arrays(args.dataset, "train")
    x_test, y_test = kv.data.load_arrays(args.dataset, "test")
    return x_train, y_train, x_test, y_test, x_train.shape[1:]


def gallery_vae(train="train[:3000]", test="test[:500]", fashion_epochs=15):
    """(dataset, x_train, y_train, x_test, y_test, model) for the application examples: Fashion-MNIST when
    its files are present, else digits, and a small Gaussian-likelihood VAE trained on it (fashion_epochs
    epochs on Fashion-MNIST, 50 on digits)."""
    import keras

    fashion = kv.data.fashion_mnist_available()
    dataset = "fashion_mnist" if fashion else "digits"
    x_train, y_train = kv.data.load_arrays(dataset, train)
    x_test, y_test = kv.data.load_arrays(dataset, test)
    keras.utils.set_random_seed(0)
    model = kv.presets.mlp_vae(input_shape=x_train.shape[1:], latent_dim=16 if fashion else 8, hidden=(256, 64),
                               likelihood=kv.likelihoods.Gaussian(0.1), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(x_train, epochs=fashion_epochs if fashion else 50, batch_size=64, verbose=0)
    return dataset, x_train, y_train, x_test, y_test, model
