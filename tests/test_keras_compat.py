"""The guard on Keras's private names (kerasvae._keras_compat): it passes on the installed versions, every
private name kerasvae touches is declared, it fails at import naming the Keras version and the name when one
is gone or changed, and the fused Adam falls back to Keras's update instead, with one warning."""

import ast
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasvae
from kerasvae import _keras_compat, optimizers

PACKAGE = Path(kerasvae.__file__).parent
DECLARED = {private.name.rsplit(".", 1)[1] for private in _keras_compat.PRIVATES}


@pytest.fixture
def patch_keras():
    """A monkeypatch for Keras; its patches are undone, and the guard's state re-verified, after the test."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch
    _keras_compat.verify()


def _defining_class(cls, name):
    return next(c for c in cls.__mro__ if name in vars(c))


def test_the_guard_passes_on_the_installed_versions():
    assert _keras_compat.problems() == []
    assert _keras_compat.usable(_keras_compat.FUSED_ADAM)


def test_the_tested_range_is_pyprojects():
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    for requirement in _keras_compat.TESTED.split(", "):
        assert f'"{requirement}"' in pyproject


def test_every_override_takes_the_parameters_of_the_keras_hook_it_overrides():
    overrides = [private for private in _keras_compat.PRIVATES if private.override]
    assert overrides
    for private in overrides:
        override = _keras_compat.resolve(private.override)
        assert override.__module__.startswith("kerasvae.")
        assert tuple(inspect.signature(override).parameters) == private.params, private.override


def _kerasvae_modules():
    modules = []
    for info in pkgutil.walk_packages([str(PACKAGE)], "kerasvae."):
        try:
            modules.append(importlib.import_module(info.name))
        except ImportError:  # an optional dependency (export, serving) is not installed
            pass
    return modules


def _generated(cls, name, value):
    """Whether a kerasvae class's attribute comes from a base's machinery, not from kerasvae's source:
    ABCMeta's `_abc_impl`, the methods TFP's distributions give every subclass (`_type_spec`...)."""
    module = getattr(_keras_compat._function(value), "__module__", None)
    return cls.__module__.startswith("kerasvae") and (name == "_abc_impl" or (
        callable(_keras_compat._function(value)) and module is not None and not module.startswith("kerasvae")))


def _names(cls):
    """Every name a class defines or its methods mention (self._x reads and writes included)."""
    own = {name: value for name, value in vars(cls).items() if not _generated(cls, name, value)}
    names = set(own)
    for value in own.values():
        code = getattr(_keras_compat._function(value), "__code__", None)
        if isinstance(code, types.CodeType):
            names |= _keras_compat._names(code)
    return names


def test_kerasvae_subclasses_of_keras_share_only_declared_private_names_with_it():
    # A kerasvae subclass method or attribute named like one of its Keras base's private ones overrides or
    # reads Keras's: it must be in PRIVATES, where the guard checks it.
    shared = {}
    for module in _kerasvae_modules():
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and cls.__module__ == module.__name__):
                continue
            bases = [base for base in cls.__mro__ if base.__module__.split(".")[0] in ("keras", "tensorflow")]
            ours = [base for base in cls.__mro__ if base.__module__.startswith("kerasvae")]
            if bases:
                keras_names = set().union(*map(_names, bases))
                for name in set().union(*map(_names, ours)) & keras_names:
                    if name.startswith("_") and not name.startswith("__"):
                        shared.setdefault(name, set()).add(cls.__qualname__)
    assert {"_maybe_symbolic_build", "_save_model", "_update_model_variables_moving_average"} <= set(shared)
    assert set(shared) <= DECLARED, {name: classes for name, classes in shared.items() if name not in DECLARED}


def test_private_names_read_from_other_objects_are_kerasvaes_own_or_declared():
    # `something._x` outside _keras_compat, on anything but self: _x must be a kerasvae name, or declared.
    trees = [ast.parse(path.read_text()) for path in PACKAGE.rglob("*.py")
             if path.name not in ("_keras_compat.py", "_metadata_schema_py_generated.py")]
    own, read = set(), {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
    for tree in trees:
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                read.setdefault(node.attr, node.lineno)
    assert {name for name in read if name not in own} <= DECLARED


def test_the_guard_names_the_keras_version_and_a_missing_hook(patch_keras):
    patch_keras.delattr(_defining_class(keras.Model, "_maybe_symbolic_build"), "_maybe_symbolic_build")
    with pytest.raises(ImportError) as raised:
        _keras_compat.verify()
    assert isinstance(raised.value, _keras_compat.KerasCompatibilityError)
    message = str(raised.value)
    assert f"Keras {keras.__version__} (TensorFlow {tf.__version__})" in message
    assert "keras.Model._maybe_symbolic_build is missing" in message
    assert "keras>=3.8,<3.16" in message


def test_the_guard_fires_when_a_hook_changes_its_parameters_or_keras_stops_calling_it(patch_keras):
    def renamed(self, iterator=None, batch=None):
        pass

    def saves_nothing(self, epoch, logs=None):
        pass

    patch_keras.setattr(_defining_class(keras.Model, "_maybe_symbolic_build"), "_maybe_symbolic_build", renamed)
    patch_keras.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", saves_nothing)
    with pytest.raises(_keras_compat.KerasCompatibilityError) as raised:
        _keras_compat.verify()
    message = str(raised.value)
    assert "keras.Model._maybe_symbolic_build takes (self, iterator, batch), not (self, iterator, data_batch)" in message
    assert "keras.callbacks.BackupAndRestore._save_model is no longer used by keras.callbacks.BackupAndRestore.on_epoch_end" in message


@pytest.mark.slow
def test_importing_kerasvae_under_a_keras_without_a_hook_fails_naming_it():
    # The guard runs at import: a Keras without BackupAndRestore._save_model stops kerasvae.training loading.
    script = ("import keras\n"
              "del keras.callbacks.BackupAndRestore._save_model\n"
              "import kerasvae.training\n")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode != 0
    assert "KerasCompatibilityError" in done.stderr
    assert f"Keras {keras.__version__}" in done.stderr and "BackupAndRestore._save_model is missing" in done.stderr


def _count_fused_updates(patch_keras):
    calls = []
    fused = tf.raw_ops.ResourceApplyAdam
    patch_keras.setattr(tf.raw_ops, "ResourceApplyAdam", lambda **kwargs: calls.append(1) or fused(**kwargs))
    return calls


def test_the_fused_adam_uses_the_fused_kernel_while_the_guard_passes(patch_keras):
    calls = _count_fused_updates(patch_keras)
    weights = [keras.Variable(np.ones((2, 3), "float32")), keras.Variable(np.zeros(3, "float32"))]
    optimizers.Adam(0.1).apply([np.ones((2, 3), "float32"), np.ones(3, "float32")], weights)
    assert len(calls) == 2


def _fit(optimizer):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.1 * rng.normal(size=(64, 1)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0).history["loss"]
    return history, [np.asarray(weight) for weight in model.weights]


def test_the_fused_adam_falls_back_to_kerass_update_with_one_warning(patch_keras):
    # Keras's Adam.build no longer mentions `_momentums`: as if a Keras release had moved its moments.
    build = keras.optimizers.Adam.build
    patch_keras.setattr(keras.optimizers.Adam, "build", lambda self, var_list: build(self, var_list))
    _keras_compat.verify()  # no error: the fused update only buys speed
    calls = _count_fused_updates(patch_keras)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback_losses, fallback_weights = _fit(optimizers.Adam(0.01))
        more_losses, _ = _fit(optimizers.Adam(0.01))  # a second optimizer: still the one warning
    reference_losses, reference_weights = _fit(keras.optimizers.Adam(0.01))
    assert not calls
    np.testing.assert_allclose(fallback_losses, reference_losses, rtol=1e-5)
    np.testing.assert_allclose(more_losses, reference_losses, rtol=1e-5)
    for a, b in zip(fallback_weights, reference_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert fallback_losses[-1] < fallback_losses[0]  # it did train
    warned = [str(w.message) for w in caught if issubclass(w.category, _keras_compat.KerasCompatibilityWarning)]
    assert len(warned) == 1
    assert f"Keras {keras.__version__}" in warned[0] and "keras.optimizers.Adam._momentums" in warned[0]
