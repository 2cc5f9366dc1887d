"""Network torsos. A torso maps its input to features; the model adds the heads that turn features into
distribution parameters (posteriors.py, likelihoods.py). Any Keras layer or model can stand in for these."""

import math

import keras

serializable = keras.saving.register_keras_serializable(package="kerasvae")


def build_sequence(layers, input_shape):
    """Build each layer on the previous one's output shape (what Keras needs to restore weights)."""
    shape = input_shape
    for layer in layers:
        if layer is not None:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
    return shape


@serializable
class MLP(keras.layers.Layer):
    """Flatten, then a stack of Dense layers.

    Args:
        units: tuple of int. Width of each hidden layer. Defaults to (512, 256).
        activation: str. Activation of every hidden layer. Defaults to "relu".

    >>> MLP((512, 256))(keras.ops.zeros((2, 28, 28, 1))).shape
    (2, 256)
    """

    def __init__(self, units=(512, 256), activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        self.activation = activation
        self.flatten = keras.layers.Flatten()
        self.hidden = [keras.layers.Dense(u, activation=activation) for u in self.units]

    def build(self, input_shape):
        build_sequence([self.flatten, *self.hidden], input_shape)

    def call(self, inputs):
        h = self.flatten(inputs)
        for layer in self.hidden:
            h = layer(h)
        return h

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation}


@serializable
class ConvEncoder(keras.layers.Layer):
    """Strided Conv2D stack for images, flattened into a feature vector.

    Args:
        filters: tuple of int. Channels of each strided convolution; each halves height and width.
            Defaults to (32, 64).
        kernel_size: int. Defaults to 3.
        dense_units: int or None. Width of a Dense layer after flattening. Defaults to 256.
        activation: str. Defaults to "relu".
    """

    def __init__(self, filters=(32, 64), kernel_size=3, dense_units=256, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.kernel_size = int(kernel_size)
        self.dense_units = dense_units
        self.activation = activation
        self.convs = [
            keras.layers.Conv2D(f, self.kernel_size, strides=2, padding="same", activation=activation)
            for f in self.filters
        ]
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(dense_units, activation=activation) if dense_units else None

    def build(self, input_shape):
        build_sequence([*self.convs, self.flatten, self.dense], input_shape)

    def call(self, inputs):
        h = inputs
        for conv in self.convs:
            h = conv(h)
        h = self.flatten(h)
        return self.dense(h) if self.dense is not None else h

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "dense_units": self.dense_units,
            "activation": self.activation,
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
