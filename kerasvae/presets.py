"""One-line constructors for the common models. Each preset is a function of the data shape and the
latent size; everything else is a keyword argument passed through to the model class.

>>> import kerasvae as kv
>>> kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4).latent_dim
4
"""

import functools
import math

import keras

from kerasvae import corruptions, networks, priors, recipes, sparsity
from kerasvae.models import (
    VAE,
    VQVAE,
    Autoencoder,
    ConditionalVAE,
    DiscreteVAE,
    HierarchicalVAE,
)
from kerasvae.recipes import Recipe

CLASSIC_HIDDEN = (512, 256)
KL_WARMUP_SHARE = 0.4  # a preset's KL warm-up takes at most this share of a run's steps (Recipe.kl_warmup_share)
TUNED = Recipe(kl_warmup_share=KL_WARMUP_SHARE)  # the recipe of the presets not tuned otherwise


def preset(recipe):
    """Marks a model builder as a preset trained by `recipe` (a kerasvae.recipes.Recipe): the models it
    builds carry the recipe, which `compile()` and `fit` apply, unless the call passes its own `recipe=`.
    The builder's `.recipe` names it."""

    def mark(build):
        @functools.wraps(build)
        def build_with_recipe(*args, recipe=None, **kwargs):
            model = build(*args, **kwargs)
            model.recipe = recipes.get(build_with_recipe.recipe if recipe is None else recipe)
            return model

        build_with_recipe.recipe = recipe
        return build_with_recipe

    return mark


def _mlp_model(model_class, input_shape, latent_dim, hidden, likelihood, gated=False, activation="relu", encoder=None,
               latent_skip=False, **kwargs):
    """MLP torsos `hidden` and their mirror; `encoder` replaces the MLP encoder when given, `latent_skip`
    gives the decoder's later layers the latent code too (networks.MLP's input_skip)."""
    return model_class(
        encoder=networks.MLP(hidden, activation=activation, gated=gated) if encoder is None else encoder,
        decoder=networks.MLP(tuple(reversed(hidden)), activation=activation, gated=gated, input_skip=latent_skip),
        latent_dim=latent_dim,
        input_shape=input_shape,
        likelihood=likelihood,
        **kwargs,
    )


@preset(Recipe(learning_rate=5e-4, weight_averaging=0.999, kl_warmup_share=KL_WARMUP_SHARE))
def mlp_vae(input_shape=(28, 28, 1), latent_dim=32, hidden=CLASSIC_HIDDEN, likelihood="auto", **kwargs):
    """The classic VAE network: input-512-256-latent MLP encoder, its mirror as decoder, and the likelihood
    the data call for (likelihood="auto", as every image preset: a Bernoulli on binary images, the
    discretized logistic on grey levels; kerasvae.likelihoods.choose). Its recipe is Adam at 5e-4 with a
    0.999 moving average of the weights, batches of 128 (`kerasvae train`; `fit` without a batch size takes
    Keras's 32). The classic recipe, Adam at 1e-3 without the average (the PyTorch comparison in
    BENCHMARKS.md: `recipe=kv.recipes.Recipe()`), switches off latent units at `fit`'s batch of 32: on
    Fashion-MNIST grey levels, 10 epochs, 14-18 of 32 stay active and a linear probe of the posterior means
    scores 0.808-0.812, at or below PCA-32's 0.814; this recipe scores 0.818-0.822. Its test NLL on
    dynamically binarized Fashion-MNIST after 30 epochs is no worse (k=1000: 234.37 nats against the classic
    recipe's 234.51 in the same session)."""
    return _mlp_model(VAE, input_shape, latent_dim, hidden, likelihood, **kwargs)


