"""VAEs with discrete codes: binary codes (hashing) and one-hot codes (clustering), trained by `fit` through
relaxed samples: the Concrete / Gumbel-softmax relaxation (Maddison et al. 2017; Jang et al. 2017), with an
optional straight-through estimator and a temperature annealed over training steps."""

import keras
import numpy as np
import tensorflow as tf

from kerasvae import objectives, posteriors, priors
from kerasvae.models.probabilistic import batch_function
from kerasvae.models.vae import VAE

CODES = ("binary", "categorical")
# VAE arguments a DiscreteVAE does not take: its code type sets the posterior and prior heads, and it trains
# on one relaxed sample with the discrete KL.
VAE_ARGUMENTS_SET_BY_THE_CODE = ("posterior", "prior", "num_samples", "gradient_estimator", "free_bits", "analytic_kl", "min_scale")


@keras.saving.register_keras_serializable(package="kerasvae")
class DiscreteVAE(VAE):
    """A VAE whose latents are discrete codes with a uniform prior, trained on the VAE's loss

        loss = -E_q[log p(x|z)] + w_t * KL(q(z|x) || p(z)),   w_t = beta * min(1, t / kl_warmup_steps)

    code="binary": z is latent_dim independent bits, q = Bernoulli(sigmoid(logits)), p = Bernoulli(1/2).
    code="categorical": z is num_latents one-hot codes of num_categories each, flat [latent_dim =
    num_latents * num_categories], q = OneHotCategorical(softmax(logits)) per group, p uniform.

    Training replaces the discrete draw by its relaxation at temperature tau_t (kerasvae.posteriors has the
    equations), which is differentiable in the logits:

        tau_t = max(min(min_temperature, temperature), temperature * exp(-anneal_rate * t)),   t = optimizer step

    (Jang et al. anneal from 1 to 0.5.) With straight_through the forward pass uses the hard code of the
    relaxed sample (an exact draw from q) and the backward pass the relaxed sample's gradient. The KL is
    that of the discrete distributions (objectives.discrete_kl). Outside training (`evaluate`, `elbo`,
    `log_likelihood`, `score_batch`) z is a hard code drawn from q, so `elbo` is a lower bound on log p(x)
    of the discrete model, and `reconstruct` / `model(x)` decode the most likely code.

    Codes: `codes(x)` gives the most likely code, int32 [n, num_latents] (bits, or category indices);
    `hash(x)` the bits of a binary model as uint8 (compare by Hamming distance; `np.packbits` packs them);
    `cluster(x)` the category of each group of a categorical model (with num_latents=1, `cluster(x)[:, 0]`
    is a cluster id). `decode_codes` decodes codes; `sample(n, seed)` draws hard codes from the prior and
    decodes them (its `temperature` argument has no effect: the prior is uniform).

    Args:
        encoder, decoder: keras layers. Torsos (see kerasvae.networks).
        latent_dim: int or None. Number of bits (binary); for categorical codes it is num_latents *
            num_categories and may be left out.
        input_shape: tuple of int. Shape of one example.
        code: str. "binary" or "categorical". Defaults to "binary".
        num_latents: int or None. Number of categorical variables (categorical; required there). For
            binary codes it equals latent_dim and may be left out.
        num_categories: int or None. Categories of each variable (categorical; required there).
        likelihood: str or Likelihood. Defaults to "bernoulli".
        temperature: float. Initial relaxation temperature tau_0. Defaults to 1.0.
        anneal_rate: float. Exponential decay of the temperature per optimizer step. Defaults to 0.0.
        min_temperature: float. Floor of the annealed temperature (capped at `temperature`). Defaults to 0.5.
        straight_through: bool. Hard codes forward, relaxed gradients backward. Defaults to False.
        beta: float. Weight of the KL term. Defaults to 1.0.
        kl_warmup_steps: int. Optimizer steps over which the KL weight ramps from 0 to beta. Defaults to 0.
            Helps binary codes; one-hot codes trained without the KL can lock onto one constant code.

    >>> import kerasvae as kv
    >>> model = kv.DiscreteVAE(kv.networks.MLP((16,)), kv.networks.MLP((16,)), input_shape=(8, 8, 1),
    ...                        code="categorical", num_latents=2, num_categories=5)
    >>> model.cluster(np.zeros((3, 8, 8, 1))).shape
    (3, 2)
    """

    def __init__(
        self,
        encoder,
        decoder,
        latent_dim=None,
        input_shape=None,
        code="binary",
        num_latents=None,
        num_categories=None,
        likelihood="bernoulli",
        temperature=1.0,
        anneal_rate=0.0,
        min_temperature=0.5,
        straight_through=False,
        beta=1.0,
        kl_warmup_steps=0,
        **kwargs,
    ):
        if code not in CODES:
            raise ValueError(f"code must be one of {CODES}, got {code!r}.")
        if input_shape is None:
            raise ValueError("DiscreteVAE needs the input_shape of one example.")
        if code == "binary":
            if num_categories not in (None, 2):
                raise ValueError(f"Binary codes have 2 categories, got num_categories={num_categories}.")
            if latent_dim is None or (num_latents is not None and num_latents != latent_dim):
                raise ValueError(
                    f"Binary codes need latent_dim (the number of bits), got latent_dim={latent_dim}, num_latents={num_latents}."
                )
            posterior, prior = posteriors.BernoulliPosterior(latent_dim), priors.UniformBernoulliPrior(latent_dim)
        else:
            if num_latents is None or num_categories is None:
                raise ValueError("Categorical codes need num_latents and num_categories.")
            if latent_dim is not None and latent_dim != num_latents * num_categories:
                raise ValueError(
                    f"latent_dim of categorical codes is num_latents * num_categories = {num_latents * num_categories}, got {latent_dim}."
                )
            posterior = posteriors.CategoricalPosterior(num_latents, num_categories)
            prior = priors.UniformCategoricalPrior(num_latents, num_categories)
        if not (float(temperature) > 0 and float(min_temperature) > 0):
            raise ValueError(f"Temperatures must be positive, got temperature={temperature}, min_temperature={min_temperature}.")
        self.code = code
        self.num_latents = posterior.num_latents
        self.num_categories = 2 if code == "binary" else int(num_categories)
        self.temperature = float(temperature)
        self.anneal_rate = float(anneal_rate)
        self.min_temperature = float(min_temperature)
        self.straight_through = bool(straight_through)
        super().__init__(
            encoder=encoder,
            decoder=decoder,
            latent_dim=posterior.latent_dim,
            input_shape=input_shape,
            likelihood=likelihood,
            prior=prior,
            posterior=posterior,
            beta=beta,
            kl_warmup_steps=kl_warmup_steps,
            **kwargs,
        )
        self._compiled["_codes_batch"] = batch_function(self._codes_batch)

    # === The data flow ===

    def temperature_at(self, step):
        """tau_t = max(min(min_temperature, temperature), temperature * exp(-anneal_rate * t)) at step t."""
        decayed = self.temperature * tf.exp(-self.anneal_rate * tf.cast(step, tf.float32))
        return tf.maximum(decayed, min(self.min_temperature, self.temperature))

    def current_temperature(self):
        """The temperature of the next training step (t = optimizer.iterations; 0 before compile)."""
        optimizer = getattr(self, "optimizer", None)
        return self.temperature_at(optimizer.iterations if optimizer is not None else 0)

    def sample_latents(self, params, num_samples, seed, temperature=None, shared_noise=False):
        """z [num_samples, n, latent_dim] from the posterior parameters: relaxed at `temperature`, or a hard
        code drawn from q when temperature is None. The noise (Logistic for bits, Gumbel for one-hot codes)
        is drawn from the stateless seed; shared_noise=True draws one noise [num_samples, 1, ...] for the
        whole batch (common random numbers), so an example's draw does not depend on its batch."""
        head, logits = self.posterior_head, params["logits"]
        batch = 1 if shared_noise else tf.shape(logits)[0]
        noise = head.noise.sample(tf.concat([[num_samples, batch], tf.shape(logits)[1:]], axis=0), seed=seed)
        soft = head.relax(logits + noise, 1.0 if temperature is None else temperature)
        if temperature is None:
            return head.harden(soft)
        return posteriors.straight_through(soft, head.harden(soft)) if self.straight_through else soft

    def elbo_parts(self, x, num_samples, seed, training=False, shared_noise=False, labels=None, path=None):
        """z [k, n, latent_dim], log p(x|z) [k, n] and KL(q || p) [n], with q and p the discrete posterior
        and prior. z is relaxed at the current temperature in training, a hard draw from q otherwise.
        `path` is VAE's hook for DReG, which only the IWAE bound uses: discrete codes train on one sample."""
        params = self.posterior_params(self.encoder_inputs(x, training), training=training, labels=labels)
        q, p = self.posterior_head.distribution(params), self.prior
        temperature = self.current_temperature() if training else None
        z = self.sample_latents(params, num_samples, seed, temperature, shared_noise)
        log_px_given_z = self.likelihood.log_prob(self.likelihood_params(z, training=training, labels=labels), x)
        return q, p, z, log_px_given_z, objectives.discrete_kl(q, p)

    # === Codes ===

    def codes(self, x):
        """The most likely code of each example, int32 [n, num_latents]: bits, or category indices."""
        return self._map_batches(self._compiled["_codes_batch"], self._check_inputs(x)).astype(np.int32)

    def hash(self, x):
        """Binary codes only: the most likely bits, uint8 [n, latent_dim] (semantic hashing; similar inputs
        share bits, so neighbours are found by Hamming distance)."""
        if self.code != "binary":
            raise ValueError("hash needs binary codes; a categorical model clusters: use cluster(x) or codes(x).")
        return self.codes(x).astype(np.uint8)

    def cluster(self, x):
        """Categorical codes only: the most likely category of each group, int32 [n, num_latents]."""
        if self.code != "categorical":
            raise ValueError("cluster needs categorical codes; a binary model hashes: use hash(x) or codes(x).")
        return self.codes(x)

    def codes_to_latents(self, codes):
        """Latents z float32 [..., latent_dim] of int codes [..., num_latents] (bits, or one-hot per group)."""
        return self.posterior_head.latents(tf.convert_to_tensor(codes, tf.int32))

    def decode_codes(self, codes):
        """p(x|z(codes)) for int codes [..., num_latents] in {0, ..., num_categories - 1}."""
        codes = np.asarray(codes)
        if codes.ndim < 1 or codes.shape[-1] != self.num_latents or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"Expected integer codes of shape [..., {self.num_latents}], got {codes.dtype} {list(codes.shape)}.")
        if codes.size and (codes.min() < 0 or codes.max() >= self.num_categories):
            raise ValueError(f"Codes must lie in [0, {self.num_categories - 1}], got [{codes.min()}, {codes.max()}].")
        return self.decode(self.codes_to_latents(codes))

    @property
    def code_space(self):
        return (self.num_latents, self.num_categories)

    def _codes_batch(self, x):
        return self.posterior_head.codes(self.posterior_params(x)["loc"])

    def sample_batch(self, n, z_seed, x_seed, mean, temperature, labels=None):
        params = self.likelihood_params(self.prior.sample(n, seed=z_seed), labels=labels)
        if mean:
            return self.likelihood.mean(params)
        return self.likelihood.sample(params, x_seed)

    # === Serialization ===

    def get_config(self):
        # VAE's config, less what the code type determines (posterior and prior heads) or fixes (one sample,
        # no free bits, the discrete KL).
        config = {k: v for k, v in super().get_config().items() if k not in VAE_ARGUMENTS_SET_BY_THE_CODE}
        return {
            **config,
            "code": self.code,
            "num_latents": self.num_latents,
            "num_categories": self.num_categories,
            "temperature": self.temperature,
            "anneal_rate": self.anneal_rate,
            "min_temperature": self.min_temperature,
            "straight_through": self.straight_through,
        }
