"""kerasvae.distribute: MirroredStrategy over 2 logical CPU devices trains like one device on the same global
batch (VAE with KL warm-up, VQ-VAE with EMA codebook and restarts), and `kerasvae train --strategy
multi-worker` runs as two processes on loopback, survives a killed worker and resumes from its backup.

Logical devices and TF_CONFIG must be set before TensorFlow starts, so those tests run in subprocesses."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasvae as kv
from kerasvae import cli

pytestmark = pytest.mark.slow  # clusters of processes and strategies: the full suite runs them, `-m 'not slow'` does not

# Trains each family on digits for 2 epochs with SGD on one device and on 2 replicas, from the same initial
# weights, data order and global batch of 128; prints the histories and what the replicas hold. SGD, unlike
# Adam, steps in proportion to the gradient: a per-replica loss scaled twice (or not at all) trains like a
# learning rate of 0.1 (or 0.025), which moves the VAE's losses 4-7% off the one-device run.
MIRRORED_SCRIPT = """
import json
import kerasvae as kv
kv.distribute.split_cpu(2)
import keras
import numpy as np
import tensorflow as tf

x, _ = kv.data.load_arrays("digits", "train")

def build(family):
    if family == "vae":
        return kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4, hidden=(64, 32), seed=0, kl_warmup_steps=40)
    return kv.VQVAE(kv.networks.MLP((64,)), kv.networks.MLP((64,)), input_shape=(8, 8, 1), num_embeddings=16,
                    embedding_dim=4, num_latents=2, ema_decay=0.9, restart_after=5, seed=0)

