"""The deterministic autoencoder, with sparse and denoising variants by composition: pass a sparsity
penalty (kerasvae.sparsity) or a corruption layer (kerasvae.corruptions)."""

import keras
import tensorflow as tf

from kerasvae import likelihoods, posteriors, priors
from kerasvae._tfp import tfd
from kerasvae.models.base import LatentVariableModel, serialize
from kerasvae.models.multi_worker import all_replicas


@keras.saving.register_keras_serializable(package="kerasvae")
class Autoencoder(LatentVariableModel):
    """Deterministic autoencoder z = f(x), trained on -log p(x | f(corrupt(x))) + sparsity(z).

    The likelihood makes the reconstruction loss a proper log-likelihood (Bernoulli = binary
    cross-entropy, Gaussian = scaled squared error). The corruption applies only in training and the loss
    compares with the clean input (Vincent et al. 2008). A Gaussian prior is fitted to the codes seen in
    training (moving moments), which lets a plain AE `sample`.

    `elbo` here is log p(x | f(x)), the reconstruction log-likelihood: a point-mass posterior has no
    finite entropy, so there is no ELBO proper. `log_likelihood` is still a consistent importance-sampling
    estimate of log p(x) under the fitted prior and the decoder, with a Gaussian proposal centred on the
    code whose scale is `proposal_scale` times the prior's. `anomaly_score` (-elbo) is therefore the
    reconstruction negative log-likelihood.

    Args:
        encoder, decoder: keras layers. Torsos (see kerasvae.networks).
        latent_dim: int. Dimension of the code.
        input_shape: tuple of int. Shape of one example.
        likelihood: str or Likelihood. Defaults to "bernoulli".
        sparsity: a kerasvae.sparsity penalty or None. Defaults to None.
        corruption: a kerasvae.corruptions layer or None. Defaults to None.
        proposal_scale: float. See above. Defaults to 0.1.
    """

    def __init__(
        self,
        encoder,
        decoder,
        latent_dim,
        input_shape,
        likelihood="bernoulli",
        sparsity=None,
        corruption=None,
        proposal_scale=0.1,
        **kwargs,
    ):
        self.sparsity = sparsity
        self.proposal_scale = float(proposal_scale)
        kwargs.pop("prior", None)  # always the fitted code prior; accepted so configs round-trip
        super().__init__(
            encoder=encoder,
            decoder=decoder,
            latent_dim=latent_dim,
            input_shape=input_shape,
            likelihood=likelihoods.get(likelihood),
            posterior=posteriors.DeterministicPosterior(latent_dim, activation=getattr(sparsity, "code_activation", None)),
            prior=priors.MomentMatchedPrior(latent_dim),
            metric_names=("loss", "reconstruction") + (("sparsity",) if sparsity is not None else ()),
            corruption=corruption,
            **kwargs,
        )

    def loss_terms(self, x, training=False, labels=None):
        z = self.posterior_params(self.encoder_inputs(x, training), training=training, labels=labels)["loc"]
        if training:  # the moments of the global batch under a tf.distribute strategy (see all_replicas)
            self.prior_layer.update(all_replicas(tf.stop_gradient(z)))
        params = self.likelihood_params(z, training=training, labels=labels)
        reconstruction = -tf.reduce_mean(self.likelihood.log_prob(params, x))
        terms = {"loss": reconstruction, "reconstruction": reconstruction}
        if self.sparsity is not None:
            terms["sparsity"] = self.sparsity(z)
            terms["loss"] = reconstruction + terms["sparsity"]
        return terms

    def proposal(self, x, labels=None):
        code = self.posterior_params(x, labels=labels)["loc"]
        return tfd.MultivariateNormalDiag(loc=code, scale_diag=self.proposal_scale * self.prior.stddev() * tf.ones_like(code))

    def elbo_batch(self, x, num_samples, seed, shared_noise=False, labels=None):
        return self.reconstruction_log_prob(x, labels=labels)

    def get_config(self):
        return {
            **super().get_config(),
            "sparsity": serialize(self.sparsity),
            "proposal_scale": self.proposal_scale,
        }
