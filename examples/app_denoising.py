"""Denoising: images with white Gaussian noise (stddev 0.3) projected back onto a VAE's manifold by
finding the latent code that best explains them (MAP in latent space), against PCA projection.

    python examples/app_denoising.py [--out docs/gallery]
"""

import argparse
from pathlib import Path

from _common import gallery_vae

import kerasvae as kv
from kerasvae.apps import figures


def main(out):
    dataset, x_train, _, x_test, _, model = gallery_vae()

    report, images = kv.apps.evaluate_denoising(model, x_test, noise_stddev=0.3, x_fit=x_train)
    print(f"{dataset}: PSNR noisy {report['psnr_noisy']:.2f} dB -> denoised {report['psnr_denoised']:.2f} dB "
          f"(gain {report['gain_db']:.2f} dB); encoder alone {report['psnr_amortized']:.2f} dB; "
          f"PCA-{model.latent_dim} {report['psnr_pca']:.2f} dB (gain {report['gain_pca_db']:.2f} dB)")
    shown = {"clean": images["clean"], "noisy (0.3)": images["noisy"], "VAE (MAP)": images["denoised"], f"PCA-{model.latent_dim}": images["pca"]}
    title = f"{report['psnr_noisy']:.1f} dB -> VAE {report['psnr_denoised']:.1f} dB, PCA {report['psnr_pca']:.1f} dB"
    print("figure:", figures.image_rows(shown, Path(out) / "denoising.png", title=title))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/gallery")
    main(parser.parse_args().out)
