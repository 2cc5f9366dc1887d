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
  - "parameter-server": `ParameterServerStrategy` needs a coordinator driving the workers through
    `ClusterCoordinator.schedule`, which Keras 3's `fit` does not do; `strategy` says so and names what
    the multi-worker strategy needs instead.

The global batch is split over the replicas (a batch of 128 on 4 replicas is 32 per replica), and the
models weight each replica's loss by its share of the global batch, so the updates are those of one
device on the same global batch. In a cluster only the chief (`is_chief`) writes the run folder; the
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

STRATEGIES = ("default", "mirrored", "multi-worker", "parameter-server")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\''
)


def strategy(name="default", devices=None):
    """The `tf.distribute.Strategy` called `name` (one of STRATEGIES). Build and compile the model inside its
    `scope()`, then call `fit` as usual. A process gets one strategy per name (and devices): asking again
    returns the same one.

    Args:
        name: str. "default", "mirrored", "multi-worker" or "parameter-server".
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
        raise ValueError(
            "the parameter-server strategy needs a coordinator that schedules each step on the workers "
            "(tf.distribute.coordinator.ClusterCoordinator) and TF_CONFIG with 'chief', 'worker' and 'ps' jobs "
            f"({'TF_CONFIG has ' + str(sorted(config['cluster'])) if config else 'TF_CONFIG is not set'}); "
            "Keras 3's fit does not drive one. Use --strategy multi-worker: every machine is a worker, "
            f"e.g. {TF_CONFIG_EXAMPLE}."
        )
    if config is None:
        raise ValueError(f"--strategy multi-worker reads the cluster from TF_CONFIG, which is not set: e.g. {TF_CONFIG_EXAMPLE}.")
    return _strategy(name, ())


@functools.cache
def _strategy(name, devices):
    # One strategy per name and devices in a process: the collectives of two strategies over the same
    # devices would share keys and abort each other, and a multi-worker strategy can start only once.
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(list(devices))
    return tf.distribute.MultiWorkerMirroredStrategy()


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
