"""Compression: quantized posterior means, arithmetic-coded with the prior. A rate-distortion curve over
the bin width, against PCA transform coding of the same dimension and lossless zlib, and a file that
round-trips through compress/decompress.

    python examples/app_compression.py [--out docs/gallery]
"""

import argparse
import tempfile
from pathlib import Path

from _common import gallery_vae

import kerasvae as kv
from kerasvae.apps import figures


def main(out):
    dataset, x_train, _, x_test, _, model = gallery_vae()

    deltas = [0.25, 0.5, 1.0, 2.0]
    reports = [kv.apps.evaluate_compression(model, x_test, delta, x_fit=x_train)[0] for delta in deltas]
    print(f"{dataset}, {len(x_test)} test images, zlib (lossless, 8-bit) {reports[0]['zlib_bits_per_image']:.0f} bits/image")
    print(f"{'delta':>6} {'VAE bits':>9} {'ideal':>7} {'PSNR':>6} {'PCA bits':>9} {'PCA PSNR':>9}")
    for r in reports:
        print(f"{r['delta']:>6} {r['bits_per_image']:>9.1f} {r['ideal_bits_per_image']:>7.1f} {r['psnr']:>6.2f} "
              f"{r['pca_bits_per_image']:>9.1f} {r['pca_psnr']:>9.2f}")

    with tempfile.TemporaryDirectory() as folder:  # a file round trip, as `kerasvae compress/decompress` do
        path = Path(folder) / "test.kvz"
        path.write_bytes(kv.apps.compress(model, x_test, 0.5))
        decoded = kv.apps.decompress(model, path.read_bytes())
        print(f"test.kvz: {path.stat().st_size} bytes for {len(decoded)} images, PSNR {kv.apps.psnr(decoded, x_test):.2f} dB")

    print("figure:", figures.rate_distortion_figure(reports, Path(out) / "compression.png"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/gallery")
    main(parser.parse_args().out)
