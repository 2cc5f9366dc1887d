"""Model families. All are keras.Model subclasses; all but RecursiveAutoencoder (sequences of any length) build on
LatentVariableModel."""

from kerasvae.models.autoencoder import Autoencoder
from kerasvae.models.base import LatentVariableModel
from kerasvae.models.conditional import ConditionalVAE
from kerasvae.models.discrete import DiscreteVAE
from kerasvae.models.hierarchical import HierarchicalVAE
from kerasvae.models.recursive import RecursiveAutoencoder
from kerasvae.models.vae import VAE
from kerasvae.models.vqvae import VQVAE

__all__ = ["VAE", "VQVAE", "Autoencoder", "ConditionalVAE", "DiscreteVAE", "HierarchicalVAE", "LatentVariableModel", "RecursiveAutoencoder"]
