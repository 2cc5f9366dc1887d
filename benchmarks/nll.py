"""Test NLL on dynamically binarized Fashion-MNIST against the published anchors, measured twice: by the
Python model (`kerasvae evaluate`'s estimator) and from its exported SavedModel's `encode`/`decode`
signatures alone (kerasvae.evaluation.saved_model_nll, numpy), so a served model is known to carry the
same likelihood.

Usage:
    kerasvae train --model vae --dataset fashion_mnist --binarize dynamic --epochs 30 --out runs/nll-vae
    python benchmarks/nll.py runs/nll-vae [--num-samples 1000] [--limit N]

Both estimates use the run's test images (`--split train`: its training images, to measure the
generalization gap), binarized once with the run's seed, and k importance samples (k = 1000 by default;
the anchors used 5000, which lowers an estimate by 0.1-0.15 nats for the `vae` preset). Prints one JSON
object. About 5 minutes per estimate for the `vae` preset on 10,000 images at k = 1000.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from kerasvae import evaluation, training
from kerasvae.export import savedmodel

# Exemplar VAE paper (Norouzi et al. 2020), Table: dynamically binarized Fashion-MNIST, test NLL in nats with
# 5000 importance samples.
ANCHORS = {"VAE, Gaussian prior, MLP": 228.70, "VAE, VampPrior, MLP": 227.35, "Conv HVAE, VampPrior": 225.38}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder written by `kerasvae train`")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None, help="the first N images of the split only")
    parser.add_argument("--skip-served", action="store_true", help="only the Python model's estimate")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="train: the training images, binarized once the same way, to measure the generalization gap")
    args = parser.parse_args()
    model, config = training.load_run(args.run)
    x, _ = training.test_images(config, args.split, args.limit)
    history = json.loads((Path(args.run) / "history.json").read_text()) if (Path(args.run) / "history.json").is_file() else {}
    start = time.perf_counter()
    report = evaluation.evaluate(model, x, num_samples=args.num_samples)
    result = {
        "run": str(args.run),
        "model": config["model"],
        "epochs": config["epochs"],
        "batch_size": config["batch_size"],
        "split": args.split,
        "images": len(x),
        "num_samples": args.num_samples,
        "nll": round(report["nll"], 2),
        "elbo": round(report["elbo"], 2),
        "active_units": report["active_units"],
        "latent_dim": report["latent_dim"],
        "train_seconds": round(sum(history.get("epoch_seconds", [])), 1) or None,
        "evaluate_seconds": round(time.perf_counter() - start, 1),
    }
    if not args.skip_served:
        with tempfile.TemporaryDirectory() as folder:
            version = savedmodel.export_savedmodel(model, Path(folder) / "nll")
            start = time.perf_counter()
            served = evaluation.saved_model_nll(version, x, num_samples=args.num_samples)
        result["served_nll"] = round(float(np.mean(served)), 2)
        result["served_minus_python"] = round(float(np.mean(served)) - report["nll"], 3)
        result["served_seconds"] = round(time.perf_counter() - start, 1)
    if args.split == "test":  # the anchors are test-set numbers: a training-set NLL is not comparable
        result["anchors"] = {name: {"nats": value, "ours_minus_anchor": round(report["nll"] - value, 2)} for name, value in ANCHORS.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
