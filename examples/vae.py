"""The classic VAE, a beta-VAE and an IWAE-trained VAE, side by side: fit, test ELBO and IWAE NLL, samples.

    python examples/vae.py [--dataset fashion_mnist] [--epochs 30]
"""

import keras
from _common import images, parse

import kerasvae as kv
from kerasvae import plots

args = parse(__doc__, epochs=40)
x_train, _, x_test, _, shape = images(args)
binary_train, binary_test = kv.data.binarize_static(x_train, 0), kv.data.binarize_static(x_test, 1)
latent_dim = 32 if shape[0] == 28 else 8
for name, options in {"vae": {}, "beta_vae": {"beta": 4.0}, "iwae": {"num_samples": 5}}.items():
    model = kv.presets.mlp_vae(input_shape=shape, latent_dim=latent_dim, seed=0, **options)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(binary_train, epochs=args.epochs, batch_size=128, validation_data=(binary_test,), verbose=0)
    elbo = float(model.elbo(binary_test).mean())
    nll = float(-model.log_likelihood(binary_test[:500], num_samples=200).mean())
    plots.save_samples(model, f"{args.out}/{name}_samples.png",
                       title=f"{name} (mlp_vae preset, {latent_dim}-d latent): samples from the prior")
    print(f"{name:9s} test ELBO {elbo:8.2f}  IWAE NLL (k=200, 500 images) {nll:8.2f} nats")
