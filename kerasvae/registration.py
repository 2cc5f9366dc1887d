"""`keras.saving.load_model` finds kerasvae's classes after a plain `import kerasvae`, with no custom_objects.

Keras resolves a saved object by its registered name ("kerasvae>VAE") in the registry that
`register_keras_serializable` fills when the class's module runs; it imports a saved module by path only
for Keras's own packages. The package itself imports lazily, so `kerasvae --help` answers before TensorFlow
loads; the modules that register classes are therefore imported as soon as Keras is: at once when it
already is, otherwise right after Keras's own import, by a one-shot import hook. They only add classes to
the registry, so importing them from inside Keras's import is safe (tests/test_registration.py imports every
kerasvae module first in a fresh process and loads a saved model after it).
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

REGISTERING_MODULES = (
    "kerasvae.corruptions", "kerasvae.likelihoods", "kerasvae.networks", "kerasvae.optimizers", "kerasvae.posteriors",
    "kerasvae.priors", "kerasvae.quantizers", "kerasvae.sparsity", "kerasvae.models",
)


def register_classes():
    for name in REGISTERING_MODULES:
        importlib.import_module(name)


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it asks the other finders for `keras` and, when the module they found is
    executed, runs `register_classes` after it. It stays in place until then, because TensorFlow looks
    `keras` up (find_spec) many times before it imports it."""

    def __init__(self):
        self._finding = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" or self._finding:
            return None
        self._finding = True  # the lookup below asks every finder again, this one included
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load = spec.loader.exec_module  # this spec's own loader instance: patching it touches no other module

        def exec_module(module):
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            load(module)
            try:
                register_classes()
            except (ImportError, AttributeError) as error:  # Keras itself loaded; say why kerasvae's classes did not
                warnings.warn(f"kerasvae could not register its Keras classes: {error!r}", stacklevel=2)

        spec.loader.exec_module = exec_module
        return spec


def register_when_keras_loads():
    if "keras" in sys.modules:
        register_classes()
    elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())
