"""Training on many devices and machines with TensorFlow's own engine, `tf.distribute`, through the same
`fit`: build the model and its optimizer inside a strategy's scope, and `fit` runs every step on every
replica, all-reduces the gradients and keeps the variables mirrored.

    strategy = kv.distribute.strategy("multi-worker")          # the cluster comes from TF_CONFIG
    with strategy.scope():
        model = kv.presets.mlp_vae(input_shape=(28, 28, 1), latent_dim=32)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(kv.distribute.shard(train, strategy=strategy), epochs=30)   # train's batches are global

Strategies by name:
  - "default": one device (or whatever strategy is already in scope);
  - "mirrored": `MirroredStrategy`, one process driving every local GPU (every logical CPU device when
    there is no GPU): synchronous data parallelism on one machine;
  - "multi-worker": `MultiWorkerMirroredStrategy` over the machines that the standard TF_CONFIG lists,
    with all-reduce collectives (ring on CPU, NCCL on GPU); every worker runs the same program;
  - "parameter-server": `ParameterServerStrategy` over TF_CONFIG's "chief", "worker" and "ps" jobs:
    asynchronous training, variables on the ps tasks, each step scheduled by the chief on a free worker
    (`ClusterCoordinator.schedule`). Keras 3's `fit` has no coordinator path (its TensorFlow trainer never
    schedules), so the chief trains with `fit` below, `kerasvae.distribute.fit(model, dataset_fn, ...)`;
    the worker and ps tasks serve (`serve`) until the launcher stops them:

        strategy = kv.distribute.strategy("parameter-server")   # never returns in a worker or ps task
        with strategy.scope():
            model = kv.presets.mlp_vae(input_shape=(28, 28, 1), latent_dim=32)
            model.compile(optimizer=keras.optimizers.Adam(1e-3))
        kv.distribute.fit(model, lambda context: kv.data.pipeline(x, seed=None), epochs=30)

The global batch is split over the replicas (a batch of 128 on 4 replicas is 32 per replica), and the
models weight each replica's loss by its share of the global batch, so the updates are those of one
device on the same global batch. Under the parameter-server strategy a worker is one replica: each step
is one whole batch, applied as one device would, but asynchronously. In a cluster only the chief (`is_chief`) writes the run folder; the
others write the same files to private temporary folders, since saving reads the variables through
collectives that every worker must join.
"""

import contextlib
import functools
import json
import os
import platform
import re
from pathlib import Path

import keras
import tensorflow as tf

from kerasvae import _keras_compat
from kerasvae import callbacks as kv_callbacks
from kerasvae.choices import PRECISIONS, STRATEGIES

TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\''
)
PS_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"chief": ["host0:2222"], "worker": ["host1:2222", "host2:2222"], "ps": ["host3:2222"]}, '
    '"task": {"type": "chief", "index": 0}}\''
)
JOIN_EVERY = 16  # steps that `fit` schedules between two waits on the parameter-server cluster


