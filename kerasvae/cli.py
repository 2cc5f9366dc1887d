"""The `kerasvae` command. Thin: it parses arguments and calls the library."""

import argparse
import difflib
import json
import re
import sys
import time
from pathlib import Path

import kerasvae
from kerasvae import logs, progress, runs

DEMO_EPOCHS = {"fashion_mnist": 3, "digits": 60}


def _train(args):
    import tensorflow as tf

    from kerasvae import training

    try:
        _, history = training.train_run(
            args.out,
            model=args.model,
            dataset=args.dataset,
            classes=args.classes,
            binarize=args.binarize,
            likelihood=args.likelihood,
            epochs=args.epochs,
            latent_dim=args.latent_dim,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            weight_averaging=args.weight_averaging,
            early_stopping=args.early_stopping,
            seed=args.seed,
            strategy=args.strategy,
            precision=args.precision,
            xla=args.xla,
            force=args.force,
            verbose=0 if args.quiet else "auto",
        )
    except tf.errors.UnavailableError as error:  # a peer of the cluster died: not bad input, a crash to resume
        message = str(error).strip().splitlines()[0]
        print(f"kerasvae train: a task of the cluster is down ({message}); run the same command on every worker "
              f"again to resume from {args.out}/backup", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({key: values[-1] for key, values in history.items()}))
    files = ", ".join(sorted(path.name for path in Path(args.out).iterdir() if path.is_file()))
    print(f"kerasvae train: wrote {args.out} ({files}); TensorBoard: tensorboard --logdir {Path(args.out) / 'logs'}; "
          f"next: kerasvae evaluate {args.out}", file=sys.stderr)


def _evaluate(args):
    from kerasvae import evaluation, training

    model, config = training.load_run(args.run)
    x, _ = training.test_images(config, args.split, args.limit)
    report = evaluation.evaluate(model, x, num_samples=args.num_samples, seed=args.seed, precision=args.precision)
    print(json.dumps({"run": str(args.run), "split": args.split, **report}))


def _demo(args):
    from kerasvae import data, evaluation, training

    dataset = args.dataset or ("fashion_mnist" if data.fashion_mnist_available() else "digits")
    out = Path(args.out)
    start = time.time()
    print(f"kerasvae demo: training the classic VAE on {dataset} (dynamic binarization) into {out}/")
    model, _ = training.train_run(
        out, model="mlp-vae", dataset=dataset, binarize="dynamic", epochs=args.epochs or DEMO_EPOCHS[dataset],
        latent_dim=32 if dataset == "fashion_mnist" else 8, verbose=2, force=True,  # the demo's own folder
    )
    x, _ = training.test_images(runs.read_config(out), limit=1000)
    report = evaluation.evaluate(model, x, num_samples=100)
    print(f"\n{'metric (test, ' + str(len(x)) + ' images)':<36}{'value':>12}")
    rows = [("ELBO (nats)", report["elbo"]), ("IWAE NLL, k=100 (nats)", report["nll"]),
            ("bits/dim", report["bits_per_dim"]), ("reconstruction (nats)", report["reconstruction"]),
            ("KL (nats)", report["kl"]), ("active units", f"{report['active_units']}/{report['latent_dim']}")]
    for name, value in rows:
        print(f"{name:<36}{value:>12.3f}" if isinstance(value, float) else f"{name:<36}{value:>12}")
    print(f"\nfigures: {', '.join(str(p) for p in sorted(out.glob('*.png')))}")
    print(f"done in {time.time() - start:.0f} s; evaluate again with: kerasvae evaluate {out}")


def _sample(args):
    from kerasvae import plots, training

    model, _ = training.load_run(args.run)
    images = model.sample(args.num, seed=args.seed, temperature=args.temperature)
    print(plots.image_grid(images, args.output, title=f"{plots.model_title(model)}: {args.num} samples, seed {args.seed}"))


def _reconstruct(args):
    from kerasvae import plots, training

    model, config = training.load_run(args.run)
    x, _ = training.test_images(config, limit=args.num)
    print(plots.save_reconstructions(model, x, args.output, n=args.num))


