"""Anomaly detection, one-class: a VAE trained on one Fashion-MNIST class (sandals) flags the other nine.

The threshold is calibrated on held-out sandals for a 5% false-positive rate and stored on the model, so
`model.save` and `kerasvae export` carry it (the SavedModel's `score` signature then returns is_anomaly).
The baseline is PCA reconstruction error with as many components as the VAE has latent dimensions.
Falls back to digits (normal = the digit 0) without Fashion-MNIST.

    python examples/app_anomaly.py [--out docs/gallery]
"""

import argparse
from pathlib import Path

import keras

import kerasvae as kv
from kerasvae.apps import figures


def main(out):
    fashion = kv.data.fashion_mnist_available()
    dataset, normal_class = ("fashion_mnist", 5) if fashion else ("digits", 0)
    x_train, y_train = kv.data.load_arrays(dataset, "train")
    x_test, y_test = kv.data.load_arrays(dataset, "test")
    normal = x_train[y_train == normal_class]
    fit_on, calibrate_on = normal[: len(normal) // 2], normal[len(normal) // 2 :]

    keras.utils.set_random_seed(0)
    model = kv.presets.mlp_vae(input_shape=x_train.shape[1:], latent_dim=8, hidden=(256, 64), likelihood=kv.likelihoods.Gaussian(0.1), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(fit_on, epochs=15 if fashion else 100, batch_size=64, verbose=0)

    detector = kv.apps.AnomalyDetector(model, method="elbo").fit(calibrate_on, false_positive_rate=0.05)
    is_anomaly = y_test != normal_class
    report = detector.evaluate(x_test, is_anomaly)
    pca_scores = kv.apps.PCABaseline(model.latent_dim).fit(fit_on).reconstruction_error(x_test)
    pca = kv.apps.detection_metrics(pca_scores, is_anomaly)
    print(f"{dataset}, normal class {normal_class}: AUROC {report['auroc']:.4f} (PCA-8 {pca['auroc']:.4f}), "
          f"AUPRC {report['auprc']:.4f} (PCA-8 {pca['auprc']:.4f})")
    print(f"threshold {report['threshold']:.1f} nats: precision {report['precision']:.3f}, recall {report['recall']:.3f}, "
          f"false-positive rate {report['false_positive_rate']:.3f} (target 0.05)")
    path = figures.anomaly_figure(detector.score(x_test), is_anomaly, detector.threshold, Path(out) / "anomaly.png",
                                  baselines={"PCA-8 reconstruction error": pca_scores})
    print(f"figure: {path}; model.save(...) keeps the threshold: {model.anomaly_threshold:.1f} ({model.anomaly_method})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/gallery")
    main(parser.parse_args().out)
