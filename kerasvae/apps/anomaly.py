"""Anomaly detection: score inputs by how badly the model explains them or how far they lie from normal
data, flag those above a threshold calibrated on normal data, and measure the detection against labels.

The threshold lives on the model as `model.anomaly_calibration` (kerasvae.calibration.AnomalyCalibration:
threshold, method, num_samples and the normal-data statistics of the reference scores), so `model.save`
keeps it and `kerasvae export` serves it: the SavedModel's `score` signature then returns `is_anomaly` next
to `anomaly_score`. The scores themselves are defined in kerasvae.apps.anomaly_scores.
"""

import numpy as np

from kerasvae import progress
from kerasvae.apps import anomaly_scores
from kerasvae.calibration import AnomalyCalibration
from kerasvae.choices import ANOMALY_METHODS as METHODS

SCORE_CHUNK = 2048  # examples per progress step of `score`
MAX_HELD_OUT = 2000  # normal examples held out of the reference statistics, for choosing and thresholding
HELD_OUT_SHARE = 0.2


class AnomalyDetector:
    """Flags x as anomalous when an anomaly score s(x) exceeds a threshold t calibrated on normal data: t is
    the q-quantile of s over normal examples, so about a fraction 1 - q of normal data is flagged (the
    false-positive rate).

    Scores (higher = more anomalous): the model's own "elbo" (-ELBO(x)), "nll" (the importance-weighted
    -log p(x)), "reconstruction" (-log p(x | z = mean of q(z|x))) and "reconstruction_error" (the squared
    error of that reconstruction's mean); and the scores that compare x with normal data
    (kerasvae.apps.anomaly_scores): "typicality", "complexity" (Serra et al. 2020's likelihood ratio
    against a PNG coder), "latent_density" (Mahalanobis in latent space), "latent_neighbors" (distance to
    the nearest normal codes) and "ensemble" (a weighted sum of the standardized complexity-corrected
    likelihood, latent neighbours and reconstruction error for 8-bit images; of the ELBO and the latent
    neighbours for densities; each weighted by how well it separates pseudo-anomalies). "auto", the default, chooses among them at `fit` with normal data only: it holds out
    part of the normal data, makes anomalies from it (`anomaly_scores.pseudo_anomalies`: flipped, turned,
    shifted, overlaid inputs) and keeps the score that separates the two best (AUROC, in `selection`).

    Args:
        model: a kerasvae model.
        method: str or None. "auto" or a score above. None takes the method the model was calibrated with,
            else "auto".
        num_samples: int or None. Posterior samples of the ELBO-based scores and "nll"; None takes the
            calibrated value, else 1.

    >>> detector = AnomalyDetector(model).fit(x_normal, false_positive_rate=0.05)
    >>> detector.method, detector.selection  # the chosen score and every candidate's AUROC on pseudo-anomalies
    >>> detector.predict(x)                   # bool [n]
    >>> detector.evaluate(x, y != normal)     # auroc, auprc, precision, recall, ...
    >>> model.save("model.keras")             # keeps the threshold; the export serves is_anomaly
    """

    def __init__(self, model, method=None, num_samples=None):
        calibrated = model.anomaly_threshold is not None
        if method is None:
            method = model.anomaly_method if calibrated else "auto"
        if method not in METHODS:
            raise ValueError(f"Unknown anomaly score method {method!r}; expected one of {', '.join(METHODS)}.")
        if method != "auto" and method not in anomaly_scores.available(model):
            raise ValueError(f"The {method!r} score does not apply to a {type(model).__name__} with inputs of shape "
                             f"{list(model.data_shape)}; it can use {', '.join(anomaly_scores.available(model))}.")
        if num_samples is None:
            num_samples = model.anomaly_num_samples if calibrated else 1
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        self.model = model
        self.method = method
        self.num_samples = int(num_samples)
        self.selection = None
        calibration = model.anomaly_calibration
        self.reference = calibration.reference if calibrated and calibration.method == method else None

    @property
    def threshold(self):
        """The model's threshold when it was calibrated with this detector's score, else None."""
        model = self.model
        if model.anomaly_method == self.method and model.anomaly_num_samples == self.num_samples:
            return model.anomaly_threshold
        return None

    def score(self, x, labels=None):
        """Anomaly scores [n], higher = more anomalous."""
        if self.method == "auto":
            raise ValueError("The 'auto' detector chooses its score in fit(x_normal); call fit first.")
        x, labels = np.asarray(x), None if labels is None else np.asarray(labels)
        scores = []
        with progress.bar(len(x), f"{self.method} scores", unit="images") as bar:
            for start in range(0, max(len(x), 1), SCORE_CHUNK):  # empty x: one call, the model's own empty answer
                chunk = slice(start, start + SCORE_CHUNK)
                scores.append(self._score(self.method, x[chunk], None if labels is None else labels[chunk], self.reference))
                bar.update(len(scores[-1]))
        return np.concatenate(scores)

    def _score(self, method, x, labels, reference):
        if method in anomaly_scores.MODEL_SCORES:
            return np.asarray(self.model.anomaly_score(x, method=method, num_samples=self.num_samples, labels=labels))
        return anomaly_scores.score_arrays(self.model, x, method, self.num_samples, reference, labels=labels)

    def fit(self, x_normal, quantile=None, false_positive_rate=None, labels=None):
        """Choose the score ("auto"), fit the normal-data statistics it needs, calibrate the threshold on
        normal examples and store all of it on the model. Returns self.

        The model's own scores are thresholded on all of x_normal. The others hold out the last fifth of
        x_normal (at most MAX_HELD_OUT examples): the statistics come from the rest, the threshold from the
        held-out part, so a normal example is never its own nearest neighbour.

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
        x_normal, labels = np.asarray(x_normal), None if labels is None else np.asarray(labels)
        if len(x_normal) == 0:
            raise ValueError("Calibration needs at least one normal example.")
        if self.method in anomaly_scores.MODEL_SCORES:
            scores, self.reference = self.score(x_normal, labels=labels), None
        else:
            if len(x_normal) < 10:
                raise ValueError(f"The {self.method!r} detector needs at least 10 normal examples to hold some out, got {len(x_normal)}.")
            held = held_out_size(len(x_normal))
            parts = (x_normal[:-held], x_normal[-held:]), (None, None) if labels is None else (labels[:-held], labels[-held:])
            if self.method == "auto":
                self.method, self.selection, self.reference = self._choose(*parts)
            else:
                self.reference = anomaly_scores.fit_reference(self.model, self.method, self.num_samples, *parts[0], *parts[1])
            scores = self._score(self.method, parts[0][1], parts[1][1], self.reference)
        self.model.anomaly_calibration = AnomalyCalibration(float(np.quantile(scores, q)), self.method, self.num_samples, self.reference)
        return self

    def _choose(self, x_parts, label_parts):
        """(method, {candidate: AUROC}, its reference statistics): the candidate that best separates held-out
        normal examples from pseudo-anomalies made of them. "nll" is left out: with the few samples a choice can afford it is a
        noisier ELBO."""
        from sklearn.metrics import roc_auc_score

        if label_parts[0] is not None:
            raise ValueError("Choosing a score needs pseudo-anomalies, which a conditional model's labels do not "
                             "describe; give the detector a method.")
        x_reference, x_held = x_parts
        fake = anomaly_scores.pseudo_anomalies(x_held)
        is_fake = np.r_[np.zeros(len(x_held)), np.ones(len(fake))]
        selection, references = {}, {}
        for method in anomaly_scores.available(self.model):
            if method == "nll":
                continue
            if method in anomaly_scores.REFERENCE_SCORES:
                references[method] = anomaly_scores.fit_reference(self.model, method, self.num_samples, x_reference, x_held)
            scores = np.concatenate([self._score(method, x, None, references.get(method)) for x in (x_held, fake)])
            selection[method] = float(roc_auc_score(is_fake, scores))
        method = max(selection, key=selection.get)
        return method, selection, references.get(method)

    def predict(self, x, labels=None):
        """bool [n]: True where the score exceeds the calibrated threshold."""
        if self.threshold is None:
            raise ValueError(f"The model has no threshold for the {self.method!r} score; call fit(x_normal) first.")
        return self.score(x, labels=labels) > self.threshold

    def evaluate(self, x, is_anomaly, labels=None):
        """Detection metrics on labelled data (see `detection_metrics`), plus the method used."""
        metrics = detection_metrics(self.score(x, labels=labels), is_anomaly, self.threshold)
        return {"method": self.method, "num_samples": self.num_samples, **metrics}


def held_out_size(num_normal):
    """How many of `num_normal` normal examples `AnomalyDetector.fit` holds out of a reference score's
    statistics: the last fifth, at most MAX_HELD_OUT."""
    return min(max(int(num_normal * HELD_OUT_SHARE), 1), MAX_HELD_OUT)


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
    """The calibrated method's score of a batch tensor, in graph, for the exported `score` signature
    (`anomaly_scores.batch_scores`, deterministic: the ELBO's draws share one stateless noise draw across
    the batch, so an example's score does not depend on its batch). `scores` is what `model.score_batch`
    computed with the same seed; a one-sample ELBO reuses it."""
    calibration = model.anomaly_calibration
    if calibration.method == "elbo" and calibration.num_samples == 1:
        return -scores["elbo"]
    return anomaly_scores.batch_scores(model, x, calibration.method, calibration.num_samples, calibration.reference,
                                       labels=labels, seed=seed)