def train(family, strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build(family)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
    history = model.fit(kv.data.pipeline(x, batch_size=128, seed=0), epochs=2, verbose=0).history
    copies = [[v.numpy().tolist() for v in strategy.experimental_local_results(variable)]
              for variable in model.non_trainable_variables]
    return {"history": history, "iterations": int(model.optimizer.iterations.numpy()),
            "replicas_agree": all(np.allclose(c[0], c[-1]) for c in copies),
            "cluster_size": model.quantizer.cluster_size.numpy().tolist() if family == "vq" else None}

def gathered():
    strategy = kv.distribute.strategy("mirrored")
    batch = tf.data.Dataset.from_tensor_slices(np.arange(6.0)).batch(6)
    batch = next(iter(strategy.experimental_distribute_dataset(batch)))
    run = strategy.run(lambda t: (kv.models.multi_worker.all_replicas(t), kv.models.training_steps.batch_share(t)), args=(batch,))
    return [[r.numpy().tolist() for r in strategy.experimental_local_results(part)] for part in run]

def replica_seeds():
    strategy = kv.distribute.strategy("mirrored")
    with strategy.scope():
        generator = keras.random.SeedGenerator(0)
    seeds = strategy.run(tf.function(lambda: kv._tfp.stateless_seed(generator)))
    return [s.numpy().tolist() for s in strategy.experimental_local_results(seeds)]

def replica_corruptions():
    strategy = kv.distribute.strategy("mirrored")
    with strategy.scope():
        layer = kv.corruptions.GaussianNoise(1.0, seed=0)
    noise = strategy.run(tf.function(lambda: layer(tf.zeros([4, 3]), training=True)))
    return [n.numpy().tolist() for n in strategy.experimental_local_results(noise)]

def split(n, batch_size):
    strategy = kv.distribute.strategy("mirrored")
    dataset = kv.distribute.shard(tf.data.Dataset.range(n).batch(batch_size), strategy=strategy)
    return [[int(t.shape[0]) for t in strategy.experimental_local_results(b)] for b in strategy.experimental_distribute_dataset(dataset)]

print(json.dumps({"replicas": kv.distribute.strategy("mirrored").num_replicas_in_sync, "gathered": gathered(),
                  "replica_seeds": replica_seeds(), "replica_corruptions": replica_corruptions(),
                  "splits": {n: split(n, 4) for n in (9, 10)},
                  **{f"{family}_{name}": train(family, kv.distribute.strategy(name))
                     for family in ("vae", "vq") for name in ("default", "mirrored")}}))
"""


@pytest.fixture(scope="module")
def mirrored():
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_replicas_gather_the_global_batch_and_weight_their_share(mirrored):
    assert mirrored["replicas"] == 2
    gathered, shares = mirrored["gathered"]
    assert gathered == [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]] * 2  # each replica sees the whole batch of 6
    assert shares == [0.5, 0.5]  # 3 examples of 6 each
    # Batches of 4 on 2 replicas: a last batch of 2 splits 1 + 1; a last batch of 1 would leave a replica
    # empty (TFP's samplers and oneDNN's convolutions fail there), so shard drops it.
    assert mirrored["splits"] == {"10": [[2, 2], [2, 2], [1, 1]], "9": [[2, 2], [2, 2]]}


def test_replicas_draw_their_own_noise_and_one_device_keeps_its_seeds(mirrored):
    # A SeedGenerator advances in step on every replica; each replica's seed folds in its id, so replicas
    # draw other noise for their examples. Without a strategy the generator's seed is kept bit for bit.
    first, second = mirrored["replica_seeds"]
    assert first != second
    first, second = mirrored["replica_corruptions"]  # a denoising model's input noise too
    assert not np.allclose(first, second) and np.std(first) > 0.5
    generator, reference = keras.random.SeedGenerator(7), keras.random.SeedGenerator(7)
    for _ in range(3):
        np.testing.assert_array_equal(kv._tfp.stateless_seed(generator), tf.cast(reference.next(), tf.int32))


def test_mirrored_vq_vae_trains_exactly_as_one_device(mirrored):
    # A VQ-VAE draws no noise: on 2 replicas every loss term, the perplexity of the global batch's codes and
    # the EMA cluster sizes follow the one-device run to float rounding. Replicas updating the codebook from
    # their own halves would track half the counts and other codes (and perplexities of half batches).
    single, replicated = mirrored["vq_default"], mirrored["vq_mirrored"]
    for name in ("loss", "reconstruction", "vq_loss", "perplexity"):
        np.testing.assert_allclose(replicated["history"][name], single["history"][name], rtol=1e-3, err_msg=name)
    np.testing.assert_allclose(replicated["cluster_size"], single["cluster_size"], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("family", ["vae", "vq"])
def test_mirrored_follows_the_one_device_loss_trajectory(mirrored, family):
    single, replicated = mirrored[f"{family}_default"], mirrored[f"{family}_mirrored"]
    # 1437 digits in batches of 128 (the last of 29, split 15 + 14): 12 steps an epoch, each counted once
    # (the VAE's KL warm-up reads the count)
    assert single["iterations"] == replicated["iterations"] == 2 * 12
    for name in ("loss", "reconstruction"):
        # Within 2%: the VAE's replicas draw other reparameterization noise than one device, each replica its
        # own (0.7% apart here, as far as two noise seeds on one device).
        np.testing.assert_allclose(replicated["history"][name], single["history"][name], rtol=0.02, err_msg=name)
    assert single["history"]["loss"][-1] < single["history"]["loss"][0]
    assert replicated["replicas_agree"]  # every non-trainable variable (codebook, EMA sums, seeds) is one value


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch_workers(out, epochs, logs, extra=()):
    """Two `kerasvae train --strategy multi-worker` processes on loopback, as two machines would run them."""
    hosts = [f"localhost:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        command = [sys.executable, "-m", "kerasvae.cli", "train", "--strategy", "multi-worker", "--model", "mlp-vae",
                   "--dataset", "digits", "--epochs", str(epochs), "--latent-dim", "4", "--batch-size", "256",
                   "--out", str(out), *extra]
        path = logs / f"worker{index}-{time.monotonic_ns()}.log"
        with open(path, "w") as log:  # the child keeps its own handle
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
            processes.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), path))
    return processes


def finish(processes, timeout):
    """[(exit status, output)] of each process, killed if still running after `timeout` seconds."""
    results = []
    for process, path in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        results.append((process.returncode, path.read_text()))
    return results


def test_multi_worker_run_survives_a_killed_worker_and_resumes(tmp_path, digits):
    out, epochs = tmp_path / "run", 2
    metadata = out / "backup" / "training_metadata.json"
    workers = launch_workers(out, epochs, tmp_path)
    deadline = time.monotonic() + 240
    while not (metadata.is_file() and json.loads(metadata.read_text())["epoch"] >= 1):
        assert time.monotonic() < deadline and workers[0][0].poll() is None, finish(workers, 1)
        time.sleep(0.1)
    workers[1][0].send_signal(signal.SIGKILL)  # worker 1 dies mid-run, after the chief backed up epoch 1
    (chief_code, chief_log), _ = finish(workers, timeout=120)  # the chief notices (heartbeats) and stops
    assert chief_code == 1 and "a task of the cluster is down" in chief_log, chief_log[-3000:]
    resume_at = json.loads(metadata.read_text())["epoch"]
    assert 1 <= resume_at < epochs

    results = finish(launch_workers(out, epochs, tmp_path), timeout=300)  # the same command on both again
    for code, log in results:
        assert code == 0, log[-3000:]
        started = [int(n) for n in re.findall(rf"Epoch (\d+)/{epochs}", log)]
        assert started == list(range(resume_at + 1, epochs + 1))  # resumed: no epoch run twice in this start
    history = json.loads((out / "history.json").read_text())
    assert all(len(values) == epochs for values in history.values())  # each epoch exactly once
    assert history["loss"][-1] < history["loss"][0]
    assert not (out / "backup").exists() and not (out / ".worker-1-tmp").exists()
    assert {p.name for p in out.iterdir()} >= {"model.keras", "config.json", "history.json", "samples.png"}
    assert json.loads((out / "config.json").read_text())["num_replicas"] == 2

    model = keras.saving.load_model(out / "model.keras")
    # the chief's model, on the test split, with the bound val_loss estimates (mlp-vae's ELBO)
    test_loss = -float(np.mean(model.log_likelihood(digits[2], num_samples=model.num_samples, seed=0)))
    assert test_loss == pytest.approx(history["val_loss"][-1], rel=0.05)
    assert test_loss < history["val_loss"][0]


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="XLA has collectives on GPUs")
def test_multi_worker_xla_on_cpus_says_why_it_cannot_run(tmp_path):
    # TensorFlow has no XLA collectives for CPU devices: both workers stop before the first step with the
    # reason, not with a tf2xla conversion failure from inside it.
    for code, log in finish(launch_workers(tmp_path / "run", 1, tmp_path, extra=["--xla"]), timeout=120):
        assert code == 2 and "XLA cannot compile the multi-worker strategy's collectives on CPUs" in log, log[-3000:]


def ps_config(drop, task="chief"):
    """A parameter-server TF_CONFIG without the job `drop`, for the task `task` 0."""
    jobs = {"chief": ["localhost:0"], "worker": ["localhost:0", "localhost:0"], "ps": ["localhost:0"]}
    return {"cluster": {job: hosts for job, hosts in jobs.items() if job != drop}, "task": {"type": task, "index": 0}}


def test_parameter_server_run_trains_on_two_workers_and_one_ps(tmp_path, digits):
    # 1 ps + 2 workers + the chief on loopback, each the same `kerasvae train --strategy parameter-server`: the
    # ps and the workers serve (until killed, as a launcher would), the chief schedules the steps and writes
    # the run folder.
    ports = free_ports(4)
    jobs = {"chief": [f"localhost:{ports[0]}"], "worker": [f"localhost:{p}" for p in ports[1:3]], "ps": [f"localhost:{ports[3]}"]}
    out, epochs = tmp_path / "run", 2
    command = [sys.executable, "-m", "kerasvae.cli", "train", "--strategy", "parameter-server", "--model", "mlp-vae",
               "--dataset", "digits", "--epochs", str(epochs), "--latent-dim", "4", "--batch-size", "64", "--out", str(out)]
    processes = []
    try:
        for task, index in (("ps", 0), ("worker", 0), ("worker", 1), ("chief", 0)):
            path = tmp_path / f"{task}{index}.log"
            with open(path, "w") as log:
                env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": jobs, "task": {"type": task, "index": index}})}
                processes.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), path))
        (code, log), servers = finish(processes[-1:], timeout=240)[0], processes[:-1]
        assert code == 0, log[-3000:]
        assert all(process.poll() is None for process, _ in servers)  # they serve until the launcher ends them
    finally:
        for process, _ in processes:
            process.kill()
            process.wait()
    history = json.loads((out / "history.json").read_text())
    assert all(len(values) == epochs for values in history.values())
    assert history["loss"][-1] < history["loss"][0] and history["val_loss"][-1] < history["val_loss"][0]
    # Each tracker adds every worker's steps atomically on the ps: the logged terms add up.
    np.testing.assert_allclose(history["elbo"], -np.add(history["reconstruction"], history["kl"]), rtol=1e-4)
    config = json.loads((out / "config.json").read_text())
    assert config["strategy"] == "parameter-server" and not (out / "backup").exists()
    model = kv.saving.load_model(out / "model.keras")
    test_loss = -float(np.mean(model.log_likelihood(digits[2], num_samples=model.num_samples, seed=0)))
    assert test_loss == pytest.approx(history["val_loss"][-1], rel=0.05)  # the bound val_loss estimates


def test_distribute_fit_needs_a_parameter_server_model(digits):
    model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4, hidden=(16,), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match="ParameterServerStrategy's scope; call model.fit"):
        kv.distribute.fit(model, kv.data.pipeline(digits[0], batch_size=64))


@pytest.mark.parametrize(
    "args, environment, message",
    [
        (["--strategy", "multi-worker"], {}, "TF_CONFIG, which is not set"),
        (["--strategy", "multi-worker"], {"TF_CONFIG": "{not json"}, "TF_CONFIG is not JSON"),
        (["--strategy", "multi-worker"], {"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}'},
         "task index 3"),
        (["--strategy", "parameter-server"], {}, "'chief', 'worker' and 'ps' jobs"),
        (["--strategy", "parameter-server"], {"TF_CONFIG": json.dumps(ps_config(drop="ps"))}, "it has no 'ps' job"),
        (["--strategy", "parameter-server"], {"TF_CONFIG": json.dumps(ps_config(drop="chief", task="worker"))}, "it has no 'chief' job"),
    ],
)
def test_strategies_that_cannot_start_say_what_they_need(args, environment, message, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["train", *args, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("kerasvae train: ") and message in error and len(error.splitlines()) == 1


def test_shard_sets_the_auto_shard_policy(digits):
    dataset = kv.distribute.shard(kv.data.pipeline(digits[0], batch_size=64))
    assert dataset.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    assert kv.distribute.shard(dataset, "file").options().experimental_distribute.auto_shard_policy == (
        tf.data.experimental.AutoShardPolicy.FILE
    )
    with pytest.raises(ValueError, match="shard policy"):
        kv.distribute.shard(dataset, "rows")


@pytest.mark.parametrize("policy, compute", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_mixed_precision_computes_in_half_and_keeps_distributions_float32(policy, compute, digits):
    x = digits[2][:256]
    reference = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4, hidden=(64, 32), seed=0)
    reference_vq = kv.VQVAE(kv.networks.MLP((64,)), kv.networks.MLP((64,)), input_shape=(8, 8, 1), num_embeddings=16,
                            embedding_dim=4, num_latents=2, seed=0)
    with kv.distribute.precision(policy):
        model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4, hidden=(64, 32), seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        vq = kv.VQVAE(kv.networks.MLP((64,)), kv.networks.MLP((64,)), input_shape=(8, 8, 1), num_embeddings=16,
                      embedding_dim=4, num_latents=2, seed=0)
    assert keras.config.dtype_policy().name == "float32"  # the policy is restored on exit
    model.set_weights(reference.get_weights())
    vq.set_weights(reference_vq.get_weights())
    assert model.encoder(x).dtype == compute and all(w.dtype == "float32" for w in model.weights)
    assert (type(model.optimizer).__name__ == "LossScaleOptimizer") == (policy == "mixed_float16")
    q, terms = model.encode(x), model.loss_terms(tf.constant(x))
    assert q.dtype == tf.float32 and all(t.dtype == tf.float32 for t in terms.values())
    # Half-precision torsos move the ELBO a little (bfloat16 keeps 8 bits of mantissa, float16 11), the
    # float32 heads keep it in nats.
    gap = np.abs(model.elbo(x, seed=1) - reference.elbo(x, seed=1))
    assert 0 < gap.max() < 0.05 * np.abs(reference.elbo(x, seed=1)).max()
    # The codebook's distances stay float32: the same codes as the float32 model, nearly always.
    assert np.mean(vq.codes(x) == reference_vq.codes(x)) > 0.95


def test_mixed_float16_validates_and_ends_on_the_weight_average(digits):
    """Keras wraps the optimizer in a LossScaleOptimizer, whose own use_ema is False; the weight average
    lives in the inner one, which fit ends with, so validation must see it too."""
    seen = {}

    class Probe(keras.callbacks.Callback):  # at a batch: after every callback's on_test_begin, fit's own too
        def on_test_batch_begin(self, batch, logs=None):
            averages = self.model.optimizer.inner_optimizer._model_variables_moving_average
            seen["validated_the_average"] = all(np.array_equal(w, a) for w, a in zip(self.model.trainable_weights, averages))

    with kv.distribute.precision("mixed_float16"):
        model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4, hidden=(64, 32), seed=0)
        model.compile(optimizer=kv.optimizers.Adam(3e-3, use_ema=True, ema_momentum=0.9))
    assert type(model.optimizer).__name__ == "LossScaleOptimizer" and kv.callbacks.keeps_weight_average(model.optimizer)
    model.fit(digits[0][:256], validation_data=(digits[2][:64],), epochs=2, batch_size=64, verbose=0, callbacks=[Probe()])
    assert seen["validated_the_average"]
