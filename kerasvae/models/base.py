"""The base model every family shares: the data flow x -> q(z|x) -> z -> p(x|z), Keras's train/test steps,
metric trackers, serialization and the probabilistic API (encode, decode, prior, reconstruct, sample,
elbo, log_likelihood, anomaly_score). Families define `loss_terms`, and `elbo` where theirs differs."""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kerasvae import _keras_compat, calibration, objectives, optimizers, recipes
from kerasvae import callbacks as kv_callbacks
from kerasvae._tfp import stateless_seed

# compile()'s default on one device: train steps per call into TensorFlow (see compile).
STEPS_PER_EXECUTION = 10
LAYER_ARGUMENTS = ("encoder", "decoder", "likelihood", "prior", "posterior", "sparsity", "corruption")


def serialize(obj):
    return None if obj is None else keras.saving.serialize_keras_object(obj)


def batch_share(x):
    """n_r / sum_r n_r: this replica's share of the global batch in a tf.distribute strategy (1 without one)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 1.0
    size = tf.cast(tf.shape(x)[0], tf.float32)
    return tf.math.divide_no_nan(size, context.all_reduce("SUM", size))


def all_replicas(t):
    """t [batch, ...] concatenated over the replicas of a tf.distribute strategy, i.e. over the global batch
    (t itself without one). Statistics that update state (EMA codebooks, moving moments) take it, so every
    replica applies the same update and mirrored variables stay one value."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return t
    return context.all_gather(t, axis=0)


def _multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and _keras_compat.in_multi_worker_mode(strategy)



def run_steps(x, batch_size, epochs, steps_per_epoch=None, validation_split=0.0):
    """Optimizer steps of a `fit(x, batch_size=..., epochs=..., steps_per_epoch=...)` call, or None where they
    are unknown (a generator, a dataset of unknown or infinite length)."""
    if steps_per_epoch is None:
        if isinstance(x, tf.data.Dataset):
            steps_per_epoch = int(x.cardinality())
            if steps_per_epoch < 0:
                return None
        elif hasattr(x, "shape") and len(getattr(x, "shape", ())):
            examples = int(x.shape[0] * (1 - validation_split))
            steps_per_epoch = math.ceil(examples / (batch_size or 32))  # Keras's default batch for arrays
        else:
            return None
    return int(epochs) * int(steps_per_epoch)


def batch_function(method):
    """`method(x, *args, labels=None, **kwargs)` compiled once for any batch size.

    `_map_batches` ends on a smaller batch; a trace per batch size and per model adds up, across the
    models of one script, to TensorFlow's frequent-retracing warning. Tracing on an unknown batch
    dimension first lets every batch reuse that one trace (a call dispatches to a trace whose input types
    are a supertype of its own); `get_concrete_function` is a cache lookup after the first call.
    """
    compiled = tf.function(method, reduce_retracing=True)

    def call(x, *args, labels=None, **kwargs):
        if labels is not None:
            kwargs["labels"] = labels
        relaxed = {key: tf.TensorSpec([None], value.dtype) if key == "labels" else value for key, value in kwargs.items()}
        compiled.get_concrete_function(tf.TensorSpec([None, *x.shape[1:]], x.dtype), *args, **relaxed)
        return compiled(x, *args, **kwargs)

    return call