@preset(Recipe(weight_averaging=0.999, kl_warmup_share=KL_WARMUP_SHARE))
def vae(input_shape=(28, 28, 1), latent_dim=32, hidden=(1024, 1024, 512), encoder_filters=(32, 64, 128), latent_skip=True,
        num_samples=10, gradient_estimator="dreg", kl_warmup_steps=5000, likelihood="auto", activation="relu", **kwargs):
    """The default VAE, tuned for test log-likelihood at a CPU budget: a strided Conv2D encoder torso
    (`encoder_filters` 32-64-128, then Dense `hidden[-1]` 512) and an MLP decoder latent-512-1024-1024-input
    (`hidden` reversed) whose second and third layers also see z (`latent_skip`: generative skip
    connections, networks.MLP's input_skip), trained on the importance-weighted bound with 10 samples
    (IWAE; the generative model and the Gaussian encoder are a VAE's, only the training bound is tighter)
    with DReG gradients, the KL weight warmed up from 0 to 1 over the first 5,000 steps, N(0, I) prior.
    `kerasvae train` keeps a moving average of its weights (training_defaults: weight_averaging 0.999).
    IWAE pays for the decoder once a sample and for the encoder once an image, so the encoder is where
    capacity is cheap. `encoder_filters=None` gives the MLP encoder input-1024-1024-512-latent (images of
    any rank).

    Test NLL on dynamically binarized Fashion-MNIST (k=1000; BENCHMARKS.md) after 30 epochs: 228.52
    nats, 31 of 32 latent units active; without the skip connections 228.91 with 19 active, with the
    two-layer decoder 512-1024 229.48, with two conv layers (32-64) 229.59, the MLP encoder 230.00 with
    DReG and 230.39 without, the classic `mlp_vae` 234.02. A decoder 1024-1024, a fourth decoder layer,
    an encoder Dense 1024, weight decay 0.1 and dropout 0.1 in the decoder were level or behind in
    validation; weight averages of momentum 0.99 or 0.9995 scored 0.28 and 0.08 nats worse than 0.999.
    Ten-epoch screens (first 1,000 test images): classic 237.45, widened 236.60, IWAE-5 236.06, both
    234.98, KL warm-up over 2,000 or 4,000 steps 236.13 or 236.22, a weight average 0.56-0.79 better than
    the same runs' last-step weights, IWAE-10 233.75 against IWAE-5's 234.31 with it, DReG 233.27, the conv
    encoder 233.15. A cosine learning-rate decay, gated layers, ELU or SiLU, bfloat16, smaller batches and
    learning rates of 2e-3 and 3e-3 made it worse or moved it under 0.5 nats at 30 epochs. A step costs
    about 15x the classic's CPU time, 1.43x the two-layer decoder's; the skip connections add 2.5%
    (benchmarks/step_time.py). A second 30-epoch run with seed 1 gives 228.46."""
    encoder = None if encoder_filters is None else networks.ConvEncoder(encoder_filters, dense_units=hidden[-1], activation=activation)
    return _mlp_model(VAE, input_shape, latent_dim, hidden, likelihood, activation=activation, encoder=encoder, latent_skip=latent_skip,
                      num_samples=num_samples, gradient_estimator=gradient_estimator, kl_warmup_steps=kl_warmup_steps, **kwargs)


@preset(Recipe(epochs=45, weight_averaging=0.999, kl_warmup_share=KL_WARMUP_SHARE))
def vae_best(input_shape=(28, 28, 1), latent_dim=32, num_components=500, num_samples=5, hidden=(1024, 512),
             encoder_filters=None, latent_skip=False, gradient_estimator="reparameterized", seed=None, **kwargs):
    """The best recipe for a one-hour CPU budget: the MLP `vae` network as it was before its conv encoder,
    third decoder layer and skip connections (784-1024-512-32 and its mirror, `hidden`) with a VampPrior of
    `num_components` learned pseudo-inputs (500, as Tomczak & Welling 2018) instead of N(0, I), trained on
    IWAE-5 rather than `vae`'s IWAE-10: ten samples make its step about 1.6x as long
    (benchmarks/step_time.py), which 45 epochs in an hour have no room for. It keeps the network and the
    plain IWAE gradient it was measured with: the conv encoder would also encode the 500 pseudo-inputs every
    step, the third decoder layer costs 1.43x a step, and none of them, DReG or the skip connections has
    been measured over its 45 epochs yet. `kerasvae train --model vae-best` trains it for its budget
    (presets.training_defaults: 45 epochs, 54-89 s each for 28x28 images on a 2-core AVX-512 CPU). Test
    NLL on dynamically binarized Fashion-MNIST (benchmarks/nll.py, k=1000): 228.34 nats, against the
    published VampPrior row's 227.35."""
    prior = priors.VampPrior(latent_dim, input_shape, num_components=num_components, seed=seed)
    return vae(input_shape, latent_dim, hidden=hidden, prior=prior, num_samples=num_samples, encoder_filters=encoder_filters,
               latent_skip=latent_skip, gradient_estimator=gradient_estimator, seed=seed, **kwargs)


