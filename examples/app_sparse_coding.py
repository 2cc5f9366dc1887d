"""Sparse coding on latents: a dictionary of 32 atoms learned on VAE codes (scikit-learn), each code
written with k atoms and decoded, against a 32-atom dictionary on the raw pixels.

    python examples/app_sparse_coding.py [--out docs/gallery]
"""

import argparse
from pathlib import Path

from _common import gallery_vae

import kerasvae as kv
from kerasvae.apps import figures


def main(out):
    dataset, x_train, _, x_test, _, model = gallery_vae(test="test[:300]")

    nonzeros = (1, 2, 3, 4, 6)
    rows, images = kv.apps.sparsity_curve(model, x_train[:1000], x_test, n_nonzero=nonzeros, n_atoms=32)
    for row in rows:
        print(f"k={row['n_nonzero']}: latent dictionary {row['latent_psnr']:.2f} dB (MSE {row['latent_mse']:.4f}), "
              f"pixel dictionary {row['pixel_psnr']:.2f} dB (MSE {row['pixel_mse']:.4f})")
    path = figures.curves(nonzeros, {"latent dictionary + decoder": [r["latent_psnr"] for r in rows],
                                     "pixel dictionary": [r["pixel_psnr"] for r in rows]},
                          Path(out) / "sparse_coding.png", "nonzero coefficients per image (k)", "PSNR (dB)",
                          f"sparse coding with 32 atoms ({'Fashion-MNIST' if dataset == 'fashion_mnist' else 'digits'})")
    print("figure:", path)
    shown = {"original": images["original"], **{f"{kind} k={k}": images[f"{kind}_{k}"] for k in (1, 3) for kind in ("latent", "pixel")}}
    print("figure:", figures.image_rows(shown, Path(out) / "sparse_examples.png", title="reconstructions from k atoms"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/gallery")
    main(parser.parse_args().out)
