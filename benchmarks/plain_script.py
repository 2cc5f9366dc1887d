"""Training throughput as a plain user script sees it: fresh processes, alternating A B A B, each training the
classic VAE (784-512-256-32, Bernoulli, batch 128, Adam 1e-3) for `--epochs` epochs of all 60,000
Fashion-MNIST training images, binarized once with numpy (seed 0) and held in memory.

    python benchmarks/plain_script.py --torch-python /work/torchvenv/bin/python [--rounds 2] [--epochs 2]
        [--arms kerasvae,keras_adam,torch]

Arms: kerasvae (`kv.presets.mlp_vae()`, `compile()` with its defaults, `model.fit(x, epochs, batch_size=128)`
on the numpy array, as a Keras script writes it); keras_adam (the same with
`compile(optimizer=keras.optimizers.Adam(1e-3))`, what keras-io examples pass); torch
(benchmarks/torch_reference_vae.py's model and its loop over the in-memory tensor, `binary_epoch`:
shuffle, forward, backward, Adam step, `loss.item()` per step, as a PyTorch script writes it; 2 threads). Each process times
its training call alone, first epoch (and its tracing) included, after its imports and data loading, and
prints samples/s; the driver prints each arm's median and its ratio to torch as one JSON object.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BATCH_SIZE = 128


def torch_run(epochs):
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    from torch_reference_vae import VAE, binary_epoch, find_data_dir, load_images

    torch.set_num_threads(2)
    torch.manual_seed(0)
    grey = load_images(find_data_dir(None) / "train-images-idx3-ubyte.gz")
    # The same draws, in the same order, as kv.data.binarize_static(x, 0) in the Keras arms.
    x = torch.from_numpy((np.random.default_rng(0).random(grey.shape) < grey).astype(np.float32))
    model = VAE(32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        binary_epoch(model, optimizer, x, BATCH_SIZE)
    return time.perf_counter() - start, epochs * len(x)


def keras_run(arm, epochs):
    import keras

    import kerasvae as kv

    keras.utils.set_random_seed(0)
    x = kv.data.binarize_static(kv.data.load_arrays("fashion_mnist", "train")[0], 0)
    model = kv.presets.mlp_vae(seed=0)
    model.compile(**({"optimizer": keras.optimizers.Adam(1e-3)} if arm == "keras_adam" else {}))
    start = time.perf_counter()
    model.fit(x, epochs=epochs, batch_size=BATCH_SIZE, verbose=0)
    return time.perf_counter() - start, epochs * len(x)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--torch-python", default=sys.executable)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--arms", default="kerasvae,keras_adam,torch")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        seconds, samples = torch_run(args.epochs) if args.worker == "torch" else keras_run(args.worker, args.epochs)
        print(json.dumps({"seconds": seconds, "samples": samples}))
        return
    rates = {arm: [] for arm in args.arms.split(",")}
    for _ in range(args.rounds):
        for arm, arm_rates in rates.items():
            python = args.torch_python if arm == "torch" else sys.executable
            result = subprocess.run([python, __file__, "--worker", arm, "--epochs", str(args.epochs)],
                                    capture_output=True, text=True, check=True)
            run = json.loads(result.stdout.strip().splitlines()[-1])
            arm_rates.append(round(run["samples"] / run["seconds"]))
    median = {arm: statistics.median(values) for arm, values in rates.items()}
    report = {"epochs": args.epochs, "rounds": args.rounds, "samples_per_second": median, "all_rates": rates}
    if "torch" in median:
        report["ratio_to_torch"] = {arm: round(value / median["torch"], 3) for arm, value in median.items()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
