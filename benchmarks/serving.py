"""Loopback load test of `kerasvae serve`: decode requests at concurrency 1, 8 and 32 with batches of 1 and
64, each level bounded in time, against the in-process SavedModel call as the floor.

    python benchmarks/serving.py [--seconds 3]

Exports an (untrained: speed does not depend on the weights) classic 784-512-256-32 VAE to a temporary
serving root, starts `kerasvae serve` on a free loopback port, and prints one JSON object: per level,
requests/s, examples/s, p50/p99 latency (ms), errors, and the p50 overhead ratio against the floor.
"""

import argparse
import json
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


def load_level(target, concurrency, z, seconds):
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
    elapsed = time.perf_counter() - started
    p50, p99 = percentiles(latencies)
    return {"requests_per_s": len(latencies) / elapsed, "examples_per_s": len(latencies) * len(z) / elapsed,
            "p50_ms": p50, "p99_ms": p99, "requests": len(latencies), "errors": len(errors)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each level")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        path = export_savedmodel(kv.presets.mlp_vae(input_shape=(28, 28, 1), latent_dim=32, seed=0), Path(root) / "bench")
        server = subprocess.Popen([sys.executable, "-m", "kerasvae.cli", "serve", root, "--port", "0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        target = server.stdout.readline().split(" on ")[1].split(";")[0].strip()
        results = []
        try:
            for batch in (1, 64):
                z = np.random.default_rng(batch).standard_normal((batch, 32)).astype(np.float32)
                floor_p50, floor_p99 = in_process_floor(path, z, args.seconds)
                for concurrency in (1, 8, 32):
                    level = load_level(target, concurrency, z, args.seconds)
                    results.append({"batch": batch, "concurrency": concurrency, **level,
                                    "in_process_p50_ms": floor_p50, "p50_overhead_ratio": level["p50_ms"] / floor_p50})
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    print(json.dumps({"signature": "decode", "seconds_per_level": args.seconds, "levels": results}, indent=1))


if __name__ == "__main__":
    main()
