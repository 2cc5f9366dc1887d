"""Torsos: output shapes for the shapes users have, and config round trips."""

import keras
import pytest

from kerasvae import networks


def test_mlp_flattens_and_stacks():
    assert networks.MLP((32, 16))(keras.ops.zeros((2, 8, 8, 1))).shape == (2, 16)


@pytest.mark.parametrize("size", [28, 8, 30])
def test_conv_decoder_reaches_the_target_size(size):
    decoder = networks.ConvDecoder((size, size), filters=(16, 8))
    assert decoder(keras.ops.zeros((3, 5))).shape == (3, size, size, 8)


def test_conv_encoder_halves_per_layer():
    encoder = networks.ConvEncoder((8, 16), dense_units=None)
    assert encoder(keras.ops.zeros((2, 28, 28, 1))).shape == (2, 7 * 7 * 16)


@pytest.mark.parametrize(
    "layer",
    [networks.MLP((4, 3), "tanh"), networks.ConvEncoder((4,), 5, 7), networks.ConvDecoder((12, 10), (4, 2), 3, None)],
)
def test_config_round_trip(layer):
    restored = type(layer).from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
