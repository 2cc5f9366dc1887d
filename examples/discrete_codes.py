"""Discrete bottlenecks: 16-bit binary codes for semantic hashing (nearest neighbours by Hamming distance) and
a single 10-way Gumbel-softmax code for unsupervised clustering.

    python examples/discrete_codes.py [--dataset fashion_mnist]
"""

import keras
import numpy as np
from _common import images, parse
from sklearn.metrics import adjusted_mutual_info_score

import kerasvae as kv

args = parse(__doc__, epochs=20)
x_train, y_train, x_test, y_test, shape = images(args)
binary = kv.presets.binary_vae(input_shape=shape, latent_dim=16, seed=0)
gumbel = kv.presets.gumbel_vae(input_shape=shape, num_latents=1, num_categories=10, seed=0)
for model in (binary, gumbel):
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(kv.data.binarize_static(x_train, 0), epochs=args.epochs, batch_size=128, verbose=0)
bits = np.asarray(binary.hash(x_test))
distance = (bits[:, None, :] != bits[None, :, :]).sum(-1)
np.fill_diagonal(distance, 99)
print(f"hashing: the Hamming-nearest test image has the same label {np.mean(y_test[distance.argmin(1)] == y_test):.3f} "
      "of the time")
print(f"clustering: AMI with the labels {adjusted_mutual_info_score(y_test, np.ravel(gumbel.cluster(x_test))):.3f}")
