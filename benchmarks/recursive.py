"""Root codes of kv.RecursiveAutoencoder against the mean of the same model's leaf codes (issue 22): a linear
probe on images read as sequences of rows, and on the synthetic series a linear probe of the waveform and the
anomaly AUROC of spiked series.

Usage:
    python benchmarks/recursive.py --data digits --trees balanced --epochs 20      # 8 rows of 8, 1,408 / 360 images
    python benchmarks/recursive.py --data fashion_mnist --trees greedy --epochs 10  # 28 rows of 28, 3,008 / 2,000
    python benchmarks/recursive.py --data series --trees balanced --window 4        # 64 steps, 4 to a leaf

Images: the model trains on the training rows (along the chosen trees) and a logistic probe (kv.apps.linear_probe)
reads the roots, then the mean-pooled leaves, of the training and test images. Series
(kv.data.synthetic_series, `--kinds` of sine / sawtooth / square, `--length` 64 steps): the model trains on
`--train-size` 2,048 clean series read as length / `window` leaves of `window` steps; the probe predicts the
waveform of 1,024 clean test series; the anomaly score of those 1,024 series, half of them with one spike
(kv.data.inject_spikes), is the mean distance to the 5 nearest training codes, beside the model's own loss
(`score`). Prints one JSON object. 10 s to 3 minutes of training on 2 cores (series of 64 one-step leaves
take the longest).
"""

import argparse
import json
import time

import keras
import numpy as np

import kerasvae as kv
from kerasvae import data
from kerasvae.apps.anomaly_scores import NEIGHBORS, neighbor_distance


def sequences(name, window, kinds=data.SERIES_KINDS, length=64, train_size=2048):
    """(train, train labels, test, test labels, (spiked test, anomaly flags) or None) as [n, steps, features] arrays."""
    if name == "series":
        x_train, y_train = data.synthetic_series(train_size, length=length, kinds=kinds, seed=0)
        x_test, y_test = data.synthetic_series(1024, length=length, kinds=kinds, seed=1)
        spiked, anomalous = data.inject_spikes(x_test, seed=2)
        leaves = lambda x: x.reshape(len(x), -1, window)
        return leaves(x_train), y_train, leaves(x_test), y_test, (leaves(spiked), anomalous)
    x_train, y_train = data.load_arrays(name, "train")
    x_test, y_test = data.load_arrays(name, "test")
    if name == "fashion_mnist":
        x_train, y_train, x_test, y_test = x_train[:3008], y_train[:3008], x_test[:2000], y_test[:2000]
    else:
        x_train, y_train = x_train[:1408], y_train[:1408]
    return x_train[..., 0], y_train, x_test[..., 0], y_test, None


def tree_depths(merges):
    """Depth of each root [batch] of merge orders [batch, steps - 1] (RecursiveAutoencoder's format): the
    longest path to a leaf, steps - 1 for a chain that adds one leaf at a time, about log2(steps) balanced."""
    depths = []
    for row in np.asarray(merges):
        nodes = [0] * (len(row) + 1)
        for k in row[row >= 0]:
            nodes[k:k + 2] = [max(nodes[k], nodes[k + 1]) + 1]
        depths.append(nodes[0])
    return np.array(depths)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("digits", "fashion_mnist", "series"), default="digits")
    parser.add_argument("--trees", choices=("balanced", "greedy"), default="balanced")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--window", type=int, default=1, help="series steps per leaf")
    parser.add_argument("--kinds", nargs="+", default=list(data.SERIES_KINDS), help="series waveforms")
    parser.add_argument("--length", type=int, default=64, help="series steps")
    parser.add_argument("--train-size", type=int, default=2048, help="training series")
    parser.add_argument("--code-dim", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unweighted", action="store_true", help="weight_by_leaves=False: both children's errors weigh 1/2")
    args = parser.parse_args()
    from sklearn.metrics import roc_auc_score

    x_train, y_train, x_test, y_test, spikes = sequences(args.data, args.window, tuple(args.kinds), args.length, args.train_size)
    steps = x_train.shape[1]

    def inputs(x):
        if args.trees == "greedy":
            return {"x": x}
        return {"x": x, "merges": kv.RecursiveAutoencoder.balanced_merges(np.full(len(x), steps), steps)}

    keras.utils.set_random_seed(args.seed)
    model = kv.RecursiveAutoencoder(features=x_train.shape[2], code_dim=args.code_dim, weight_by_leaves=not args.unweighted, seed=args.seed)
    batches = len(x_train) // 64
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False, steps_per_execution=batches)
    start = time.perf_counter()
    history = model.fit(inputs(x_train[: 64 * batches]), epochs=args.epochs, batch_size=64, verbose=0).history
    series = {"window": args.window, "kinds": args.kinds, "length": args.length} if spikes else {}
    result = {"data": args.data, "trees": args.trees, "epochs": args.epochs, **series,
              "train": len(x_train), "test": len(x_test), "steps": steps, "train_seconds": round(time.perf_counter() - start, 1),
              "final_loss": round(float(history["loss"][-1]), 4),
              "mean_tree_depth": round(float(tree_depths(model.tree(inputs(x_test))["merges"]).mean()), 2)}
    codes = {"root": lambda x: model(inputs(x)).numpy(),
             "mean_leaves": lambda x: model.mean_leaves(x).numpy()}
    for name, encode in codes.items():
        train_codes = encode(x_train)
        result[f"probe_{name}"] = round(kv.apps.linear_probe(train_codes, y_train, encode(x_test), y_test), 4)
        if spikes:
            distances = neighbor_distance(encode(spikes[0]), train_codes, NEIGHBORS).numpy()
            result[f"spike_auroc_{name}"] = round(float(roc_auc_score(spikes[1], distances)), 4)
    if spikes:
        result["spike_auroc_model_score"] = round(float(roc_auc_score(spikes[1], model.score(inputs(spikes[0])).numpy())), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
