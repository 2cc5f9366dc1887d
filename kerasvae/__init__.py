"""kerasvae: the autoencoder family for Keras 3, built on TensorFlow Probability.

Models are `keras.Model` subclasses whose posterior q(z|x), prior p(z) and likelihood p(x|z) are TFP
distributions; they train with plain `compile` + `fit`.

>>> import kerasvae as kv
>>> model = kv.presets.mlp_vae(input_shape=(28, 28, 1), latent_dim=32)

Submodules and classes load on first use (`lazy_loader`), so `import kerasvae` and the `kerasvae` command
answer before TensorFlow loads; `kerasvae.registration` keeps `keras.saving.load_model` working.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ info and warning lines, once it has started

import lazy_loader

from kerasvae import registration

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=[
        "apps", "calibration", "callbacks", "code_priors", "codebook", "corruptions", "data", "distribute", "evaluation", "export", "likelihoods", "networks",
        "objectives", "optimizers", "posteriors", "presets", "pretraining", "priors", "progress", "quantizers", "recipes", "saving",
        "serving", "sparsity",
    ],
    submod_attrs={"models": ["Autoencoder", "ConditionalVAE", "DiscreteVAE", "HierarchicalVAE", "LatentVariableModel", "RecursiveAutoencoder", "VAE", "VQVAE"]},
)

registration.register_when_keras_loads()
