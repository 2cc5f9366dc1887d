"""Does greedy layer-wise pretraining help? Hinton & Salakhutdinov's deep autoencoder (784-1000-500-250-30,
Bernoulli likelihood) on Fashion-MNIST, and classifiers initialised from its encoder at small label budgets.

Arms, all from the same seed:
  * deep AE, random init, `fit` for FINE_TUNE + EXTRA epochs (EXTRA matches the pretraining's wall time)
  * deep AE, pretrained (PRETRAIN epochs per level), then `fit` for FINE_TUNE epochs
  * classifier (encoder copy + softmax) fine-tuned on 100 and 1000 labels, random vs pretrained init

Prints one JSON object. Usage: python benchmarks/pretraining.py [--pretrain-epochs 2] [--fine-tune-epochs 5]
"""

import argparse
import json
import math
import time

import keras
import numpy as np

import kerasvae as kv
from kerasvae import pretraining


def deep_ae():
    keras.utils.set_random_seed(0)
    return kv.presets.stacked_ae(input_shape=(28, 28, 1), seed=0)


def fine_tune(model, x, epochs):
    model.compile(keras.optimizers.Adam(1e-3))
    start = time.perf_counter()
    model.fit(x, epochs=epochs, batch_size=128, verbose=0)
    return time.perf_counter() - start


def classifier_accuracy(model, x, y, x_test, y_test, labels, seed=0):
    keras.utils.set_random_seed(seed)
    chosen = np.random.default_rng(seed).choice(len(x), labels, replace=False)
    repeated = np.tile(chosen, max(1, 20_000 // labels))  # the same number of steps for every budget
    classifier = pretraining.encoder_classifier(model, num_classes=10)
    classifier.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    classifier.fit(x[repeated], y[repeated], epochs=1, batch_size=64, verbose=0)
    return float(classifier.evaluate(x_test, y_test, verbose=0)[1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    args = parser.parse_args()
    x, y = kv.data.load_arrays("fashion_mnist", "train")
    x_test, y_test = kv.data.load_arrays("fashion_mnist", "test")

    pretrained = deep_ae()
    start = time.perf_counter()
    level_losses = pretraining.pretrain_layerwise(pretrained, x, epochs=args.pretrain_epochs, batch_size=128)
    pretrain_seconds = time.perf_counter() - start
    random_init = deep_ae()
    report = {
        "model": "784-1000-500-250-30 autoencoder, Bernoulli likelihood, Fashion-MNIST (grey levels as targets)",
        "pretrain_epochs_per_level": args.pretrain_epochs,
        "pretrain_seconds": round(pretrain_seconds, 1),
        "level_losses": [round(v, 4) for v in level_losses],
        "test_nll_before_fine_tuning": {
            "random": float(-np.mean(random_init.elbo(x_test))), "pretrained": float(-np.mean(pretrained.elbo(x_test)))
        },
        "classifier_accuracy": {},
    }
    for labels in (100, 1000):
        report["classifier_accuracy"][labels] = {
            "random": classifier_accuracy(random_init, x, y, x_test, y_test, labels),
            "pretrained": classifier_accuracy(pretrained, x, y, x_test, y_test, labels),
        }
    pretrained_seconds = fine_tune(pretrained, x, args.fine_tune_epochs)
    epoch_seconds = pretrained_seconds / args.fine_tune_epochs
    extra = math.ceil(pretrain_seconds / epoch_seconds)
    fine_tune(random_init, x, args.fine_tune_epochs + extra)
    report["fine_tune_epochs"] = args.fine_tune_epochs
    report["random_init_extra_epochs_for_equal_time"] = extra
    report["test_nll_after_fine_tuning"] = {
        "random": float(-np.mean(random_init.elbo(x_test))), "pretrained": float(-np.mean(pretrained.elbo(x_test)))
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
