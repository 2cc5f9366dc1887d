"""One-line constructors for the common models. Each preset is a function of the data shape and the
latent size; everything else is a keyword argument passed through to the model class.

>>> import kerasvae as kv
>>> kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4).latent_dim
4
"""

from kerasvae import corruptions, networks, sparsity
from kerasvae.models import VAE, Autoencoder

CLASSIC_HIDDEN = (512, 256)


def _mlp_model(model_class, input_shape, latent_dim, hidden, likelihood, **kwargs):
    return model_class(
        encoder=networks.MLP(hidden),
        decoder=networks.MLP(tuple(reversed(hidden))),
        latent_dim=latent_dim,
        input_shape=input_shape,
        likelihood=likelihood,
        **kwargs,
    )


def mlp_vae(input_shape=(28, 28, 1), latent_dim=32, hidden=CLASSIC_HIDDEN, likelihood="bernoulli", **kwargs):
    """The classic VAE: input-512-256-latent MLP encoder, its mirror as decoder, Bernoulli likelihood."""
    return _mlp_model(VAE, input_shape, latent_dim, hidden, likelihood, **kwargs)


def conv_vae(input_shape=(28, 28, 1), latent_dim=16, filters=(32, 64), likelihood="bernoulli", **kwargs):
    """A convolutional VAE: strided Conv2D encoder, Conv2DTranspose decoder, per-pixel likelihood head."""
    return VAE(
        encoder=networks.ConvEncoder(filters),
        decoder=networks.ConvDecoder(input_shape[:2], tuple(reversed(filters))),
        latent_dim=latent_dim,
        input_shape=input_shape,
        likelihood=likelihood,
        **kwargs,
    )


def mlp_ae(input_shape=(28, 28, 1), latent_dim=32, hidden=CLASSIC_HIDDEN, likelihood="bernoulli", **kwargs):
    """A deterministic MLP autoencoder with the classic widths."""
    return _mlp_model(Autoencoder, input_shape, latent_dim, hidden, likelihood, **kwargs)


def sparse_ae(input_shape=(28, 28, 1), latent_dim=64, target=0.05, weight=1.0, **kwargs):
    """A sparse autoencoder: sigmoid codes pushed to fire at mean rate `target` (KL sparsity)."""
    return mlp_ae(input_shape, latent_dim, sparsity=sparsity.KLSparsity(target, weight), **kwargs)


def denoising_ae(input_shape=(28, 28, 1), latent_dim=32, stddev=0.3, **kwargs):
    """A denoising autoencoder: Gaussian input noise in training, loss against the clean input."""
    return mlp_ae(input_shape, latent_dim, corruption=corruptions.GaussianNoise(stddev), **kwargs)


PRESETS = {
    "mlp_vae": mlp_vae,
    "vae": mlp_vae,
    "conv_vae": conv_vae,
    "mlp_ae": mlp_ae,
    "ae": mlp_ae,
    "sparse_ae": sparse_ae,
    "denoising_ae": denoising_ae,
}


def get(name):
    """The preset function for a name in PRESETS; '-' and '_' are interchangeable ("conv-vae")."""
    key = name.replace("-", "_")
    if key not in PRESETS:
        raise ValueError(f"Unknown model {name!r}; expected one of {sorted(PRESETS)}.")
    return PRESETS[key]
