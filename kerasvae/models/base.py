"""The base model every family shares: its construction, the data flow x -> q(z|x) -> z -> p(x|z) and its
serialization. The rest comes from one mixin per concern: training steps (models/training_steps.py),
multi-worker training (multi_worker.py), the probabilistic API and what a family exports
(probabilistic.py), and input checks (input_checks.py). Families define `loss_terms`, and `elbo_batch`
where theirs differs."""

import contextlib
import warnings

import keras
import tensorflow as tf

from kerasvae import _keras_compat, calibration, likelihoods, recipes
from kerasvae.models.input_checks import InputChecks
from kerasvae.models.multi_worker import MultiWorkerSteps
from kerasvae.models.probabilistic import ProbabilisticAPI, batch_function
from kerasvae.models.training_steps import TrainingSteps, training_sample

LAYER_ARGUMENTS = ("encoder", "decoder", "likelihood", "prior", "posterior", "sparsity", "corruption")


def serialize(obj):
    return None if obj is None else keras.saving.serialize_keras_object(obj)


class LatentVariableModel(TrainingSteps, MultiWorkerSteps, ProbabilisticAPI, InputChecks, keras.Model):
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
        seed: int or None. Seeds training noise (reparameterization; a corruption layer has its own seed,
            which the presets set from this one). Defaults to None.
        eval_batch_size: int. Batch size of the API methods on large inputs. Defaults to 1024.
        anomaly_calibration: kerasvae.calibration.AnomalyCalibration, its config dict, or None. The anomaly
            threshold set by `kerasvae.apps.AnomalyDetector.fit`, saved with the model and served by the
            exported `score` signature as `is_anomaly`. Defaults to None (not calibrated). The loose
            `anomaly_threshold`, `anomaly_method` and `anomaly_num_samples` arguments of models saved before
            it are still read.
        recipe: kerasvae.recipes.Recipe, its config dict, or None. How the model is meant to be trained:
            `compile()` without an optimizer builds the recipe's, and `fit` fits the recipe's step schedules
            to the run. The presets set theirs; None is Adam at 1e-3 with nothing else.
        decoder_input_shape: tuple of int or None. The shape the decoder takes z in (a VQ-VAE's code grid);
            None is the flat (latent_dim,).
        corruption: a kerasvae.corruptions layer or None. In training the encoder sees corrupted inputs and
            the loss scores the clean ones: a denoising autoencoder, or for the variational families the
            denoising VAE (Im et al. 2017), whose bound E_p(x~|x) E_q(z|x~)[log p(x, z) / q(z|x~)] is still
            a lower bound on log p(x). Evaluation, the API and exports see the inputs as given. Defaults to
            None.
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
        decoder_input_shape=None,
        corruption=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.recipe = recipes.get(recipe)
        self.anomaly_calibration = calibration.get(anomaly_calibration, anomaly_threshold, anomaly_method, anomaly_num_samples)
        self.latent_dim = int(latent_dim)
        self.decoder_input_shape = tuple(decoder_input_shape or (self.latent_dim,))
        self.data_shape = tuple(int(d) for d in input_shape)
        self.seed = seed
        self.corruption = corruption
        self.eval_batch_size = int(eval_batch_size)
        self.encoder = encoder
        self.posterior_head = posterior
        self.decoder = decoder
        self.likelihood = likelihood
        self.likelihood.set_event_shape(self.data_shape)
        self.prior_layer = prior
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in metric_names}
        self._compile_batch_functions()
        self._build_now()

    def prepare_for_training_data(self, x):
        """What a fresh model takes from a sample of its training data x (anything `fit` takes) before its
        first step: an "auto" likelihood's choice (`choose_likelihood`), a check of the data against the
        likelihood, a VampPrior's pseudo-inputs where they start from data. A Python generator cannot be
        looked at without using it up: the model then keeps its defaults and warns where one of them may
        not suit the data."""
        sample = training_sample(x)
        if sample is not None:
            self.choose_likelihood(sample)
            self.likelihood.check_training_data(sample)
            self.start_prior_from_data(sample)
            return
        kept = []
        if self._likelihood_awaits_data():
            kept.append('likelihood="auto" stays a Bernoulli head, for binary data (name the likelihood for grey levels '
                        "or real values)")
        if self._prior_awaits_data():
            kept.append("the VampPrior's pseudo-inputs keep their initializer (prior_layer.adapt(x) starts them from data)")
        if kept:
            warnings.warn("fit cannot look at a generator's examples before training: " + "; ".join(kept) + ".",
                          UserWarning, stacklevel=3)

    def start_prior_from_data(self, x, seed=None):
        """Draws a VampPrior's pseudo-inputs from the examples x (numpy) where it was built with
        pseudo_inputs_init="data" and has not started yet: once in the model's life, before its first step.
        `fit` calls it with a sample of the training data, `kerasvae train` with the training images. Other
        priors stay as they are."""
        if self._prior_awaits_data():
            self.prior_layer.adapt(x, seed=seed)

    def _prior_awaits_data(self):
        prior = getattr(self, "prior_layer", None)
        return bool(getattr(prior, "starts_from_data", False) and not prior.adapted)

    def _likelihood_awaits_data(self):
        return isinstance(self.likelihood, likelihoods.Auto) and not (self.optimizer is not None and self.optimizer.built)

    def choose_likelihood(self, x):
        """Puts the likelihood `kerasvae.likelihoods.choose` picks for data x (numpy) in place of a
        likelihood="auto" head; `fit` calls it with a sample of the training data. Other heads stay. The new
        head is built at once; an optimizer that has already built its state for the old head cannot train
        the new one, so a trained model keeps its head."""
        if not self._likelihood_awaits_data():
            return
        # The new head is made as the old one was: in the strategy the model was built in (its variables
        # mirrored like the others) and with the old head's precision policy (a mixed-precision run's).
        strategy, old = _keras_compat.creation_strategy(self), self.likelihood
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            head = likelihoods.LIKELIHOODS[likelihoods.choose(x)](dtype=old.dtype_policy)
            # The old head's weights leave `model.weights`, and the new head's take their place in the order
            # a model rebuilt from this one's config has them (`get_weights`/`set_weights` go by position).
            _keras_compat.replace_layer(self, "likelihood", head)
            self.likelihood.set_event_shape(self.data_shape)
            self._compile_batch_functions()
            # Steps traced earlier (an `evaluate` before the first `fit`) hold the old head; Keras traces anew.
            self.train_function = self.test_function = self.predict_function = None
            self._build_now()
            if type(head) is likelihoods.Bernoulli:
                # The auto head is a Bernoulli: keeping the weights it drew makes a run on binary data the run
                # of likelihood="bernoulli", weight for weight (the benchmarks' numbers stand).
                head.set_weights(old.get_weights())

    def _compile_batch_functions(self):
        # Compiled per instance: a tf.function on the class would retrace for every model.
        # (Re)compiles the functions that read the likelihood; families add their own entries.
        self._compiled = {**getattr(self, "_compiled", {}), **{
            name: batch_function(getattr(self, name))
            for name in ("_reconstruct_batch", "reconstruction_log_prob", "reconstruction_error", "_log_likelihood_batch", "elbo_batch")
        }}

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

    def encoder_inputs(self, x, training=False):
        """What the encoder sees of a batch x in a loss: x corrupted by `corruption` in training, else x."""
        return self.corruption(x, training=True) if training and self.corruption is not None else x

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
        features = self.decoder(self.condition(tf.reshape(z, [-1, *self.decoder_input_shape]), labels), training=training)
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
        (`logistic`, `categorical`) live on {0, ..., 255}: their samples, `log_prob`'s argument and `mean()`
        are in levels, `mean()` being 255 times `likelihood.mean`, which maps back to [0, 1] (as
        `reconstruct` and the exported `decode` signature's `mean` are). A likelihood="auto" model has the
        head its first `fit` chose (`kerasvae.likelihoods.choose`)."""
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
        """The reconstruction E[p(x | z = mean of q(z|x))], so `model(x)` and `predict` work as expected
        (a conditional model's: `model(x, labels=y)` and `predict((x, y))`)."""
        if self.num_classes is not None and labels is None:
            raise ValueError(f"{type(self).__name__} reconstructs x given its labels: model(x, labels=y), or predict "
                             "on (x, y) pairs (predict((x, y)), or a dataset of them).")
        z = self.posterior_params(x, training=training, labels=labels)["loc"]
        return self.likelihood.mean(self.likelihood_params(z, training=training, labels=labels))

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """Keras's `Model.export` of `call` (the reconstruction; its `serve` endpoint), in every format Keras
        writes ("tf_saved_model", "litert", "onnx", ...). Keras infers the input signature of a subclassed
        model from its first call, which `fit` never makes (train_step goes through the posterior): without
        one given, it is x [batch, *input_shape] float32. For TF Serving and devices, `kv.export.export`
        writes every signature (encode, decode, sample, score), versioned folders and checked TFLite
        decoders. A conditional model's reconstruction needs labels, which `call` takes by keyword: it
        exports through `kv.export.export` only."""
        if input_signature is None:
            if self.num_classes is not None:
                raise ValueError(f"{type(self).__name__}.export cannot pass labels to `call`; export it with "
                                 "kv.export.export(model, to), whose signatures take a `label` input.")
            input_signature = [keras.InputSpec(shape=(None, *self.data_shape), dtype="float32")]
        return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)


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
            "corruption": serialize(self.corruption),
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
