"""kerasvae: the autoencoder family for Keras 3, built on TensorFlow Probability.

Models are `keras.Model` subclasses whose posterior q(z|x), prior p(z) and likelihood p(x|z) are TFP
distributions; they train with plain `compile` + `fit`.

>>> import kerasvae as kv
>>> model = kv.presets.mlp_vae(input_shape=(28, 28, 1), latent_dim=32)
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasvae import apps  # noqa: E402
from kerasvae import corruptions  # noqa: E402
from kerasvae import data  # noqa: E402
from kerasvae import distribute  # noqa: E402
from kerasvae import evaluation  # noqa: E402
from kerasvae import likelihoods  # noqa: E402
from kerasvae import networks  # noqa: E402
from kerasvae import objectives  # noqa: E402
from kerasvae import optimizers  # noqa: E402
from kerasvae import posteriors  # noqa: E402
from kerasvae import presets  # noqa: E402
from kerasvae import pretraining  # noqa: E402
from kerasvae import priors  # noqa: E402
from kerasvae import quantizers  # noqa: E402
from kerasvae import saving  # noqa: E402
from kerasvae import serving  # noqa: E402
from kerasvae import sparsity  # noqa: E402
from kerasvae.models import VAE, VQVAE, Autoencoder, ConditionalVAE, DiscreteVAE, LatentVariableModel  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Autoencoder",
    "ConditionalVAE",
    "DiscreteVAE",
    "LatentVariableModel",
    "VAE",
    "VQVAE",
    "apps",
    "corruptions",
    "data",
    "distribute",
    "evaluation",
    "likelihoods",
    "networks",
    "objectives",
    "optimizers",
    "posteriors",
    "presets",
    "pretraining",
    "priors",
    "quantizers",
    "saving",
    "serving",
    "sparsity",
]
