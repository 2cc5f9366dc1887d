"""The vector-quantized autoencoder (VQ-VAE, van den Oord et al. 2017): discrete latent codes from a learned
codebook, trained by reconstruction + codebook and commitment losses; a prior over the codes, fitted after
training (per-position categoricals or an autoregressive PixelCNN), makes it generate."""

import keras
import numpy as np
import tensorflow as tf

from kerasvae import code_priors, codebook, likelihoods
from kerasvae.models.base import LatentVariableModel
from kerasvae.models.multi_worker import all_replicas
from kerasvae.models.probabilistic import batch_function, squared_error


@keras.saving.register_keras_serializable(package="kerasvae")
class VQVAE(LatentVariableModel):
    """VQ-VAE: x -> encoder -> z_e -> nearest codes c -> z_q = e_c -> decoder -> p(x|z_q), trained on

        loss = -log p(x|z_q) + ||sg(z_e) - z_q||^2 + commitment_cost * ||z_e - sg(z_q)||^2

    with straight-through gradients (kerasvae.codebook has the details, and the EMA codebook update used
    when `ema_decay` is set). Logged: loss, reconstruction (-log p(x|z_q), nats), vq_loss, perplexity
    (exp of the entropy of the batch's code usage).

    Latents. An encoder that outputs a feature map [batch, h, w, c] (e.g. `ConvEncoder(flatten=False)`) gets
    one code per position, num_latents = h * w, and the decoder receives z_q as a map [batch, h, w,
    embedding_dim]; for any other encoder pass `num_latents` and the decoder receives a vector. The public
    latents are flat, row-major over (position, embedding dimension): z [n, latent_dim] with
    latent_dim = num_latents * embedding_dim, codes int32 [n, num_latents].

    The probabilistic API, for a point-mass posterior over discrete codes:
      - `encode(x)`: q(c|x) = delta(c - c(x)), `tfd.Independent(tfd.Deterministic(codes), 1)` over int32 codes
        [n, num_latents]; `.mean()` gives the codes. (`quantized_latents(x)` gives z_q.)
      - `decode(z)` takes quantized latents z [n, latent_dim]; `decode_codes(codes)` takes code indices.
      - `prior`: the prior over codes, untrained until `fit_code_prior(x)` fits it to the training codes:
        prior="categorical", a mixture of `prior_components` products of per-position categoricals
        (kerasvae.code_priors.CodePrior), or prior="pixelcnn", an autoregressive gated PixelCNN over the code
        grid, p(c) = prod_i p(c_i | c_<i) (kerasvae.code_priors.PixelCNNPrior). `sample` draws codes from it
        (position by position for the PixelCNN) and decodes them; `temperature` divides the prior's logits.
      - `elbo(x)` = log p(x|z_q(x)) + log p(c(x)): the ELBO of the point-mass posterior (its entropy is 0, so
        KL(q || p) = -log p(c(x))), a true lower bound on log p(x) = log sum_c p(x|c) p(c).
      - `log_likelihood(x)` returns that same bound: every importance sample from the point mass is the same
        code, so more samples do not tighten it.
      - `anomaly_score(x)` = -log p(x|z_q(x)), the reconstruction negative log-likelihood.

    Args:
        encoder, decoder: keras layers. Torsos (see kerasvae.networks); the decoder maps z_q to features.
        input_shape: tuple of int. Shape of one example.
        num_embeddings: int. Codebook size K. Defaults to 64.
        embedding_dim: int. Dimension of each code vector. Defaults to 16.
        num_latents: int or None. Codes per example for an encoder that outputs vectors; None for a feature
            map (one code per position). Defaults to None.
        commitment_cost: float. beta above. Defaults to 0.25.
        ema_decay: float or None. EMA codebook updates with this decay (e.g. 0.99) instead of the codebook
            loss. Defaults to None.
        restart_after: int. Training steps a code may go unused before it is re-initialized to an encoder
            output; 0 disables restarts. Defaults to 100.
        prior: str. "categorical" (see `prior_components`) or "pixelcnn". Defaults to "categorical".
        prior_components: int. Mixture components of the categorical prior; 1 is an independent categorical
            per position. Defaults to 1.
        prior_options: dict or None. Keyword arguments of PixelCNNPrior (filters, num_layers, kernel_size)
            for prior="pixelcnn". Defaults to None (its defaults).
        likelihood: str or Likelihood. Defaults to "bernoulli".
        seed: int or None. Seeds the codebook initialization and the dead-code restarts.

    >>> import kerasvae as kv
    >>> model = kv.VQVAE(kv.networks.ConvEncoder((8, 16), flatten=False), kv.networks.MLP((32,)),
    ...                  input_shape=(8, 8, 1), num_embeddings=16, embedding_dim=4)
    >>> model.encode(np.zeros((3, 8, 8, 1))).mean().shape   # a 2x2 grid of codes per image
    TensorShape([3, 4])
    """

    def __init__(
        self,
        encoder,
        decoder,
        input_shape,
        num_embeddings=64,
        embedding_dim=16,
        num_latents=None,
        commitment_cost=0.25,
        ema_decay=None,
        restart_after=100,
        prior_components=1,
        likelihood="bernoulli",
        prior="categorical",
        prior_options=None,
        **kwargs,
    ):
        # Distances and EMA statistics stay float32 under a mixed-precision policy: half-precision squared
        # distances tie codes, and the EMA sums lose the small updates.
        quantizer = codebook.VectorQuantizer(
            num_embeddings, embedding_dim, commitment_cost, ema_decay, restart_after=restart_after, seed=kwargs.get("seed"), dtype="float32"
        )
        posterior = codebook.QuantizedPosterior(quantizer, num_latents)
        features_shape = tuple(encoder(tf.zeros((1, *input_shape))).shape)
        grid = features_shape[1:-1] if num_latents is None else (int(num_latents),)
        self.num_latents = int(np.prod(grid))
        self.prior_components = int(prior_components)
        self.prior_kind = prior
        self.prior_options = dict(prior_options or {})
        if prior == "categorical":
            code_prior = code_priors.CodePrior(self.num_latents, quantizer.num_embeddings, self.prior_components)
        elif prior == "pixelcnn":
            if len(grid) > 2:
                raise ValueError(f"The PixelCNN prior takes a 1-D or 2-D layout of codes, got a {len(grid)}-D grid {tuple(grid)}.")
            # A 1-D layout (vector latents, or a sequence's feature map) is a grid of one row.
            code_prior = code_priors.PixelCNNPrior(
                (1, *grid) if len(grid) == 1 else grid, quantizer.num_embeddings, seed=kwargs.get("seed"), dtype="float32", **self.prior_options
            )
        else:
            raise ValueError(f"Unknown prior {prior!r}; expected 'categorical' or 'pixelcnn'.")
        latent_dim = self.num_latents * quantizer.embedding_dim
        if kwargs.pop("latent_dim", latent_dim) != latent_dim:
            raise ValueError(f"A VQ-VAE's latent_dim is num_latents * embedding_dim = {latent_dim}; do not set it.")
        super().__init__(
            encoder=encoder,
            decoder=decoder,
            latent_dim=latent_dim,
            input_shape=input_shape,
            likelihood=likelihoods.get(likelihood),
            posterior=posterior,
            prior=code_prior,
            metric_names=("loss", "reconstruction", "vq_loss", "perplexity"),
            # The decoder sees z_q in the encoder's layout: a map [batch, *grid, embedding_dim], or a vector.
            decoder_input_shape=(*grid, quantizer.embedding_dim) if num_latents is None else (latent_dim,),
            **kwargs,
        )
        self._compiled["_codes_batch"] = batch_function(self._codes_batch)
        self._compiled["_latents_batch"] = batch_function(self._latents_batch)
        self._compiled["_sample_codes"] = tf.function(self._sample_codes, reduce_retracing=True)

    @property
    def quantizer(self):
        return self.posterior_head.quantizer

    # === The data flow ===

    def codes_to_latents(self, codes):
        """Quantized latents z [..., latent_dim] for int codes [..., num_latents]."""
        codes = tf.convert_to_tensor(codes, tf.int32)
        z = self.quantizer.embed(codes)
        return tf.reshape(z, tf.concat([tf.shape(codes)[:-1], [self.latent_dim]], axis=0))

    def loss_terms(self, x, training=False, labels=None):
        params = self.posterior_params(self.encoder_inputs(x, training), training=training)
        z_e = tf.reshape(params["z_e"], [-1, self.num_latents, self.quantizer.embedding_dim])
        reconstruction = -tf.reduce_mean(self.likelihood.log_prob(self.likelihood_params(params["loc"], training=training), x))
        vq_loss = self.quantizer.loss_terms(z_e, params["codes"])["vq_loss"]
        # Under a tf.distribute strategy, code usage and the codebook update come from the global batch:
        # every replica applies the same update, so the mirrored codebook stays one codebook.
        codes = all_replicas(params["codes"])
        if training:
            self.quantizer.update(all_replicas(tf.stop_gradient(z_e)), codes)
        return {
            "loss": reconstruction + vq_loss,
            "reconstruction": reconstruction,
            "vq_loss": vq_loss,
            "perplexity": self.quantizer.perplexity(codes),
        }

    # === Codes and their prior ===

    def codes(self, x):
        """Code indices of x, int32 [n, num_latents] (the mean of `encode(x)`, batched)."""
        return self._map_batches(self._compiled["_codes_batch"], self._check_inputs(x)).astype(np.int32)

    def quantized_latents(self, x):
        """Quantized latents z_q(x) [n, latent_dim], what `decode` takes."""
        return self._map_batches(self._compiled["_latents_batch"], self._check_inputs(x))

    # === What it exports (see LatentVariableModel) ===

    @property
    def code_space(self):
        return (self.num_latents, self.quantizer.num_embeddings)

    def decoder_inputs(self, x, seed=0, labels=None):
        """The quantized latents of x: a VQ-VAE's decoder sees codebook vectors, never posterior draws."""
        return np.asarray(self.quantized_latents(x), np.float32)

    def latent_features(self, x, labels=None):
        return np.asarray(self.quantized_latents(x), np.float32)

    def log_importance_weights(self, x, k, seed, labels=None):
        """One weight per example, the ELBO: with a point-mass posterior all importance samples coincide."""
        return self.elbo_batch(x, 1, seed)[None]

    def decode_codes(self, codes):
        """p(x | z_q(codes)) for int codes [..., num_latents] in {0, ..., num_embeddings - 1}."""
        codes = np.asarray(codes)
        if codes.ndim < 1 or codes.shape[-1] != self.num_latents or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"Expected integer codes of shape [..., {self.num_latents}], got {codes.dtype} {list(codes.shape)}.")
        if codes.size and (codes.min() < 0 or codes.max() >= self.quantizer.num_embeddings):
            raise ValueError(f"Codes must lie in [0, {self.quantizer.num_embeddings - 1}], got [{codes.min()}, {codes.max()}].")
        return self.decode(self.codes_to_latents(codes))

    def fit_code_prior(self, data, **options):
        """Fit the prior over codes to the codes of `data` (an array [n, *input_shape], or a tf.data.Dataset of
        such batches or of (x, y) pairs), e.g. the training set once `fit` is done. Returns the mean
        log p(c) of those codes in nats (per example).

        Args:
            data: the examples whose codes the prior is fitted to.
            **options: passed to the prior's `fit`. Categorical: iterations (EM steps, default 30), seed.
                PixelCNN: epochs (default: about 1000 steps), batch_size (64), learning_rate (2e-3),
                verbose (0), validation_codes (report log p(c) on these codes instead).
        """
        if isinstance(data, tf.data.Dataset):
            batches = (keras.utils.unpack_x_y_sample_weight(batch)[0] for batch in data)
            codes = np.concatenate([self.codes(np.asarray(xb)) for xb in batches])
        else:
            codes = self.codes(data)
        return self.prior_layer.fit(codes, **options)

    # === The probabilistic API ===

    def sample_batch(self, n, z_seed, x_seed, mean, temperature, labels=None):
        codes = self._compiled["_sample_codes"](tf.convert_to_tensor(n, tf.int32), z_seed, tf.convert_to_tensor(temperature, tf.float32))
        params = self.likelihood_params(self.codes_to_latents(codes))
        if mean:
            return self.likelihood.mean(params)
        return self.likelihood.sample(params, x_seed)

    def log_likelihood(self, x, num_samples=1000, seed=None, chunk_size=None, labels=None, precision=None):
        """The lower bound log p(x|z_q(x)) + log p(c(x)), in nats, shape [n]: with a point-mass posterior all
        importance samples coincide, so num_samples, chunk_size and precision (accepted for the common API)
        change nothing."""
        return self.elbo(x, labels=labels)

    def anomaly_score(self, x, method="reconstruction", num_samples=1, labels=None):
        """As the base class, but by default -log p(x|z_q(x)) in nats, shape [n]: the reconstruction negative
        log-likelihood (the code prior's log p(c) says how common a code is, not how well x is explained)."""
        return super().anomaly_score(x, method=method, num_samples=num_samples, labels=labels)

    def score_batch(self, x, seed, labels=None):
        """As the base class: elbo = log p(x|z_q) + log p(c), reconstruction_error, anomaly_score = -log p(x|z_q).
        Deterministic; the seed is unused."""
        params = self.posterior_params(x)
        likelihood_params = self.likelihood_params(params["loc"])
        log_px = self.likelihood.log_prob(likelihood_params, x)
        return {
            "elbo": log_px + self.prior_layer.log_prob(params["codes"]),
            "reconstruction_error": squared_error(x, self.likelihood.mean(likelihood_params)),
            "anomaly_score": -log_px,
        }

    def _sample_codes(self, n, seed, temperature):
        # Compiled: the PixelCNN draws in a tf.while_loop of num_latents network passes.
        return self.prior_layer.sample(n, seed, temperature)

    def _codes_batch(self, x):
        return self.posterior_params(x)["codes"]

    def _latents_batch(self, x):
        return self.posterior_params(x)["loc"]

    def elbo_batch(self, x, num_samples, seed, shared_noise=False, labels=None):
        params = self.posterior_params(x)
        return self.likelihood.log_prob(self.likelihood_params(params["loc"]), x) + self.prior_layer.log_prob(params["codes"])

    # === Serialization ===

    def get_config(self):
        quantizer = self.quantizer
        return {
            **super().get_config(),
            "num_embeddings": quantizer.num_embeddings,
            "embedding_dim": quantizer.embedding_dim,
            "num_latents": self.posterior_head.num_latents,
            "commitment_cost": quantizer.commitment_cost,
            "ema_decay": quantizer.ema_decay,
            "restart_after": quantizer.restart_after,
            "prior_components": self.prior_components,
            "prior": self.prior_kind,
            "prior_options": self.prior_options,
        }
