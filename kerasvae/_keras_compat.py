"""Every private Keras and TensorFlow name kerasvae relies on, declared once and checked when it is imported.

kerasvae overrides a few private hooks of Keras (a subclass method that Keras calls by name), reads and
writes a few private attributes, and calls one private TensorFlow method. Nothing in Keras promises these
names: a release that renames a hook would stop calling the override without an error, and a run would
silently train, back up or resume differently. So each one is in `PRIVATES` below, the rest of kerasvae
reaches attributes only through the accessors at the end of this module, and `verify()` runs at import:
every name must still exist with the parameters kerasvae gives it, and where Keras must call the override
or use the attribute, the Keras functions that do so must still mention it. A name that fails raises
`KerasCompatibilityError` (an ImportError) naming the Keras and TensorFlow versions and the name; a name
that only buys speed turns its feature off instead, with one warning.
"""

import contextlib
import importlib
import inspect
import types
import warnings
from typing import NamedTuple

import keras
import tensorflow as tf

# The versions the test suite covers; pyproject.toml's dependencies carry the same bounds.
TESTED = "keras>=3.8,<3.16, tensorflow>=2.18,<2.22"
FUSED_ADAM = "the fused Adam update (kerasvae.optimizers.Adam)"

QUIET_ARRAYS = "fit's in-memory arrays without tf.data's autotuner (kerasvae.data.without_autotuning)"
ADAPTERS = "keras.src.trainers.data_adapters"
BACKUP = "keras.callbacks.BackupAndRestore"
OPTIMIZER = "keras.optimizers.Optimizer"


class Private(NamedTuple):
    name: str  # dotted path: module, class, name
    why: str  # what kerasvae does with it
    params: tuple = None  # a method's parameter names, as kerasvae overrides or calls it; None for an attribute
    # Keras functions that must still mention the name (Keras calls the override, uses the attribute); "a|b": either,
    # where Keras has moved the use between versions
    used_in: tuple = ()
    override: str = None  # the kerasvae method that overrides it (tests check its parameters)
    feature: str = None  # speed only: a failure turns this feature off with a warning instead of raising


PRIVATES = (
    Private("keras.Model._maybe_symbolic_build", "LatentVariableModel builds only the optimizer, drawing no batch "
            "(keras-team/keras#20585)", ("self", "iterator", "data_batch"), ("keras.Model.fit", "keras.Model.evaluate"),
            override="kerasvae.models.multi_worker.MultiWorkerSteps._maybe_symbolic_build"),
    Private("keras.Model._distribute_strategy", "LatentVariableModel._maybe_symbolic_build builds the optimizer in it",
            used_in=("keras.Model._maybe_symbolic_build", "keras.Model.distribute_strategy")),
    Private("tensorflow.python.distribute.collective_all_reduce_strategy.CollectiveAllReduceExtended._in_multi_worker_mode",
            "whether a MultiWorkerMirroredStrategy spans several workers", ("self",)),
    Private(f"{BACKUP}._save_model", "RunBackup writes the backup atomically", ("self",), (f"{BACKUP}.on_epoch_end",),
            override="kerasvae.training.RunBackup._save_model"),
    Private(f"{BACKUP}._weights_path", "RunBackup restores from another folder than it writes to",
            used_in=(f"{BACKUP}.__init__", f"{BACKUP}._load_model", f"{BACKUP}._save_model")),
    Private(f"{BACKUP}._training_metadata_path", "RunBackup restores from another folder than it writes to",
            used_in=(f"{BACKUP}.__init__", f"{BACKUP}._load_model", f"{BACKUP}._save_model")),
    Private(f"{BACKUP}._current_epoch", "RunBackup writes the epoch to resume from", used_in=(f"{BACKUP}.on_epoch_end",
            f"{BACKUP}._save_model")),
    Private(f"{BACKUP}._last_batch_seen", "RunBackup writes the batch to resume from", used_in=(f"{BACKUP}._save_model",)),
    Private("keras.Model._initial_epoch", "distribute.fit resumes where BackupAndRestore says, as Keras's fit does",
            used_in=(f"{BACKUP}._load_model", "keras.Model.fit")),
    Private("keras.Variable.assign_add", "distribute.fit shadows it on counters so that workers add atomically",
            ("self", "value"), ("keras.metrics.Mean.update_state", f"{OPTIMIZER}.apply|{OPTIMIZER}._backend_apply_gradients")),
    Private(f"{OPTIMIZER}._update_model_variables_moving_average", "Adam's weight average warms its momentum up",
            ("self", "trainable_variables"), (f"{OPTIMIZER}._backend_apply_gradients",),
            override="kerasvae.optimizers.Adam._update_model_variables_moving_average"),
    Private(f"{OPTIMIZER}._model_variables_moving_average", "Adam's weight average updates Keras's averages",
            used_in=(f"{OPTIMIZER}.build", f"{OPTIMIZER}._overwrite_model_variables_with_average_value")),
    Private("keras.optimizers.Adam._get_variable_index", "the fused Adam finds a variable's moments",
            ("self", "variable"), feature=FUSED_ADAM),
    Private("keras.optimizers.Adam._momentums", "the fused Adam updates Keras's first moments in place",
            used_in=("keras.optimizers.Adam.build", "keras.optimizers.Adam.update_step"), feature=FUSED_ADAM),
    Private("keras.optimizers.Adam._velocities", "the fused Adam updates Keras's second moments in place",
            used_in=("keras.optimizers.Adam.build", "keras.optimizers.Adam.update_step"), feature=FUSED_ADAM),
    Private("keras.layers.Layer._flatten_layers", "networks.unrolled finds a model's recurrent layers",
            ("self", "include_self", "recursive")),
    Private("keras.layers.Layer._tracker", "a likelihood=\"auto\" model's first fit replaces its head "
            "(replace_layer) and untracks the old one", used_in=("keras.layers.Layer.__setattr__",)),
    Private("keras.src.utils.tracking.Tracker.untrack", "replace_layer drops the old head from the model's "
            "layers, so its weights leave the model's", ("self", "value")),
    Private("keras.layers.Layer._layers", "replace_layer puts the new head at the old one's place, so the "
            "weights keep the order a rebuilt model has", used_in=("keras.layers.Layer.weights",)),
    Private(f"{ADAPTERS}.array_data_adapter.ArrayDataAdapter.__init__", "fit hands Keras its own array adapter",
            ("self", "x", "y", "sample_weight", "batch_size", "steps", "shuffle", "class_weight"), feature=QUIET_ARRAYS),
    Private(f"{ADAPTERS}.array_data_adapter.ArrayDataAdapter.get_tf_dataset", "the adapter's pipeline, given options",
            ("self",), feature=QUIET_ARRAYS),
    Private(f"{ADAPTERS}.array_data_adapter.can_convert_arrays", "which inputs Keras's array adapter takes",
            ("arrays",), feature=QUIET_ARRAYS),
    Private(f"{ADAPTERS}.DataAdapter", "fit's epoch iterators take a DataAdapter as x, as it is",
            used_in=(f"{ADAPTERS}.get_data_adapter",), feature=QUIET_ARRAYS),
)


