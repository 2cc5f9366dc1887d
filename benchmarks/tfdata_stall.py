"""Minimal reproduction, TensorFlow alone: destroying a tf.data iterator whose pipeline is autotuned blocks
until the autotuning thread's current timed wait ends.

tf.data's autotuner (the ModelDataset that `autotune` adds at the root of every pipeline) wakes up to
re-optimize after 10 ms, then doubles its period (20, 40, ... ms), so it wakes at about 1.27 s, 2.55 s, 5.11 s
and 10.23 s after the iterator starts. Ending the iterator early should cancel that wait; here deleting the
iterator instead waits for the next wake-up, so a loop that finishes its epoch at 1.6 s returns at 2.55 s.
Keras's `fit` makes a new iterator every epoch (for a tf.data dataset, and for the one it builds from numpy
arrays), so epochs snap to those wake-up times: 2.56 s, 5.12 s. Disabling autotuning
(`options.autotune.enabled = False`) removes the wait.

    python benchmarks/tfdata_stall.py [--epochs 20] [--work-seconds 1.6]

Each epoch creates an iterator over a small autotuned pipeline (map with AUTOTUNE parallelism, prefetch
with an AUTOTUNE buffer), consumes it with `--work-seconds` of sleep spread over its elements (standing
in for training steps), then deletes it; it prints the seconds of the loop and of the deletion, with and
without autotuning. Prints one JSON object.
"""

import argparse
import json
import time

import tensorflow as tf


def epoch(autotune, work_seconds, elements=200):
    dataset = tf.data.Dataset.range(elements).map(lambda i: i * 2, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = autotune
    dataset = dataset.with_options(options)
    start = time.perf_counter()
    iterator = iter(dataset)
    for _ in iterator:
        time.sleep(work_seconds / elements)
    consumed = time.perf_counter()
    del iterator
    return round(consumed - start, 3), round(time.perf_counter() - consumed, 3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--work-seconds", type=float, default=1.6)
    args = parser.parse_args()
    report = {"tensorflow": tf.__version__, "work_seconds": args.work_seconds}
    for autotune in (True, False):
        runs = [epoch(autotune, args.work_seconds) for _ in range(args.epochs)]
        report["autotune" if autotune else "no_autotune"] = {
            "loop_seconds": [r[0] for r in runs], "delete_seconds": [r[1] for r in runs],
            "deletions_over_0.1_s": sum(r[1] > 0.1 for r in runs),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
