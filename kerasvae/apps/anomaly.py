"""Anomaly detection: score inputs by how badly the model explains them, flag those above a threshold
calibrated on normal data, and measure the detection against labels.

The threshold lives on the model as `model.anomaly_calibration` (kerasvae.calibration.AnomalyCalibration:
threshold, method, num_samples; `model.anomaly_threshold` and friends read it), so `model.save` keeps it and
`kerasvae export` serves it: the SavedModel's `score` signature then returns `is_anomaly` next to
`anomaly_score`.
"""

import inspect

import numpy as np

from kerasvae import objectives, progress
from kerasvae.calibration import AnomalyCalibration
from kerasvae.choices import ANOMALY_METHODS as METHODS

SCORE_CHUNK = 2048  # examples per progress step of `score`


class AnomalyDetector:
    """Flags x as anomalous when the model's anomaly score s(x) exceeds a threshold t calibrated on normal
    data: t is the q-quantile of s over normal examples, so about a fraction 1 - q of normal data is
    flagged (the false-positive rate).

    Scores (`model.anomaly_score`, nats, higher = more anomalous): "elbo" -ELBO(x); "nll" the
    importance-weighted -log p(x); "reconstruction" -log p(x | z = mean of q(z|x)).

    Args:
        model: a kerasvae model.
        method: str or None. One of "elbo", "nll", "reconstruction". None takes the method the model was
            calibrated with, else the model's own default (a VQ-VAE's is "reconstruction").
        num_samples: int or None. Samples for "elbo" and "nll"; None takes the calibrated value, else 1.

    >>> detector = AnomalyDetector(model, method="elbo").fit(x_normal, false_positive_rate=0.05)
    >>> detector.predict(x)                 # bool [n]
    >>> detector.evaluate(x, y != normal)   # auroc, auprc, precision, recall, ...
    >>> model.save("model.keras")           # keeps the threshold; the export serves is_anomaly
    """

    def __init__(self, model, method=None, num_samples=None):
        calibrated = model.anomaly_threshold is not None
        if method is None:
            # The model's own default, read from its signature: families differ (VAE "elbo", VQ-VAE "reconstruction").
            method = model.anomaly_method if calibrated else inspect.signature(model.anomaly_score).parameters["method"].default
        if method not in METHODS:
            raise ValueError(f"Unknown anomaly score method {method!r}; expected one of {', '.join(METHODS)}.")
        if num_samples is None:
            num_samples = model.anomaly_num_samples if calibrated else 1
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        self.model = model
        self.method = method
        self.num_samples = int(num_samples)

    @property
    def threshold(self):
        """The model's threshold when it was calibrated with this detector's score, else None."""
        model = self.model
        if model.anomaly_method == self.method and model.anomaly_num_samples == self.num_samples:
            return model.anomaly_threshold
        return None

    def score(self, x, labels=None):
        """Anomaly scores [n], nats, higher = more anomalous."""
        x, labels = np.asarray(x), None if labels is None else np.asarray(labels)
        scores = []
        with progress.bar(len(x), f"{self.method} scores", unit="images") as bar:
            for start in range(0, max(len(x), 1), SCORE_CHUNK):  # empty x: one call, the model's own empty answer
                chunk = slice(start, start + SCORE_CHUNK)
                scores.append(np.asarray(self.model.anomaly_score(
                    x[chunk], method=self.method, num_samples=self.num_samples, labels=None if labels is None else labels[chunk])))
                bar.update(len(scores[-1]))
        return np.concatenate(scores)

    def fit(self, x_normal, quantile=None, false_positive_rate=None, labels=None):
        """Calibrate the threshold on normal examples and store it on the model. Returns self.

        Args:
            x_normal: array [n, *input_shape]. Examples of normal data only.
            quantile: float in (0, 1). Threshold = this quantile of the normal scores.
            false_positive_rate: float in (0, 1). Target fraction of normal data flagged; the same as
                quantile = 1 - false_positive_rate. Give one of the two; neither means quantile 0.99.
        """
        if quantile is not None and false_positive_rate is not None:
            raise ValueError("Give quantile or false_positive_rate, not both.")
        q = 0.99 if quantile is None and false_positive_rate is None else quantile if quantile is not None else 1.0 - false_positive_rate
        if not 0.0 < q < 1.0:
            raise ValueError(f"The calibration quantile must lie in (0, 1), got {q} (false_positive_rate = 1 - quantile).")
        scores = self.score(x_normal, labels=labels)
        if len(scores) == 0:
            raise ValueError("Calibration needs at least one normal example.")
        self.model.anomaly_calibration = AnomalyCalibration(float(np.quantile(scores, q)), self.method, self.num_samples)
        return self

    def predict(self, x, labels=None):
        """bool [n]: True where the score exceeds the calibrated threshold."""
        if self.threshold is None:
            raise ValueError(f"The model has no threshold for the {self.method!r} score; call fit(x_normal) first.")
        return self.score(x, labels=labels) > self.threshold

    def evaluate(self, x, is_anomaly, labels=None):
        """Detection metrics on labelled data (see `detection_metrics`), plus the method used."""
        metrics = detection_metrics(self.score(x, labels=labels), is_anomaly, self.threshold)
        return {"method": self.method, "num_samples": self.num_samples, **metrics}


