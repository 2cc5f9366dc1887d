"""The hierarchical VAE: L stochastic layers z_1 (next to x) ... z_L (the top), every conditional a TFP
distribution, trained by the VAE's ELBO, IWAE or DReG objective with its KL warm-up.

Generative model (shared by both inference structures):

    p(x, z_1..z_L) = p(x|z_1) prod_{l<L} p(z_l|z_(l+1)) p(z_L),   p(z_L) = N(0, I),
    p(z_l|z_(l+1)) = N(mu_l(z_(l+1)), diag sigma_l(z_(l+1))^2)      (the top-down path)

Inference, `inference=`:
    "bottom_up" (Burda et al. 2016, the IWAE paper's two-layer model):
        q(z_1..z_L|x) = q(z_1|x) prod_{l>1} q(z_l|z_(l-1))
    "top_down" (the Ladder VAE, Sonderby et al. 2016): a deterministic pass d_1 = encoder(x),
        d_l = up_l(d_(l-1)); q(z_L|x) = N(head_L(d_L)), and below the top the bottom-up estimate
        N(m_l(d_l), s_l(d_l)^2) is combined by precision with the generative conditional, whose path
        mu_l, sigma_l is shared:
            q(z_l|z_(l+1), x) = N(mu_q, sigma_q^2),  sigma_q^-2 = s_l^-2 + sigma_l^-2,
                                                    mu_q = (m_l s_l^-2 + mu_l sigma_l^-2) sigma_q^2

Importance weights over all levels (the IWAE bound and `log_likelihood` use them):

    log w = log p(x|z_1) + sum_{l<L} log p(z_l|z_(l+1)) + log p(z_L) - sum_l log q(z_l | ...)

The model's `latent_dim` is the top's: `prior`, `encode`, `decode`, `sample` and the applications see z_L.
`decode(z)` descends through the conditionals' means; the exported `decode` signature also takes each
lower level's standard-normal noise (noise_l, z_l = mu_l + sigma_l * noise_l), so exported decoders hold no
random ops.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kerasvae import networks, objectives, posteriors
from kerasvae._tfp import stateless_seed, tfd
from kerasvae.models.base import LatentVariableModel
from kerasvae.models.vae import VAE

INFERENCE = ("top_down", "bottom_up")


def gaussian(params):
    """A diagonal Gaussian over the last axis from {"loc", "scale"}."""
    return tfd.MultivariateNormalDiag(loc=params["loc"], scale_diag=params["scale"])


def precision_weighted(bottom_up, top_down):
    """The Ladder VAE's combination of two Gaussian estimates of z_l, weighted by their precisions."""
    precision_up = tf.math.reciprocal(tf.square(bottom_up["scale"]))
    precision_down = tf.math.reciprocal(tf.square(top_down["scale"]))
    variance = tf.math.reciprocal(precision_up + precision_down)
    return {"loc": (bottom_up["loc"] * precision_up + top_down["loc"] * precision_down) * variance, "scale": tf.sqrt(variance)}


def apply_layer(layer, inputs, held=False):
    """layer(inputs) over any leading dims [..., features]; `held` reads the layer's weights under
    tf.stop_gradient (Keras's stateless_call), so gradients reach the inputs only: DReG's log q(z) with
    its parameters held but z live."""
    leading = tf.shape(inputs)[:-1]
    flat = tf.reshape(inputs, [-1, inputs.shape[-1]])
    if held:
        outputs, _ = layer.stateless_call([tf.stop_gradient(v.value) for v in layer.trainable_variables],
                                          [v.value for v in layer.non_trainable_variables], flat)
    else:
        outputs = layer(flat)
    reshape = lambda value: tf.reshape(value, tf.concat([leading, tf.shape(value)[1:]], axis=0))
    return {k: reshape(v) for k, v in outputs.items()} if isinstance(outputs, dict) else reshape(outputs)


