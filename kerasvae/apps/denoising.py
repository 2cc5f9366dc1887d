"""Denoising: project a noisy image onto the model's manifold of clean images, by finding the latent code
whose decoded image best explains the noisy one under the noise model and the prior."""

import numpy as np
import tensorflow as tf

from kerasvae._tfp import tfd
from kerasvae.apps import inference
from kerasvae.apps.baselines import PCABaseline
from kerasvae.apps.metrics import psnr


def add_noise(x, stddev, seed=0):
    """x + stddev * N(0, I): additive white Gaussian noise, not clipped (the usual denoising protocol, so
    the noisy PSNR is about 20 log10(1 / stddev) dB)."""
    if not stddev > 0:
        raise ValueError(f"The noise standard deviation must be > 0, got {stddev}.")
    x = np.asarray(x, np.float32)
    return x + np.float32(stddev) * np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)


def denoise(model, x_noisy, noise_stddev, steps=100, learning_rate=0.05, labels=None):
    """Denoised images [n, *input_shape] in [0, 1]: the mean E[x|z*] of the decoder at

        z* = argmax_z  log N(x_noisy; E[x|z], noise_stddev^2 I) + log p(z)

    (MAP estimate of the clean image's code under white Gaussian noise), found by Adam from the posterior
    mean of the noisy image clipped to [0, 1]. steps=0 returns that amortized reconstruction unchanged:
    the encoder never saw noise, so the optimization is what buys most of the gain.

    Args:
        model: a kerasvae model with continuous latents.
        x_noisy: array [n, *input_shape]. Noisy images (any real values).
        noise_stddev: float. The noise's standard deviation.
        steps: int. Optimization steps. Defaults to 100.
        learning_rate: float. Adam's step size in latent units. Defaults to 0.05.
    """
    if not noise_stddev > 0:
        raise ValueError(f"The noise standard deviation must be > 0, got {noise_stddev}.")
    inference.check_continuous_latents(model)
    x_noisy = np.asarray(x_noisy, np.float32)
    # The encoder (and a Bernoulli likelihood's input check) expects images in [0, 1].
    z = inference.posterior_means(model, np.clip(x_noisy, 0.0, 1.0), labels=labels)
    if steps:
        stddev = np.full(len(x_noisy), noise_stddev, np.float32)
        z = inference.latent_mode(
            model, gaussian_noise_log_likelihood, (x_noisy, stddev), z, steps=steps, learning_rate=learning_rate, labels=labels
        )
    return np.clip(inference.decoded_mean(model, z, labels=labels), 0.0, 1.0)


def gaussian_noise_log_likelihood(model, params, noisy, stddev):
    """log N(noisy; E[x|z], stddev^2 I) per example, stddev [batch]: the observation model of white noise."""
    mean = model.likelihood.mean(params)
    scale = tf.reshape(stddev, [-1] + [1] * len(model.data_shape)) * tf.ones_like(mean)
    return tfd.Independent(tfd.Normal(mean, scale), len(model.data_shape)).log_prob(noisy)


def evaluate_denoising(model, x_clean, noise_stddev=0.3, seed=0, steps=100, x_fit=None, labels=None):
    """PSNR (dB) before and after denoising clean images corrupted by `add_noise(x_clean, noise_stddev, seed)`.

    Returns (report, images). report: psnr_noisy, psnr_denoised, gain_db (their difference),
    psnr_amortized (the encoder's reconstruction of the clipped noisy image, steps=0), noise_stddev,
    steps, num_examples; with x_fit (clean training images) also the classical baseline psnr_pca and
    gain_pca_db: projection onto the principal subspace of x_fit with as many components as the model has
    latent dimensions. images: {"clean", "noisy" (clipped for display), "denoised"[, "pca"]} arrays.
    """
    x_clean = np.asarray(x_clean, np.float32)
    noisy = add_noise(x_clean, noise_stddev, seed)
    denoised = denoise(model, noisy, noise_stddev, steps=steps, labels=labels)
    amortized = denoise(model, noisy, noise_stddev, steps=0, labels=labels)
    report = {
        "noise_stddev": float(noise_stddev),
        "steps": int(steps),
        "num_examples": len(x_clean),
        "psnr_noisy": psnr(noisy, x_clean),
        "psnr_denoised": psnr(denoised, x_clean),
        "psnr_amortized": psnr(amortized, x_clean),
    }
    report["gain_db"] = report["psnr_denoised"] - report["psnr_noisy"]
    images = {"clean": x_clean, "noisy": np.clip(noisy, 0.0, 1.0), "denoised": denoised}
    if x_fit is not None:
        images["pca"] = PCABaseline(model.latent_dim).fit(x_fit).reconstruct(noisy)
        report["psnr_pca"] = psnr(images["pca"], x_clean)
        report["gain_pca_db"] = report["psnr_pca"] - report["psnr_noisy"]
    return report, images