def detection_metrics(scores, is_anomaly, threshold=None):
    """How well scores separate anomalies (is_anomaly True) from normal examples.

    Returns a dict of floats: auroc (area under the ROC curve: the probability that a random anomaly scores
    above a random normal example), auprc (average precision, with anomalies as the positive class),
    num_examples, num_anomalies; with a threshold also precision, recall, f1 and false_positive_rate of
    the rule score > threshold.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = np.asarray(scores, np.float64)
    is_anomaly = np.asarray(is_anomaly).astype(bool)
    if scores.shape != is_anomaly.shape:
        raise ValueError(f"Expected one label per score: labels of shape {list(is_anomaly.shape)} for scores of shape {list(scores.shape)}.")
    if is_anomaly.all() or not is_anomaly.any():
        raise ValueError("Detection metrics need both normal and anomalous examples.")
    metrics = {
        "auroc": float(roc_auc_score(is_anomaly, scores)),
        "auprc": float(average_precision_score(is_anomaly, scores)),
        "num_examples": len(scores),
        "num_anomalies": int(is_anomaly.sum()),
    }
    if threshold is not None:
        flagged = scores > threshold
        true_positives = int(np.sum(flagged & is_anomaly))
        precision = true_positives / max(int(flagged.sum()), 1)
        recall = true_positives / int(is_anomaly.sum())
        metrics.update(
            threshold=float(threshold),
            precision=float(precision),
            recall=float(recall),
            f1=float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
            false_positive_rate=float(np.mean(flagged[~is_anomaly])),
        )
    return metrics


def served_anomaly_score(model, x, seed, scores, labels=None):
    """The calibrated method's score of a batch tensor, in graph, for the exported `score` signature.

    Deterministic like the rest of the signature: "elbo" averages `anomaly_num_samples` posterior draws
    that share one stateless noise draw across the batch (an example's score does not depend on its
    batch); "reconstruction" has no noise; "nll" draws its importance samples from the stateless `seed`,
    so a request's scores repeat exactly, though an example's draws depend on its position in the batch.
    `scores` is what `model.score_batch` computed with the same seed; its ELBO is reused.
    """
    method, k = model.anomaly_method, model.anomaly_num_samples
    if method == "reconstruction":
        return -model.reconstruction_log_prob(x, labels=labels)
    if method == "nll":
        return -objectives.iwae_bound(model.log_importance_weights(x, k, seed, labels=labels))
    if k == 1:
        return -scores["elbo"]
    return -model.elbo_batch(x, k, seed, shared_noise=True, labels=labels)
