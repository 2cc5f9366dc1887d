"""Image-quality numbers the applications report: mean squared error and PSNR over a whole set."""

import numpy as np


def mse(x, reference):
    """Mean squared error over every element of x and the reference (arrays of the same shape)."""
    x, reference = np.asarray(x, np.float64), np.asarray(reference, np.float64)
    if x.shape != reference.shape:
        raise ValueError(f"Expected arrays of the same shape, got {list(x.shape)} and {list(reference.shape)}.")
    return float(np.mean(np.square(x - reference)))


def psnr(x, reference, peak=1.0):
    """Peak signal-to-noise ratio in dB of the whole set, 10 log10(peak^2 / MSE), for images in [0, peak].

    The MSE is pooled over the set (not a mean of per-image PSNRs), so one perfect image cannot make it
    infinite."""
    return float(10.0 * np.log10(peak**2 / max(mse(x, reference), 1e-12)))
