"""Test ELBO of the classic VAE on dynamically binarized Fashion-MNIST: kerasvae against the classic
PyTorch implementation (benchmarks/torch_reference_vae.py), same network (784-512-256-32, Bernoulli),
same optimizer (Adam 1e-3, batch 128), same epochs, same binary test images (default_rng(0)).

    python benchmarks/elbo_vs_pytorch.py --epochs 30 --torch-python /path/to/venv-with-torch/bin/python

Prints one JSON object: both test ELBOs (nats, mean of 10 single-sample estimates per image) and their
difference. Without --torch-python only the kerasvae side runs.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kerasvae import runs, training


def kerasvae_side(epochs, latent_dim):
    with tempfile.TemporaryDirectory() as out:
        start = time.time()
        # The classic recipe (Adam 1e-3, no weight average), which the PyTorch side runs, not the preset's.
        model, history = training.train_run(
            out, "mlp_vae", "fashion_mnist", binarize="dynamic", epochs=epochs, latent_dim=latent_dim, batch_size=128,
            learning_rate=1e-3, weight_averaging=0, seed=0, figures=False,
        )
        seconds = time.time() - start
        x_test, _ = training.test_images(runs.read_config(out))  # binarized once with the run's seed, 0
    elbo = np.mean([model.elbo(x_test, seed=repetition).mean() for repetition in range(10)])
    return {"framework": "kerasvae", "test_elbo": float(elbo), "train_loss": history["loss"], "seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--torch-python", default=None, help="a Python with torch==2.13.0 installed")
    args = parser.parse_args()
    result = {"epochs": args.epochs, "kerasvae": kerasvae_side(args.epochs, args.latent_dim)}
    if args.torch_python:
        script = Path(__file__).with_name("torch_reference_vae.py")
        command = [args.torch_python, str(script), "--epochs", str(args.epochs), "--latent-dim", str(args.latent_dim)]
        result["pytorch"] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        result["elbo_difference_nats"] = result["kerasvae"]["test_elbo"] - result["pytorch"]["test_elbo"]
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