def _export(args):
    from kerasvae.export import export

    modes = [m for m in (args.tflite or "").split(",") if m]
    result = export(
        args.run, args.to, args.version, args.force, modes, args.onnx, calibration_data=args.calibration_data,
        tflite_batch=args.tflite_batch, web=args.web, web_runtime=args.web_runtime, author=args.author,
        license=args.license,
    )
    print(json.dumps(result, indent=2))


def _serve(args):
    from kerasvae.serving.batching import BatchingParameters
    from kerasvae.serving.server import serve

    knobs = {name: getattr(args, name) for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                                                    "num_batch_threads", "allowed_batch_sizes")}
    batching = None
    if args.enable_batching:  # TF Serving's defaults, then the file's values, then the flags given
        batching = BatchingParameters.read(args.batching_parameters_file) if args.batching_parameters_file else BatchingParameters()
        batching = batching.replace(**knobs)
    elif args.batching_parameters_file or any(v is not None for k, v in knobs.items() if k != "max_batch_size"):
        raise ValueError("--batching-parameters-file and the batching knobs need --enable-batching (as in TF Serving).")
    serve(
        args.saved_models, port=args.port, rest_port=args.rest_port, host=args.host, model_config=args.model_config,
        poll_seconds=args.poll_seconds, max_batch_size=args.max_batch_size, max_request_bytes=args.max_request_bytes,
        max_concurrent_requests=args.max_concurrent_requests, request_timeout=args.request_timeout,
        log_requests=args.log_requests, batching=batching, model_warmup=args.enable_model_warmup,
    )


def _batch_sizes(text):
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,4; got {text!r}") from None


def _info(args):
    import keras
    import tensorflow as tf
    import tensorflow_probability as tfp

    import kerasvae
    from kerasvae import distribute

    print(json.dumps({
        "kerasvae": kerasvae.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tensorflow_probability": tfp.__version__,
        "keras_backend": keras.config.backend(),
        **distribute.describe(),
    }, indent=2))


