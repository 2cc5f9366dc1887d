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
