"""Network torsos. A torso maps its input to features; the model adds the heads that turn features into
distribution parameters (posteriors.py, likelihoods.py). Any Keras layer or model can stand in for these."""

import contextlib
import math

import keras

from kerasvae import _keras_compat

serializable = keras.saving.register_keras_serializable(package="kerasvae")


def build_sequence(layers, input_shape):
    """Build each layer on the previous one's output shape (what Keras needs to restore weights)."""
    shape = input_shape
    for layer in layers:
        if layer is not None:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
    return shape


def dense(layer, x):
    """`layer(x)` for a built keras Dense, except that under a bfloat16 compute policy only the matmul runs in
    bfloat16; the bias and activation run in float32 and so does the result. TensorFlow's bfloat16
    element-wise CPU kernels are slower than its float32 ones and cancelled the bfloat16 matmul's gain:
    the classic decoder on 65,536 latents took 287 ms through Keras's bfloat16 Dense against 248 ms in
    float32, and its matmuls alone 50 ms (benchmarks/eval_speed.py)."""
    if layer.compute_dtype != "bfloat16":
        return layer(x)
    y = keras.ops.cast(keras.ops.matmul(keras.ops.cast(x, "bfloat16"), keras.ops.cast(layer.kernel, "bfloat16")), "float32")
    if layer.use_bias:
        y = y + keras.ops.cast(layer.bias, "float32")  # inside a bfloat16 layer's call Keras hands out bfloat16 values
    return layer.activation(y)