@keras.saving.register_keras_serializable(package="kerasvae")
class HierarchicalVAE(VAE):
    """A VAE with L >= 2 Gaussian stochastic layers (see the module docstring for the model and the two
    inference structures), trained like `kv.VAE`: the ELBO, or with num_samples k > 1 the IWAE bound
    -log (1/k) sum_i p(x|z_1i) (p(z_i) / q(z_i|x))^w_t over the joint z_i = (z_1i, ..., z_Li) (DReG
    gradients with gradient_estimator="dreg"), w_t the KL warm-up weight.

    Args:
        encoder: keras layer. Torso x -> d_1, the features of the lowest level's posterior.
        decoder: keras layer. Torso z_1 -> features of the likelihood head.
        latent_dims: tuple of int. Sizes of z_1 (next to x) ... z_L (top), L >= 2.
        input_shape: tuple of int. Shape of one example.
        level_hidden: tuple of int. Widths of the MLPs between levels, both ways (bottom-up d_l or z_l ->
            features of level l+1, and top-down z_(l+1) -> p(z_l|z_(l+1))). Defaults to (256,).
        inference: str. "bottom_up" (IWAE's two-layer model) or "top_down" (Ladder VAE). Defaults to
            "bottom_up": it trained better in the screens of docs/models.md (0.9-4.0 nats of test NLL), its
            top level carrying most of the information where top-down inference left it nearly unused.
        activation: str. Activation of those MLPs. Defaults to "relu".
        latent_dim: int or None. The top's size, latent_dims[-1] (read back from a config).
        Everything else as `kv.VAE` (likelihood, prior of z_L, beta, num_samples, gradient_estimator,
        kl_warmup_steps, analytic_kl, min_scale, seed, ...); free bits are not supported.

    >>> import kerasvae as kv
    >>> model = kv.HierarchicalVAE(kv.networks.MLP((32,)), kv.networks.MLP((32,)), latent_dims=(4, 2),
    ...                            input_shape=(8, 8, 1), level_hidden=(16,))
    >>> model.sample(3, seed=0).shape, sorted(model.decode_noise_shapes())
    ((3, 8, 8, 1), ['noise_1'])
    """

    def __init__(self, encoder, decoder, latent_dims, input_shape, level_hidden=(256,), inference="bottom_up",
                 activation="relu", latent_dim=None, free_bits=0.0, min_scale=1e-4, **kwargs):
        self.latent_dims = tuple(int(d) for d in latent_dims)
        self.level_hidden = tuple(int(u) for u in level_hidden)
        self.inference = inference
        self.activation = activation
        if len(self.latent_dims) < 2:
            raise ValueError(f"A hierarchical VAE needs at least two stochastic layers, got latent_dims={latent_dims}.")
        if latent_dim is not None and int(latent_dim) != self.latent_dims[-1]:
            raise ValueError(f"latent_dim must be the top level's size {self.latent_dims[-1]}, got {latent_dim}.")
        if inference not in INFERENCE:
            raise ValueError(f"inference must be one of {INFERENCE}, got {inference!r}.")
        if free_bits:
            raise ValueError("HierarchicalVAE does not support free bits; use the KL warm-up (kl_warmup_steps).")
        posterior = kwargs.get("posterior")
        if posterior is not None and not isinstance(posterior, posteriors.GaussianPosterior):
            # log q, the KL terms and the draws read every level as the diagonal Gaussian `gaussian(params)`.
            raise ValueError(f"HierarchicalVAE's levels are diagonal Gaussians; posterior must be None or a "
                             f"kerasvae.posteriors.GaussianPosterior, got {type(posterior).__name__}.")
        levels = range(len(self.latent_dims) - 1)
        # Level l's layers (0-based, l < L-1; the top's posterior head is the VAE's posterior_head):
        # up_blocks[l]: d_l (top-down) or z_l (bottom-up) -> features of level l+1;
        # level_heads[l]: the posterior (bottom-up) or its bottom-up estimate (top-down) of z_l;
        # down_blocks[l] + prior_heads[l]: z_(l+1) -> p(z_l|z_(l+1)).
        self.up_blocks = [networks.MLP(self.level_hidden, activation=activation) for _ in levels]
        self.level_heads = [posteriors.GaussianPosterior(self.latent_dims[l], min_scale=min_scale) for l in levels]
        self.down_blocks = [networks.MLP(self.level_hidden, activation=activation) for _ in levels]
        self.prior_heads = [posteriors.GaussianPosterior(self.latent_dims[l], min_scale=min_scale) for l in levels]
        # The decoder torso reads z_1; latent_dim (prior, encode, decode, sample) is the top's.
        super().__init__(encoder, decoder, self.latent_dims[-1], input_shape, min_scale=min_scale,
                         decoder_input_shape=(self.latent_dims[0],), **kwargs)

    @property
    def num_levels(self):
        return len(self.latent_dims)

    # === The levels ===

    def conditional_params(self, level, z_above, training=False, held=False):
        """{"loc", "scale"} of p(z_level | z_(level+1)) for z_above [..., latent_dims[level+1]] (0-based)."""
        features = apply_layer(self.down_blocks[level], z_above, held)
        return apply_layer(self.prior_heads[level], features, held)

    def _top_head(self, features, held=False):
        return apply_layer(self.posterior_head, features, held)

    def _posterior_levels(self, x, draw, training=False, labels=None):
        """Runs the inference network level by level; `draw(level, params)` returns z_level from q's
        parameters (a sample, or the mean). Returns ([q params per level], [z per level], [p(z_l|z_(l+1))
        params per lower level, top-down only, else None], [bottom-up estimates, top-down only])."""
        L = self.num_levels
        features = self.condition(self.encoder(x, training=training), labels)
        q, z = [None] * L, [None] * L
        if self.inference == "bottom_up":
            for level in range(L):
                head = self.level_heads[level] if level < L - 1 else self.posterior_head
                q[level] = apply_layer(head, features)
                z[level] = draw(level, q[level])
                if level < L - 1:
                    features = apply_layer(self.up_blocks[level], z[level])
            return q, z, [None] * (L - 1), None
        deterministic = [features]
        for level in range(L - 1):
            deterministic.append(apply_layer(self.up_blocks[level], deterministic[-1]))
        estimates = [apply_layer(self.level_heads[level], deterministic[level]) for level in range(L - 1)]
        p = [None] * (L - 1)
        q[L - 1] = self._top_head(deterministic[L - 1])
        z[L - 1] = draw(L - 1, q[L - 1])
        for level in reversed(range(L - 1)):
            p[level] = self.conditional_params(level, z[level + 1], training)
            q[level] = precision_weighted(_broadcast_like(estimates[level], p[level]), p[level])
            z[level] = draw(level, q[level])
        return q, z, p, estimates

    def _held_posterior(self, level, q, z, estimates):
        """q(z_level | ...)'s parameters with every weight under tf.stop_gradient and the conditioning z live
        (DReG)."""
        L = self.num_levels
        if self.inference == "bottom_up":
            if level == 0:
                return {k: tf.stop_gradient(v) for k, v in q[0].items()}
            head = self.level_heads[level] if level < L - 1 else self.posterior_head
            return apply_layer(head, apply_layer(self.up_blocks[level - 1], z[level - 1], held=True), held=True)
        if level == L - 1:
            return {k: tf.stop_gradient(v) for k, v in q[level].items()}
        p_held = self.conditional_params(level, z[level + 1], held=True)
        estimate = {k: tf.stop_gradient(v) for k, v in estimates[level].items()}
        return precision_weighted(_broadcast_like(estimate, p_held), p_held)

    def joint_parts(self, x, num_samples, seed, training=False, shared_noise=False, labels=None, path=None):
        """k draws of z_1..z_L from q, with log p(x|z_1) [k, n], sum_l log p(z_l|z_(l+1)) + log p(z_L) and
        sum_l log q(z_l|...) [k, n], and KL(q || p) [n]: analytic per level where q and p condition on the
        same variables (the top; every level of top-down inference), Monte Carlo elsewhere.

        shared_noise=True gives every example the same standard-normal draws (the exported `score`).
        `path` (an objectives.PathGradientScale, DReG) wraps each z before the weights read it, and log q
        is then evaluated with its parameters held (weights under tf.stop_gradient, z live)."""
        seeds = tfp.random.split_seed(seed, n=self.num_levels)
        batch = 1 if shared_noise else tf.shape(x)[0]

        def draw(level, params):
            eps = tf.random.stateless_normal([num_samples, batch, self.latent_dims[level]], seed=seeds[level])
            return params["loc"] + params["scale"] * eps  # broadcasts q [n, d] or [k, n, d] over the k draws

        q, z, p, estimates = self._posterior_levels(self.encoder_inputs(x, training), draw, training, labels)
        L = self.num_levels
        if path is not None:
            z = [path(value) for value in z]
            q = [self._held_posterior(level, q, z, estimates) for level in range(L)]
            p = [None] * (L - 1)  # recomputed from the wrapped z below
        p = [self.conditional_params(l, z[l + 1], training) if p[l] is None else p[l] for l in range(L - 1)]
        q_dists = [gaussian(params) for params in q]
        p_dists = [gaussian(params) for params in p] + [self.prior]
        log_q = tf.add_n([dist.log_prob(value) for dist, value in zip(q_dists, z)])
        log_p = tf.add_n([dist.log_prob(value) for dist, value in zip(p_dists, z)])
        kl = 0.0
        for level in range(L):
            matched = level == L - 1 or self.inference == "top_down"
            if matched and self.analytic_kl is not False:
                kl_level = objectives.kl_divergence(q_dists[level], p_dists[level], z[level], analytic=self.analytic_kl)
                if kl_level.shape.rank == 2:  # conditioned on samples [k, n]: average over them
                    kl_level = tf.reduce_mean(kl_level, axis=0)
            else:
                kl_level = tf.reduce_mean(q_dists[level].log_prob(z[level]) - p_dists[level].log_prob(z[level]), axis=0)
            kl += kl_level
        log_px = self.likelihood.log_prob(LatentVariableModel.likelihood_params(self, z[0], training=training, labels=labels), x)
        return log_px, log_p, log_q, kl

    def loss_terms(self, x, training=False, labels=None):
        seed = stateless_seed(self.seed_generator)
        dreg = self.num_samples > 1 and training and self.gradient_estimator == "dreg"
        path = objectives.PathGradientScale() if dreg else None
        log_px, log_p, log_q, kl = self.joint_parts(x, self.num_samples, seed, training, labels=labels, path=path)
        reconstruction, mean_kl = -tf.reduce_mean(log_px), tf.reduce_mean(kl)
        weight = self.kl_weight(training)
        if self.num_samples > 1:
            log_weights = log_px + weight * (log_p - log_q)
            bound = objectives.dreg_iwae_bound(log_weights, path, weight) if dreg else objectives.iwae_bound(log_weights)
            loss = -tf.reduce_mean(bound)
        else:
            loss = reconstruction + weight * mean_kl
        return {"loss": loss, "reconstruction": reconstruction, "kl": mean_kl, "elbo": -(reconstruction + mean_kl)}

    def elbo_batch(self, x, num_samples, seed, shared_noise=False, labels=None):
        log_px, _, _, kl = self.joint_parts(x, num_samples, seed, shared_noise=shared_noise, labels=labels)
        return tf.reduce_mean(log_px, axis=0) - kl

    def log_importance_weights(self, x, k, seed, labels=None):
        """log w [k, n] over all levels (module docstring): the true importance weights of `log_likelihood`."""
        log_px, log_p, log_q, _ = self.joint_parts(x, k, seed, labels=labels)
        return objectives.log_importance_weights(log_px, log_p, log_q)

    def elbo_parts(self, *args, **kwargs):
        raise NotImplementedError("HierarchicalVAE computes its terms with joint_parts.")

    # === The deterministic paths: means of q going up, means of p (or given noise) coming down ===

    def posterior_params(self, x, training=False, labels=None):
        """{"loc", "scale"} of q(z_L|x) and {"loc_l", "scale_l"} of each lower level l = 1..L-1 along the
        posterior-mean path: each level's q conditioned on the means of the levels it depends on (exact
        where a level depends on x alone: z_1 under bottom-up inference, z_L under top-down). Under
        bottom-up inference the top's is q(z_L | z_(L-1) = its mean), whose mixture over q(z_(L-1)|x) is
        the marginal q(z_L|x): what `encode`, the latent features and the applications then use."""
        q, _, _, _ = self._posterior_levels(x, lambda level, params: params["loc"], training, labels)
        named = dict(q[-1])
        for level, params in enumerate(q[:-1], start=1):
            named.update({f"loc_{level}": params["loc"], f"scale_{level}": params["scale"]})
        return named

    def likelihood_params(self, z, training=False, labels=None, noise=None, temperature=1.0):
        """p(x|z_1)'s parameters for a top latent z [..., latent_dim], descending through
        z_l = mu_l(z_(l+1)) + temperature * sigma_l(z_(l+1)) * noise_l; a missing noise_l is 0 (the means).

        Args:
            noise: dict or None. {"noise_l": [..., latent_dims[l-1]]} standard-normal noise of level l < L.
        """
        z = tf.convert_to_tensor(z, tf.float32)
        for level in reversed(range(self.num_levels - 1)):
            params = self.conditional_params(level, z, training)
            eps = (noise or {}).get(f"noise_{level + 1}")
            if eps is None:
                z = params["loc"]
            else:
                z = params["loc"] + temperature * params["scale"] * tf.convert_to_tensor(eps, tf.float32)
        return super().likelihood_params(z, training=training, labels=labels)

    def _lowest_mean(self, x, training=False, labels=None):
        _, z, _, _ = self._posterior_levels(x, lambda level, params: params["loc"], training, labels)
        return z[0]

    def call(self, x, training=False, labels=None):
        """The reconstruction E[p(x | z_1)] with every z_l at its posterior mean."""
        params = super().likelihood_params(self._lowest_mean(x, training, labels), training=training, labels=labels)
        return self.likelihood.mean(params)

    def reconstruction_log_prob(self, x, labels=None):
        """log p(x | z_1 = the posterior-mean path's z_1) per example."""
        return self.likelihood.log_prob(super().likelihood_params(self._lowest_mean(x, labels=labels), labels=labels), x)

    def sample_batch(self, n, z_seed, x_seed, mean, temperature, labels=None):
        """n ancestral draws: z_L ~ p(z_L), z_l ~ p(z_l|z_(l+1)) (the noise of every level scaled by
        `temperature`), then E[x|z_1] or x ~ p(x|z_1); stateless in `z_seed`, `x_seed`."""
        seeds = tfp.random.split_seed(z_seed, n=self.num_levels)
        prior = self.prior
        z = prior.sample(n, seed=seeds[-1])
        z = prior.mean() + temperature * (z - prior.mean())
        shapes = self.decode_noise_shapes().items()
        noise = {name: tf.random.stateless_normal([n, *shape], seed=seeds[i]) for i, (name, shape) in enumerate(shapes)}
        params = self.likelihood_params(z, labels=labels, noise=noise, temperature=temperature)
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params, x_seed)

    # === What it exports ===

    def decode_noise_shapes(self):
        """{"noise_l": (latent_dims[l-1],)} for the lower levels l = 1..L-1: the exported `decode`'s noise."""
        return {f"noise_{level + 1}": (dim,) for level, dim in enumerate(self.latent_dims[:-1])}

    def encode_outputs(self, x, labels=None):
        """loc, scale of q(z_L|x) and loc_l, scale_l of each lower level along the posterior-mean path."""
        return self.posterior_params(x, labels=labels)

    def decode_outputs(self, z, labels=None, **noise):
        """{"mean", likelihood parameters} of p(x|z_1) for a top z and the lower levels' noise (noise_l)."""
        params = self.likelihood_params(z, labels=labels, noise=noise)
        return {"mean": self.likelihood.mean(params), **params}

    def get_config(self):
        config = super().get_config()
        config.pop("free_bits")
        return {**config, "latent_dims": self.latent_dims, "level_hidden": self.level_hidden, "inference": self.inference,
                "activation": self.activation}


def _broadcast_like(params, target):
    return {k: tf.broadcast_to(v, tf.shape(target[k])) for k, v in params.items()}
