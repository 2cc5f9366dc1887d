"""`keras.saving.load_model` finds kerasvae's classes after a plain `import kerasvae`, with no custom_objects.

Keras resolves a saved object by its registered name ("kerasvae>VAE") in the registry that
`register_keras_serializable` fills when the class's module runs; it imports a saved module by path only
for Keras's own packages. The package itself imports lazily, so `kerasvae --help` answers before TensorFlow
loads; the modules that register classes are therefore imported as soon as Keras is loaded and no kerasvae
module is half-way through its own import (a registering module that needs another's class would find it
half-defined). A meta-path finder watches the imports of `keras` and of kerasvae's submodules for that
moment and then removes itself. tests/test_registration.py loads a saved model in fresh processes after
each kind of first import.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

REGISTERING_MODULES = (
    "kerasvae.corruptions", "kerasvae.likelihoods", "kerasvae.networks", "kerasvae.optimizers", "kerasvae.posteriors",
    "kerasvae.priors", "kerasvae.codebook", "kerasvae.code_priors", "kerasvae.sparsity", "kerasvae.models",
)


def register_classes():
    for name in REGISTERING_MODULES:
        importlib.import_module(name)


class _RegisterWhenReady(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it asks the other finders for `keras` and kerasvae's submodules and wraps
    what they found, to learn when Keras has loaded and when each kerasvae module has finished."""

    def __init__(self):
        self._finding = False
        self._running = set()  # kerasvae modules whose code is executing

    def find_spec(self, fullname, path=None, target=None):
        if self._finding or not (fullname == "keras" or fullname.startswith("kerasvae.")):
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
            self._running.add(fullname)
            try:
                load(module)
            finally:
                self._running.discard(fullname)
            if "keras" in sys.modules and not self._running:
                self._register()

        spec.loader.exec_module = exec_module
        return spec

    def _register(self):
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # first: the imports below need no watching
        try:
            register_classes()
        except (ImportError, AttributeError) as error:  # say why, without breaking the import that got here
            warnings.warn(f"kerasvae could not register its Keras classes: {error!r}", stacklevel=2)


def register_when_keras_loads():
    if "keras" in sys.modules:
        register_classes()
    elif not any(isinstance(finder, _RegisterWhenReady) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenReady())
