"""Short screens of what moves the test NLL on dynamically binarized Fashion-MNIST: each variant trains a few
epochs from seed 0 and is scored by the IWAE NLL on the first test images (binarized once with seed 0).
With a weight average, the same run is scored twice, with the average and with the last step's weights,
so that comparison carries no seed noise. Prints one JSON line per variant.

Usage:
    python benchmarks/nll_screen.py classic average tail30 [--epochs 10] [--test 1000] [--num-samples 1000]

About 2 minutes of training per classic variant on 2 cores (the wide IWAE-5 ones about 6x that) and 20 s
of evaluation per scoring.
"""

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf

import kerasvae as kv

BATCH = 128
WIDE = {"hidden": (1024, 512)}
# name: (model options, training options). Model options go to `mlp_vae`, or to the preset named by
# "preset". Training options: lr (rate), schedule ("cosine" | "tail30":
# linear decay to 0 over the last 30% of steps), batch, policy, average (weight-average momentum).
VARIANTS = {
    "classic": ({}, {}),
    "cosine": ({}, {"schedule": "cosine"}),
    "tail30": ({}, {"schedule": "tail30"}),
    "lr2e3": ({}, {"lr": 2e-3}),
    "lr3e3": ({}, {"lr": 3e-3}),
    "gated": ({"gated": True}, {}),
    "wide": (WIDE, {}),
    "iwae5": ({"num_samples": 5}, {}),
    "wide_iwae5": ({**WIDE, "num_samples": 5}, {}),
    "latent64": ({"latent_dim": 64}, {}),
    "batch64": ({}, {"batch": 64}),
    "batch32": ({}, {"batch": 32}),
    "warmup1k": ({"kl_warmup_steps": 1000}, {}),
    "warmup2k": ({"kl_warmup_steps": 2000}, {}),
    "warmup4k": ({"kl_warmup_steps": 4000}, {}),
    "bf16": ({}, {"policy": "mixed_bfloat16"}),
    "average": ({}, {"average": 0.999}),
    "latent64_average": ({"latent_dim": 64}, {"average": 0.999}),
    "lr2e3_average": ({}, {"lr": 2e-3, "average": 0.999}),
    "lr3e3_average": ({}, {"lr": 3e-3, "average": 0.999}),
    "wide_iwae5_average": ({**WIDE, "num_samples": 5}, {"average": 0.999}),
    "wide_iwae10_average": ({**WIDE, "num_samples": 10}, {"average": 0.999}),
    "wide_iwae10_average_elu": ({**WIDE, "num_samples": 10, "activation": "elu"}, {"average": 0.999}),
    "wide_iwae10_average_silu": ({**WIDE, "num_samples": 10, "activation": "silu"}, {"average": 0.999}),
    "wide_iwae10_average_dreg": ({**WIDE, "num_samples": 10, "gradient_estimator": "dreg"}, {"average": 0.999}),
    # the `vae` preset with two conv layers, without its warm-up and DReG (the IWAE-10 baseline otherwise)
    "convenc_iwae10_average": (
        {"preset": "vae", **WIDE, "encoder_filters": (32, 64), "latent_skip": False, "kl_warmup_steps": 0, "gradient_estimator": "reparameterized"},
        {"average": 0.999},
    ),
    "conv_average": ({"preset": "conv_vae", "latent_dim": 32}, {"average": 0.999}),
    "conv_warmup2k_average": ({"preset": "conv_vae", "latent_dim": 32, "kl_warmup_steps": 2000}, {"average": 0.999}),
}


class LinearTail(keras.optimizers.schedules.LearningRateSchedule):
    """Constant, then linear decay to 0 over the last `fraction` of `total` steps."""

    def __init__(self, rate, total, fraction):
        self.rate, self.total, self.start = rate, float(total), total * (1 - fraction)

    def __call__(self, step):
        return self.rate * tf.clip_by_value((self.total - tf.cast(step, tf.float32)) / (self.total - self.start), 0.0, 1.0)

    def get_config(self):
        return {"rate": self.rate, "total": self.total, "fraction": 1 - self.start / self.total}


class LastWeights(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.weights = [np.asarray(w) for w in self.model.trainable_weights]


def screen(name, x, x_test, epochs, num_samples):
    model_options, options = VARIANTS[name]
    keras.utils.set_random_seed(0)
    batch, rate = options.get("batch", BATCH), options.get("lr", 1e-3)
    steps = epochs * int(np.ceil(len(x) / batch))
    schedule = {"cosine": lambda: keras.optimizers.schedules.CosineDecay(rate, steps), "tail30": lambda: LinearTail(rate, steps, 0.3)}
    learning_rate = schedule[options["schedule"]]() if "schedule" in options else rate
    average = {"use_ema": True, "ema_momentum": options["average"]} if "average" in options else {}
    with kv.distribute.precision(options.get("policy", "float32")):
        preset = kv.presets.get(model_options.get("preset", "mlp_vae"))
        model = preset(input_shape=x.shape[1:], seed=0, **{k: v for k, v in model_options.items() if k != "preset"})
        model.compile(kv.optimizers.Adam(learning_rate, **average))
    last = LastWeights()
    start = time.perf_counter()
    model.fit(kv.data.pipeline(x, binarize="dynamic", batch_size=batch, seed=0), epochs=epochs, verbose=0, callbacks=[last])
    row = {"variant": name, "epochs": epochs, "train_s": round(time.perf_counter() - start)}

    def nll():
        return round(float(np.mean(kv.evaluation.importance_weighted_nll(model, x_test, num_samples))), 2)

    row["nll"] = nll()
    if average:  # the same run's last-step weights
        for weight, value in zip(model.trainable_weights, last.weights):
            weight.assign(value)
        row["nll_last_step_weights"] = nll()
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--test", type=int, default=1000, help="score on the first N test images")
    parser.add_argument("--num-samples", type=int, default=1000)
    args = parser.parse_args()
    x, _ = kv.data.load_arrays("fashion_mnist", "train")
    x_test = kv.data.binarize_static(kv.data.load_arrays("fashion_mnist", "test")[0], 0)[: args.test]
    for name in args.variants:
        print(json.dumps(screen(name, x, x_test, args.epochs, args.num_samples)), flush=True)


if __name__ == "__main__":
    main()