class KerasCompatibilityError(ImportError):
    """The installed Keras or TensorFlow lacks, or has changed, a private name that kerasvae relies on."""


class KerasCompatibilityWarning(UserWarning):
    """A speed-only private name is gone: kerasvae takes Keras's own, slower path."""


def resolve(path):
    """The object at a dotted path: attributes from the top module down, importing submodules not yet loaded."""
    names = path.split(".")
    obj = importlib.import_module(names[0])
    for i, name in enumerate(names[1:], 2):
        obj = importlib.import_module(".".join(names[:i])) if inspect.ismodule(obj) and not hasattr(obj, name) else getattr(obj, name)
    return obj


def _function(obj):
    obj = getattr(obj, "fget", obj)  # a property's getter
    return inspect.unwrap(getattr(obj, "__func__", obj))  # a bound or class method; Keras's traceback decorators


def _names(code):
    """Every global and attribute name that a function's code (its nested functions included) mentions."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _mentioned_by(users, name):
    """Whether any of the "|"-separated functions `users` mentions `name`."""
    for user in users.split("|"):
        try:
            if name in _names(_function(resolve(user)).__code__):
                return True
        except (ImportError, AttributeError):
            continue
    return False


def problems(privates=PRIVATES):
    """[(private, what is wrong)] for each private name that the installed Keras/TF no longer has as declared."""
    found = []
    for private in privates:
        attribute = private.name.rsplit(".", 1)[1]
        try:
            if private.params is not None:
                params = tuple(inspect.signature(_function(resolve(private.name))).parameters)
                if params != private.params:
                    found.append((private, f"takes ({', '.join(params)}), not ({', '.join(private.params)})"))
                    continue
            unused = [users.replace("|", " or ") for users in private.used_in if not _mentioned_by(users, attribute)]
            if unused:
                found.append((private, f"is no longer used by {', '.join(unused)}"))
        except (ImportError, AttributeError, TypeError, ValueError) as error:
            found.append((private, f"is missing ({error})"))
    return found


def _versions():
    return f"Keras {keras.__version__} (TensorFlow {tf.__version__})"


_unusable = {}  # feature -> what failed
_warned = set()


def verify(privates=PRIVATES):
    """Raise KerasCompatibilityError for a required name that fails `problems`; turn off the features whose
    speed-only names fail (see `usable`)."""
    found = problems(privates)
    required = [f"  {private.name} {problem}: {private.why}" for private, problem in found if private.feature is None]
    if required:
        raise KerasCompatibilityError(
            f"kerasvae relies on private Keras/TensorFlow names that {_versions()} no longer has as expected:\n"
            + "\n".join(required)
            + f"\nkerasvae is tested with {TESTED}; install versions in that range."
        )
    _unusable.clear()
    _warned.clear()
    for private, problem in found:
        _unusable.setdefault(private.feature, f"{private.name} {problem}")


def usable(feature):
    """Whether `feature`'s speed-only private names passed `verify`; warns once when they did not."""
    if feature not in _unusable:
        return True
    if feature not in _warned:
        _warned.add(feature)
        warnings.warn(f"kerasvae turns off {feature} and takes Keras's own path (same results, slower): "
                      f"in {_versions()}, {_unusable[feature]}; kerasvae is tested with {TESTED}.",
                      KerasCompatibilityWarning, stacklevel=2)
    return False


