"""A VQ-VAE: train, fit the PixelCNN prior over its codes, report reconstruction PSNR and codebook perplexity,
draw samples, and round-trip images through their integer codes.

    python examples/vqvae.py [--dataset fashion_mnist] [--epochs 3]

The preset quantizes 28x28 images to a 14x14 grid of codes; on Fashion-MNIST 3 epochs and the prior's
default fit (one pass over the training codes) take about 13 minutes on 2 busy CPU cores.
"""

import keras
import numpy as np
from _common import images, parse

import kerasvae as kv
from kerasvae import plots

args = parse(__doc__, epochs=3)
x_train, _, x_test, _, shape = images(args)
model = kv.presets.vqvae(input_shape=shape, seed=0)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(x_train, epochs=args.epochs, batch_size=128, verbose=0)
log_prior = model.fit_code_prior(x_train)  # mean log p(c) of the training codes, nats
codes = model.codes(x_test)  # int32 [n, positions]: the compressed form
assert np.allclose(model.decode_codes(codes).mean(), model.reconstruct(x_test), atol=1e-5)
psnr = 10 * np.log10(1 / np.mean((model.reconstruct(x_test) - x_test) ** 2))
perplexity = float(model.quantizer.perplexity(codes))
print(f"{codes.shape[1]} codes per image, test PSNR {psnr:.1f} dB, test perplexity {perplexity:.1f}, log p(c) {log_prior:.1f} nats")
plots.image_grid(model.sample(64, seed=(0, 1)), f"{args.out}/vqvae_samples.png", title=f"vqvae preset ({model.quantizer.num_embeddings}-code VQ-VAE, PixelCNN prior): samples")