class LatentVariableModel(keras.Model):
    """Base class: encoder torso + posterior head, prior, decoder torso + likelihood head.

    Subclasses implement `loss_terms(x, training)`, returning a dict of scalars with at least "loss";
    every entry is tracked as a metric of the same name in `fit` and `evaluate`.

    Args:
        encoder: keras.layers.Layer. Torso mapping x to features.
        decoder: keras.layers.Layer. Torso mapping z to features (a vector, or a feature map with the
            input's height and width).
        latent_dim: int. Dimension of z.
        input_shape: tuple of int. Shape of one example, e.g. (28, 28, 1).
        likelihood: kerasvae.likelihoods.Likelihood. Head for p(x|z).
        posterior: a posterior head from kerasvae.posteriors.
        prior: a prior layer from kerasvae.priors. One with `needs_posterior` is handed `self.posterior`.
        metric_names: tuple of str. Names of the terms `loss_terms` returns.
        seed: int or None. Seeds training noise (reparameterization, corruption). Defaults to None.
        eval_batch_size: int. Batch size of the API methods on large inputs. Defaults to 1024.
        anomaly_calibration: kerasvae.calibration.AnomalyCalibration, its config dict, or None. The anomaly
            threshold set by `kerasvae.apps.AnomalyDetector.fit`, saved with the model and served by the
            exported `score` signature as `is_anomaly`. Defaults to None (not calibrated). The loose
            `anomaly_threshold`, `anomaly_method` and `anomaly_num_samples` arguments of models saved before
            it are still read.
        recipe: kerasvae.recipes.Recipe, its config dict, or None. How the model is meant to be trained:
            `compile()` without an optimizer builds the recipe's, and `fit` fits the recipe's step schedules
            to the run. The presets set theirs; None is Adam at 1e-3 with nothing else.
    """

    def __init__(
        self,
        encoder,
        decoder,
        latent_dim,
        input_shape,
        likelihood,
        posterior,
        prior,
        metric_names=("loss", "reconstruction"),
        seed=None,
        eval_batch_size=1024,
        anomaly_calibration=None,
        recipe=None,
        anomaly_threshold=None,
        anomaly_method=None,
        anomaly_num_samples=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.recipe = recipes.get(recipe)
        self.anomaly_calibration = calibration.get(anomaly_calibration, anomaly_threshold, anomaly_method, anomaly_num_samples)
        self.latent_dim = int(latent_dim)
        self.data_shape = tuple(int(d) for d in input_shape)
        self.seed = seed
        self.eval_batch_size = int(eval_batch_size)
        self.encoder = encoder
        self.posterior_head = posterior
        self.decoder = decoder
        self.likelihood = likelihood
        self.likelihood.set_event_shape(self.data_shape)
        self.prior_layer = prior
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in metric_names}
        # Compiled per instance: a tf.function on the class would retrace for every model.
        self._compiled = {
            name: batch_function(getattr(self, name))
            for name in ("_reconstruct_batch", "reconstruction_log_prob", "log_importance_weights", "elbo_batch")
        }
        self._build_now()

    def _build_now(self):
        # Build every weight at construction, as a functional model would: `.keras` loading and
        # distribution strategies then find the full variable set without a first call.
        labels = None if self.num_classes is None else tf.zeros([1], tf.int32)
        z = self.posterior_params(tf.zeros((1, *self.data_shape)), labels=labels)["loc"]
        self.likelihood_params(z, labels=labels)
        self.built = True

    # === The data flow ===

    num_classes = None  # conditional families set the number of label classes

    def condition(self, inputs, labels):
        """Joins labels to the encoder's features and to z before the decoder; unconditional models pass
        inputs through."""
        return inputs

    def posterior_params(self, x, training=False, labels=None):
        """Named parameters of q(z|x), e.g. {"loc", "scale"}, each [batch, latent_dim]."""
        features = self.condition(self.encoder(x, training=training), labels)
        return self.posterior_head(features, training=training)

    def likelihood_params(self, z, training=False, labels=None):
        """Named parameters of p(x|z) for z of shape [*sample_shape, latent_dim]; each parameter gets the
        same leading dims followed by the input shape. Labels [batch] broadcast over the sample dims."""
        z = tf.convert_to_tensor(z, tf.float32)
        leading = tf.shape(z)[:-1]
        if labels is not None:
            labels = tf.reshape(tf.broadcast_to(labels, leading), [-1])
        features = self.decoder(self.condition(tf.reshape(z, [-1, self.latent_dim]), labels), training=training)
        params = self.likelihood(features, training=training)
        return {
            name: tf.reshape(value, tf.concat([leading, tf.shape(value)[1:]], axis=0)) for name, value in params.items()
        }

    def posterior(self, x, training=False, labels=None):
        """q(z|x) for a batch tensor x (no input checks; `encode` is the checked public form)."""
        return self.posterior_head.distribution(self.posterior_params(x, training=training, labels=labels))

    def encode(self, x, labels=None):
        """q(z|x): a tfd.Distribution with batch_shape [n] and event_shape [latent_dim]."""
        x = self._check_inputs(x)
        return self.posterior(x, labels=self._check_labels(labels, len(x)))

    def decode(self, z, labels=None):
        """p(x|z): a tfd.Distribution with event_shape equal to the input shape. Discrete 8-bit likelihoods
        (`logistic`, `categorical`) live on {0, ..., 255}; `likelihood.mean` maps back to [0, 1]."""
        z = self._check_latents(z)
        labels = self._check_labels(labels, z.shape[-2] if z.shape.rank > 1 else 1)
        return self.likelihood.distribution(self.likelihood_params(z, labels=labels))

    @property
    def prior(self):
        """p(z): a tfd.Distribution with event_shape [latent_dim]."""
        if getattr(self.prior_layer, "needs_posterior", False):
            # Priors built from q(z|x) (VampPrior) get it per call; storing the model on its own prior
            # layer would make a cycle in Keras's tracking.
            return self.prior_layer.distribution(posterior=self.posterior)
        return self.prior_layer.distribution()

    def proposal(self, x, labels=None):
        """The distribution that importance sampling draws z from for `log_likelihood`: q(z|x)."""
        return self.posterior(x, labels=labels)

    def call(self, x, training=False, labels=None):
        """The reconstruction E[p(x | z = mean of q(z|x))], so `model(x)` and `predict` work as expected."""
        z = self.posterior_params(x, training=training, labels=labels)["loc"]
        return self.likelihood.mean(self.likelihood_params(z, training=training, labels=labels))

    # === Training: Keras's steps around the family's loss_terms ===

    def loss_terms(self, x, training=False, labels=None):
        raise NotImplementedError

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, optimizer=None, steps_per_execution=None, **kwargs):
        """Keras's `compile`, with the model's recipe and two defaults chosen for speed. No optimizer means
        the recipe's (`self.recipe.optimizer()`: kerasvae's fused Adam at the recipe's learning rate, with
        its weight average); the string "adam" is the fused Adam at 1e-3 (kerasvae.optimizers.Adam: Keras's
        Adam, with its update in one TensorFlow kernel per variable). `steps_per_execution` defaults to 10
        on one device, not Keras's 1: `fit` runs
        ten train steps per call into TensorFlow, which saves most of Keras's per-step Python work (about a
        fifth of a step for the classic MLP VAE on a CPU, benchmarks/train_speed.py). Batch-level callbacks
        then see every tenth batch; pass `steps_per_execution=1` for one call per batch. Under a strategy
        with several replicas or workers it stays 1: TensorFlow 2.21 cannot run the replicas' collectives
        (the global batch's all-reduce) inside the loop Keras builds for several steps. The loss is the model's own:
        leave `loss` unset."""
        if steps_per_execution is None:
            strategy = self.distribute_strategy
            one_device = strategy.num_replicas_in_sync == 1 and not _multi_worker(strategy)
            steps_per_execution = STEPS_PER_EXECUTION if one_device else 1
        optimizer = self.recipe.optimizer() if optimizer is None else optimizers.get(optimizer)
        super().compile(optimizer=optimizer, steps_per_execution=steps_per_execution, **kwargs)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, callbacks=None, steps_per_epoch=None, **kwargs):
        """Keras's `fit`, after fitting the model's step schedules to the run (`plan_run`) and, when the
        optimizer averages the weights, validating on the average (`kv.callbacks.ValidateAveragedWeights`),
        so the `val_*` metrics describe the model `fit` leaves behind."""
        steps = run_steps(x, batch_size, epochs, steps_per_epoch, kwargs.get("validation_split", 0.0))
        if steps:
            self.plan_run(steps)
        callbacks = list(callbacks or [])
        if getattr(self.optimizer, "use_ema", False) and not any(
                isinstance(c, kv_callbacks.ValidateAveragedWeights) for c in callbacks):
            callbacks.append(kv_callbacks.ValidateAveragedWeights())
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks,
                           steps_per_epoch=steps_per_epoch, **kwargs)

    def plan_run(self, steps):
        """Called by `fit` with the run's number of optimizer steps (epochs x steps per epoch). Families with
        schedules counted in steps fit them to the run here; the base has none."""

    def compile_from_config(self, config):
        # What load_model calls. Keras's own version skips models that override compile (ours only picks
        # the default optimizer), which would load them uncompiled, without their optimizer's state.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            terms = self.loss_terms(x, training=True, labels=self._fit_labels(y))
            loss = terms["loss"] + tf.add_n(self.losses) if self.losses else terms["loss"]
            # Optimizers sum gradients over replicas. Weighting each replica's mean loss by its share of the
            # global batch makes the sum the gradient of the global batch's mean loss, as on one device, also
            # when the last batch splits unevenly (a replica left without examples adds nothing).
            scaled_loss = self.optimizer.scale_loss(loss * batch_share(x))
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._track(terms, x)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._track(self.loss_terms(x, training=False, labels=self._fit_labels(y)), x)

    def _fit_labels(self, y):
        if self.num_classes is None:
            return None  # an unconditional model ignores the labels of a labelled dataset
        if y is None:
            raise ValueError(f"{type(self).__name__} trains on (x, y): pass integer labels, fit(x, y).")
        return tf.reshape(tf.cast(y, tf.int32), [-1])

    def _track(self, terms, x):
        batch_size = tf.cast(tf.shape(x)[0], tf.float32)
        for name, value in terms.items():
            # A replica without examples (the end of a sharded epoch) has NaN means; weight 0 must add 0.
            self.trackers[name].update_state(tf.where(batch_size > 0, value, 0.0), sample_weight=batch_size)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    # === Multi-worker training: keras-team/keras#20585 ===
    # Keras 3.15's TensorFlow trainer fails under MultiWorkerMirroredStrategy in two places:
    # `_maybe_symbolic_build` draws one batch to build from and reduces it with `strategy.reduce("MEAN",
    # batch)`, a nest that the collective strategy's `reduce` cannot take (MirroredStrategy maps over it,
    # so only the multi-worker case fails), and the train/test functions reduce each step's scalar logs
    # with `strategy.reduce("MEAN", v, axis=0)`, which has no axis 0 to reduce. The overrides below build
    # without a batch and average the logs over replicas with `axis=None`.

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Every weight exists from the constructor and the losses and metrics are the model's own, so only
        # the optimizer is left to build, in the strategy's scope. Drawing no batch also leaves the
        # pipeline's reshuffled orders to the training epochs, as without a strategy.
        # A private Keras hook, as is the strategy it reads: both checked by kerasvae._keras_compat.
        strategy = _keras_compat.creation_strategy(self)
        if strategy is not None and self.optimizer is not None and not self.optimizer.built:
            with strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def make_train_function(self, force=False):
        return self._step_function("train_function", self.train_step, super().make_train_function, force)

    def make_test_function(self, force=False):
        return self._step_function("test_function", self.test_step, super().make_test_function, force)

    def _step_function(self, attribute, step, make_keras_function, force):
        """Keras's train/test function, or under the multi-worker strategy ours around `step`, cached in
        `attribute` as Keras caches its own."""
        if not _multi_worker(self.distribute_strategy):
            return make_keras_function(force)
        if getattr(self, attribute) is None or force:
            setattr(self, attribute, self._multi_worker_function(step))
        return getattr(self, attribute)

    def _multi_worker_function(self, step):
        strategy = self.distribute_strategy
        if self.jit_compile and not self.run_eagerly:
            if not tf.config.list_logical_devices("GPU"):
                raise ValueError(
                    "XLA cannot compile the multi-worker strategy's collectives on CPUs (TensorFlow has no XLA "
                    "collectives for CPU devices): train without --xla (jit_compile=False), or on GPUs."
                )
            # XLA compiles the replica's step, as Keras's trainer does; reading the distributed iterator and
            # reducing the logs across workers around it are ops that XLA cannot compile.
            step = tf.function(step, reduce_retracing=True, jit_compile=True)

        def one_step(iterator):
            # get_next on a distributed iterator is synchronous across workers: a worker whose shard ran
            # out gets empty batches until every worker has, then all raise OutOfRangeError together.
            logs = strategy.run(step, args=(iterator.get_next(),))
            return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), logs)

        if not self.run_eagerly:
            one_step = tf.function(one_step, reduce_retracing=True)

        def function(iterator):
            for _ in range(self.steps_per_execution):
                logs = one_step(iterator)
            return logs

        return function

    # === The probabilistic API (numpy in, numpy out, batched) ===

    def reconstruct(self, x, labels=None):
        """Mean of p(x | z = mean of q(z|x)), shape of x."""
        x = self._check_inputs(x)
        return self._map_batches(self._compiled["_reconstruct_batch"], x, labels=self._check_labels(labels, len(x)))

    def sample(self, n, seed=None, mean=True, temperature=1.0, labels=None):
        """n draws from the model, shape [n, *input_shape]: z ~ p(z), then E[x|z] (mean=True, the usual image)
        or x ~ p(x|z). The same seed gives the same output.

        Args:
            n: int. Number of samples.
            seed: int, pair of ints or None. Stateless seed. Defaults to None (fresh randomness).
            mean: bool. Return E[x|z] instead of a draw from p(x|z). Defaults to True.
            temperature: float. Scales z around the prior mean (< 1 gives smoother, more typical samples).
            labels: int or int array [n]. The class of each sample, for conditional models.
        """
        seed = stateless_seed(self.seed_generator if seed is None else seed)
        z_seed, x_seed = tfp.random.split_seed(seed, n=2)
        labels = self._check_labels(labels, n)
        return self.sample_batch(int(n), z_seed, x_seed, bool(mean), float(temperature), labels).numpy()

    def sample_batch(self, n, z_seed, x_seed, mean, temperature, labels=None):
        """`sample` on tensors, in graph (the exported `sample` signature): n images from z ~ p(z) drawn
        with the stateless `z_seed`, and x ~ p(x|z) with `x_seed` unless `mean`."""
        prior = self.prior
        z = prior.sample(n, seed=z_seed)
        z = prior.mean() + temperature * (z - prior.mean())
        params = self.likelihood_params(z, labels=labels)
        if mean:
            return self.likelihood.mean(params)
        return self.likelihood.distribution(params).sample(seed=x_seed)

    def elbo(self, x, num_samples=1, seed=None, labels=None):
        """Per-example evidence lower bound in nats, shape [n]: E_q[log p(x|z)] - KL(q(z|x) || p(z))."""
        x = self._check_inputs(x)
        elbo_batch = self._compiled["elbo_batch"]
        return self._map_batches(
            lambda xb, lb=None: elbo_batch(xb, num_samples, self._seed(seed), labels=lb),
            x,
            labels=self._check_labels(labels, len(x)),
        )

    def log_likelihood(self, x, num_samples=1000, seed=None, chunk_size=None, labels=None):
        """Per-example importance-weighted estimate of log p(x) in nats, shape [n] (see objectives).

        Args:
            num_samples: int. Importance samples per example; the bias shrinks as it grows.
            chunk_size: int or None. Samples drawn at once; defaults to what keeps about 2^16 decoded
                examples in memory.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        x = self._check_inputs(x)
        labels = self._check_labels(labels, len(x))
        batch = min(self.eval_batch_size, 256)
        chunk = chunk_size or max(1, min(num_samples, (1 << 16) // batch))
        seeds = iter(tfp.random.split_seed(self._seed(seed), n=math.ceil(len(x) / batch) * math.ceil(num_samples / chunk) + 1))

        def batch_log_likelihood(xb, lb=None):
            return objectives.importance_weighted_log_likelihood(
                lambda k: self._compiled["log_importance_weights"](xb, k, next(seeds), labels=lb), num_samples, chunk
            )

        return self._map_batches(batch_log_likelihood, x, batch_size=batch, labels=labels)

    def anomaly_score(self, x, method="elbo", num_samples=1, labels=None):
        """Per-example anomaly score in nats, higher = more anomalous.

        Args:
            method: str. "elbo": -ELBO averaged over `num_samples` posterior samples (what the exported
                `score` signature serves); "nll": -log p(x), the importance-weighted estimate with
                `num_samples` samples; "reconstruction": -log p(x | z = mean of q(z|x)), deterministic,
                and the most sensitive to a few corrupted elements (no KL, no sampling noise).
            num_samples: int. Samples for "elbo" and "nll". Defaults to 1.
        """
        if method == "elbo":
            return -self.elbo(x, num_samples=num_samples, labels=labels)
        if method == "nll":
            return -self.log_likelihood(x, num_samples=num_samples, labels=labels)
        if method == "reconstruction":
            x = self._check_inputs(x)
            return -self._map_batches(self._compiled["reconstruction_log_prob"], x, labels=self._check_labels(labels, len(x)))
        raise ValueError(f"Unknown anomaly score method {method!r}; expected 'elbo', 'nll' or 'reconstruction'.")

    def score_batch(self, x, seed, labels=None):
        """Per-example scores of a batch tensor, as the exported `score` signature serves them: elbo (one
        posterior sample from the stateless `seed`, the same standard-normal draw for every example, so a
        score is deterministic and does not depend on how requests are batched), reconstruction_error (sum
        of squared errors of the reconstruction) and anomaly_score (-elbo)."""
        elbo = self.elbo_batch(x, 1, seed, shared_noise=True, labels=labels)
        reconstruction = self(x, training=False, labels=labels)
        error = tf.reduce_sum(tf.reshape(tf.square(x - reconstruction), [tf.shape(x)[0], -1]), axis=-1)
        return {"elbo": elbo, "reconstruction_error": error, "anomaly_score": -elbo}

    def _reconstruct_batch(self, x, labels=None):
        return self(x, training=False, labels=labels)

    # === What a family computes and exports, on tensors: read by kerasvae.export and kerasvae.apps ===

    @property
    def anomaly_threshold(self):
        """The calibrated threshold (`anomaly_calibration.threshold`), or None."""
        return None if self.anomaly_calibration is None else self.anomaly_calibration.threshold

    @property
    def anomaly_method(self):
        return None if self.anomaly_calibration is None else self.anomaly_calibration.method

    @property
    def anomaly_num_samples(self):
        return 1 if self.anomaly_calibration is None else self.anomaly_calibration.num_samples

    # (num_latents, num_categories) for families whose latents are discrete codes that `codes_to_latents`
    # turns into decoder inputs (VQ-VAE, discrete VAEs): export adds a `decode_codes` signature, and the
    # applications that move through a continuous z refuse them. None: z is continuous.
    code_space = None

    def encode_outputs(self, x, labels=None):
        """The exported `encode` signature's outputs for a batch tensor, named by the posterior head
        (`Posterior.encode_outputs`): {"loc", "scale"} of a Gaussian q(z|x) (a deterministic model's scale
        is zero); codes and their latents for discrete ones."""
        return self.posterior_head.encode_outputs(self.posterior_params(x, labels=labels))

    def decode_outputs(self, z, labels=None):
        """The exported `decode` signature's outputs: {"mean": E[x|z], and the likelihood's parameters}."""
        params = self.likelihood_params(z, labels=labels)
        return {"mean": self.likelihood.mean(params), **params}

    def decoder_inputs(self, x, seed=0, labels=None):
        """What the decoder is fed for data x, as numpy [n, latent_dim]: draws from q(z|x), so their mixture
        over x is the aggregate posterior. TFLite int8 calibration and fidelity checks use them as traffic."""
        return np.asarray(self.encode(x, labels=labels).sample(seed=(seed, 1)), np.float32)

    def latent_features(self, x, labels=None):
        """Features of x as numpy [n, latent_dim]: the posterior means."""
        return np.asarray(self.encode(x, labels=labels).mean(), np.float32)

    def reconstruction_log_prob(self, x, labels=None):
        """log p(x | z = mean of q(z|x)) per example of a batch tensor."""
        code = self.posterior_params(x, labels=labels)["loc"]
        return self.likelihood.log_prob(self.likelihood_params(code, labels=labels), x)

    def log_importance_weights(self, x, k, seed, labels=None):
        """Log importance weights [k, batch] of k draws from the proposal (kerasvae.objectives), whose
        logsumexp over k, minus log k, estimates log p(x)."""
        q = self.proposal(x, labels=labels)
        z = q.sample(k, seed=seed)
        log_px_z = self.likelihood.log_prob(self.likelihood_params(z, labels=labels), x)
        return objectives.log_importance_weights(log_px_z, self.prior.log_prob(z), q.log_prob(z))

    def elbo_batch(self, x, num_samples, seed, shared_noise=False, labels=None):
        """The ELBO [batch] of a batch tensor averaged over `num_samples` posterior draws from the stateless
        `seed`; `shared_noise` gives every example the same standard-normal draw, so an example's value does
        not depend on its batch (the exported `score` signature)."""
        raise NotImplementedError

    def _seed(self, seed):
        return stateless_seed(self.seed_generator if seed is None else seed)

    def _map_batches(self, fn, x, batch_size=None, labels=None):
        batch_size = batch_size or self.eval_batch_size
        outputs = [
            np.asarray(fn(tf.constant(x[i : i + batch_size]), *(() if labels is None else (tf.constant(labels[i : i + batch_size]),))))
            for i in range(0, len(x), batch_size)
        ]
        if not outputs:  # an empty batch: probe one dummy example (and label) for the output's shape
            probe = fn(tf.zeros((1, *x.shape[1:])), *(() if labels is None else (tf.zeros([1], tf.int32),)))
            return np.zeros((0, *np.shape(probe)[1:]), np.float32)
        return np.concatenate(outputs)

    # === Input checks ===

    def _check_inputs(self, x):
        """x as a float32 array [batch, *input_shape] of finite values in the likelihood's support; a
        ValueError naming what was expected and what came otherwise."""
        expected = f"[batch, {', '.join(map(str, self.data_shape))}]"
        try:
            x = np.asarray(x)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"Expected inputs of shape {expected}, got a ragged value ({error}).") from None
        if x.dtype.kind not in "biuf":
            raise ValueError(f"Expected real-valued inputs (float32, or any int or float dtype), got dtype {x.dtype}.")
        if x.ndim != len(self.data_shape) + 1 or x.shape[1:] != self.data_shape:
            raise ValueError(f"Expected inputs of shape {expected}, got {list(x.shape)}.")
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, reported just below
            x = x.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x)):
            raise ValueError("Inputs contain NaN or infinite values (as float32); expected finite values.")
        self.likelihood.validate(x)
        return x

    def _check_labels(self, labels, n):
        """None for unconditional models; int32 labels [n] in [0, num_classes) for conditional ones (one int
        is repeated n times). n, the number of examples, must be an int >= 0."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"Expected a number of examples n >= 0 (an int), got {n!r}.")
        if self.num_classes is None:
            if labels is not None:
                raise ValueError(f"{type(self).__name__} is not conditional; it takes no labels.")
            return None
        if labels is None:
            raise ValueError(f"{type(self).__name__} needs labels: integers in [0, {self.num_classes}).")
        labels = np.asarray(labels)
        if labels.ndim == 0:
            labels = np.full([n], labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"Expected {n} integer labels of shape [{n}], got {labels.dtype} of shape {list(labels.shape)}.")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"Labels must be in [0, {self.num_classes}), got [{labels.min()}, {labels.max()}].")
        return labels.astype(np.int32)

    def _check_latents(self, z):
        """z as a float32 tensor [..., latent_dim] of finite values; a ValueError otherwise."""
        try:
            z = np.asarray(z)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"Expected latents of shape [..., {self.latent_dim}], got a ragged value ({error}).") from None
        if z.dtype.kind not in "biuf":
            raise ValueError(f"Expected real-valued latents (float32, or any int or float dtype), got dtype {z.dtype}.")
        if z.ndim < 1 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"Expected latents of shape [..., {self.latent_dim}], got {list(z.shape)}.")
        with np.errstate(over="ignore"):
            z = z.astype(np.float32, copy=False)
        if not np.all(np.isfinite(z)):
            raise ValueError("Latents contain NaN or infinite values (as float32); expected finite values.")
        return tf.constant(z)

    # === Serialization ===

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "encoder": serialize(self.encoder),
            "decoder": serialize(self.decoder),
            "latent_dim": self.latent_dim,
            "input_shape": self.data_shape,
            "likelihood": serialize(self.likelihood),
            "seed": self.seed,
            "eval_batch_size": self.eval_batch_size,
            "anomaly_calibration": None if self.anomaly_calibration is None else self.anomaly_calibration.get_config(),
            "recipe": self.recipe.get_config(),
        }
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in LAYER_ARGUMENTS:
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)
