"""What a model carries from calibration to serving: an anomaly threshold and how its scores were computed.

`kerasvae.apps.AnomalyDetector.fit` sets `model.anomaly_calibration`; it is saved in the model's config, so a
`.keras` file keeps it, and the exported `score` signature serves the calibrated score and `is_anomaly`.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class AnomalyCalibration:
    """An anomaly threshold calibrated on normal data.

    Attributes:
        threshold: float. Scores above it are anomalies (nats, higher = more anomalous).
        method: str. The score the threshold applies to (kerasvae.apps.AnomalyDetector's methods).
        num_samples: int. The `num_samples` of those scores.
        reference: dict or None. The normal-data statistics of the scores that compare inputs with normal
            data (kerasvae.apps.anomaly_scores.fit_reference): lists and floats, so the model's JSON
            config holds them. None for the model's own scores.
    """

    threshold: float
    method: str = "elbo"
    num_samples: int = 1
    reference: dict = None

    def __post_init__(self):
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "num_samples", int(self.num_samples))

    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def get(calibration=None, threshold=None, method=None, num_samples=1):
    """An AnomalyCalibration from itself, its config dict, or the loose `anomaly_threshold`, `anomaly_method`
    and `anomaly_num_samples` config keys of models saved before it existed; None when uncalibrated."""
    if isinstance(calibration, dict):
        return AnomalyCalibration.from_config(calibration)
    if calibration is None and threshold is not None:
        return AnomalyCalibration(threshold, method or "elbo", num_samples)
    return calibration
