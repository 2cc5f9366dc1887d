"""Loopback load test of `kerasvae serve`: decode requests at concurrency 1, 8 and 32 with batches of 1 and
64, each level bounded in time, against the in-process SavedModel call as the floor; server-side batching
(16 concurrent batch-1 clients, unbatched vs --enable-batching, in the same run); and start-up: SavedModel
load time and first-request latency with and without the warmup file.

    python benchmarks/serving.py [--seconds 3] [--arms levels,batching,startup] [--rounds 6] [--repeats 3]
                                 [--batching-flags '--max-batch-size 16 --num-batch-threads 1' ...]

Exports an (untrained: speed does not depend on the weights) classic 784-512-256-32 VAE to a temporary
serving root (with the batching_parameters.txt `kerasvae export` writes), starts `kerasvae serve` on free
loopback ports, and prints one JSON object: per level, requests/s, examples/s, p50/p99 latency (ms), errors,
and the p50 overhead ratio against the floor; for batching, each server's numbers (with its CPU time per
request and mean batch) and the batched/unbatched throughput and p99 ratios; for start-up, medians over
fresh processes of the SavedModel load (LoadedVersion: read, screen, load, and the warmup replay when on),
the server's time to ready, and its first and second request latencies.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

import kerasvae as kv
from kerasvae.export.savedmodel import export_savedmodel
from kerasvae.serving.batching import write_batching_parameters


def percentiles(latencies):
    ms = 1000 * np.asarray(latencies)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def in_process_floor(path, z, seconds):
    decode = tf.saved_model.load(str(path)).signatures["decode"]
    z = tf.constant(z)
    decode(z=z)
    latencies, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        decode(z=z)
        latencies.append(time.perf_counter() - start)
    return percentiles(latencies)


def run_clients(target, concurrency, z, seconds):
    """(latencies in seconds, error codes, elapsed seconds) of `concurrency` threads, each with its own gRPC
    client, sending decode(z) back to back for `seconds`."""
    latencies, errors, lock = [], [], threading.Lock()
    end = time.perf_counter() + seconds

    def worker():
        client = kv.serving.Client(target, "bench", retries=0)
        while time.perf_counter() < end:
            start = time.perf_counter()
            try:
                client.decode(z)
                with lock:
                    latencies.append(time.perf_counter() - start)
            except kv.serving.ServingClientError as error:
                errors.append(error.code)
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - started


def summary(latencies, errors, elapsed, batch):
    p50, p99 = percentiles(latencies)
    return {"requests_per_s": len(latencies) / elapsed, "examples_per_s": len(latencies) * batch / elapsed,
            "p50_ms": p50, "p99_ms": p99, "requests": len(latencies), "errors": len(errors)}


def load_level(target, concurrency, z, seconds):
    return summary(*run_clients(target, concurrency, z, seconds), len(z))


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (Linux /proc), or NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return float("nan")


def start_server(root, *flags):
    """(process, gRPC target, seconds from start to its ready line) of a fresh `kerasvae serve`."""
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "kerasvae.cli", "serve", root, "--port", "0", *flags],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline()
    return server, line.split(" on ")[1].split(";")[0].strip(), time.perf_counter() - started


def stop_server(server):
    """Stop a server; the mean batch its batcher ran (None without batching)."""
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    line = server.stdout.read()
    if "requests batched in" not in line:
        return None
    requests, runs = (int(n) for n in line.split("(")[1].split(" requests batched in ")[0:1] + [line.split(" batched in ")[1].split()[0]])
    return requests / max(1, runs)


def levels(root, path, seconds):
    server, target, _ = start_server(root)
    results = []
    try:
        for batch in (1, 64):
            z = np.random.default_rng(batch).standard_normal((batch, 32)).astype(np.float32)
            floor_p50, _ = in_process_floor(path, z, seconds)
            for concurrency in (1, 8, 32):
                level = load_level(target, concurrency, z, seconds)
                results.append({"batch": batch, "concurrency": concurrency, **level,
                                "in_process_p50_ms": floor_p50, "p50_overhead_ratio": level["p50_ms"] / floor_p50})
    finally:
        stop_server(server)
    return results


TUNED_FLAGS = "--max-batch-size 16 --num-batch-threads 1"  # 16 = the clients: a batch runs as soon as all have asked


def batching(root, seconds, rounds, concurrency=16, flag_sets=("", TUNED_FLAGS)):
    """`concurrency` batch-1 decode clients against fresh servers that run side by side: one unbatched, and
    one batched per entry of `flag_sets` (the export's batching_parameters.txt, then those flags), measured
    in `rounds` slices of `seconds` each, in an order that rotates every round, so a machine's changing
    background load hits every arm alike. Per arm: throughput, p50 and p99 over all its slices, the server's
    CPU time per request, and the mean batch it ran; per batched arm the ratios against the unbatched one,
    pooled and as the median of the per-round ratios."""
    z = np.random.default_rng(1).standard_normal((1, 32)).astype(np.float32)
    batching_file = str(Path(root) / "bench" / "batching_parameters.txt")
    arms = {"unbatched": []}
    for i, flags in enumerate(flag_sets):
        arms["batched" if i == 0 else f"batched_{i + 1}"] = ["--enable-batching", "--batching-parameters-file", batching_file, *flags.split()]
    servers = {name: start_server(root, *arm_flags)[:2] for name, arm_flags in arms.items()}
    totals = {name: {"latencies": [], "errors": [], "elapsed": 0.0, "cpu": 0.0} for name in arms}
    per_round = []
    try:
        for name, (_, target) in servers.items():
            run_clients(target, concurrency, z, min(1.0, seconds))  # connections up, functions warm
        names = list(arms)
        for round_ in range(rounds):
            rates = {}
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                process, target = servers[name]
                cpu = cpu_seconds(process.pid)
                latencies, errors, elapsed = run_clients(target, concurrency, z, seconds)
                total = totals[name]
                total["cpu"] += cpu_seconds(process.pid) - cpu
                total["latencies"] += latencies
                total["errors"] += errors
                total["elapsed"] += elapsed
                rates[name] = (len(latencies) / elapsed, percentiles(latencies)[1])
            per_round.append(rates)
    finally:
        mean_batch = {name: stop_server(process) for name, (process, _) in servers.items()}
    report = {"concurrency": concurrency, "batch": 1, "rounds": rounds, "seconds_per_round": seconds}
    for name, total in totals.items():
        arm = summary(total["latencies"], total["errors"], total["elapsed"], 1)
        arm["server_cpu_us_per_request"] = 1e6 * total["cpu"] / max(1, len(total["latencies"]))
        report[name] = {"flags": arms[name], **arm}
    base = report["unbatched"]
    for name in list(arms)[1:]:
        arm = report[name]
        arm["mean_batch_requests"] = mean_batch[name]  # warm-up included
        arm["throughput_ratio"] = arm["requests_per_s"] / base["requests_per_s"]
        arm["p50_ratio"] = arm["p50_ms"] / base["p50_ms"]
        arm["p99_ratio"] = arm["p99_ms"] / base["p99_ms"]
        arm["median_round_throughput_ratio"] = float(np.median([r[name][0] / r["unbatched"][0] for r in per_round]))
        arm["median_round_p99_ratio"] = float(np.median([r[name][1] / r["unbatched"][1] for r in per_round]))
        arm["server_cpu_ratio"] = arm["server_cpu_us_per_request"] / base["server_cpu_us_per_request"]
    return report


LOAD_PROBE = """
import json, sys, time
import numpy as np
from kerasvae.serving.models import LoadedVersion
loaded = LoadedVersion("bench", 1, sys.argv[1], warmup=sys.argv[2] == "1")
z = np.zeros((1, 32), np.float32)
times = []
for _ in range(2):
    start = time.perf_counter()
    loaded.run("decode", {"z": z}, 4096)
    times.append(time.perf_counter() - start)
print(json.dumps({"load_s": loaded.load_seconds, "warmup_s": loaded.warmup_seconds, "first_call_ms": 1000 * times[0],
                  "second_call_ms": 1000 * times[1]}))
"""


def startup(root, path, repeats):
    """Medians over `repeats` fresh processes, with the warmup file replayed and without: the SavedModel
    load in process (LoadedVersion), then a fresh server's time to ready and first two decode requests."""
    z = np.random.default_rng(1).standard_normal((1, 32)).astype(np.float32)
    results = {}
    for warmup in (True, False):
        runs = []
        for _ in range(repeats):
            probe = subprocess.run([sys.executable, "-c", LOAD_PROBE, str(path), "1" if warmup else "0"],
                                   capture_output=True, text=True, check=True)
            run = json.loads(probe.stdout.strip().splitlines()[-1])
            server, target, ready = start_server(root, "--enable-model-warmup" if warmup else "--no-enable-model-warmup")
            try:
                client = kv.serving.Client(target, "bench", retries=0)
                client.status()  # the channel is connected: what follows is the model's own first request
                times = []
                for _ in range(2):
                    start = time.perf_counter()
                    client.decode(z)
                    times.append(time.perf_counter() - start)
                client.close()
            finally:
                stop_server(server)
            runs.append({**run, "server_ready_s": ready, "server_first_request_ms": 1000 * times[0],
                         "server_second_request_ms": 1000 * times[1]})
        results["warmup" if warmup else "no_warmup"] = {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
    warm, cold = results["warmup"], results["no_warmup"]
    results["first_request_ratio"] = cold["server_first_request_ms"] / warm["server_first_request_ms"]
    results["repeats"] = repeats
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each level")
    parser.add_argument("--arms", default="levels,batching,startup", help="comma-separated: levels, batching, startup")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per start-up arm")
    parser.add_argument("--rounds", type=int, default=6, help="alternating slices per arm of the batching comparison")
    parser.add_argument("--batching-flags", action="append", default=None,
                        help="one batched server per use: `kerasvae serve` flags on top of the export's batching_parameters.txt, "
                        f"e.g. '--num-batch-threads 1' (default: '' and {TUNED_FLAGS!r})")
    args = parser.parse_args()
    arms = args.arms.split(",")
    report = {"signature": "decode", "seconds_per_level": args.seconds}
    with tempfile.TemporaryDirectory() as root:
        model = kv.presets.mlp_vae(input_shape=(28, 28, 1), latent_dim=32, seed=0)
        path = export_savedmodel(model, Path(root) / "bench")
        write_batching_parameters(Path(root) / "bench")  # as `kerasvae export` writes it
        if "levels" in arms:
            report["levels"] = levels(root, path, args.seconds)
        if "batching" in arms:
            report["batching"] = batching(root, args.seconds, args.rounds, flag_sets=args.batching_flags or ("", TUNED_FLAGS))
        if "startup" in arms:
            report["startup"] = startup(root, path, args.repeats)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