def strategy(name="default", devices=None):
    """The `tf.distribute.Strategy` called `name` (one of STRATEGIES). Build and compile the model inside its
    `scope()`, then call `fit` as usual. A process gets one strategy per name (and devices): asking again
    returns the same one.

    Args:
        name: str. "default", "mirrored", "multi-worker" or "parameter-server" (in TF_CONFIG's "worker" and
            "ps" tasks this one serves and never returns; see `serve`).
        devices: list of str or None. Devices of the mirrored strategy; None takes every local GPU, or
            every logical CPU device when there is none (see `split_cpu`).

    >>> strategy("mirrored").num_replicas_in_sync >= 1
    True
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; expected one of {list(STRATEGIES)}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = devices or [d.name for d in tf.config.list_logical_devices("GPU")]
        return _strategy(name, tuple(devices or [d.name for d in tf.config.list_logical_devices("CPU")]))
    config = cluster()
    if name == "parameter-server":
        return _parameter_server(config)
    if config is None:
        raise ValueError(f"--strategy multi-worker reads the cluster from TF_CONFIG, which is not set: e.g. {TF_CONFIG_EXAMPLE}.")
    return _strategy(name, ())



def _parameter_server(config):
    if config is None:
        raise ValueError(
            "--strategy parameter-server reads the cluster from TF_CONFIG, which is not set: it needs 'chief', "
            f"'worker' and 'ps' jobs, e.g. {PS_TF_CONFIG_EXAMPLE}."
        )
    missing = [job for job in ("chief", "worker", "ps") if not config["cluster"].get(job)]
    if missing:
        raise ValueError(
            f"--strategy parameter-server needs TF_CONFIG with 'chief', 'worker' and 'ps' jobs; it has no "
            f"{' or '.join(repr(job) for job in missing)} job (it has {sorted(config['cluster'])}): "
            f"e.g. {PS_TF_CONFIG_EXAMPLE}."
        )
    if len(config["cluster"]["chief"]) != 1:
        raise ValueError(f"--strategy parameter-server needs one 'chief' in TF_CONFIG, got {config['cluster']['chief']}.")
    if config["task"]["type"] != "chief":
        serve()
    return _strategy("parameter-server", ())


@functools.cache
def _strategy(name, devices):
    # One strategy per name and devices in a process: the collectives of two strategies over the same
    # devices would share keys and abort each other, and a multi-worker strategy can start only once.
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(list(devices))
    if name == "parameter-server":
        return tf.distribute.experimental.ParameterServerStrategy(tf.distribute.cluster_resolver.TFConfigClusterResolver())
    return tf.distribute.MultiWorkerMirroredStrategy()


def serve():
    """Run this process's task of the parameter-server cluster in TF_CONFIG ("worker" or "ps") and never
    return: the task serves the chief, which places variables on the ps tasks and schedules steps on the
    workers, until the process is killed. The tasks do not stop on their own when the chief finishes; the
    launcher (a job scheduler, Kubernetes, a script) ends them when the chief's process exits, as TensorFlow
    leaves it to the launcher. `strategy("parameter-server")` calls it in worker and ps tasks.
    """
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.task_type not in ("worker", "ps"):
        raise ValueError(f"serve runs a 'worker' or 'ps' task of TF_CONFIG, not {resolver.task_type!r}.")
    # As TensorFlow's parameter-server guide sets it: an RPC to a task that is down fails at once, and the
    # coordinator reschedules the step, instead of hanging.
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    server = tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=resolver.task_type,
        task_index=resolver.task_id,
        protocol=resolver.rpc_layer or "grpc",
        start=True,
    )
    server.join()


def is_parameter_server(strategy):
    """Whether `strategy` is a ParameterServerStrategy, which trains through `fit` below, not `Model.fit`."""
    return isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy)


def fit(model, x, epochs=1, steps_per_epoch=None, callbacks=None, verbose="auto", validation_data=None, initial_epoch=0):
    """`model.fit` for a model built in a ParameterServerStrategy's scope, run by the chief of the cluster:
    each step is scheduled (`ClusterCoordinator.schedule`) on whichever worker is free, runs the model's
    `train_step` there on that worker's own copy of the data, and updates the variables on the ps tasks
    asynchronously. Callbacks see what `fit` shows them: epochs, logs every few steps (every batch call
    covers the steps since the last one), validation at each epoch's end, `stop_training`, and Keras's
    BackupAndRestore resumes as in `fit`. Returns the History.

    Each worker repeats its own copy of the dataset, and an epoch is `steps_per_epoch` steps over all the
    workers together, so the copies should shuffle differently: pass a function whose shuffles are unseeded
    (seed=None), which `fit` traces without the global seed. A worker is one replica: a step is one whole
    batch. XLA does not apply: a step reads variables on other machines. Keras variables add by reading
    and assigning, which concurrent workers would race on; during `fit` the step count and the metrics'
    sums add atomically on the ps tasks, so both count every step.

    Args:
        model: a kerasvae model built and compiled in the strategy's scope.
        x: a tf.data.Dataset of batches, or a function of a `tf.distribute.InputContext` returning one, run on
            every worker (the dataset is serialized to every worker; a function builds each worker's own).
        epochs: int. Last epoch to train (with `initial_epoch`, as in `fit`).
        steps_per_epoch: int or None. Steps of an epoch; None takes the dataset's number of batches.
        callbacks: list of keras.callbacks.Callback or None.
        verbose: "auto", 0, 1 or 2, as in `fit`.
        validation_data: a tf.data.Dataset of batches or None: evaluated by the chief after every epoch,
            every batch once, with the logs named "val_<term>".
        initial_epoch: int. Epoch to start from.
    """
    strategy = model.distribute_strategy
    if not is_parameter_server(strategy):
        raise ValueError("kerasvae.distribute.fit trains a model built in a ParameterServerStrategy's scope; call model.fit.")
    if model.jit_compile is True:
        raise ValueError("XLA (jit_compile, --xla) does not apply under the parameter-server strategy: a step reads "
                         "variables on other machines; compile the model with jit_compile=False.")
    dataset_fn = x if callable(x) and not isinstance(x, tf.data.Dataset) else None
    dataset = x if dataset_fn is None else dataset_fn(tf.distribute.InputContext())
    if steps_per_epoch is None:
        steps_per_epoch = _cardinality(dataset)
    model.plan_run(epochs * steps_per_epoch)  # as model.fit does: the step schedules fit the run
    model.prepare_for_training_data(dataset)  # as model.fit does: an "auto" likelihood's choice, a VampPrior's start
    if not model.optimizer.built:  # its variables go on the ps tasks, not into a worker's step
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    iterator = iter(coordinator.create_per_worker_dataset(_per_worker(strategy, x, dataset_fn)))
    verbose = 1 if verbose == "auto" else verbose
    # As model.fit: validation and the callbacks see the weight average the run ends on.
    arranged = kv_callbacks.with_weight_average(callbacks or [])
    callbacks = keras.callbacks.CallbackList(
        arranged, add_history=True, add_progbar=verbose != 0, verbose=verbose, epochs=epochs, steps=steps_per_epoch, model=model
    )
    try:
        with _keras_compat.atomic_assign_add([model.optimizer.iterations, *model.metrics_variables]):
            return _train(model, coordinator, iterator, steps_per_epoch, epochs, initial_epoch, callbacks, validation_data)
    finally:
        kv_callbacks.restore_trained_weights(model, arranged)


def _train(model, coordinator, iterator, steps_per_epoch, epochs, initial_epoch, callbacks, validation_data):
    step, test_step = _scheduled_step(model), tf.function(model.test_step, reduce_retracing=True)
    model.stop_training = False
    _keras_compat.set_resume_epoch(model, None)  # Keras's BackupAndRestore sets it in on_train_begin to resume
    callbacks.on_train_begin()
    initial_epoch = _keras_compat.resume_epoch(model) or initial_epoch
    # Join every few steps: callbacks see fresh logs and a worker's error surfaces early, while enough steps
    # stay queued to keep every worker busy.
    chunk = max(1, min(steps_per_epoch, JOIN_EVERY))
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        for start in range(0, steps_per_epoch, chunk):
            end = min(start + chunk, steps_per_epoch)
            callbacks.on_train_batch_begin(start)
            for _ in range(start, end):
                coordinator.schedule(step, args=(iterator,))
            coordinator.join()
            logs = _results(model)
            callbacks.on_train_batch_end(end - 1, logs)
            if model.stop_training:
                break
        if validation_data is not None and not model.stop_training:
            callbacks.on_test_begin()
            logs = {**logs, **{f"val_{name}": value for name, value in _evaluate(model, test_step, validation_data).items()}}
            callbacks.on_test_end(logs)
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    model.optimizer.finalize_variable_values(model.trainable_weights)  # as Keras's fit: a weight average takes over
    callbacks.on_train_end(logs)
    return model.history


def _cardinality(dataset):
    steps = int(dataset.cardinality())
    if steps < 0:
        raise ValueError("kerasvae.distribute.fit needs steps_per_epoch for a dataset of unknown or infinite length.")
    return steps


def _per_worker(strategy, x, dataset_fn):
    # Every worker repeats its data: a finite dataset would end on one worker while another still has
    # steps scheduled, and the coordinator cannot move a step elsewhere when its iterator ran out.
    if dataset_fn is None:
        return x.repeat()

    def worker_dataset(context):
        # One traced function builds every worker's dataset. Without a graph seed in it, an unseeded
        # shuffle (seed=None) draws its seed where it runs: each worker visits the data in its own order,
        # where the global seed would give them all one order.
        tf.compat.v1.get_default_graph().seed = None
        return dataset_fn(context).repeat()

    return lambda: strategy.distribute_datasets_from_function(worker_dataset)


def _scheduled_step(model):
    strategy = model.distribute_strategy

    @tf.function
    def step(iterator):
        # The logs stay on the worker: the trackers, on the ps tasks, gather every worker's terms.
        strategy.run(model.train_step, args=(next(iterator),))

    return step


def _results(model):
    return {name: float(value) for name, value in model.get_metrics_result().items()}


def _evaluate(model, test_step, dataset):
    # The chief evaluates, reading the variables from the ps tasks: every batch exactly once, which
    # workers each repeating their own copy could not promise.
    model.reset_metrics()
    for batch in dataset:
        test_step(batch)
    return _results(model)


def cluster():
    """TF_CONFIG as a dict ({"cluster": {job: [host:port, ...]}, "task": {"type", "index"}}), or None."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not JSON ({error}): e.g. {TF_CONFIG_EXAMPLE}.") from None
    jobs, task = config.get("cluster"), config.get("task", {})
    if not isinstance(jobs, dict) or not jobs or task.get("type") not in jobs:
        raise ValueError(f"TF_CONFIG needs a 'cluster' of jobs and this process's 'task' among them, got {text}.")
    if not 0 <= int(task.get("index", 0)) < len(jobs[task["type"]]):
        raise ValueError(f"TF_CONFIG's task index {task.get('index')} is not in its {task['type']!r} job of {len(jobs[task['type']])}.")
    return config


