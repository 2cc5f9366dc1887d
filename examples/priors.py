"""The same VAE with a standard normal, a learned mixture-of-Gaussians and a VampPrior: test IWAE NLL.

    python examples/priors.py [--dataset fashion_mnist]
"""

import keras
from _common import images, parse

import kerasvae as kv

args = parse(__doc__, epochs=60)
x_train, _, x_test, _, shape = images(args)
binary_train, binary_test = kv.data.binarize_static(x_train, 0), kv.data.binarize_static(x_test, 1)
for prior in ("normal", "mixture", "vamp"):
    keras.utils.set_random_seed(0)
    model = kv.presets.mlp_vae(input_shape=shape, latent_dim=32 if shape[0] == 28 else 8, prior=prior, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(binary_train, epochs=args.epochs, batch_size=128, verbose=0)
    nll = float(-model.log_likelihood(binary_test[:1000], num_samples=500).mean())
    print(f"{prior:8s} prior: test IWAE NLL (k=500) {nll:.2f} nats")
