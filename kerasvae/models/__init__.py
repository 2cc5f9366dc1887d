"""Model families. All are keras.Model subclasses built on LatentVariableModel."""

from kerasvae.models.autoencoder import Autoencoder
from kerasvae.models.base import LatentVariableModel
from kerasvae.models.vae import VAE

__all__ = ["Autoencoder", "LatentVariableModel", "VAE"]
