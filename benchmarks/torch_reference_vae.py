"""Classic PyTorch VAE on dynamically binarized Fashion-MNIST, the reference kerasvae is compared against.

Run (from the repo root, in its own venv with torch 2.13.0 CPU):

    /work/torchvenv/bin/python benchmarks/torch_reference_vae.py --epochs 30

Prints one JSON object on stdout with the test ELBO (nats per example), its
reconstruction / KL parts, the per-epoch training loss and training throughput.
"""

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
IDX_IMAGES_MAGIC = 2051
TEST_SEED = 0  # must match the TF side so both evaluate the same binary test images
EVAL_SEED = 1234
EVAL_REPETITIONS = 10


def find_data_dir(explicit):
    base = Path(explicit or os.environ.get("KERASVAE_DATA") or DEFAULT_DATA_DIR)
    for candidate in (base, base / "fashion_mnist", base / "fashion-mnist"):
        if (candidate / "train-images-idx3-ubyte.gz").exists():
            return candidate
    raise FileNotFoundError(f"no Fashion-MNIST IDX files in {base} (or its fashion_mnist/fashion-mnist subfolder)")


def load_images(path):
    """Read an IDX3 gz file into float32 [n, 784] in [0, 1]."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, count, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    if magic != IDX_IMAGES_MAGIC:
        raise ValueError(f"{path}: bad IDX magic {magic}, expected {IDX_IMAGES_MAGIC}")
    pixels = np.frombuffer(raw[16:], dtype=np.uint8, count=count * rows * cols)
    return pixels.reshape(count, rows * cols).astype(np.float32) / 255.0


class VAE(nn.Module):
    def __init__(self, latent_dim):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU())
        self.loc_head = nn.Linear(256, latent_dim)
        self.raw_scale_head = nn.Linear(256, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 784)
        )

    def forward(self, x):
        """Per-example reconstruction NLL and KL (nats), from one reparameterized sample."""
        hidden = self.encoder(x)
        loc = self.loc_head(hidden)
        # The small floor keeps the posterior scale away from zero (and log(scale) finite).
        scale = F.softplus(self.raw_scale_head(hidden)) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        logits = self.decoder(z)
        reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1.0 - 2.0 * scale.log()).sum(-1)
        return reconstruction, kl


def train_epoch(model, optimizer, x_train, batch_size):
    # Dynamic binarization: a fresh binary sample of every training image each epoch.
    return binary_epoch(model, optimizer, torch.bernoulli(x_train), batch_size)


def binary_epoch(model, optimizer, x_binary, batch_size):
    """One epoch over binary images in a fresh random order; the mean training loss."""
    order = torch.randperm(len(x_binary))
    total_loss = 0.0
    for start in range(0, len(order), batch_size):
        batch = x_binary[order[start:start + batch_size]]
        reconstruction, kl = model(batch)
        loss = (reconstruction + kl).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(batch)
    return total_loss / len(order)


@torch.no_grad()
def evaluate(model, x_test_binary):
    torch.manual_seed(EVAL_SEED)
    reconstructions, kls = [], []
    for _ in range(EVAL_REPETITIONS):
        reconstruction, kl = model(x_test_binary)
        reconstructions.append(reconstruction.mean().item())
        kls.append(kl.mean().item())
    reconstruction, kl = float(np.mean(reconstructions)), float(np.mean(kls))
    return {"test_elbo": -(reconstruction + kl), "test_reconstruction": reconstruction, "test_kl": kl}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help=f"default: $KERASVAE_DATA or {DEFAULT_DATA_DIR}")
    args = parser.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)

    data_dir = find_data_dir(args.data_dir)
    x_train = torch.from_numpy(load_images(data_dir / "train-images-idx3-ubyte.gz")[: args.limit])
    x_test = load_images(data_dir / "t10k-images-idx3-ubyte.gz")
    x_test_binary = (np.random.default_rng(TEST_SEED).random(x_test.shape) < x_test).astype(np.float32)

    model = VAE(args.latent_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    train_loss, epoch_seconds = [], []
    model.train()
    for _ in range(args.epochs):
        started = time.perf_counter()
        train_loss.append(train_epoch(model, optimizer, x_train, args.batch_size))
        epoch_seconds.append(time.perf_counter() - started)

    # The first epoch carries warm-up costs (allocator, thread pool), so throughput skips it when it can.
    timed_seconds = epoch_seconds[1:] or epoch_seconds
    model.eval()
    result = {
        "framework": "pytorch",
        "torch": torch.__version__,
        "epochs": args.epochs,
        "latent_dim": args.latent_dim,
        "batch_size": args.batch_size,
        "train_examples": len(x_train),
        **evaluate(model, torch.from_numpy(x_test_binary)),
        "train_loss": train_loss,
        "samples_per_sec": len(x_train) * len(timed_seconds) / sum(timed_seconds),
        "seconds": sum(epoch_seconds),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
