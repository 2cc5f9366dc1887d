"""Composition over flags: a sparse autoencoder (KL sparsity on sigmoid codes) and a denoising autoencoder
(Gaussian corruption in training) are the same `kv.Autoencoder` with a different object passed in.

    python examples/sparse_denoising_ae.py [--dataset fashion_mnist]
"""

import keras
import numpy as np
from _common import images, parse

import kerasvae as kv
from kerasvae import plots

args = parse(__doc__, epochs=30)
x_train, _, x_test, _, shape = images(args)
sparse = kv.presets.sparse_ae(input_shape=shape, latent_dim=64, target=0.05, seed=0)
denoising = kv.presets.denoising_ae(input_shape=shape, latent_dim=32, stddev=0.3, seed=0)
for model in (sparse, denoising):
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, epochs=args.epochs, batch_size=128, verbose=0)
codes = np.asarray(sparse.encode(x_test).mean())
print(f"sparse AE: mean code activation {codes.mean():.3f} (target 0.05), {np.mean(codes > 0.5):.3f} of units above 0.5")
noisy = np.clip(x_test + 0.3 * np.random.default_rng(0).standard_normal(x_test.shape), 0, 1).astype("float32")
psnr = lambda a: 10 * np.log10(1 / np.mean((a - x_test) ** 2))
print(f"denoising AE: PSNR noisy {psnr(noisy):.1f} dB -> denoised {psnr(denoising.reconstruct(noisy)):.1f} dB")
plots.image_grid(np.concatenate([noisy[:8], denoising.reconstruct(noisy[:8])]), f"{args.out}/denoised.png",
                 title="denoising_ae preset: noisy inputs (top row), denoised (bottom row)")
