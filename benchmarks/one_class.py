"""One-class anomaly detection on Fashion-MNIST (grey levels, no binarization), the protocol of the deep
one-class literature (Ruff et al. 2018, Golan & El-Yaniv 2018): train on one class's training images, score
the whole test set, AUROC of that class against the nine others; every class in turn.

Per class, in the same run: a preset trained `--epochs` epochs on the class's training images minus the
last HELD_OUT (what `AnomalyDetector.fit` holds out for its reference statistics and its choice); the
AUROC of every score `kv.apps.AnomalyDetector` offers, each fitted on the same normal images (and the
ensemble with equal weights beside its weighted sum); the score
"auto" chooses with normal data only and its AUROC; and two classical baselines: PCA reconstruction error
(as many components as the model has latent dimensions) and the mean distance to the 5 nearest normal
training images in pixel space. Prints one JSON object (and a progress line per class on stderr).

Usage: python benchmarks/one_class.py [--classes 0 1 ...] [--epochs 30] [--latent-dim 16]
       [--model mlp_vae] [--likelihood auto] [--seed 0]
"""

import argparse
import json
import sys
import time

import keras
import numpy as np

import kerasvae as kv
from kerasvae.apps import anomaly_scores
from kerasvae.apps.anomaly import held_out_size


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--model", default="mlp_vae")
    parser.add_argument("--likelihood", default="auto", help="the preset's default; BENCHMARKS.md's Gaussian column: gaussian_per_element")
    parser.add_argument("--seed", type=int, default=0, help="seeds the model's weights and its training")
    args = parser.parse_args()
    from sklearn.neighbors import NearestNeighbors

    x_train, y_train = kv.data.load_arrays("fashion_mnist", "train")
    x_test, y_test = kv.data.load_arrays("fashion_mnist", "test")
    flat = lambda x: x.reshape(len(x), -1)
    rows = {}
    for normal in args.classes:
        start = time.perf_counter()
        x_normal = x_train[y_train == normal]
        is_anomaly = y_test != normal
        keras.utils.set_random_seed(args.seed)
        model = kv.presets.get(args.model)(latent_dim=args.latent_dim, likelihood=args.likelihood, seed=args.seed)
        model.compile()
        held = held_out_size(len(x_normal))
        model.fit(x_normal[:-held], epochs=args.epochs, batch_size=128, verbose=0)
        train_seconds = time.perf_counter() - start
        row = {"train_seconds": round(train_seconds, 1)}
        for method in anomaly_scores.available(model):
            if method != "nll":
                detector = kv.apps.AnomalyDetector(model, method=method).fit(x_normal)
                row[method] = kv.apps.detection_metrics(detector.score(x_test), is_anomaly)["auroc"]
            if method == "ensemble":  # the same parts, standardized on the same data, with equal weights
                equal = {k: v for k, v in detector.reference.items() if not k.endswith("_weight")}
                scores = anomaly_scores.score_arrays(model, x_test, "ensemble", detector.num_samples, equal)
                row["ensemble_equal_weights"] = kv.apps.detection_metrics(scores, is_anomaly)["auroc"]
                row["ensemble_weights"] = {k: v for k, v in detector.reference.items() if k.endswith("_weight")}
        detector = kv.apps.AnomalyDetector(model).fit(x_normal)
        row["auto"] = kv.apps.detection_metrics(detector.score(x_test), is_anomaly)["auroc"]
        row["auto_choice"] = detector.method
        row["pca"] = kv.apps.detection_metrics(kv.apps.PCABaseline(args.latent_dim).fit(x_normal).reconstruction_error(x_test), is_anomaly)["auroc"]
        neighbors = NearestNeighbors(n_neighbors=5).fit(flat(x_normal))
        row["pixel_neighbors"] = kv.apps.detection_metrics(neighbors.kneighbors(flat(x_test))[0].mean(1), is_anomaly)["auroc"]
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows[normal] = row
        print(normal, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), file=sys.stderr, flush=True)
    scores = [k for k, v in rows[args.classes[0]].items() if isinstance(v, float) and not k.endswith("seconds")]
    mean = {k: round(float(np.mean([rows[c][k] for c in args.classes])), 4) for k in scores}
    beats_pca = {k: int(sum(rows[c][k] > rows[c]["pca"] for c in args.classes)) for k in scores if k != "pca"}
    print(json.dumps({"settings": vars(args), "mean_auroc": mean, "classes_above_pca": beats_pca,
                      "per_class": {c: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for c, r in rows.items()}}, indent=1))


if __name__ == "__main__":
    main()
