"""A conditional VAE: fit(x, y), then one row of samples per label.

    python examples/conditional_vae.py [--dataset fashion_mnist]
"""

import keras
import numpy as np
from _common import images, parse

import kerasvae as kv
from kerasvae import plots

args = parse(__doc__, epochs=40)
x_train, y_train, _, _, shape = images(args)
model = kv.presets.conditional_vae(input_shape=shape, num_classes=10, latent_dim=16 if shape[0] == 28 else 4, seed=0)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(kv.data.binarize_static(x_train, 0), y_train, epochs=args.epochs, batch_size=128, verbose=0)
labels = np.repeat(np.arange(10), 8)
plots.image_grid(model.sample(80, labels=labels, seed=(0, 1)), f"{args.out}/conditional_samples.png",
                 title=f"conditional_vae preset ({model.latent_dim}-d latent): one row of samples per label")
print(f"samples by label in {args.out}/conditional_samples.png")