class Parser(argparse.ArgumentParser):
    """argparse with the project's conventions: every option's --help shows its default, and a usage error
    is one line naming the (sub)command, exit status 2, no usage block."""

    def add_argument(self, *args, **kwargs):
        default, text = kwargs.get("default"), kwargs.get("help") or ""
        if not any(default is v for v in (None, False, argparse.SUPPRESS)) and "default" not in text:
            kwargs["help"] = f"{text} (default: %(default)s)".strip()
        return super().add_argument(*args, **kwargs)

    def error(self, message):
        choice = re.match(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(3))
            close = difflib.get_close_matches(choice.group(2), options, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"argument {choice.group(1)}: invalid choice {choice.group(2)!r}{hint} (choose from {', '.join(options)})"
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser():
    from kerasvae.choices import (
        IMAGE_PRESET_NAMES,
        LIKELIHOOD_NAMES,
        PRECISIONS,
        STRATEGIES,
    )

    parser = Parser(prog="kerasvae", description="The autoencoder family for Keras 3 + TFP.")
    parser.add_argument("--version", action="version", version=f"kerasvae {kerasvae.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    parser.commands = commands  # main() names the subcommand in errors about its arguments

    train = commands.add_parser("train", help="train a model by fit and write a run folder")
    image_models = sorted(name.replace("_", "-") for name in IMAGE_PRESET_NAMES)
    train.add_argument("--model", default="vae", choices=image_models, help="an unconditional image preset")
    train.add_argument("--dataset", default="digits", help="digits, fashion_mnist, mnist, or a data path")
    train.add_argument("--classes", type=int, nargs="+", default=None, metavar="LABEL",
                       help="train on the examples of these labels only, e.g. the normal class for anomaly detection "
                       "(default: all)")
    train.add_argument("--binarize", choices=["static", "dynamic"], default=None)
    train.add_argument("--likelihood", default="auto", choices=LIKELIHOOD_NAMES,
                       help="p(x|z); auto: a Bernoulli for binary images (--binarize), the discretized logistic "
                       "for grey levels, a Gaussian per pixel for other values")
    train.add_argument("--epochs", type=int, default=None, help="default: the preset's (10; vae-best: 45, hvae: 62)")
    train.add_argument("--latent-dim", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=None, help="default: the preset's (128)")
    train.add_argument("--learning-rate", type=float, default=None, help="default: the preset's (1e-3; mlp-vae: 5e-4)")
    train.add_argument("--weight-averaging", type=float, default=None, metavar="MOMENTUM",
                       help="keep an exponential moving average of the weights (default: the preset's, 0.999 for vae, "
                       "vae-best, mlp-vae and hvae, off otherwise; 0 turns it off)")
    train.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                       help="hold out the last sixth of the training images, stop when their loss has not improved for "
                       "PATIENCE epochs, keep the best epoch's weights (default: off, all images train)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, help="run folder (a crashed run's folder resumes it)")
    train.add_argument("--force", action="store_true", help="train over a finished run in --out")
    train.add_argument("--strategy", default="default", choices=STRATEGIES,
                       help="tf.distribute strategy; multi-worker and parameter-server read TF_CONFIG (a parameter-server "
                       "worker or ps task serves until killed; the chief trains); --batch-size is the global batch")
    train.add_argument("--precision", default="float32", choices=PRECISIONS, help="Keras dtype policy")
    train.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None,
                       help="compile the train step with XLA (default: Keras's choice, on with a GPU)")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="print one JSON object of test metrics for a run")
    evaluate.add_argument("run")
    evaluate.add_argument("--num-samples", type=int, default=1000, help="importance samples for the NLL")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate on the first N examples only")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--precision", choices=["float32", "bfloat16"], default=None,
                          help="the NLL decoder's compute precision (default: the model's own); bfloat16 is faster "
                               "where the CPU or GPU has bfloat16 units and moves the NLL by thousandths of a nat")
    evaluate.set_defaults(handler=_evaluate)

    demo = commands.add_parser("demo", help="train, evaluate and draw a VAE end to end in a few minutes")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--epochs", type=int, default=None)
    demo.add_argument("--dataset", choices=sorted(DEMO_EPOCHS), default=None, help="default: Fashion-MNIST if present")
    demo.set_defaults(handler=_demo)

    sample = commands.add_parser("sample", help="draw samples from a run's model into a PNG grid")
    sample.add_argument("run")
    sample.add_argument("--num", type=int, default=64)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--output", default="samples.png")
    sample.set_defaults(handler=_sample)

    reconstruct = commands.add_parser("reconstruct", help="reconstruct test images into a PNG grid")
    reconstruct.add_argument("run")
    reconstruct.add_argument("--num", type=int, default=16)
    reconstruct.add_argument("--output", default="reconstructions.png")
    reconstruct.set_defaults(handler=_reconstruct)

    export = commands.add_parser("export", help="export a run or a .keras file for TF Serving, TFLite and ONNX")
    export.add_argument("run", metavar="RUN_OR_FILE", help="a run folder or a .keras model file")
    export.add_argument("--to", required=True, help="model folder in the serving root, e.g. saved_models/fmnist")
    export.add_argument("--version", type=int, default=None, help="default: the next free version")
    export.add_argument("--force", action="store_true", help="replace an existing --version")
    export.add_argument("--tflite", default=None, help="comma-separated decoder modes: float32,dynamic,float16,int8")
    export.add_argument("--calibration-data", default=None, metavar="NAME|PATH",
                        help="training examples for int8 calibration and the --web demo: a dataset name or path "
                             "(its train split), e.g. digits or x.npy (default: a run's own data; none for a .keras file)")
    export.add_argument("--tflite-batch", default="1",
                        help="comma-separated static batch sizes of the TFLite files (1 is always written), e.g. 1,16")
    export.add_argument("--onnx", action="store_true", help="also write onnx/decoder.onnx and onnx/encoder.onnx")
    export.add_argument("--web", action="store_true", help="also write a browser demo beside the TFLite decoders")
    export.add_argument("--web-runtime", default=None,
                        help="the @litertjs/core package folder the demo copies (default: node_modules/@litertjs/core "
                             "from here up)")
    export.add_argument("--author", default="", help="author field of the TFLite Metadata and model.json")
    export.add_argument("--license", default="", help="licence field of the TFLite Metadata and model.json")
    export.set_defaults(handler=_export, check_run=runs.check_model_source)

    serve = commands.add_parser("serve", help="serve a folder of SavedModels over TF Serving's gRPC and REST APIs")
    serve.add_argument("saved_models", help="serving root, e.g. saved_models")
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (0: any free port)")
    serve.add_argument("--rest-port", type=int, default=None, help="REST port (0: any free port); none by default")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind; 0.0.0.0 serves other machines")
    serve.add_argument("--model-config", default=None, help="a TF Serving models.config to serve instead, with its "
                       "model_version_policy and version_labels; read again at every poll")
    serve.add_argument("--poll-seconds", type=float, default=2.0, help="how often to look for new versions (and a changed --model-config)")
    serve.add_argument("--max-batch-size", type=int, default=None,
                       help="largest batch a request may carry (default 4096); with --enable-batching also the largest "
                       "batch formed and accepted (TF Serving's max_batch_size, default 1000)")
    serve.add_argument("--max-request-bytes", type=int, default=64 << 20)
    serve.add_argument("--max-concurrent-requests", type=int, default=64)
    serve.add_argument("--request-timeout", type=float, default=30.0, help="seconds a request may take (DEADLINE_EXCEEDED)")
    serve.add_argument("--log-requests", action="store_true",
                       help="one access line per REST and gRPC request on stderr (time, peer, method, model, version, "
                       "signature, status, ms, bytes)")
    serve.add_argument("--enable-model-warmup", action=argparse.BooleanOptionalAction, default=True,
                       help="replay each version's assets.extra/tf_serving_warmup_requests before serving it (TF Serving's "
                       "--enable_model_warmup)")
    batching = serve.add_argument_group("batching", "TF Serving's --enable_batching and BatchingParameters knobs; a knob "
                                        "given here overrides the file's")
    batching.add_argument("--enable-batching", action="store_true",
                          help="run concurrent Predict requests of a signature as one batch")
    batching.add_argument("--batching-parameters-file", default=None,
                          help="a TF Serving batching_parameters.txt (text BatchingParameters), e.g. the one kerasvae export writes")
    batching.add_argument("--batch-timeout-micros", type=int, default=None,
                          help="how long a non-full batch waits for more requests (default 0)")
    batching.add_argument("--num-batch-threads", type=int, default=None, help="batches run at once (default: CPU count)")
    batching.add_argument("--max-enqueued-batches", type=int, default=None,
                          help="batches that may wait before requests are refused UNAVAILABLE (default 10)")
    batching.add_argument("--allowed-batch-sizes", type=_batch_sizes, default=None,
                          help="comma-separated sizes batches are padded to, ending at --max-batch-size, e.g. 1,2,4,8")
    serve.set_defaults(handler=_serve)

    info = commands.add_parser("info", help="versions, devices and active acceleration")
    info.set_defaults(handler=_info)

    from kerasvae.apps import cli as apps_cli

    apps_cli.add_commands(commands)
    for command in commands.choices.values():
        output = command.add_mutually_exclusive_group()
        output.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
        output.add_argument("--verbose", action="store_true", help="TensorFlow's own start-up and deprecation logs too")
    return parser


def main(argv=None):
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # say it as the subcommand that was given them, with its usage in its own --help
        parser.commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    for name in ("epochs", "num_samples", "num", "batch_size", "latent_dim", "limit", "version"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            print(f"kerasvae {args.command}: --{name.replace('_', '-')} must be >= 1, got {value}", file=sys.stderr)
            return 2
    was_enabled = progress.enabled()
    progress.enable(not args.quiet)
    try:
        if getattr(args, "run", None) is not None:  # export also takes .keras files: its own check_run
            getattr(args, "check_run", runs.check_run_folder)(args.run)
        logs.start_tensorflow(verbose=args.verbose)
        args.handler(args)
    except ValueError as error:
        print(f"kerasvae {args.command}: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a path the user named cannot be read or written (missing, read-only, full disk)
        print(f"kerasvae {args.command}: {error.strerror or error}{f': {error.filename}' if error.filename else ''}", file=sys.stderr)
        return 2
    finally:
        progress.enable(was_enabled)  # main() called in-process (tests, notebooks) leaves the switch as it was
    return 0


if __name__ == "__main__":
    sys.exit(main())
