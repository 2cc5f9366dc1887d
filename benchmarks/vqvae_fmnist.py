"""VQ-VAE on Fashion-MNIST in a short CPU run: test reconstruction PSNR, codebook perplexity, the fitted code
prior's log p(c), and a grid of samples from it (look at it).

Usage: python benchmarks/vqvae_fmnist.py [--epochs 5] [--filters 64] [--num-embeddings 256] [--ema-decay 0.99]
           [--prior pixelcnn] [--prior-epochs 1] [--prior-examples 60000] [--out /work/bench/vq2/run]
Prints one JSON object per line: the autoencoder's numbers once it is trained (and the model is saved to
OUT.keras), then the prior's (the model saved again), then the sample grids written (OUT.png, and
OUT_t<temperature>.png for each --temperatures). Omitted options take the preset's defaults.
"""

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

import kerasvae as kv
from kerasvae import plots


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--filters", default=None, help="encoder filters, e.g. 32,64 (7x7 codes) or 64 (14x14)")
    parser.add_argument("--num-embeddings", type=int, default=None)
    parser.add_argument("--embedding-dim", type=int, default=None)
    parser.add_argument("--ema-decay", type=float, default=None)
    parser.add_argument("--restart-after", type=int, default=None)
    parser.add_argument("--prior", choices=("categorical", "pixelcnn"), default=None)
    parser.add_argument("--prior-components", type=int, default=None)
    parser.add_argument("--prior-filters", type=int, default=None)
    parser.add_argument("--prior-layers", type=int, default=None)
    parser.add_argument("--prior-kernel", type=int, default=None)
    parser.add_argument("--prior-epochs", type=int, default=None, help="PixelCNN training epochs over the codes")
    parser.add_argument("--prior-examples", type=int, default=None, help="fit the prior to the first N training codes")
    parser.add_argument("--prior-batch-size", type=int, default=None)
    parser.add_argument("--temperatures", default="", help="extra sample grids at these temperatures, e.g. 0.8,0.9")
    parser.add_argument("--out", default="vq_samples", help="path prefix of the .keras, .json and .png outputs")
    parser.add_argument("--load", default=None, help="a trained .keras (same model options) to fit the prior to, skipping training")
    args = parser.parse_args()
    out = Path(args.out).with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    x, _ = kv.data.load_arrays("fashion_mnist", "train")
    x_test, _ = kv.data.load_arrays("fashion_mnist", "test")

    options = {} if args.filters is None else {"filters": tuple(int(f) for f in args.filters.split(","))}
    names = ("num_embeddings", "embedding_dim", "ema_decay", "restart_after", "prior", "prior_components")
    options.update({name: getattr(args, name) for name in names if getattr(args, name) is not None})
    prior_options = {k: v for k, v in (("filters", args.prior_filters), ("num_layers", args.prior_layers), ("kernel_size", args.prior_kernel)) if v}
    if prior_options:
        options["prior_options"] = prior_options
    keras.utils.set_random_seed(0)
    model = kv.presets.vqvae(input_shape=(28, 28, 1), seed=0, **options)
    config = {k: v for k, v in model.get_config().items() if k in (*names, "prior_options", "num_latents")}
    start = time.perf_counter()
    if args.load:
        model.set_weights(keras.saving.load_model(args.load).get_weights())
        history, train_seconds = {"perplexity": [float("nan")]}, float("nan")
    else:
        model.compile(keras.optimizers.Adam(args.learning_rate))
        history = model.fit(x, epochs=args.epochs, batch_size=args.batch_size, verbose=0).history
        train_seconds = time.perf_counter() - start
    mse = float(np.mean((model.reconstruct(x_test) - x_test) ** 2))
    test_codes = model.codes(x_test)
    usage = np.bincount(np.ravel(test_codes), minlength=model.quantizer.num_embeddings) / test_codes.size
    used = usage[usage > 0]
    result = {
        "preset": "vqvae", **{k: v for k, v in options.items() if k != "prior_options"}, **config,
        "epochs": args.epochs, "train_seconds": round(train_seconds, 1), "codes_per_image": int(test_codes.shape[-1]),
        "test_psnr_db": round(10 * np.log10(1.0 / mse), 2), "test_perplexity": round(float(np.exp(-np.sum(used * np.log(used)))), 1),
        "codes_used_on_test": len(used), "train_perplexity_last_epoch": round(history["perplexity"][-1], 1),
    }
    print(json.dumps(result), flush=True)
    model.save(out.with_suffix(".keras"))

    fit_options = {}
    if model.prior_kind == "pixelcnn":
        fit_options = {k: v for k, v in (("epochs", args.prior_epochs), ("batch_size", args.prior_batch_size)) if v}
        fit_options["validation_codes"] = test_codes
    start = time.perf_counter()
    x_prior = x[: args.prior_examples] if args.prior_examples else x
    train_log_prob = model.fit_code_prior(x_prior, **fit_options)
    prior_seconds = time.perf_counter() - start
    test_log_prob = float(np.mean(model.prior_layer.log_prob(test_codes[:2000])))
    independent = kv.quantizers.CodePrior(model.num_latents, model.quantizer.num_embeddings)
    independent.fit(model.codes(x_prior))
    result.update({
        "prior_fit_seconds": round(prior_seconds, 1), "prior_fit_log_prob": round(train_log_prob, 2),
        "prior_test_log_prob_nats": round(test_log_prob, 2),
        "independent_categorical_test_log_prob_nats": round(float(np.mean(independent.log_prob(test_codes[:2000]))), 2),
        **{f"prior_fit_{k}": v for k, v in fit_options.items() if k != "validation_codes"},
        "prior_examples": len(x_prior), "loaded": args.load, "total_train_seconds": round(train_seconds + prior_seconds, 1),
    })
    print(json.dumps(result), flush=True)
    model.save(out.with_suffix(".keras"))

    start = time.perf_counter()
    plots.image_grid(model.sample(64, seed=(0, 1)), out.with_suffix(".png"), title=f"VQ-VAE samples ({model.prior_kind} prior)")
    result["sample_64_seconds"] = round(time.perf_counter() - start, 1)
    result["samples"] = [str(out.with_suffix(".png"))]
    for temperature in (float(t) for t in args.temperatures.split(",") if t):
        path = out.parent / f"{out.name}_t{temperature:g}.png"
        plots.image_grid(model.sample(64, seed=(0, 1), temperature=temperature), path, title=f"VQ-VAE samples, temperature {temperature:g}")
        result["samples"].append(str(path))
    plots.image_grid(np.concatenate([x_test[:32], model.reconstruct(x_test[:32])]), out.parent / f"{out.name}_reconstructions.png",
                     title="test images (top 4 rows) and reconstructions")
    print(json.dumps(result), flush=True)
    Path(out.with_suffix(".json")).write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
