"""Vector quantization (van den Oord et al. 2017, "Neural Discrete Representation Learning"): the codebook
layer and the posterior head that puts it behind an encoder. The priors over the codes a VQ-VAE samples from
are in kerasvae.code_priors.

    z_e = W features                       one embedding_dim vector per latent position
    c   = argmin_k ||z_e - e_k||^2         the code, a nearest-neighbour lookup in the codebook
    z_q = e_c                              forward value; gradient copied to z_e (straight-through)
    vq_loss = ||sg(z_e) - e_c||^2 + commitment_cost * ||z_e - sg(e_c)||^2

With `ema_decay` the codebook term is replaced by exponential moving averages of the encoder outputs
assigned to each code (the paper's appendix; Razavi et al. 2019), and the codebook is not trained by the
optimizer. Squared norms are summed over latent positions and embedding dimensions, per example.
"""

import keras
import numpy as np
import tensorflow as tf

from kerasvae import posteriors
from kerasvae._tfp import tfd

serializable = keras.saving.register_keras_serializable(package="kerasvae")


@serializable
class VectorQuantizer(keras.layers.Layer):
    """A codebook of `num_embeddings` vectors of size `embedding_dim`, and what trains it.

    `call(z_e)` maps vectors [..., embedding_dim] to their nearest codes and the quantized vectors;
    `loss_terms` gives the commitment and codebook losses; `update`, called once per training step, applies
    the EMA codebook update (when `ema_decay` is set) and restarts dead codes.

    Args:
        num_embeddings: int. Codebook size K.
        embedding_dim: int. Dimension of each code vector.
        commitment_cost: float. Weight beta of the commitment loss. Defaults to 0.25.
        ema_decay: float or None. Decay gamma of the EMA codebook update; None trains the codebook by
            gradient on the codebook loss. Defaults to None.
        epsilon: float. Laplace smoothing of the EMA cluster sizes. Defaults to 1e-5.
        restart_after: int. A code unused for this many consecutive training steps is re-initialized to
            a random encoder output of the current batch; 0 disables restarts. Defaults to 100.
        seed: int or None. Seeds the choice of restart vectors. Defaults to None.

    >>> vq = VectorQuantizer(num_embeddings=8, embedding_dim=2)
    >>> vq(tf.zeros((3, 5, 2)))["codes"].shape
    TensorShape([3, 5])
    """

    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        commitment_cost=0.25,
        ema_decay=None,
        epsilon=1e-5,
        restart_after=100,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        self.commitment_cost = float(commitment_cost)
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.epsilon = float(epsilon)
        self.restart_after = int(restart_after)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        shape = (self.num_embeddings, self.embedding_dim)
        bound = 1.0 / self.num_embeddings
        self.codebook = self.add_weight(
            shape=shape,
            initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed),
            trainable=self.ema_decay is None,
            name="codebook",
        )
        if self.ema_decay is not None:
            # Started as if each code had been assigned once, at its own position: codebook = sum / size.
            self.cluster_size = self.add_weight(shape=shape[:1], initializer="ones", trainable=False, name="cluster_size")
            self.embedding_sum = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="embedding_sum")
            self.embedding_sum.assign(self.codebook)
        self.steps_unused = self.add_weight(shape=shape[:1], initializer="zeros", trainable=False, name="steps_unused")
        self.built = True

    # === Lookup ===

    def nearest_codes(self, z_e):
        """argmin_k ||z_e - e_k||^2 for z_e [..., embedding_dim] -> int32 codes [...]."""
        flat = tf.reshape(tf.cast(z_e, tf.float32), [-1, self.embedding_dim])
        codebook = tf.convert_to_tensor(self.codebook)
        distances = (
            tf.reduce_sum(tf.square(flat), axis=1, keepdims=True)
            - 2.0 * tf.matmul(flat, codebook, transpose_b=True)
            + tf.reduce_sum(tf.square(codebook), axis=1)
        )
        codes = tf.argmin(distances, axis=1, output_type=tf.int32)
        return tf.reshape(codes, tf.shape(z_e)[:-1])

    def embed(self, codes):
        """Code vectors e_c [..., embedding_dim] for int codes [...]."""
        return tf.gather(tf.convert_to_tensor(self.codebook), codes)

    def call(self, z_e, training=False):
        """{"codes": int32 [...], "z_q": [..., embedding_dim]}. In training z_q = z_e + sg(e_c - z_e): the value
        of e_c with the decoder's gradient passed straight through to z_e."""
        z_e = tf.cast(z_e, tf.float32)
        codes = self.nearest_codes(z_e)
        z_q = self.embed(codes)
        if training:
            z_q = z_e + tf.stop_gradient(z_q - z_e)
        return {"codes": codes, "z_q": z_q}

    # === Training ===

    def loss_terms(self, z_e, codes):
        """Per-example squared distances, averaged over the batch (axis 0):
        commitment = ||z_e - sg(e_c)||^2, codebook = ||sg(z_e) - e_c||^2 (its gradient reaches only the
        codebook) and vq_loss = codebook + commitment_cost * commitment, where the codebook term drops out
        under EMA updates."""
        e = self.embed(codes)
        commitment = _sum_per_example(z_e - tf.stop_gradient(e))
        codebook = _sum_per_example(tf.stop_gradient(z_e) - e)
        trained_codebook = codebook if self.ema_decay is None else 0.0
        return {"commitment": commitment, "codebook": codebook, "vq_loss": trained_codebook + self.commitment_cost * commitment}

    def update(self, z_e, codes):
        """One training step of codebook maintenance, on the batch's encoder outputs and their codes.

        EMA (when ema_decay = gamma is set), with n_k the batch's count of code k and s_k the sum of the
        vectors assigned to it:
            N_k <- gamma N_k + (1 - gamma) n_k,   m_k <- gamma m_k + (1 - gamma) s_k,
            e_k <- m_k / N~_k,   N~_k = (N_k + epsilon) / (sum_j N_j + K epsilon) * sum_j N_j  (Laplace)
        Restarts: a code unused for `restart_after` consecutive steps becomes a random vector of the batch.
        """
        flat = tf.reshape(tf.stop_gradient(tf.cast(z_e, tf.float32)), [-1, self.embedding_dim])
        assignments = tf.one_hot(tf.reshape(codes, [-1]), self.num_embeddings)
        counts = tf.reduce_sum(assignments, axis=0)
        if self.ema_decay is not None:
            decay = self.ema_decay
            self.cluster_size.assign(decay * self.cluster_size + (1.0 - decay) * counts)
            sums = tf.matmul(assignments, flat, transpose_a=True)
            self.embedding_sum.assign(decay * self.embedding_sum + (1.0 - decay) * sums)
            size = tf.convert_to_tensor(self.cluster_size)
            total = tf.reduce_sum(size)
            smoothed = (size + self.epsilon) / (total + self.num_embeddings * self.epsilon) * total
            self.codebook.assign(self.embedding_sum / smoothed[:, None])
        if self.restart_after > 0:
            unused = tf.where(counts > 0, 0.0, self.steps_unused + 1.0)
            dead = unused >= self.restart_after
            picks = keras.random.randint((self.num_embeddings,), 0, tf.shape(flat)[0], seed=self.seed_generator)
            fresh = tf.gather(flat, picks)
            self.codebook.assign(tf.where(dead[:, None], fresh, self.codebook))
            if self.ema_decay is not None:
                self.embedding_sum.assign(tf.where(dead[:, None], fresh, self.embedding_sum))
                self.cluster_size.assign(tf.where(dead, 1.0, self.cluster_size))
            self.steps_unused.assign(tf.where(dead, 0.0, unused))

    def perplexity(self, codes):
        """exp(H(p)) of the batch's average code usage p_k (count of code k / number of codes): K when all
        codes are used equally, 1 when one code takes everything."""
        usage = tf.reduce_mean(tf.one_hot(tf.reshape(codes, [-1]), self.num_embeddings), axis=0)
        return tf.exp(-tf.reduce_sum(tf.math.xlogy(usage, usage)))

    def get_config(self):
        return {
            **super().get_config(),
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "commitment_cost": self.commitment_cost,
            "ema_decay": self.ema_decay,
            "epsilon": self.epsilon,
            "restart_after": self.restart_after,
            "seed": self.seed,
        }