@serializable
class MLP(keras.layers.Layer):
    """Flatten, then a stack of Dense layers.

    Args:
        units: tuple of int. Width of each hidden layer. Defaults to (512, 256).
        activation: str. Activation of every hidden layer. Defaults to "relu".
        gated: bool. Gated layers (Dauphin et al. 2017; the VampPrior paper's torsos): each layer computes
            h = (W x + b) * sigmoid(V x + c), one Dense of twice the width split in two, and `activation`
            is not used. Defaults to False.
        input_skip: bool. Every layer after the first also sees the flattened input, concatenated to the
            previous layer's output: h_i = f(W_i [h_(i-1), x] + b_i). In a decoder the input is the latent
            code, and these are the generative skip connections of Dieng et al. 2019 ("Avoiding latent
            variable collapse with generative skip models"), which keep z within one layer of every
            layer. Defaults to False.

    >>> MLP((512, 256))(keras.ops.zeros((2, 28, 28, 1))).shape
    (2, 256)
    """

    def __init__(self, units=(512, 256), activation="relu", gated=False, input_skip=False, **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        self.activation = activation
        self.gated = bool(gated)
        self.input_skip = bool(input_skip)
        self.flatten = keras.layers.Flatten()
        if self.gated:
            self.hidden = [keras.layers.Dense(2 * u) for u in self.units]
        else:
            self.hidden = [keras.layers.Dense(u, activation=activation) for u in self.units]

    def build(self, input_shape):
        shape = self.flatten.compute_output_shape(input_shape)
        skipped = shape[-1] if self.input_skip else 0
        for i, layer in enumerate(self.hidden):
            layer.build((*shape[:-1], shape[-1] + (skipped if i else 0)))
            shape = (*shape[:-1], layer.units // 2 if self.gated else layer.units)

    def call(self, inputs):
        x = h = self.flatten(inputs)
        for i, layer in enumerate(self.hidden):
            h = dense(layer, keras.ops.concatenate([h, keras.ops.cast(x, h.dtype)], axis=-1) if self.input_skip and i else h)
            if self.gated:
                value, gate = keras.ops.split(h, 2, axis=-1)
                h = value * keras.ops.sigmoid(gate)
        return keras.ops.cast(h, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units[-1]) if self.units else self.flatten.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation, "gated": self.gated,
                "input_skip": self.input_skip}


@serializable
class ConvEncoder(keras.layers.Layer):
    """Strided Conv2D stack for images, flattened into a feature vector (or kept as a feature map).

    Args:
        filters: tuple of int. Channels of each strided convolution; each halves height and width.
            Defaults to (32, 64).
        kernel_size: int. Defaults to 3.
        dense_units: int or None. Width of a Dense layer after flattening. Defaults to 256.
        activation: str. Defaults to "relu".
        flatten: bool. False returns the last feature map [batch, height / 2^k, width / 2^k, filters[-1]]
            (no flattening, no Dense), e.g. for a VQ-VAE that quantizes each position. Defaults to True.

    >>> ConvEncoder((8, 16), flatten=False)(keras.ops.zeros((2, 28, 28, 1))).shape
    (2, 7, 7, 16)
    """

    def __init__(self, filters=(32, 64), kernel_size=3, dense_units=256, activation="relu", flatten=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.kernel_size = int(kernel_size)
        self.dense_units = dense_units
        self.activation = activation
        self.keep_map = not flatten
        self.convs = [
            keras.layers.Conv2D(f, self.kernel_size, strides=2, padding="same", activation=activation)
            for f in self.filters
        ]
        self.flatten = None if self.keep_map else keras.layers.Flatten()
        self.dense = keras.layers.Dense(dense_units, activation=activation) if dense_units and flatten else None

    def build(self, input_shape):
        build_sequence([*self.convs, self.flatten, self.dense], input_shape)

    def call(self, inputs):
        h = inputs
        for conv in self.convs:
            h = conv(h)
        if self.keep_map:
            return h
        h = self.flatten(h)
        return self.dense(h) if self.dense is not None else h

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "dense_units": self.dense_units,
            "activation": self.activation,
            "flatten": not self.keep_map,
        }


@serializable
class ConvDecoder(keras.layers.Layer):
    """Dense projection to a small feature map, then Conv2DTranspose layers that double it up to
    `target_shape` (height, width). Returns a feature map [batch, height, width, filters[-1]]; the
    likelihood head turns each pixel's features into its parameters.

    Args:
        target_shape: tuple (height, width). Spatial size of the images to produce.
        filters: tuple of int. Channels of each transposed convolution; each doubles the size.
            Defaults to (64, 32).
        kernel_size: int. Defaults to 3.
        dense_units: int or None. Width of a Dense layer before the projection. Defaults to 256.
        activation: str. Defaults to "relu".
    """

    def __init__(
        self, target_shape, filters=(64, 32), kernel_size=3, dense_units=256, activation="relu", **kwargs
    ):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(s) for s in target_shape[:2])
        self.filters = tuple(int(f) for f in filters)
        self.kernel_size = int(kernel_size)
        self.dense_units = dense_units
        self.activation = activation
        factor = 2 ** len(self.filters)
        self.start_shape = tuple(math.ceil(s / factor) for s in self.target_shape)
        self.dense = keras.layers.Dense(dense_units, activation=activation) if dense_units else None
        self.project = keras.layers.Dense(
            self.start_shape[0] * self.start_shape[1] * self.filters[0], activation=activation
        )
        self.reshape = keras.layers.Reshape((*self.start_shape, self.filters[0]))
        self.deconvs = [
            keras.layers.Conv2DTranspose(f, self.kernel_size, strides=2, padding="same", activation=activation)
            for f in self.filters
        ]
        # ceil() above may overshoot (e.g. 28 -> 7 -> 28 is exact, 30 -> 8 -> 32 is not): crop back.
        overshoot = [s * factor - t for s, t in zip(self.start_shape, self.target_shape)]
        self.crop = keras.layers.Cropping2D(((0, overshoot[0]), (0, overshoot[1]))) if any(overshoot) else None

    def build(self, input_shape):
        build_sequence([self.dense, self.project, self.reshape, *self.deconvs, self.crop], input_shape)

    def call(self, inputs):
        h = self.dense(inputs) if self.dense is not None else inputs
        h = self.reshape(self.project(h))
        for deconv in self.deconvs:
            h = deconv(h)
        return self.crop(h) if self.crop is not None else h

    def get_config(self):
        return {
            **super().get_config(),
            "target_shape": self.target_shape,
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "dense_units": self.dense_units,
            "activation": self.activation,
        }


RECURRENT_CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


