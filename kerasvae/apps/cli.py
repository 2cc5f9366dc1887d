"""Subcommands of `kerasvae` for the applications; `kerasvae.cli.build_parser` calls `add_commands`.

Thin, like the core CLI: each handler loads a run folder and its data, calls `kerasvae.apps`, writes its
files (PNG, JSON, .npy, .kvz) and prints one JSON summary line. Bad input raises ValueError, which the
`kerasvae` entry point turns into one line on stderr and exit status 2.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

FIT_LIMIT = 5000  # training images the baselines (PCA, dictionaries, means) are fitted on by default


def add_commands(commands):
    """Adds the application subcommands to the `kerasvae` argparse subparsers `commands`."""
    from kerasvae.choices import (
        ANOMALY_METHODS,
        EMBEDDINGS,
        IMPUTATION_METHODS,
        INTERPOLATIONS,
        REGRESSORS,
    )

    anomaly = _command(commands, "anomaly", _anomaly, "calibrate an anomaly threshold on normal data; AUROC/AUPRC against PCA; score histogram")
    anomaly.add_argument("--normal", default=None, help="normal data to calibrate on (default: the run's dataset)")
    anomaly.add_argument("--normal-split", default="train",
                         help="split of the normal data; held-out normal data (e.g. \"train[90%%:]\" of a run trained on \"train[:90%%]\") gives an unbiased false-positive rate")
    anomaly.add_argument("--normal-class", type=int, default=None,
                         help="label of the normal class: calibrate on it, and count every other label as an anomaly")
    anomaly.add_argument("--method", choices=ANOMALY_METHODS, default=None,
                         help="default: the saved model's calibrated score, else auto (chosen on normal data alone)")
    anomaly.add_argument("--num-samples", type=int, default=None, help="samples for the elbo and nll scores")
    level = anomaly.add_mutually_exclusive_group()
    level.add_argument("--quantile", type=float, default=None, help="threshold = this quantile of normal scores (default 0.99)")
    level.add_argument("--false-positive-rate", type=float, default=None, help="target fraction of normal data flagged")
    anomaly.add_argument("--save", action="store_true", help="store the threshold in RUN/model.keras; `export` then serves is_anomaly")
    anomaly.add_argument("--out", default="anomaly", help="folder for anomaly.json and anomaly.png")

    denoise = _command(commands, "denoise", _denoise, "add Gaussian noise to images, denoise them, report PSNR before/after and PCA's")
    denoise.add_argument("--noise", type=float, default=0.3, help="noise standard deviation (images in [0, 1])")
    denoise.add_argument("--steps", type=int, default=100, help="latent optimization steps (0: the encoder alone)")
    denoise.add_argument("--seed", type=int, default=0)
    denoise.add_argument("--out", default="denoise", help="folder for denoise.json, denoising.png and denoised.npy")

    # Not _command: a quick default of 100 images (--num, with --limit as its alias) instead of the whole split.
    compress = commands.add_parser("compress", help="compress images into a .kvz file (quantized latents, range-coded with the prior); "
                                   "report bits per image and PSNR against the greyscale originals, and PCA's at the same rate")
    compress.add_argument("run")
    compress.add_argument("--data", default=None, help="dataset name or path (default: the run's dataset, binarized as it trained)")
    compress.add_argument("--split", default="test")
    compress.add_argument("--num", "--limit", dest="num", type=int, default=100, help="compress the first N images of the split (all of it when N exceeds its size)")
    compress.add_argument("--fit-limit", type=int, default=FIT_LIMIT, help="training images the PCA baseline is fitted on")
    compress.add_argument("--delta", type=float, default=0.5, help="quantization bin width in latent units")
    compress.add_argument("--out", required=True, help="the .kvz file to write")
    compress.set_defaults(handler=_compress)

    decompress = commands.add_parser("decompress", help="decode a .kvz file back into images (.npy and a PNG preview)")
    decompress.add_argument("run")
    decompress.add_argument("file", help="a .kvz file written by `kerasvae compress` with the same run")
    decompress.add_argument("--out", default=None, help="the .npy file to write (default: FILE with .npy for its suffix); a PNG grid "
                            "of the first 64 images goes beside it, named like it with .png")
    decompress.set_defaults(handler=_decompress)

    interpolate = _command(commands, "interpolate", _interpolate, "decode the latent path between two images into a PNG", fits_baselines=False)
    interpolate.add_argument("--index-a", type=int, default=0, help="index of the first image in the data")
    interpolate.add_argument("--index-b", type=int, default=1, help="index of the second image")
    interpolate.add_argument("--steps", type=int, default=10)
    interpolate.add_argument("--method", choices=[*INTERPOLATIONS, "both"], default="both")
    interpolate.add_argument("--output", default="interpolation.png")

    traverse = _command(commands, "traverse", _traverse, "vary one latent dimension at a time (disentanglement inspection) into a PNG", fits_baselines=False)
    traverse.add_argument("--index", type=int, default=0, help="the image whose code is the base")
    traverse.add_argument("--prior", action="store_true", help="start from the prior mean instead of an image's code")
    traverse.add_argument("--dims", default=None, help="comma-separated dimensions (default: all, by mean KL over the data, most informative first)")
    traverse.add_argument("--range", type=float, default=3.0, help="sweep from -RANGE to RANGE prior standard deviations")
    traverse.add_argument("--steps", type=int, default=9)
    traverse.add_argument("--output", default="traversal.png")

    latent_map = _command(commands, "latent-map", _latent_map, "a 2-D or 3-D map of the posterior means coloured by label", fits_baselines=False)
    latent_map.add_argument("--method", choices=EMBEDDINGS, default="pca")
    latent_map.add_argument("--dims", type=int, choices=(2, 3), default=2)
    latent_map.add_argument("--output", default="latent_map.png")

    manifold = commands.add_parser("manifold", help="decode a grid over a 2-D latent space into one PNG")
    manifold.add_argument("run")
    manifold.add_argument("--num", type=int, default=15, help="grid points per axis")
    manifold.add_argument("--output", default="manifold.png")
    manifold.set_defaults(handler=_manifold)

    probe = _command(commands, "probe", _probe, "linear probe and semi-supervised accuracy vs label budget, against PCA and pixels")
    probe.add_argument("--budgets", default="100,1000", help="comma-separated numbers of labelled training examples")
    probe.add_argument("--repeats", type=int, default=3, help="labelled subsets drawn per budget")
    probe.add_argument("--out", default="probe", help="folder for probe.json and probe.png")

    sparse = _command(commands, "sparse-code", _sparse_code, "dictionary learning on latents vs pixels: error against sparsity")
    sparse.add_argument("--atoms", type=int, default=32, help="dictionary size")
    sparse.add_argument("--nonzeros", default="1,2,3,4", help="comma-separated numbers of atoms per code")
    sparse.add_argument("--alpha", type=float, default=1.0, help="L1 weight of dictionary learning")
    sparse.add_argument("--out", default="sparse_code", help="folder for sparse_coding.json and its PNGs")

    regress = _command(commands, "regress", _regress, "predict a numeric target from the latent code (mean and spread), against PCA and pixels", fits_baselines=False)
    regress.add_argument("--targets", required=True,
                         help="a .npy, .csv or .txt file: one target value (or row of values) per example of --data's --split, in order")
    regress.add_argument("--method", choices=REGRESSORS, default="mlp", help="regressor on the posterior means (and on the baselines)")
    regress.add_argument("--test-fraction", type=float, default=0.2, help="held-out share of the examples the report is measured on")
    regress.add_argument("--num-samples", type=int, default=32, help="posterior draws per example for the predictive spread")
    regress.add_argument("--seed", type=int, default=0)
    regress.add_argument("--out", default="regress", help="folder for regress.json, regression.png and predictions.npy")

    impute = _command(commands, "impute", _impute, "fill missing pixels, report RMSE against mean imputation")
    impute.add_argument("--mask", choices=("random", "block"), default="random", help="random pixels or the bottom rows")
    impute.add_argument("--fraction", type=float, default=0.5, help="missing fraction (of pixels, or of rows for block)")
    impute.add_argument("--method", choices=IMPUTATION_METHODS, default="map", help="the method whose images are saved")
    impute.add_argument("--steps", type=int, default=100, help="optimization steps of the map method")
    impute.add_argument("--seed", type=int, default=0)
    impute.add_argument("--out", default="impute", help="folder for impute.json, imputation.png and imputed.npy")


def _command(commands, name, handler, help_text, fits_baselines=True):
    """A subcommand taking a run folder and the data to work on; --fit-limit where it fits baselines on
    training images (a flag a command ignored would only mislead)."""
    parser = commands.add_parser(name, help=help_text)
    parser.add_argument("run")
    parser.add_argument("--data", default=None, help="dataset name or path (default: the run's dataset, binarized as it trained)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="use the first N examples only")
    if fits_baselines:
        parser.add_argument("--fit-limit", type=int, default=FIT_LIMIT, help="training images the baselines are fitted on")
    parser.set_defaults(handler=handler)
    return parser


# === Handlers ===


def _anomaly(args):
    from kerasvae import training
    from kerasvae.apps import figures
    from kerasvae.apps.anomaly import AnomalyDetector, detection_metrics
    from kerasvae.apps.baselines import PCABaseline

    model, config = training.load_run(args.run)
    # A one-class run (train --classes) calibrates on its own classes and counts every other label as an anomaly.
    run_classes = config.classes if args.normal is None and args.normal_class is None else None
    x_normal, y_normal = _images(args.normal, args.normal_split, config, None, classes=run_classes)
    x, y = _images(args.data, args.split, config, args.limit)  # all of it: the other classes are what gets scored
    is_anomaly = None
    if args.normal_class is not None:
        if y is None or y_normal is None:
            raise ValueError("--normal-class needs labelled data; the data given has no labels.")
        x_normal = x_normal[y_normal == args.normal_class]
        if not len(x_normal):
            raise ValueError(f"No calibration example has the label {args.normal_class}.")
        is_anomaly = y != args.normal_class
    elif run_classes and y is not None:
        is_anomaly = ~np.isin(y, run_classes)
    x_normal = x_normal[: _positive("--fit-limit", args.fit_limit)]
    detector = AnomalyDetector(model, args.method, args.num_samples)
    detector.fit(x_normal, quantile=args.quantile, false_positive_rate=args.false_positive_rate)
    scores = detector.score(x)
    report = {
        "run": str(args.run), "method": detector.method, "num_samples": detector.num_samples, "selection": detector.selection,
        "threshold": detector.threshold, "num_normal_calibration": len(x_normal), "num_examples": len(x),
        "flagged_fraction": float(np.mean(scores > detector.threshold)),
    }
    baselines = None
    if is_anomaly is not None:
        pca_scores = PCABaseline(model.latent_dim).fit(x_normal).reconstruction_error(x)
        pca = detection_metrics(pca_scores, is_anomaly)
        report.update(detection_metrics(scores, is_anomaly, detector.threshold), pca_auroc=pca["auroc"], pca_auprc=pca["auprc"])
        baselines = {f"PCA-{model.latent_dim} reconstruction error": pca_scores}
    if args.save:
        training.atomic_write(Path(args.run) / "model.keras", model.save)
        report["saved"] = str(Path(args.run) / "model.keras")
    out = _folder(args.out)
    report["figure"] = str(figures.anomaly_figure(scores, is_anomaly, detector.threshold, out / "anomaly.png", baselines, detector.method))
    _finish(out / "anomaly.json", report)


def _denoise(args):
    from kerasvae import training
    from kerasvae.apps import figures
    from kerasvae.apps.denoising import evaluate_denoising

    model, config = training.load_run(args.run)
    x, _ = _images(args.data, args.split, config, args.limit)
    x_fit, _ = _images(None, "train", config, _positive("--fit-limit", args.fit_limit))
    report, images = evaluate_denoising(model, x, args.noise, args.seed, _at_least("--steps", args.steps, 0), x_fit=x_fit)
    out = _folder(args.out)
    np.save(out / "denoised.npy", images["denoised"])
    title = f"noise {args.noise}: {report['psnr_noisy']:.1f} dB -> {report['psnr_denoised']:.1f} dB (PCA {report['psnr_pca']:.1f} dB)"
    shown = {"clean": images["clean"], f"noisy ({args.noise})": images["noisy"], "denoised": images["denoised"],
             f"PCA-{model.latent_dim}": images["pca"]}
    report["figure"] = str(figures.image_rows(shown, out / "denoising.png", title=title))
    _finish(out / "denoise.json", {"run": str(args.run), **report})


def _compress(args):
    from kerasvae import training
    from kerasvae.apps.compression import evaluate_compression

    model, config = training.load_run(args.run)
    num = _positive("--num", args.num)
    x, _ = _images(args.data, args.split, config, num)
    greyscale = dataclasses.replace(config, binarize=None)  # the reference of the PSNRs: the images before binarization
    original, _ = _images(args.data, args.split, greyscale, num)
    x_fit, _ = _images(None, "train", greyscale, _positive("--fit-limit", args.fit_limit))
    report, outputs = evaluate_compression(model, x, args.delta, x_fit=x_fit, original=original)
    target = Path(args.out)
    training.atomic_write(target, lambda tmp: Path(tmp).write_bytes(outputs["file"]))
    # The keys name the reference: a binarized run's inputs are not what its PSNRs are measured against.
    report["psnr_db_vs_greyscale"], report["pca_psnr_db_vs_greyscale"] = report.pop("psnr"), report.pop("pca_psnr")
    print(json.dumps({"run": str(args.run), "file": str(target), **report}))


def _decompress(args):
    from kerasvae import plots, training
    from kerasvae.apps.compression import decompress, read_header

    model, _ = training.load_run(args.run)
    path = Path(args.file)
    if not path.is_file():
        raise ValueError(f"{path} is not a file.")
    target = Path(args.out) if args.out else path.with_suffix(".npy")
    if target.suffix != ".npy":  # np.save would append .npy to the temporary name and leave the target empty
        raise ValueError(f"--out names the .npy file to write, got {target}")
    blob = path.read_bytes()
    images = decompress(model, blob)
    training.atomic_write(target, lambda tmp: np.save(tmp, images))
    shown = images[:64]
    preview = plots.image_grid(shown, target.with_suffix(".png"), title=f"the first {len(shown)} of {len(images)} images in {path.name}")
    header = read_header(blob)
    print(json.dumps({"file": str(path), "out": str(target), "figure": str(preview), "num_images": header["num_images"],
                      "delta": header["delta"], "bits_per_image": 8 * len(blob) / header["num_images"]}))


def _interpolate(args):
    from kerasvae import training
    from kerasvae.apps import figures
    from kerasvae.apps.navigation import INTERPOLATIONS, interpolate

    model, config = training.load_run(args.run)
    x, _ = _images(args.data, args.split, config, args.limit)
    a, b = (_index(name, i, len(x)) for name, i in (("--index-a", args.index_a), ("--index-b", args.index_b)))
    methods = INTERPOLATIONS if args.method == "both" else (args.method,)
    rows = {method: interpolate(model, x[a], x[b], _at_least("--steps", args.steps, 2), method) for method in methods}
    figures.image_table(np.stack(list(rows.values())), args.output, row_labels=list(rows),
                        column_labels=[f"t={t:.2f}" for t in np.linspace(0, 1, args.steps)], title=f"from image {a} to image {b}")
    print(json.dumps({"run": str(args.run), "output": str(args.output), "methods": list(rows), "steps": args.steps, "index_a": a, "index_b": b}))


def _traverse(args):
    from kerasvae import training
    from kerasvae.apps import figures
    from kerasvae.apps.navigation import informative_dimensions, traverse

    model, config = training.load_run(args.run)
    x, _ = _images(args.data, args.split, config, args.limit)
    base = None if args.prior else x[_index("--index", args.index, len(x))]
    dims = _int_list("--dims", args.dims) if args.dims else informative_dimensions(model, x)
    if not args.range > 0:
        raise ValueError(f"--range must be > 0, got {args.range}.")
    values = np.linspace(-args.range, args.range, _at_least("--steps", args.steps, 2))
    images, dims = traverse(model, base, dims, values)
    figures.image_table(images, args.output, row_labels=[f"z{d}" for d in dims], column_labels=[f"{v:+.1f}" for v in values],
                        title="latent traversal (prior standard deviations)")
    print(json.dumps({"run": str(args.run), "output": str(args.output), "dims": dims, "values": values.round(3).tolist()}))


def _latent_map(args):
    from kerasvae import training
    from kerasvae.apps import figures
    from kerasvae.apps.visualization import embed

    model, config = training.load_run(args.run)
    x, y = _images(args.data, args.split, config, args.limit or 2000)
    coordinates, axis_name = embed(model, x, args.method, args.dims)
    figures.latent_scatter(coordinates, y, args.output, axis_name, title=f"posterior means of {len(x)} images ({args.method})")
    print(json.dumps({"run": str(args.run), "output": str(args.output), "method": args.method, "dims": args.dims, "num_examples": len(x)}))


def _manifold(args):
    from kerasvae import training
    from kerasvae.apps import figures
    from kerasvae.apps.visualization import manifold

    model, _ = training.load_run(args.run)
    images, (z1, z2) = manifold(model, args.num)
    figures.manifold_figure(images, z1, z2, args.output)
    print(json.dumps({"run": str(args.run), "output": str(args.output), "num": args.num}))


def _probe(args):
    from kerasvae import training
    from kerasvae.apps import figures
    from kerasvae.apps.features import probe_report, semi_supervised

    budgets, repeats = _int_list("--budgets", args.budgets), _positive("--repeats", args.repeats)
    model, config = training.load_run(args.run)
    x_train, y_train = _images(args.data, "train", config, _positive("--fit-limit", args.fit_limit))
    x_test, y_test = _images(args.data, args.split, config, args.limit)
    if y_train is None or y_test is None:
        raise ValueError("A probe needs labelled data; the data given has no labels.")
    report = {"run": str(args.run), "probe": probe_report(model, x_train, y_train, x_test, y_test)}
    rows = semi_supervised(model, x_train, y_train, x_test, y_test, budgets, repeats)
    report["semi_supervised"] = rows
    out = _folder(args.out)
    names = ("latent", "pca", "pixels")
    labels = {"latent": f"latent ({model.latent_dim}-d)", "pca": f"PCA ({model.latent_dim}-d)", "pixels": "pixels"}
    report["figure"] = str(figures.curves(
        [r["labels"] for r in rows], {labels[n]: [r[n] for r in rows] for n in names}, out / "probe.png",
        "labelled training examples", "test accuracy", "linear classifier on few labels (M1)", xscale="log",
        errors={labels[n]: [r[f"{n}_std"] for r in rows] for n in names},
    ))
    _finish(out / "probe.json", report)


def _sparse_code(args):
    from kerasvae import training
    from kerasvae.apps import figures
    from kerasvae.apps.sparse_coding import sparsity_curve

    nonzeros = _int_list("--nonzeros", args.nonzeros)
    model, config = training.load_run(args.run)
    x, _ = _images(args.data, args.split, config, args.limit)
    x_fit, _ = _images(None, "train", config, _positive("--fit-limit", args.fit_limit))
    rows, images = sparsity_curve(model, x_fit, x, nonzeros, _positive("--atoms", args.atoms), args.alpha)
    out = _folder(args.out)
    curve = figures.curves(nonzeros, {"latent dictionary + decoder": [r["latent_psnr"] for r in rows],
                                      "pixel dictionary": [r["pixel_psnr"] for r in rows]},
                           out / "sparse_coding.png", "nonzero coefficients per image", "PSNR (dB)",
                           f"sparse coding with {args.atoms} atoms")
    shown = {"original": images["original"], **{f"{kind} k={k}": images[f"{kind}_{k}"] for k in nonzeros for kind in ("latent", "pixel")}}
    examples = figures.image_rows(shown, out / "sparse_examples.png", title="reconstructions from k atoms")
    _finish(out / "sparse_coding.json", {"run": str(args.run), "atoms": args.atoms, "rows": rows, "figures": [str(curve), str(examples)]})


def _impute(args):
    from kerasvae import training
    from kerasvae.apps import figures
    from kerasvae.apps.imputation import block_mask, evaluate_imputation, random_mask

    model, config = training.load_run(args.run)
    x, _ = _images(args.data, args.split, config, args.limit)
    x_fit, _ = _images(None, "train", config, _positive("--fit-limit", args.fit_limit))
    missing = random_mask(x.shape, args.fraction, args.seed) if args.mask == "random" else block_mask(x.shape, args.fraction)
    report, images = evaluate_imputation(model, x, missing, x_fit, steps=_at_least("--steps", args.steps, 0))
    out = _folder(args.out)
    np.save(out / "imputed.npy", images[args.method])
    shown = {"original": x, "observed": np.where(missing, 0.5, x), "map": images["map"], "pseudo-Gibbs": images["pseudo_gibbs"], "mean": images["mean"]}
    title = f"RMSE on missing pixels: map {report['rmse_map']:.3f}, pseudo-Gibbs {report['rmse_pseudo_gibbs']:.3f}, mean {report['rmse_mean']:.3f}"
    report["figure"] = str(figures.image_rows(shown, out / "imputation.png", title=title))
    _finish(out / "impute.json", {"run": str(args.run), "mask": args.mask, **report})


def _regress(args):
    from kerasvae import training
    from kerasvae.apps import figures
    from kerasvae.apps.regression import regression_report

    if not 0 < args.test_fraction < 1:
        raise ValueError(f"--test-fraction must lie in (0, 1), got {args.test_fraction}")
    model, config = training.load_run(args.run)
    x, _ = _images(args.data, args.split, config, args.limit)
    y = _targets(args.targets, len(x))
    held_out = np.random.default_rng(args.seed).permutation(len(x))[: max(1, int(round(args.test_fraction * len(x))))]
    train = np.setdiff1d(np.arange(len(x)), held_out)
    report, predictions = regression_report(model, x[train], y[train], x[held_out], y[held_out], args.method,
                                            _at_least("--num-samples", args.num_samples, 2), args.seed)
    out = _folder(args.out)
    np.save(out / "predictions.npy", np.stack([y[held_out], predictions["mean"], predictions["std"]], axis=1))
    title = f"{args.method} on {model.latent_dim}-d posterior means: R2 {report['latent']['r2']:.3f} (PCA {report['pca']['r2']:.3f})"
    report["figure"] = str(figures.regression_figure(y[held_out], predictions["mean"], predictions["std"], out / "regression.png", title=title))
    _finish(out / "regress.json", {"run": str(args.run), "examples": {"train": len(train), "test": len(held_out)}, **report})


# === Helpers ===


def _images(source, split, config, limit, classes=None):
    """(x, y) of `source` (a dataset name or path; None: the run's dataset, binarized as it trained); only
    `classes` when given."""
    from kerasvae import data, training

    if source is None:
        return training.test_images(config, split, limit, classes=classes)
    x, y = data.load_arrays(source, split, classes=classes)
    return (x[:limit], None if y is None else y[:limit]) if limit else (x, y)


def _targets(path, n):
    """Float targets [n] (or [n, t]) read from a .npy, .csv or whitespace-separated text file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--targets {path}: no such file")
    try:
        y = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=1)
    except ValueError as error:
        raise ValueError(f"--targets {path}: not numbers ({error})") from None
    y = np.asarray(y, np.float64)
    if len(y) != n or not np.isfinite(y).all():
        raise ValueError(f"--targets {path} holds {len(y)} values (finite: {bool(np.isfinite(y).all())}); the data has {n} examples")
    return y


def _folder(path):
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _finish(path, report):
    """Write the report as JSON and print it as one line."""
    from kerasvae import training

    training.write_json(path, report)
    print(json.dumps({**report, "json": str(path)}))


def _at_least(name, value, low):
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def _positive(name, value):
    return _at_least(name, value, 1)


def _index(name, value, n):
    if not 0 <= value < n:
        raise ValueError(f"{name} must lie in [0, {n}), got {value}")
    return value


def _int_list(name, text):
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{name} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise ValueError(f"{name} takes comma-separated integers >= 0, got {text!r}")
    return values