@preset(Recipe(epochs=62, weight_averaging=0.999, kl_warmup_share=KL_WARMUP_SHARE))
def hvae(input_shape=(28, 28, 1), latent_dim=32, lower_dims=(64,), hidden=(1024, 1024, 512), level_hidden=(512,),
         encoder_filters=(32, 64, 128), latent_skip=True, inference="bottom_up", num_samples=10, gradient_estimator="dreg",
         kl_warmup_steps=5000, likelihood="auto", activation="relu", num_components=50, prior=None, seed=None, **kwargs):
    """The hierarchical VAE (kv.HierarchicalVAE) on the `vae` preset's networks and training: two stochastic
    layers, z_1 (`lower_dims`, 64) under the top z_2 (`latent_dim`, 32), the IWAE paper's bottom-up inference
    q(z_1|x) q(z_2|z_1) (`inference`; it beat the Ladder VAE's top-down inference by 0.9-2.0 nats in the
    screens of docs/models.md, 4.0 with three levels, where the ladder left its top level nearly unused), the `vae`
    preset's strided Conv2D encoder torso x -> d_1 and its MLP decoder z_1 -> 512-1024-1024 -> x with
    generative skip connections, MLPs of `level_hidden` (512) between the levels both ways, a VampPrior on the
    top level (`num_components` pseudo-inputs, 50, started from training examples: priors.VampPrior's
    pseudo_inputs_init="data"; 0 gives N(0, I), `prior` any other), IWAE-10 with DReG gradients, the KL weight
    warmed up over 5,000 steps and a weight average of momentum 0.999. The recipe's 62 epochs are the
    one-hour run: 3,329 s on 2 quiet cores (54 s an epoch), test NLL 227.03 nats on dynamically binarized
    Fashion-MNIST (k = 1000, all 10,000 test images), below the published VampPrior row's 227.35
    (`benchmarks/hvae.py`, BENCHMARKS.md). With N(0, I) on top, 72 epochs fit the hour (49 s an epoch) and
    scored 227.36; the 50 pseudo-inputs cost 1.15x a step, 500 would cost 2.5x. A step with N(0, I) costs
    1.11x the `vae` preset's wall time, 1.18x its CPU time (benchmarks/step_time.py's protocol, 189 against
    170 ms). In an 8-epoch screen on 20,000 training images (N(0, I) on top) it scored 237.08 nats against
    the `vae` preset's 238.00 (first 1,000 test images, k = 500). `lower_dims=(64, 48)` gives three levels;
    `encoder_filters=None` an MLP encoder `hidden`."""
    encoder = (networks.MLP(hidden, activation=activation) if encoder_filters is None
               else networks.ConvEncoder(encoder_filters, dense_units=hidden[-1], activation=activation))
    return HierarchicalVAE(
        encoder=encoder,
        decoder=networks.MLP(tuple(reversed(hidden)), activation=activation, input_skip=latent_skip),
        latent_dims=(*lower_dims, latent_dim),
        input_shape=input_shape,
        level_hidden=level_hidden,
        inference=inference,
        activation=activation,
        likelihood=likelihood,
        num_samples=num_samples,
        gradient_estimator=gradient_estimator,
        kl_warmup_steps=kl_warmup_steps,
        prior=prior or (priors.VampPrior(latent_dim, input_shape, num_components, seed=seed, pseudo_inputs_init="data")
                        if num_components else "normal"),
        seed=seed,
        **kwargs,
    )


@preset(TUNED)
def conv_vae(input_shape=(28, 28, 1), latent_dim=16, filters=(32, 64), likelihood="auto", **kwargs):
    """A convolutional VAE: strided Conv2D encoder, Conv2DTranspose decoder, per-pixel likelihood head."""
    return VAE(
        encoder=networks.ConvEncoder(filters),
        decoder=networks.ConvDecoder(input_shape[:2], tuple(reversed(filters))),
        latent_dim=latent_dim,
        input_shape=input_shape,
        likelihood=likelihood,
        **kwargs,
    )


@preset(TUNED)
def mlp_ae(input_shape=(28, 28, 1), latent_dim=32, hidden=CLASSIC_HIDDEN, likelihood="auto", **kwargs):
    """A deterministic MLP autoencoder with the classic widths."""
    return _mlp_model(Autoencoder, input_shape, latent_dim, hidden, likelihood, **kwargs)


@preset(TUNED)
def stacked_ae(input_shape=(28, 28, 1), latent_dim=30, hidden=(1000, 500, 250), likelihood="auto", **kwargs):
    """The deep autoencoder of Hinton & Salakhutdinov (2006), 784-1000-500-250-30 with a mirrored decoder;
    pretrain it greedily with `kerasvae.pretraining.pretrain_layerwise`, then `fit` it end to end."""
    return mlp_ae(input_shape, latent_dim, hidden=hidden, likelihood=likelihood, **kwargs)


