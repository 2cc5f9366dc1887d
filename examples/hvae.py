"""A two-level hierarchical VAE against a one-level VAE of the same networks, prior and training (IWAE-10
with DReG, KL warm-up, weight average): test ELBO and IWAE NLL on binarized images, samples, and the exported
decoder's extra input, the lower level's noise.

    python examples/hvae.py [--dataset fashion_mnist] [--epochs 40]
"""

import keras
import numpy as np
from _common import images, parse

import kerasvae as kv
from kerasvae import plots

args = parse(__doc__, epochs=40)
x_train, _, x_test, _, shape = images(args)
binary_train, binary_test = kv.data.binarize_static(x_train, 0), kv.data.binarize_static(x_test, 1)
small = shape[0] < 28  # digits: the presets' networks scaled down to 8x8 images
networks = {"hidden": (256, 128), "encoder_filters": None} if small else {}
latent_dim, lower_dim = (8, 16) if small else (32, 64)
models = {
    # num_components=0: N(0, I) on top, as the vae preset (the hvae preset's own is a VampPrior)
    "hvae": kv.presets.hvae(input_shape=shape, latent_dim=latent_dim, lower_dims=(lower_dim,), num_components=0, seed=0,
                            **({**networks, "level_hidden": (64,)} if small else {})),
    "vae": kv.presets.vae(input_shape=shape, latent_dim=latent_dim, seed=0, **networks),
}
for name, model in models.items():
    keras.utils.set_random_seed(0)
    model.compile()  # the preset's recipe: Adam with the weight average
    model.fit(binary_train, epochs=args.epochs, batch_size=128, verbose=0)
    elbo = float(model.elbo(binary_test).mean())
    nll = float(-model.log_likelihood(binary_test[:500], num_samples=500).mean())
    print(f"{name:5s} test ELBO {elbo:8.2f}  IWAE NLL (k=500, {len(binary_test[:500])} images) {nll:8.2f} nats")
    plots.save_samples(model, f"{args.out}/{name}_samples.png", title=f"{name} preset: samples from the prior")

# The exported decode takes the top z and the lower level's standard-normal noise (zeros: its mean), so the
# TFLite and ONNX decoders hold no random ops.
hvae = models["hvae"]
print("decode signature inputs besides z:", {name: list(s) for name, s in hvae.decode_noise_shapes().items()})
outputs = hvae.decode_outputs(np.zeros((2, latent_dim), np.float32), noise_1=np.zeros((2, lower_dim), np.float32))
print("decode outputs:", sorted(outputs))