@contextlib.contextmanager
def unrolled(model):
    """Within the block, every recurrent layer of `model` traces unrolled (a fixed number of cell copies, no
    while loop): the TFLite converter cannot lower a loop's tensor lists to builtin ops. Same weights, same
    outputs; only graphs traced inside the block change."""
    recurrent = [layer for layer in _keras_compat.flatten_layers(model) if isinstance(layer, keras.layers.RNN)]
    previous = [layer.unroll for layer in recurrent]
    for layer in recurrent:
        layer.unroll = True
    try:
        yield bool(recurrent)
    finally:
        for layer, value in zip(recurrent, previous):
            layer.unroll = value


@serializable
class SequenceEncoder(keras.layers.Layer):
    """Recurrent encoder for series [batch, time, channels]: stacked LSTM/GRU layers, the last one's final
    output is the feature vector (the recurrent autoencoder of Srivastava et al. 2015).

    Args:
        units: tuple of int. Width of each recurrent layer. Defaults to (64,).
        cell: str. "lstm" or "gru". Defaults to "gru".
        bidirectional: bool. Read the series both ways and concatenate. Defaults to False.
        unroll: bool. Unroll the recurrence into `time` copies of the cell instead of a while loop: faster
            epochs on short series after a much longer first compile (measured at 32 steps: 1.7 s vs 2.4 s
            per epoch, 50 s vs 8 s to compile). Defaults to False.
    """

    def __init__(self, units=(64,), cell="gru", bidirectional=False, unroll=False, **kwargs):
        super().__init__(**kwargs)
        if cell not in RECURRENT_CELLS:
            raise ValueError(f"cell must be one of {sorted(RECURRENT_CELLS)}, got {cell!r}.")
        self.units, self.cell, self.bidirectional = tuple(int(u) for u in units), cell, bool(bidirectional)
        self.unroll = bool(unroll)
        self.layers_ = []
        for i, width in enumerate(self.units):
            layer = RECURRENT_CELLS[cell](width, return_sequences=i < len(self.units) - 1, unroll=self.unroll)
            self.layers_.append(keras.layers.Bidirectional(layer) if bidirectional else layer)

    def build(self, input_shape):
        build_sequence(self.layers_, input_shape)

    def call(self, inputs):
        h = inputs
        for layer in self.layers_:
            h = layer(h)
        return h

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "cell": self.cell,
            "bidirectional": self.bidirectional,
            "unroll": self.unroll,
        }


@serializable
class SequenceDecoder(keras.layers.Layer):
    """Recurrent decoder: z is projected, repeated over `timesteps` and read by stacked LSTM/GRU layers that
    return every step, giving features [batch, time, units[-1]]; the likelihood head maps each step to that
    step's parameters.

    Args:
        timesteps: int. Length of the series to produce.
        units: tuple of int. Width of each recurrent layer. Defaults to (64,).
        cell: str. "lstm" or "gru". Defaults to "gru".
        unroll: bool. As for SequenceEncoder. Defaults to False.
    """

    def __init__(self, timesteps, units=(64,), cell="gru", unroll=False, **kwargs):
        super().__init__(**kwargs)
        if cell not in RECURRENT_CELLS:
            raise ValueError(f"cell must be one of {sorted(RECURRENT_CELLS)}, got {cell!r}.")
        self.timesteps, self.units, self.cell = int(timesteps), tuple(int(u) for u in units), cell
        self.unroll = bool(unroll)
        self.project = keras.layers.Dense(self.units[0], activation="tanh")
        self.repeat = keras.layers.RepeatVector(self.timesteps)
        self.layers_ = [RECURRENT_CELLS[cell](width, return_sequences=True, unroll=self.unroll) for width in self.units]

    def build(self, input_shape):
        build_sequence([self.project, self.repeat, *self.layers_], input_shape)

    def call(self, inputs):
        h = self.repeat(self.project(inputs))
        for layer in self.layers_:
            h = layer(h)
        return h

    def get_config(self):
        return {
            **super().get_config(),
            "timesteps": self.timesteps,
            "units": self.units,
            "cell": self.cell,
            "unroll": self.unroll,
        }