verify()


# === Accessors: the only places outside PRIVATES' overrides where kerasvae touches these names ===


def creation_strategy(model):
    """The tf.distribute strategy `model` was created in, or None (`distribute_strategy` says the default one)."""
    return model._distribute_strategy


def in_multi_worker_mode(strategy):
    """Whether a MultiWorkerMirroredStrategy spans several workers (TF_CONFIG lists more than this one)."""
    return strategy.extended._in_multi_worker_mode()


def resume_epoch(model):
    """The epoch BackupAndRestore's `on_train_begin` says to resume from, or None."""
    return model._initial_epoch


def set_resume_epoch(model, epoch):
    model._initial_epoch = epoch


def backup_paths(callback):
    """(weights file, metadata file) that a BackupAndRestore restores from and writes to."""
    return callback._weights_path, callback._training_metadata_path


def restore_backup_from(callback, weights_path, metadata_path):
    callback._weights_path, callback._training_metadata_path = str(weights_path), str(metadata_path)


def backup_position(callback):
    """What BackupAndRestore's metadata file records: {"epoch": next epoch to run, "batch": last batch seen}."""
    return {"epoch": callback._current_epoch, "batch": callback._last_batch_seen}


def adam_moments(optimizer, variable):
    """(first, second) moment variables of `variable` in a built keras.optimizers.Adam."""
    index = optimizer._get_variable_index(variable)
    return optimizer._momentums[index], optimizer._velocities[index]


def weight_averages(optimizer):
    """The optimizer's weight-average variables (its `use_ema`), one per trainable variable (None where unused)."""
    return optimizer._model_variables_moving_average


def array_adapter(x, y, sample_weight, batch_size, steps, shuffle, class_weight, dataset_options):
    """Keras's own adapter for in-memory arrays, which fit builds from them (the same batches, the same
    shuffling), with `dataset_options(dataset)` applied to its tf.data pipeline; fit and evaluate take it as
    x. None where the inputs are not arrays or the names failed `verify`."""
    if not usable(QUIET_ARRAYS):
        return None
    adapters = resolve(f"{ADAPTERS}.array_data_adapter")
    if not adapters.can_convert_arrays((x, y, sample_weight)):
        return None

    class ArrayAdapter(adapters.ArrayDataAdapter):
        def get_tf_dataset(self):
            return dataset_options(super().get_tf_dataset())

    return ArrayAdapter(x, y, sample_weight=sample_weight, batch_size=batch_size, steps=steps, shuffle=shuffle,
                        class_weight=class_weight)


def flatten_layers(layer):
    """`layer` and every layer nested in it."""
    return layer._flatten_layers()


def replace_layer(owner, name, layer):
    """Sets `owner.<name> = layer` in place of the layer there: the old one leaves owner's layers, so its
    weights leave `owner.weights`, and the new one takes its place in their order."""
    # Keras tracks every layer ever assigned to an attribute, in assignment order: reassigning alone would
    # keep the old weights and put the new ones last, where a model rebuilt from its config has them earlier.
    old = getattr(owner, name)
    position = next(i for i, tracked in enumerate(owner._layers) if tracked is old)
    owner._tracker.untrack(old)
    setattr(owner, name, layer)
    owner._layers.insert(position, owner._layers.pop())


@contextlib.contextmanager
def atomic_assign_add(variables):
    """Within the block, Keras's increments of `variables` (`assign_add`, as metrics and the step count add)
    are one atomic add on the tf.Variable underneath."""
    # A Keras variable adds by reading itself and assigning the sum: two parameter-server workers adding at
    # once to a count on a ps task would lose one addition (a count of 25 for 36 steps). An instance
    # attribute shadows the class's method for the calls Keras makes.
    for variable in variables:
        variable.assign_add = variable.value.assign_add
    try:
        yield
    finally:
        for variable in variables:
            del variable.assign_add
