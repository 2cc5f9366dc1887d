"""A VQ-VAE: train, fit the code prior, report reconstruction PSNR and codebook perplexity, draw samples, and
round-trip images through their integer codes.

    python examples/vqvae.py [--dataset fashion_mnist] [--epochs 5]
"""

import keras
import numpy as np
from _common import images, parse

import kerasvae as kv
from kerasvae import plots

args = parse(__doc__, epochs=20)
x_train, _, x_test, _, shape = images(args)
model = kv.presets.vqvae(input_shape=shape, seed=0)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
history = model.fit(x_train, epochs=args.epochs, batch_size=128, verbose=0).history
model.fit_code_prior(x_train)
codes = model.codes(x_test)  # int32 [n, positions]: the compressed form
assert np.allclose(model.decode_codes(codes).mean(), model.reconstruct(x_test), atol=1e-5)
psnr = 10 * np.log10(1 / np.mean((model.reconstruct(x_test) - x_test) ** 2))
print(f"{codes.shape[1]} codes per image, test PSNR {psnr:.1f} dB, perplexity {history['perplexity'][-1]:.1f}")
plots.image_grid(model.sample(64, seed=(0, 1)), f"{args.out}/vqvae_samples.png", title="VQ-VAE samples")
