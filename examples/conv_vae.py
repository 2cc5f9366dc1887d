"""A convolutional VAE with a learned-scale Gaussian likelihood on grey levels; reconstructions and samples.

    python examples/conv_vae.py [--dataset fashion_mnist]
"""

import keras
from _common import images, parse

import kerasvae as kv
from kerasvae import plots

args = parse(__doc__, epochs=30)
x_train, _, x_test, _, shape = images(args)
model = kv.presets.conv_vae(input_shape=shape, latent_dim=16, likelihood=kv.likelihoods.Gaussian("learned"), seed=0)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(x_train, epochs=args.epochs, batch_size=64, verbose=0)
title = "conv_vae preset (Gaussian likelihood, 16-d latent)"
plots.save_reconstructions(model, x_test, f"{args.out}/conv_vae_reconstructions.png", title=f"{title}: inputs and reconstructions")
plots.save_samples(model, f"{args.out}/conv_vae_samples.png", title=f"{title}: samples from the prior")
print(f"test ELBO {float(model.elbo(x_test).mean()):.1f} nats; figures in {args.out}/")
