"""Priors over the code indices of a VQ-VAE, fitted to the codes of training data after the autoencoder
is trained: a (mixture of) per-position categorical(s), `CodePrior`, and an autoregressive gated PixelCNN
over the code grid, `PixelCNNPrior`. Both are `kerasvae.priors.Prior`s over int32 codes.
"""

import keras
import numpy as np
import tensorflow as tf

from kerasvae._tfp import stateless_seed, tfd
from kerasvae.priors import Prior

serializable = keras.saving.register_keras_serializable(package="kerasvae")


@serializable
class CodePrior(Prior):
    """p(c) over num_latents code indices in {0, ..., num_embeddings - 1}, fitted to the codes of training
    data after the autoencoder is trained (its weights are non-trainable, and saved with the model):

        p(c) = sum_m pi_m prod_l Categorical(c_l; theta_{m,l})

    With num_components = 1 this is one independent categorical per latent position (the empirical code
    frequencies); more components capture which codes occur together (a garment's shape) at the cost of
    an EM fit. The probabilities are Laplace-smoothed so every code keeps a finite log-probability. Before
    `fit` the prior is uniform.

    Args:
        num_latents: int. Number of latent positions.
        num_embeddings: int. Codebook size.
        num_components: int. Mixture components. Defaults to 1.
        smoothing: float. Pseudo-count added to every code at every position. Defaults to 1.0.
    """

    def __init__(self, num_latents, num_embeddings, num_components=1, smoothing=1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_latents = int(num_latents)
        self.num_embeddings = int(num_embeddings)
        self.num_components = int(num_components)
        self.smoothing = float(smoothing)
        self.logits = self.add_weight(
            shape=(self.num_components, self.num_latents, self.num_embeddings), initializer="zeros", trainable=False, name="logits"
        )
        self.mixture_logits = self.add_weight(shape=(self.num_components,), initializer="zeros", trainable=False, name="mixture_logits")
        self.built = True

    def distribution(self, posterior=None, temperature=1.0):
        """The tfd distribution over int32 codes, event shape [num_latents]. temperature < 1 sharpens every
        categorical (logits / temperature), > 1 flattens it."""
        logits = tf.convert_to_tensor(self.logits) / temperature
        components = tfd.Independent(tfd.Categorical(logits=logits, dtype=tf.int32), reinterpreted_batch_ndims=1)
        if self.num_components == 1:
            return tfd.Independent(tfd.Categorical(logits=logits[0], dtype=tf.int32), reinterpreted_batch_ndims=1)
        return tfd.MixtureSameFamily(tfd.Categorical(logits=tf.convert_to_tensor(self.mixture_logits)), components)

    def fit(self, codes, iterations=30, seed=0, chunk_size=8192):
        """Fit to int codes [n, num_latents] by EM (one step is exact for a single component). Components start
        from random examples' codes blended with the overall frequencies. Returns the mean log p(c) in nats."""
        codes = np.asarray(codes, np.int32)
        if codes.shape[1:] != (self.num_latents,):
            raise ValueError(f"Expected codes of shape [n, {self.num_latents}], got {list(codes.shape)}.")
        chunks = [self._one_hot(codes[i : i + chunk_size]) for i in range(0, len(codes), chunk_size)]

        def smoothed_log_frequencies(weights):
            # sum_n weights[n, m] [c_{n,l} = k], as [M, L, K], normalized over k after adding the pseudo-counts.
            counts = sum(tf.sparse.sparse_dense_matmul(c, w, adjoint_a=True) for c, w in zip(chunks, weights)) + self.smoothing
            counts = tf.transpose(tf.reshape(counts, [self.num_latents, self.num_embeddings, -1]), [2, 0, 1])
            return tf.math.log(counts / tf.reduce_sum(counts, -1, keepdims=True))

        overall = smoothed_log_frequencies([tf.ones([c.dense_shape[0], 1]) for c in chunks])  # [1, L, K]
        if self.num_components == 1:
            self.logits.assign(overall)
        else:
            picks = np.random.default_rng(seed).choice(len(codes), self.num_components, replace=False)
            self.logits.assign(tf.math.log(0.5 * tf.one_hot(codes[picks], self.num_embeddings) + 0.5 * tf.exp(overall)))
            self.mixture_logits.assign(tf.zeros([self.num_components]))
            for _ in range(iterations):
                responsibilities = [tf.nn.softmax(self._joint_log_prob(c), axis=-1) for c in chunks]
                self.logits.assign(smoothed_log_frequencies(responsibilities))
                self.mixture_logits.assign(tf.math.log(sum(tf.reduce_sum(r, 0) for r in responsibilities) + 1e-6))
        return float(np.mean(np.concatenate([tf.reduce_logsumexp(self._joint_log_prob(c), -1) for c in chunks])))

    def log_prob(self, codes):
        """log p(c) [n] for int codes [n, num_latents]: `distribution().log_prob` without the [n, M, L, K]
        intermediate that TFP's Categorical builds."""
        return tf.reduce_logsumexp(self._joint_log_prob(self._one_hot(codes)), axis=-1)

    def sample(self, n, seed, temperature=1.0):
        """n draws of int32 codes [n, num_latents] from `distribution(temperature)`, for a stateless seed."""
        return self.distribution(temperature=temperature).sample(n, seed=seed)

    def _one_hot(self, codes):
        """Codes [n, L] as a sparse one-hot [n, L * K] (position l's code at column l * K + c_l)."""
        codes = tf.convert_to_tensor(codes, tf.int32)
        n = tf.shape(codes, out_type=tf.int64)[0]
        columns = tf.cast(codes + self.num_embeddings * tf.range(self.num_latents), tf.int64)
        rows = tf.broadcast_to(tf.range(n)[:, None], tf.shape(columns, out_type=tf.int64))
        indices = tf.stack([tf.reshape(rows, [-1]), tf.reshape(columns, [-1])], axis=1)
        return tf.sparse.SparseTensor(indices, tf.ones(tf.shape(indices)[:1]), [n, self.num_latents * self.num_embeddings])

    def _joint_log_prob(self, one_hot):
        """log pi_m + sum_l log theta_{m,l,c_l} [n, M] from the sparse one-hot codes."""
        log_theta = tf.reshape(tf.nn.log_softmax(self.logits, axis=-1), [self.num_components, -1])  # [M, L * K]
        return tf.nn.log_softmax(self.mixture_logits) + tf.sparse.sparse_dense_matmul(one_hot, log_theta, adjoint_b=True)

    def get_config(self):
        return {
            **super().get_config(),
            "num_latents": self.num_latents,
            "num_embeddings": self.num_embeddings,
            "num_components": self.num_components,
            "smoothing": self.smoothing,
        }



@serializable
class PixelCNNPrior(Prior):
    """An autoregressive prior over a grid of code indices: a gated PixelCNN (van den Oord et al. 2016,
    "Conditional Image Generation with PixelCNN Decoders"), fitted to the codes of training data after the
    autoencoder is trained, as in the VQ-VAE paper.

        p(c) = prod_{i} p(c_i | c_<i),   i in raster order over the grid (row by row, left to right),
        p(c_i | c_<i) = Categorical(softmax(f(c_<i)_i)),  f the network below.

    The network keeps two stacks of gated convolutions, gate(a, b) = tanh(a) * sigmoid(b):
      - a vertical stack whose features at row r depend only on codes in rows < r (its input is shifted
        down one row, then convolved with kernels covering rows r - k//2 .. r, all columns j +- k//2);
      - a horizontal stack whose features at (r, j) depend only on row r's codes left of j (input shifted
        right one column, kernels over columns j - k//2 .. j) plus the vertical stack at (r, j),
        with residual connections after the first layer.
    Splitting the stacks this way leaves no blind spot (the masked-kernel PixelCNN of 2016a misses the
    codes up and to the right). Shifts and one-sided padding replace kernel masks, so every weight is
    used. A 1-D layout of codes is a grid of one row: the prior is then a causal 1-D convolution net.

    Its weights are non-trainable while the autoencoder trains (`trainable=False`); `fit` trains them with
    Keras `fit` on codes, by maximum likelihood.

    Args:
        grid_shape: tuple (height, width). The layout of the num_latents = height * width codes.
        num_embeddings: int. Codebook size K.
        filters: int. Channels of each stack. Defaults to 64.
        num_layers: int. Gated layers; every layer widens the receptive field by kernel_size // 2 rows
            up and columns left. Defaults to 6.
        kernel_size: int. Odd width of the vertical kernels. Defaults to 5.
        seed: int or None. Seeds the weight initialization. Defaults to None.

    >>> prior = PixelCNNPrior((2, 3), num_embeddings=8, filters=8, num_layers=2, kernel_size=3, seed=0)
    >>> prior.sample(4, seed=(0, 1)).shape
    TensorShape([4, 6])
    >>> prior.log_prob(tf.zeros((4, 6), tf.int32)).shape
    TensorShape([4])
    """

    def __init__(self, grid_shape, num_embeddings, filters=64, num_layers=6, kernel_size=5, seed=None, **kwargs):
        trainable = kwargs.pop("trainable", False)
        super().__init__(**kwargs)
        self.grid_shape = tuple(int(s) for s in grid_shape)
        if len(self.grid_shape) != 2:
            raise ValueError(f"grid_shape must be (height, width), got {grid_shape!r}.")
        self.num_latents = int(np.prod(self.grid_shape))
        self.num_embeddings = int(num_embeddings)
        self.filters = int(filters)
        self.num_layers = int(num_layers)
        self.kernel_size = int(kernel_size)
        if self.kernel_size < 3 or self.kernel_size % 2 == 0 or self.num_layers < 1:
            raise ValueError(f"kernel_size must be odd and >= 3 and num_layers >= 1, got {kernel_size} and {num_layers}.")
        self.seed = seed
        # Distinct seeds per weight: Keras initializers with one seed would give every layer the same values.
        seeds = iter(range(1000 * (seed or 0), 1000 * (seed or 0) + 1000))

        def initializer():
            return keras.initializers.GlorotUniform(seed=None if seed is None else next(seeds))

        def conv(channels, kernel, name):
            return keras.layers.Conv2D(channels, kernel, kernel_initializer=initializer(), name=name, dtype=self.dtype_policy)

        f, p, height, width = self.filters, self.kernel_size // 2, *self.grid_shape
        self.embedding = keras.layers.Embedding(
            self.num_embeddings, f, embeddings_initializer=keras.initializers.RandomNormal(seed=None if seed is None else next(seeds)),
            name="embedding", dtype=self.dtype_policy,
        )
        self.vertical = [conv(2 * f, (p + 1, self.kernel_size), f"vertical_{i}") for i in range(self.num_layers)]
        self.horizontal = [conv(2 * f, (1, p + 1), f"horizontal_{i}") for i in range(self.num_layers)]
        self.vertical_to_horizontal = [conv(2 * f, 1, f"vertical_to_horizontal_{i}") for i in range(self.num_layers)]
        self.horizontal_out = [conv(f, 1, f"horizontal_out_{i}") for i in range(self.num_layers)]
        self.head = [conv(f, 1, "head_hidden"), conv(self.num_embeddings, 1, "head_logits")]
        # Built here, as the other priors: `.keras` loading finds every weight without a first call.
        self.embedding.build((None, height, width))
        for i in range(self.num_layers):
            self.vertical[i].build((None, height + p, width + 2 * p, f))
            self.horizontal[i].build((None, height, width + p, f))
            self.vertical_to_horizontal[i].build((None, height, width, 2 * f))
            self.horizontal_out[i].build((None, height, width, f))
        for layer in self.head:
            layer.build((None, height, width, f))
        self.built = True
        # Set after the sublayers exist: the setter freezes them too.
        self.trainable = trainable

    # === The network ===

    def conditional_logits(self, codes):
        """Logits of p(c_i | c_<i) for every position i, [..., num_latents, num_embeddings], from int codes
        [..., num_latents]: one pass gives all the conditionals of the codes (teacher forcing)."""
        codes = tf.convert_to_tensor(codes, tf.int32)
        leading = tf.shape(codes)[:-1]
        x = self.embedding(tf.reshape(codes, [-1, *self.grid_shape]))
        p = self.kernel_size // 2
        # The shifts make both stacks strictly causal from the first layer on: row r sees rows < r, and
        # (r, j) sees row r's columns < j, never the code it predicts.
        vertical = tf.pad(x, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1]
        horizontal = tf.pad(x, [[0, 0], [0, 0], [1, 0], [0, 0]])[:, :, :-1]
        for i in range(self.num_layers):
            vertical_pre = self.vertical[i](tf.pad(vertical, [[0, 0], [p, 0], [p, p], [0, 0]]))
            horizontal_pre = self.horizontal[i](tf.pad(horizontal, [[0, 0], [0, 0], [p, 0], [0, 0]]))
            horizontal_pre += self.vertical_to_horizontal[i](vertical_pre)
            vertical = _gate(vertical_pre)
            out = self.horizontal_out[i](_gate(horizontal_pre))
            # No residual at the first layer: its input holds the code at (r, j) itself.
            horizontal = out if i == 0 else horizontal + out
        logits = self.head[1](tf.nn.relu(self.head[0](tf.nn.relu(horizontal))))
        logits = tf.cast(tf.reshape(logits, [-1, self.num_latents, self.num_embeddings]), tf.float32)
        return tf.reshape(logits, tf.concat([leading, [self.num_latents, self.num_embeddings]], axis=0))

    def call(self, codes):
        """The conditional logits (what `fit` trains); use `log_prob`, `sample` or `distribution` for p(c)."""
        return self.conditional_logits(codes)

    # === The distribution ===

    def log_prob(self, codes):
        """Exact log p(c) = sum_i log p(c_i | c_<i), shape [...], for int codes [..., num_latents]."""
        codes = tf.convert_to_tensor(codes, tf.int32)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=codes, logits=self.conditional_logits(codes))
        return -tf.reduce_sum(nll, axis=-1)

    def distribution(self, posterior=None, temperature=1.0):
        """p(c) as a TFP distribution over int32 codes, event shape [num_latents]: `tfd.Autoregressive`, whose
        log_prob is `log_prob` (one pass) and whose sample runs num_latents unrolled passes (`sample` loops
        instead). temperature divides every conditional's logits."""

        def conditionals(codes):
            logits = self.conditional_logits(codes) / temperature
            return tfd.Independent(tfd.Categorical(logits=logits, dtype=tf.int32), reinterpreted_batch_ndims=1)

        return tfd.Autoregressive(conditionals, sample0=tf.zeros([self.num_latents], tf.int32), num_steps=self.num_latents)

    def sample(self, n, seed, temperature=1.0):
        """n draws of int32 codes [n, num_latents], position by position in raster order:
        c_i ~ Categorical(logits(c_<i)_i / temperature), with the stateless seed folded with i, so the same
        seed gives the same codes in eager mode, in a tf.function and in an exported SavedModel.
        num_latents passes of the network, in a tf.while_loop."""
        seed = stateless_seed(seed)
        positions = tf.range(self.num_latents)

        def step(i, codes):
            logits = self.conditional_logits(codes)[:, i] / temperature
            drawn = tf.random.stateless_categorical(logits, 1, seed=tf.random.experimental.stateless_fold_in(seed, i), dtype=tf.int32)
            # Later positions are redrawn at their own step: only c_<i conditions c_i.
            return i + 1, tf.where(positions == i, drawn, codes)

        codes = tf.zeros(tf.stack([n, self.num_latents]), tf.int32)
        _, codes = tf.while_loop(lambda i, _: i < self.num_latents, step, (tf.constant(0), codes))
        return codes

    # === Fitting ===

    def fit(self, codes, epochs=None, batch_size=64, learning_rate=2e-3, verbose=0, validation_codes=None):
        """Maximum likelihood on int codes [n, num_latents] with Keras `fit`: Adam with a cosine-decayed
        learning rate on the mean over positions of -log p(c_i | c_<i). Returns the mean log p(c) of the
        codes in nats per example (of validation_codes when given).

        Args:
            codes: int array [n, num_latents].
            epochs: int or None. None: enough epochs for about 1000 optimizer steps, at least one (one
                epoch over the 60000 Fashion-MNIST training codes, ~8 minutes on 2 busy CPU cores for the
                preset's 14x14 grid). Defaults to None.
            batch_size: int. Defaults to 64.
            learning_rate: float. Initial Adam learning rate. Defaults to 2e-3.
            verbose: Keras fit verbosity. Defaults to 0.
            validation_codes: int array [m, num_latents] or None. Where the returned log p(c) is measured.
        """
        codes = np.asarray(codes, np.int32)
        if codes.ndim != 2 or codes.shape[1] != self.num_latents:
            raise ValueError(f"Expected codes of shape [n, {self.num_latents}], got {list(codes.shape)}.")
        steps_per_epoch = -(-len(codes) // batch_size)
        epochs = max(1, round(1000 / steps_per_epoch)) if epochs is None else int(epochs)
        steps = epochs * steps_per_epoch
        trainer = _ConditionalsModel(self)
        self.trainable = True
        try:
            trainer.compile(
                optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps)),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
            trainer.fit(codes, codes, epochs=epochs, batch_size=batch_size, verbose=verbose)
        finally:
            # Frozen again, so the autoencoder's optimizer never sees the prior's weights.
            self.trainable = False
        evaluated = codes if validation_codes is None else np.asarray(validation_codes, np.int32)
        log_prob = tf.function(self.log_prob, reduce_retracing=True)
        return float(np.mean(np.concatenate([log_prob(evaluated[i : i + 1024]) for i in range(0, len(evaluated), 1024)])))

    def get_config(self):
        return {
            **super().get_config(),
            "grid_shape": list(self.grid_shape),
            "num_embeddings": self.num_embeddings,
            "filters": self.filters,
            "num_layers": self.num_layers,
            "kernel_size": self.kernel_size,
            "seed": self.seed,
        }


def _gate(t):
    a, b = tf.split(t, 2, axis=-1)
    return tf.tanh(a) * tf.sigmoid(b)


class _ConditionalsModel(keras.Model):
    """codes -> the prior's conditional logits: what Keras `fit` trains in `PixelCNNPrior.fit` (never saved)."""

    def __init__(self, prior):
        super().__init__(name="pixelcnn_prior_trainer")
        self.prior = prior

    def call(self, codes):
        return self.prior.conditional_logits(codes)
