"""Shared fixtures: real data (scikit-learn's digits, always offline) and small models trained on it."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

import kerasvae as kv

DIGITS_SHAPE = (8, 8, 1)

# A subprocess script's first lines: any import of TensorFlow, Keras, grpc or protobuf fails after them, so
# what runs next proves it needs none of them.
WITHOUT_TENSORFLOW = """
import importlib.abc, sys
BLOCKED = {"tensorflow", "keras", "tf_keras", "tensorflow_probability", "tensorflow_serving", "grpc", "google"}
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Blocked())
"""


@pytest.fixture(scope="session")
def digits():
    """(x_train, y_train, x_test, y_test): 8x8 digits in [0, 1]."""
    x_train, y_train = kv.data.load_arrays("digits", "train")
    x_test, y_test = kv.data.load_arrays("digits", "test")
    return x_train, y_train, x_test, y_test


@pytest.fixture(scope="session")
def binary_digits(digits):
    x_train, y_train, x_test, y_test = digits
    return kv.data.binarize_static(x_train, 0), y_train, kv.data.binarize_static(x_test, 1), y_test


def small_vae(**kwargs):
    options = dict(latent_dim=4, input_shape=DIGITS_SHAPE, hidden=(64, 32), seed=0)
    options.update(kwargs)
    return kv.presets.mlp_vae(**options)


def fit(model, x, epochs=5, batch_size=64, learning_rate=3e-3):
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return model.fit(x, epochs=epochs, batch_size=batch_size, verbose=0).history


@pytest.fixture(scope="session")
def trained_vae(binary_digits):
    """A VAE trained for 30 epochs on binarized digits: good enough that its bounds are meaningful."""
    model = small_vae()
    fit(model, binary_digits[0], epochs=30)
    return model


def assert_same_outputs(model, reloaded, x):
    np.testing.assert_allclose(model.reconstruct(x), reloaded.reconstruct(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.elbo(x, seed=3), reloaded.elbo(x, seed=3), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(model.sample(4, seed=5), reloaded.sample(4, seed=5), rtol=1e-5, atol=1e-6)


def predict_request(name, signature, inputs, version=None):
    """A TF Serving PredictRequest; inputs are arrays, or TensorProtos passed as they are (malformed ones too)."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value))
    return request
