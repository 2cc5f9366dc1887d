"""Torsos: output shapes for the shapes users have, and config round trips."""

import keras
import numpy as np
import pytest

from kerasvae import networks


def test_mlp_flattens_and_stacks():
    assert networks.MLP((32, 16))(keras.ops.zeros((2, 8, 8, 1))).shape == (2, 16)


def test_gated_mlp_computes_value_times_sigmoid_gate():
    mlp = networks.MLP((2,), gated=True)
    x = np.array([[1.0, -2.0, 0.5]], np.float32)
    mlp.build(x.shape)
    kernel = np.array([[0.1, -0.2, 0.3, 0.4], [0.5, 0.6, -0.7, 0.8], [0.9, -1.0, 1.1, -1.2]], np.float32)
    bias = np.array([0.01, 0.02, -0.03, 0.04], np.float32)
    mlp.hidden[0].set_weights([kernel, bias])
    value, gate = (x @ kernel + bias)[:, :2], (x @ kernel + bias)[:, 2:]
    np.testing.assert_allclose(mlp(x), value / (1.0 + np.exp(-gate)), rtol=1e-6)
    assert mlp.compute_output_shape((None, 3)) == (None, 2)


def test_input_skip_feeds_the_input_to_every_later_layer():
    mlp = networks.MLP((3, 2, 2), input_skip=True)
    x = np.array([[1.0, -2.0], [0.5, 0.25]], np.float32)
    mlp.build(x.shape)
    rng = np.random.default_rng(0)
    fan_ins = (2, 3 + 2, 2 + 2)  # the first layer sees x alone, each later one [h, x]
    weights = [[rng.normal(size=(n, u)).astype(np.float32), rng.normal(size=u).astype(np.float32)] for n, u in zip(fan_ins, mlp.units)]
    for layer, values in zip(mlp.hidden, weights):
        layer.set_weights(values)
    relu = lambda a: np.maximum(a, 0.0)
    h = relu(x @ weights[0][0] + weights[0][1])
    for kernel, bias in weights[1:]:
        h = relu(np.concatenate([h, x], axis=-1) @ kernel + bias)
    np.testing.assert_allclose(mlp(x), h, rtol=1e-5, atol=1e-6)
    assert mlp.compute_output_shape((None, 2)) == (None, 2)


@pytest.mark.parametrize("size", [28, 8, 30])
def test_conv_decoder_reaches_the_target_size(size):
    decoder = networks.ConvDecoder((size, size), filters=(16, 8))
    assert decoder(keras.ops.zeros((3, 5))).shape == (3, size, size, 8)


def test_conv_encoder_halves_per_layer():
    encoder = networks.ConvEncoder((8, 16), dense_units=None)
    assert encoder(keras.ops.zeros((2, 28, 28, 1))).shape == (2, 7 * 7 * 16)


@pytest.mark.parametrize(
    "layer",
    [networks.MLP((4, 3), "tanh"), networks.MLP((4,), gated=True), networks.MLP((4, 3), input_skip=True), networks.ConvEncoder((4,), 5, 7), networks.ConvDecoder((12, 10), (4, 2), 3, None)],
)
def test_config_round_trip(layer):
    restored = type(layer).from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