@preset(TUNED)
def sparse_ae(input_shape=(28, 28, 1), latent_dim=64, target=0.05, weight=1.0, **kwargs):
    """A sparse autoencoder: sigmoid codes pushed to fire at mean rate `target` (KL sparsity)."""
    return mlp_ae(input_shape, latent_dim, sparsity=sparsity.KLSparsity(target, weight), **kwargs)


@preset(TUNED)
def denoising_ae(input_shape=(28, 28, 1), latent_dim=32, stddev=0.3, **kwargs):
    """A denoising autoencoder: Gaussian input noise in training, loss against the clean input."""
    return mlp_ae(input_shape, latent_dim, corruption=corruptions.GaussianNoise(stddev, seed=kwargs.get("seed")), **kwargs)


@preset(TUNED)
def vqvae(
    input_shape=(28, 28, 1),
    num_embeddings=256,
    embedding_dim=16,
    filters=(64,),
    likelihood="auto",
    ema_decay=0.99,
    prior="pixelcnn",
    prior_options=None,
    prior_components=64,
    **kwargs,
):
    """A VQ-VAE for Fashion-MNIST in a short CPU run: 3 epochs (5-6 minutes on 2 shared cores) give test PSNR
    27.7 dB and codebook perplexity 49.9. The PixelCNN prior's default fit (one pass over the 60000
    training codes, 8-12 minutes) gives rough samples, about half of them recognisable garments;
    `fit_code_prior(x, epochs=3)` (about 19 minutes on shared cores) gives mostly recognisable ones
    (test log p(c) -318.5 instead of -347.0 nats; docs/gallery/vqvae_samples.png).

    A strided Conv2D encoder whose last feature map is quantized position by position (one stride-2 layer:
    28x28 images -> a 14x14 grid of codes from 256 EMA-updated code vectors, with dead-code restarts), a
    3x3 convolution and Conv2DTranspose layers back up to the image, and a per-pixel likelihood head.
    The code prior, fitted by `fit_code_prior` after training, is a gated PixelCNN over the code grid
    (prior_options defaults: 32 filters, 5 layers, 5x5 vertical kernels: a receptive field of 11 rows of
    codes), so samples have a garment's global shape; independent per-position categoricals decode to
    shapeless speckle. filters=(32, 64) gives the cheaper 7x7 grid of keras-io's example (about 21 dB);
    prior="categorical" the mixture of `prior_components` products of per-position categoricals.
    """
    if prior == "pixelcnn" and prior_options is None:
        prior_options = {"filters": 32, "num_layers": 5, "kernel_size": 5}
    return VQVAE(
        encoder=networks.ConvEncoder(filters, flatten=False),
        decoder=_grid_decoder(input_shape[:2], tuple(reversed(filters))),
        input_shape=input_shape,
        num_embeddings=num_embeddings,
        embedding_dim=embedding_dim,
        likelihood=likelihood,
        ema_decay=ema_decay,
        prior=prior,
        prior_options=prior_options,
        prior_components=prior_components,
        **kwargs,
    )


