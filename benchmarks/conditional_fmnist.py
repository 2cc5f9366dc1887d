"""Do conditional samples show their label? A ConditionalVAE trained on dynamically binarized
Fashion-MNIST generates 100 images per class; a logistic-regression probe trained on real training
images classifies them. Prints one JSON object (probe accuracy on real test images and on samples).

    python benchmarks/conditional_fmnist.py --epochs 10
"""

import argparse
import json

import keras
import numpy as np
from sklearn.linear_model import LogisticRegression

import kerasvae as kv
from kerasvae import plots


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    x, y = kv.data.load_arrays("fashion_mnist", "train")
    x_test, y_test = kv.data.load_arrays("fashion_mnist", "test")
    model = kv.presets.conditional_vae(input_shape=x.shape[1:], num_classes=10, latent_dim=16, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(kv.data.pipeline(x, y, binarize="dynamic", batch_size=128), epochs=args.epochs, verbose=2)
    probe = LogisticRegression(max_iter=300).fit(x[:20000].reshape(20000, -1), y[:20000])
    labels = np.repeat(np.arange(10), 100)
    samples = model.sample(len(labels), labels=labels, seed=0)
    per_class = samples.reshape(10, 100, *samples.shape[1:])[:, :8]
    plots.image_grid(per_class.reshape(80, *samples.shape[1:]), "conditional_samples.png", ncols=8, title="one row per class")
    print(json.dumps({
        "epochs": args.epochs,
        "train_elbo": -history.history["loss"][-1],
        "probe_accuracy_real_test": float(probe.score(x_test.reshape(len(x_test), -1), y_test)),
        "probe_accuracy_conditional_samples": float(probe.score(samples.reshape(len(samples), -1), labels)),
    }))


if __name__ == "__main__":
    main()
