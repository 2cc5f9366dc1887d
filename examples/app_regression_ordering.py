"""Regression and ordering from latents: a VAE trained on randomly rotated images (never told the angles)
predicts each test image's angle with a calibrated spread, against the same regressor on PCA codes, and
puts shuffled rotations of each of 20 test images back in order (comparing codes through the decoder),
against the same ordering of the pixels; the strip shows the first.

    python examples/app_regression_ordering.py [--out docs/gallery]
"""

import argparse
from pathlib import Path

import keras
import numpy as np
from scipy.ndimage import rotate
from scipy.stats import spearmanr

import kerasvae as kv
from kerasvae.apps import figures


def rotate_images(x, angles):
    turned = [rotate(image[..., 0], angle, reshape=False, order=1, mode="constant") for image, angle in zip(x, angles)]
    return np.clip(np.stack(turned), 0, 1)[..., None].astype(np.float32)


def main(out):
    fashion = kv.data.fashion_mnist_available()
    dataset = "fashion_mnist" if fashion else "digits"
    x_train, _ = kv.data.load_arrays(dataset, "train[:4000]")
    x_test, _ = kv.data.load_arrays(dataset, "test[:1000]")
    rng = np.random.default_rng(0)
    angles_train, angles_test = rng.uniform(-60, 60, len(x_train)), rng.uniform(-60, 60, len(x_test))
    rotated_train, rotated_test = rotate_images(x_train, angles_train), rotate_images(x_test, angles_test)
    keras.utils.set_random_seed(0)
    model = kv.presets.mlp_vae(input_shape=x_train.shape[1:], latent_dim=16 if fashion else 8, hidden=(256, 128), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(rotated_train, epochs=10 if fashion else 30, batch_size=64, verbose=0)

    report, predictions = kv.apps.regression_report(model, rotated_train, angles_train, rotated_test, angles_test, baselines=("pca",))
    for name in ("latent", "pca"):
        print(f"{name:>6}: " + ", ".join(f"{k} {v:.3f}" for k, v in report[name].items()))
    regressor = kv.apps.regress(model, rotated_train, angles_train)
    variance = np.square(regressor.predict(rotated_test)[1])
    code_share = np.mean(variance - regressor.head.noise_variance) / np.mean(variance)
    print(f"predictive variance c * Var_q[f(z)] + sigma^2 with c = {float(regressor.head.spread_scale):.3g}, "
          f"sigma^2 = {float(regressor.head.noise_variance):.3g}: the posterior's share {code_share:.2f}")
    figures.regression_figure(angles_test[:300], predictions["mean"][:300], predictions["std"][:300], Path(out) / "regression.png",
                              target="angle (degrees)", title=f"angle from {model.latent_dim}-d latents: R2 {report['latent']['r2']:.3f} "
                              f"(PCA {report['pca']['r2']:.3f})")

    # Seven rotations 20 degrees apart: too far apart for pixel distances to tell neighbours, not for the
    # decoder, which has learnt how the images turn (kv.apps.order compares codes through it).
    angles = np.linspace(-60, 60, 7)
    rhos = []
    for image in x_test[:20]:
        shuffle = rng.permutation(len(angles))
        frames = rotate_images(np.repeat(image[None], len(angles), axis=0), angles)[shuffle]
        indices, positions = kv.apps.order(model, frames)
        pixel_indices, pixel_positions = kv.apps.order_points(frames)
        rhos.append([abs(spearmanr(positions, angles[shuffle])[0]), abs(spearmanr(pixel_positions, angles[shuffle])[0])])
        if len(rhos) == 1:  # the strip shows the first image
            strip = {"shuffled": frames, "model's path": frames[indices], "pixel path": frames[pixel_indices]}
    (rho, pixel_rho), (mean_rho, mean_pixel_rho) = rhos[0], np.mean(rhos, axis=0)
    print(f"ordering 7 rotations: mean |Spearman rho| over 20 images: model {mean_rho:.3f}, pixels {mean_pixel_rho:.3f}")
    figures.ordering_strip(strip, Path(out) / "ordering.png", title=f"7 rotations put back in order: |rho| model {rho:.2f}, "
                           f"pixels {pixel_rho:.2f} (20 images: {mean_rho:.2f}, {mean_pixel_rho:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/gallery")
    main(parser.parse_args().out)
