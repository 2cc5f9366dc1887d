"""Latent features for downstream models: a linear probe, and the M1 semi-supervised recipe of Kingma et
al. (2014): a VAE trained without labels on all the data, a classifier on its features of the few
labelled examples."""

import numpy as np

from kerasvae import progress
from kerasvae.apps.baselines import PCABaseline


def features(model, x, labels=None):
    """Features [n, latent_dim] of x: the model's `latent_features`, the posterior means (a VQ-VAE's
    quantized latents)."""
    return model.latent_features(x, labels=labels)


def linear_probe(train_features, y_train, test_features, y_test, max_iter=2000):
    """Test accuracy of a multinomial logistic regression on standardized features: how linearly
    separable the classes are in the representation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_train)) < 2:
        raise ValueError("A linear probe needs labelled examples of at least two classes.")
    train_features, test_features = (np.asarray(f, np.float64).reshape(len(f), -1) for f in (train_features, test_features))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(train_features, y_train)
    return float(probe.score(test_features, y_test))


def labelled_subset(y, n, seed=0):
    """Indices of n examples with classes as balanced as y allows (the usual protocol for label budgets)."""
    y = np.asarray(y)
    classes = np.unique(y)
    if not len(classes) <= n <= len(y):
        raise ValueError(f"A label budget must lie in [{len(classes)} (one per class), {len(y)}], got {n}.")
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    chosen, round_ = [], 0
    while len(chosen) < n:  # round-robin over the classes, one example each, until the budget is spent
        for indices in per_class:
            if round_ < len(indices) and len(chosen) < n:
                chosen.append(indices[round_])
        round_ += 1
    return np.sort(np.asarray(chosen))


def representations(model, x_train, x_test, labels_train=None, labels_test=None):
    """{name: (train, test)} features for the comparisons: "latent" (the model's features), "pca" (PCA of
    x_train with as many components as the model has latent dimensions) and "pixels" (the raw inputs)."""
    pca = PCABaseline(model.latent_dim).fit(x_train)
    flat = lambda x: np.asarray(x, np.float32).reshape(len(x), -1)
    return {
        "latent": (features(model, x_train, labels_train), features(model, x_test, labels_test)),
        "pca": (pca.encode(x_train), pca.encode(x_test)),
        "pixels": (flat(x_train), flat(x_test)),
    }


def probe_report(model, x_train, y_train, x_test, y_test):
    """Linear-probe test accuracy of the latent features against PCA of the same dimension and raw pixels,
    all labels used: {"latent", "pca", "pixels", "dim"}."""
    report = {name: linear_probe(train, y_train, test, y_test) for name, (train, test) in representations(model, x_train, x_test).items()}
    return {**report, "dim": int(model.latent_dim)}


def semi_supervised(model, x_train, y_train, x_test, y_test, budgets=(100, 1000), repeats=3, seed=0):
    """Accuracy against label budget, M1-style: the model and PCA learn from all of x_train without labels;
    a linear classifier then sees only `budget` labelled examples (class-balanced, `repeats` draws).

    Returns a list of rows {"labels", "latent", "pca", "pixels" (mean test accuracy), and "<name>_std"}.
    """
    budgets = [int(b) for b in budgets]
    if int(repeats) < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    features_by_name = representations(model, x_train, x_test)
    rows = []
    for budget in progress.iterate(budgets, "label budgets"):
        row = {"labels": budget}
        subsets = [labelled_subset(y_train, budget, seed + r) for r in range(int(repeats))]
        for name, (train, test) in features_by_name.items():
            accuracies = [linear_probe(train[s], np.asarray(y_train)[s], test, y_test) for s in subsets]
            row[name], row[f"{name}_std"] = float(np.mean(accuracies)), float(np.std(accuracies))
        rows.append(row)
    return rows
