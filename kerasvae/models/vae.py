"""The variational autoencoder: ELBO with the reparameterization trick, beta-VAE, IWAE, KL warm-up and
free bits, all through one loss (the equations live in kerasvae.objectives)."""

import keras
import tensorflow as tf

from kerasvae import likelihoods, objectives, posteriors, priors
from kerasvae._tfp import stateless_seed
from kerasvae.models.base import LatentVariableModel, serialize

GRADIENT_ESTIMATORS = ("reparameterized", "dreg")


@keras.saving.register_keras_serializable(package="kerasvae")
class VAE(LatentVariableModel):
    """Gaussian-posterior VAE (Kingma & Welling 2014), beta-VAE (Higgins et al. 2017) and IWAE (Burda et al.
    2016) in one model, trained by `compile` + `fit`.

    loss = -E_q[log p(x|z)] + w_t * KL(q(z|x) || p(z)),   w_t = beta * min(1, t / kl_warmup_steps)

    With num_samples k > 1 the loss is the IWAE bound, -log (1/k) sum_i p(x|z_i) (p(z_i)/q(z_i|x))^w_t,
    and gradient_estimator="dreg" trains it with doubly reparameterized encoder gradients (objectives).

    Args:
        encoder, decoder: keras layers. Torsos (see kerasvae.networks).
        latent_dim: int. Dimension of z.
        input_shape: tuple of int. Shape of one example.
        likelihood: str or Likelihood. One of "bernoulli", "gaussian", "continuous_bernoulli", "logistic",
            "categorical". Defaults to "bernoulli".
        prior: str or prior layer. One of "normal" (N(0, I)), "mixture" (a learned Gaussian mixture) or
            "vamp" (the VampPrior, 1/K sum_k q(z|u_k) over learned pseudo-inputs u_k); see
            kerasvae.priors. Defaults to "normal".
        beta: float. Weight of the KL term. Defaults to 1.0.
        num_samples: int. Posterior samples per example; > 1 trains the IWAE bound. Defaults to 1.
        gradient_estimator: str. How the IWAE bound's gradient is estimated: "reparameterized" (the
            bound's own reparameterized gradient) or "dreg" (Tucker et al. 2019: the encoder's gradient
            without its score-function noise, whose signal-to-noise ratio otherwise falls as k grows;
            same cost a step). Only used when num_samples > 1. Defaults to "reparameterized".
        kl_warmup_steps: int. Optimizer steps over which the KL weight ramps linearly from 0 to beta.
            Defaults to 0 (no warm-up).
        free_bits: float. Nats of KL per latent dimension the loss does not penalize. Defaults to 0.
        analytic_kl: bool or None. Force the analytic (True) or Monte Carlo (False) KL; None uses the
            analytic one where TFP has it. Defaults to None.
        min_scale: float. Floor of the Gaussian posterior's scale. Defaults to 1e-4.
        posterior: a kerasvae.posteriors.Posterior or None. The head of q(z|x); None is the diagonal
            Gaussian (GaussianPosterior). Any head whose distribution samples with reparameterized
            gradients trains by the same ELBO (README, "Extending").
        corruption: a kerasvae.corruptions layer or None. The denoising VAE (Im et al. 2017): the encoder
            sees corrupted inputs in training, the likelihood scores the clean ones (LatentVariableModel).
            Defaults to None.

    >>> import kerasvae as kv
    >>> vae = kv.VAE(kv.networks.MLP((64,)), kv.networks.MLP((64,)), latent_dim=2, input_shape=(8, 8, 1))
    >>> vae.sample(3, seed=0).shape
    (3, 8, 8, 1)
    """

    def __init__(
        self,
        encoder,
        decoder,
        latent_dim,
        input_shape,
        likelihood="bernoulli",
        prior="normal",
        beta=1.0,
        num_samples=1,
        gradient_estimator="reparameterized",
        kl_warmup_steps=0,
        free_bits=0.0,
        analytic_kl=None,
        min_scale=1e-4,
        posterior=None,
        **kwargs,
    ):
        self.beta = float(beta)
        self.num_samples = int(num_samples)
        self.gradient_estimator = gradient_estimator
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.free_bits = float(free_bits)
        self.analytic_kl = analytic_kl
        self.min_scale = float(min_scale)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        if gradient_estimator not in GRADIENT_ESTIMATORS:
            raise ValueError(f"gradient_estimator must be one of {GRADIENT_ESTIMATORS}, got {gradient_estimator!r}.")
        super().__init__(
            encoder=encoder,
            decoder=decoder,
            latent_dim=latent_dim,
            input_shape=input_shape,
            likelihood=likelihoods.get(likelihood),
            posterior=posteriors.GaussianPosterior(latent_dim, min_scale=self.min_scale) if posterior is None else posterior,
            prior=priors.get(prior, latent_dim, input_shape=input_shape),
            metric_names=("loss", "reconstruction", "kl", "elbo"),
            **kwargs,
        )

    def elbo_parts(self, x, num_samples, seed, training=False, shared_noise=False, labels=None, path=None):
        """z ~ q(z|x) [k, n, latent_dim], log p(x|z) [k, n] and KL(q || p) [n], with q and p.

        shared_noise=True draws one standard-normal eps [k, 1, latent_dim] for the whole batch and sets
        z = loc + scale * eps (common random numbers): each example's estimate is then a function of that
        example alone, whatever batch it arrives in. `path` (an objectives.PathGradientScale) wraps z
        before anything reads it."""
        q = self.posterior(self.encoder_inputs(x, training), training=training, labels=labels)
        p = self.prior
        if shared_noise:
            eps = tf.random.stateless_normal([num_samples, 1, self.latent_dim], seed=seed)
            z = q.mean() + q.stddev() * eps
        else:
            z = q.sample(num_samples, seed=seed)
        if path is not None:
            z = path(z)
        log_px_given_z = self.likelihood.log_prob(self.likelihood_params(z, training=training, labels=labels), x)
        kl = objectives.kl_divergence(q, p, z, analytic=self.analytic_kl)
        return q, p, z, log_px_given_z, kl

    def plan_run(self, steps):
        """Shortens the KL warm-up to the recipe's share of a run of `steps` where it is longer
        (kerasvae.recipes.Recipe.kl_warmup_share), so a short run still ends on the full bound."""
        longest = int((self.recipe.kl_warmup_share or 0) * steps)
        if self.recipe.kl_warmup_share and self.kl_warmup_steps > longest:
            self.kl_warmup_steps = max(1, longest)
            self.train_function = None  # a step traced earlier holds the old warm-up; fit traces a new one

    def kl_weight(self, training):
        if not (training and self.kl_warmup_steps):
            return tf.constant(self.beta)
        step = tf.cast(self.optimizer.iterations + 1, tf.float32)
        return self.beta * tf.minimum(1.0, step / self.kl_warmup_steps)

    def loss_terms(self, x, training=False, labels=None):
        seed = stateless_seed(self.seed_generator)
        dreg = self.num_samples > 1 and training and self.gradient_estimator == "dreg"
        path = objectives.PathGradientScale() if dreg else None
        q, p, z, log_px_given_z, kl = self.elbo_parts(x, self.num_samples, seed, training, labels=labels, path=path)
        reconstruction = -tf.reduce_mean(log_px_given_z)
        mean_kl = tf.reduce_mean(kl)
        weight = self.kl_weight(training)
        if self.num_samples > 1:
            log_q = (objectives.hold_parameters(q) if dreg else q).log_prob(z)
            log_weights = log_px_given_z + weight * (p.log_prob(z) - log_q)
            bound = objectives.dreg_iwae_bound(log_weights, path, weight) if dreg else objectives.iwae_bound(log_weights)
            loss = -tf.reduce_mean(bound)
        elif self.free_bits > 0:
            kl_term = objectives.free_bits_kl(kl, objectives.kl_per_dimension(q, p), self.free_bits, self.latent_dim)
            loss = reconstruction + weight * kl_term
        else:
            loss = reconstruction + weight * mean_kl
        return {"loss": loss, "reconstruction": reconstruction, "kl": mean_kl, "elbo": -(reconstruction + mean_kl)}

    def elbo_batch(self, x, num_samples, seed, shared_noise=False, labels=None):
        _, _, _, log_px_given_z, kl = self.elbo_parts(x, num_samples, seed, shared_noise=shared_noise, labels=labels)
        return tf.reduce_mean(log_px_given_z, axis=0) - kl

    def get_config(self):
        return {
            **super().get_config(),
            "prior": serialize(self.prior_layer),
            "beta": self.beta,
            "num_samples": self.num_samples,
            "gradient_estimator": self.gradient_estimator,
            "kl_warmup_steps": self.kl_warmup_steps,
            "free_bits": self.free_bits,
            "analytic_kl": self.analytic_kl,
            "min_scale": self.min_scale,
            "posterior": serialize(self.posterior_head),
        }