def is_chief(strategy):
    """Whether this process writes the run folder: always outside a cluster; in one, the "chief" task, or
    worker 0 when the cluster has no chief."""
    return bool(strategy.extended.should_checkpoint)


def task_name(strategy):
    """"chief", "worker-1", ...: the cluster task of this process ("chief" outside a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type or is_chief(strategy):
        return "chief"
    return f"{resolver.task_type}-{resolver.task_id}"


def shard(dataset, policy="data", strategy=None):
    """`dataset` of batches, ready for `fit` under a strategy: with the auto-shard policy that splits it over
    the workers of a multi-worker strategy, and, given the `strategy`, without a last batch too small to
    give every replica an example.

    Policies: "data" (the default, for data held in memory or in a few files): every worker runs the whole
    pipeline and keeps its own 1/n of the batches, so it needs the same shuffle seed on every worker
    (kerasvae's pipelines are seeded); "file": each worker reads its own files (many files, large data);
    "auto": files when the source has them, else data; "off". One machine ignores the policy.

    A last batch of fewer examples than replicas would leave a replica with an empty batch, on which TFP's
    samplers (in graph mode) and oneDNN's convolutions fail; it is dropped: fewer examples than replicas
    an epoch, other ones each epoch when the data reshuffle.
    """
    policies = {
        "auto": tf.data.experimental.AutoShardPolicy.AUTO,
        "data": tf.data.experimental.AutoShardPolicy.DATA,
        "file": tf.data.experimental.AutoShardPolicy.FILE,
        "off": tf.data.experimental.AutoShardPolicy.OFF,
    }
    if policy not in policies:
        raise ValueError(f"Unknown shard policy {policy!r}; expected one of {list(policies)}.")
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    if replicas > 1:
        dataset = dataset.filter(lambda *batch: tf.shape(tf.nest.flatten(batch)[0])[0] >= replicas)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policies[policy]
    return dataset.with_options(options)


@contextlib.contextmanager
def precision(name="float32"):
    """Build models under the Keras dtype policy `name` (one of PRECISIONS) and restore the previous policy on
    exit. "mixed_float16" and "mixed_bfloat16" compute in half precision with float32 weights; kerasvae's
    posterior, likelihood and codebook heads cast to float32, so distributions, losses and the bounds in
    nats stay float32. With "mixed_float16", `compile` wraps the optimizer in a LossScaleOptimizer."""
    if name not in PRECISIONS:
        raise ValueError(f"Unknown precision {name!r}; expected one of {list(PRECISIONS)}.")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def split_cpu(n):
    """Expose the CPU as n logical devices, so the mirrored strategy runs n replicas on a machine without
    GPUs (to try data parallelism, or test it). Must run before TensorFlow initializes its devices."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(n))
    except RuntimeError:
        raise RuntimeError("split_cpu must run before TensorFlow initializes its devices (first op, first model).") from None


def describe():
    """What `kerasvae info` prints about acceleration: devices, GPUs and their compute capability, XLA,
    oneDNN, the dtype policy, the CPU's bfloat16 support, the cluster in TF_CONFIG, and the precision that
    suits this machine."""
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append({"device": gpu.name, "name": details.get("device_name"), "compute_capability": details.get("compute_capability")})
    flags = _cpu_flags()
    cpu_bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    config = os.environ.get("TF_CONFIG") and cluster()
    return {
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "gpus": gpus,
        "built_with_cuda": tf.test.is_built_with_cuda(),
        "xla_auto_jit": "--tf_xla_auto_jit" in os.environ.get("TF_XLA_FLAGS", ""),
        "onednn": _onednn_enabled(),
        "cpu": platform.machine(),
        "cpu_bfloat16": cpu_bf16,
        "dtype_policy": keras.config.dtype_policy().name,
        "cluster": None if not config else {"jobs": {k: len(v) for k, v in config["cluster"].items()}, "task": config["task"]},
        "suggested_precision": _suggested_precision(gpus, cpu_bf16),
    }


def _suggested_precision(gpus, cpu_bf16):
    # Tensor cores: float16 from compute capability 7.0 (Volta), bfloat16 from 8.0 (Ampere); on CPUs,
    # oneDNN runs bfloat16 matrix products natively with AVX512_BF16 or AMX.
    capabilities = [tuple(g["compute_capability"]) for g in gpus if g["compute_capability"]]
    if capabilities:
        lowest = min(capabilities)
        return "mixed_bfloat16" if lowest >= (8, 0) else "mixed_float16" if lowest >= (7, 0) else "float32"
    return "mixed_bfloat16" if cpu_bf16 else "float32"


def _cpu_flags():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return set()
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


def _onednn_enabled():
    # TF reports oneDNN only in its start-up log; the switch is TF_ENABLE_ONEDNN_OPTS, on by default in
    # x86-64 Linux builds since TF 2.9.
    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if setting is not None:
        return setting.strip().lower() not in ("0", "false")
    return platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")
