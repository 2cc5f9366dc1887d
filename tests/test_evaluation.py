"""The evaluation report: its numbers agree with the model's own methods and with each other."""

import math

import numpy as np
import pytest

from kerasvae import evaluation


def test_report_is_consistent(trained_vae, binary_digits):
    x = binary_digits[2][:200]
    report = evaluation.evaluate(trained_vae, x, num_samples=200)
    assert report["nll"] < -report["elbo"]  # the IW estimate is tighter than the ELBO
    assert report["elbo"] == pytest.approx(-(report["reconstruction"] + report["kl"]), abs=1.0)
    assert report["bits_per_dim"] == pytest.approx(report["nll"] / (64 * math.log(2)), rel=1e-6)
    assert sum(report["kl_per_dim"]) == pytest.approx(report["kl"], rel=0.05)
    variances = np.var(np.asarray(trained_vae.encode(x).mean()), axis=0)
    assert report["active_units"] == int(np.sum(variances > 0.01)) >= 1
    assert report["num_examples"] == 200 and report["latent_dim"] == 4