def _grid_decoder(target_shape, filters):
    """Upsample a latent map by 2 per filter, cropping any overshoot back to target_shape (height, width)."""
    factor = 2 ** len(filters)
    overshoot = [math.ceil(t / factor) * factor - t for t in target_shape]
    return keras.Sequential(
        [
            keras.layers.Conv2D(filters[0], 3, padding="same", activation="relu"),
            *(keras.layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu") for f in filters),
            keras.layers.Cropping2D(((0, overshoot[0]), (0, overshoot[1]))),
        ]
    )


@preset(TUNED)
def binary_vae(input_shape=(28, 28, 1), latent_dim=32, hidden=CLASSIC_HIDDEN, likelihood="auto", **kwargs):
    """Binary codes for semantic hashing: latent_dim Bernoulli bits behind the classic MLP torsos, relaxed in
    training with the temperature annealed from 1 to 0.5 (anneal_rate 1e-4 per step)."""
    kwargs = {"temperature": 1.0, "anneal_rate": 1e-4, "min_temperature": 0.5, **kwargs}
    return _mlp_model(DiscreteVAE, input_shape, latent_dim, hidden, likelihood, code="binary", **kwargs)


@preset(TUNED)
def gumbel_vae(input_shape=(28, 28, 1), num_latents=30, num_categories=10, hidden=CLASSIC_HIDDEN, likelihood="auto", **kwargs):
    """The Gumbel-softmax VAE of Jang et al. 2017: num_latents one-hot codes of num_categories each (30 x 10),
    the classic MLP torsos, the temperature annealed from 1 to 0.5. num_latents=1 with one category per
    expected cluster gives an unsupervised clustering model (`cluster`)."""
    kwargs = {"temperature": 1.0, "anneal_rate": 1e-4, "min_temperature": 0.5, **kwargs}
    return DiscreteVAE(
        encoder=networks.MLP(hidden),
        decoder=networks.MLP(tuple(reversed(hidden))),
        input_shape=input_shape,
        code="categorical",
        num_latents=num_latents,
        num_categories=num_categories,
        likelihood=likelihood,
        **kwargs,
    )


@preset(TUNED)
def conditional_vae(input_shape=(28, 28, 1), num_classes=10, latent_dim=16, hidden=CLASSIC_HIDDEN, likelihood="auto", **kwargs):
    """The classic MLP VAE conditioned on a label (one-hot joined to encoder features and to z)."""
    return _mlp_model(ConditionalVAE, input_shape, latent_dim, hidden, likelihood, num_classes=num_classes, **kwargs)


def _sequence_model(model_class, input_shape, latent_dim, units, cell, unroll, **kwargs):
    return model_class(
        encoder=networks.SequenceEncoder(units, cell, bidirectional=True, unroll=unroll),
        decoder=networks.SequenceDecoder(input_shape[0], units, cell, unroll=unroll),
        latent_dim=latent_dim,
        input_shape=input_shape,
        likelihood=kwargs.pop("likelihood", "gaussian"),
        **kwargs,
    )


@preset(TUNED)
def sequence_vae(input_shape=(64, 1), latent_dim=16, units=(64,), cell="gru", free_bits=0.25, unroll=False, **kwargs):
    """A recurrent VAE for series [time, channels]: bidirectional GRU/LSTM encoder, GRU/LSTM decoder fed the
    projected z at every step, Gaussian likelihood with a learned scale. Free bits keep the decoder from
    ignoring z (posterior collapse), which a strong recurrent decoder otherwise does. `unroll=True` trades a
    long first compile for faster epochs on short series; the TFLite export unrolls by itself."""
    return _sequence_model(VAE, input_shape, latent_dim, units, cell, unroll, free_bits=free_bits, **kwargs)


@preset(TUNED)
def sequence_ae(input_shape=(64, 1), latent_dim=16, units=(64,), cell="gru", unroll=False, **kwargs):
    """The deterministic recurrent autoencoder, for reconstruction-based anomaly detection on series."""
    return _sequence_model(Autoencoder, input_shape, latent_dim, units, cell, unroll, **kwargs)


PRESETS = {
    "mlp_vae": mlp_vae,
    "vae": vae,
    "vae_best": vae_best,
    "hvae": hvae,
    "conv_vae": conv_vae,
    "mlp_ae": mlp_ae,
    "ae": mlp_ae,
    "stacked_ae": stacked_ae,
    "sparse_ae": sparse_ae,
    "denoising_ae": denoising_ae,
    "vqvae": vqvae,
    "binary_vae": binary_vae,
    "gumbel_vae": gumbel_vae,
    "conditional_vae": conditional_vae,
    "sequence_vae": sequence_vae,
    "sequence_ae": sequence_ae,
}


def training_defaults(name):
    """{"epochs", "batch_size", "learning_rate", "weight_averaging"} the preset `name` was tuned with: what
    `kerasvae train` and `kerasvae.training.train_run` use when not told otherwise.

    >>> import kerasvae as kv
    >>> kv.presets.training_defaults("vae-best")
    {'epochs': 45, 'batch_size': 128, 'learning_rate': 0.001, 'weight_averaging': 0.999}
    """
    recipe = get(name).recipe
    return {key: getattr(recipe, key) for key in ("epochs", "batch_size", "learning_rate", "weight_averaging")}


def get(name):
    """The preset function for a name in PRESETS; '-' and '_' are interchangeable ("conv-vae")."""
    key = name.replace("-", "_")
    if key not in PRESETS:
        raise ValueError(f"Unknown model {name!r}; expected one of {sorted(PRESETS)}.")
    return PRESETS[key]
