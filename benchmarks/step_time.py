"""Milliseconds per training step of the NLL presets' networks, as `fit` runs them on dynamically binarized
Fashion-MNIST (batch 128, Adam with the weight average), interleaved so that every variant sees the same
host speed: what a preset's training bound costs, as ratios within one run.

Usage:
    python benchmarks/step_time.py [classic vae_k5 vae_k10 ...] [--steps 120] [--rounds 3]

Prints one JSON object: the median milliseconds per step over the rounds, in wall-clock and in the process's
CPU time (the cores' work; wall-clock times on a shared host snap to steps of a few seconds), and each
variant's ratio to the first. About 6 minutes for the default variants (BENCHMARKS.md's table) on 2 cores.
"""

import argparse
import json
import time

import numpy as np

import kerasvae as kv

BATCH = 128
# name: (preset, options). The `vae_k*` rows are the `vae` network as it was until 2026-11-30 (MLP encoder
# 1024-512, decoder 512-1024, plain IWAE gradient); `vae` is the preset now (conv encoder, decoder
# 512-1024-1024 with the latent skipped to its later layers, DReG), `vae_no_skip` the same without the
# skip connections, `vae_two_layer_decoder` without them and with the decoder it had before.
NO_SKIP = {"latent_skip": False}
TWO_LAYER_DECODER = {**NO_SKIP, "hidden": (1024, 512)}
MLP_ENCODER = {**TWO_LAYER_DECODER, "encoder_filters": None, "gradient_estimator": "reparameterized"}
VARIANTS = {
    "classic": ("mlp_vae", {}),
    "vae": ("vae", {}),
    "vae_no_skip": ("vae", NO_SKIP),
    "vae_two_layer_decoder": ("vae", TWO_LAYER_DECODER),
    "vae_iwae15": ("vae", {**NO_SKIP, "num_samples": 15}),
    "vae_k5": ("vae", {**MLP_ENCODER, "num_samples": 5}),
    "vae_k10": ("vae", {**MLP_ENCODER, "num_samples": 10}),
    "vae_k10_dreg": ("vae", {**MLP_ENCODER, "num_samples": 10, "gradient_estimator": "dreg"}),
    "vae_k20": ("vae", {**MLP_ENCODER, "num_samples": 20}),
    "vae_k50": ("vae", {**MLP_ENCODER, "num_samples": 50}),
    "vae_best_k5": ("vae_best", {"num_samples": 5}),
    "vae_best_k10": ("vae_best", {"num_samples": 10}),
    "conv_k1": ("conv_vae", {"latent_dim": 32}),
    "conv_k10": ("conv_vae", {"latent_dim": 32, "num_samples": 10}),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", choices=sorted(VARIANTS), default=["classic", "vae", "vae_k5", "vae_k10", "vae_k20", "vae_best_k5", "vae_best_k10"])
    parser.add_argument("--steps", type=int, default=120, help="steps per timed epoch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    x = kv.data.load_arrays("fashion_mnist", "train")[0][: BATCH * args.steps]
    models = {}
    for name in args.variants:
        preset, options = VARIANTS[name]
        models[name] = kv.presets.get(preset)(seed=0, **options)
        models[name].compile(kv.optimizers.Adam(1e-3, use_ema=True, ema_momentum=0.999))
        models[name].fit(kv.data.pipeline(x[: BATCH * 10], binarize="dynamic", seed=0), verbose=0)  # traces
    wall, cpu = ({name: [] for name in args.variants} for _ in range(2))
    for round_ in range(args.rounds):
        for name, model in models.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            model.fit(kv.data.pipeline(x, binarize="dynamic", seed=round_), verbose=0)
            wall[name].append(1000 * (time.perf_counter() - start) / args.steps)
            cpu[name].append(1000 * (time.process_time() - start_cpu) / args.steps)
    row = {}
    for label, times in (("wall", wall), ("cpu", cpu)):
        median = {name: float(np.median(values)) for name, values in times.items()}
        row[label + "_ms_per_step"] = {name: round(value, 1) for name, value in median.items()}
        row[label + "_ratio_to_" + args.variants[0]] = {name: round(value / median[args.variants[0]], 2) for name, value in median.items()}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