def _sum_per_example(t):
    return tf.reduce_mean(tf.reduce_sum(tf.reshape(tf.square(t), [tf.shape(t)[0], -1]), axis=-1))


@serializable
class QuantizedPosterior(posteriors.Posterior):
    """Posterior head of a VQ-VAE: encoder features -> z_e -> nearest codes -> z_q.

    Two layouts of the latents:
      - a grid (num_latents None): features [batch, *grid, channels] are projected to embedding_dim at each
        position (a 1x1 convolution), one code per position, e.g. a 7x7 grid of codes for 28x28 images;
      - a vector (num_latents an int): features of any shape are flattened and projected by a Dense layer
        to num_latents vectors of embedding_dim, e.g. for MLP torsos.
    Either way the latents travel flattened, row-major over (position, embedding dimension):
    z [batch, num_latents * embedding_dim] and codes [batch, num_latents].

    `call` returns {"loc": z_q, "codes", "z_e"}, `distribution(params)` the point mass on the codes,
    q(c|x) = delta(c - argmin_k ||z_e - e_k||), as `tfd.Independent(tfd.Deterministic(codes), 1)`.

    Args:
        quantizer: VectorQuantizer. The codebook.
        num_latents: int or None. See above. Defaults to None.
    """

    def __init__(self, quantizer, num_latents=None, **kwargs):
        super().__init__(kwargs.pop("latent_dim", None), **kwargs)  # known once built: see VQVAE
        if isinstance(quantizer, dict):
            quantizer = keras.saving.deserialize_keras_object(quantizer)
        self.quantizer = quantizer
        self.num_latents = None if num_latents is None else int(num_latents)

    def build(self, features_shape):
        self.grid = self.num_latents is None
        if self.grid and len(features_shape) < 3:
            raise ValueError(
                f"The encoder outputs vectors {tuple(features_shape)}, not a feature map: pass num_latents to quantize "
                "them as that many codes, or use an encoder that keeps its feature map (ConvEncoder(flatten=False))."
            )
        dim = self.quantizer.embedding_dim
        self.projection = keras.layers.Dense(dim if self.grid else self.num_latents * dim)
        self.projection.build((None, features_shape[-1]) if self.grid else (None, int(np.prod(features_shape[1:]))))

    def call(self, features, training=False):
        batch = tf.shape(features)[0]
        if not self.grid:
            features = tf.reshape(features, [batch, -1])
        z_e = tf.reshape(tf.cast(self.projection(features), tf.float32), [batch, -1, self.quantizer.embedding_dim])
        quantized = self.quantizer(z_e, training=training)
        return {
            "loc": tf.reshape(quantized["z_q"], [batch, -1]),
            "codes": quantized["codes"],
            "z_e": tf.reshape(z_e, [batch, -1]),
        }

    def distribution(self, params):
        return tfd.Independent(tfd.Deterministic(loc=params["codes"]), reinterpreted_batch_ndims=1)

    def encode_outputs(self, params):
        """The code indices and the quantized latents decode takes."""
        return {"codes": params["codes"], "z": params["loc"]}

    def get_config(self):
        return {
            **super().get_config(),
            "quantizer": keras.saving.serialize_keras_object(self.quantizer),
            "num_latents": self.num_latents,
        }
