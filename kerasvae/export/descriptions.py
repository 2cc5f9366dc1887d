"""What the exported on-device files say about themselves: the model's description (describe_model), each
tensor's meaning, layout and range, the TFLite Metadata of a file, which runtimes load it, and the model.json
sidecars of tflite/ and onnx/. The exporters (tflite.py, onnx.py) call these; apps read what they write."""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

# file stem -> the SavedModel signature its files are converted from
KIND_SIGNATURES = {"decoder": "decode", "encoder": "encode", "codes_decoder": "decode_codes"}
# @tensorflow/tfjs-tflite 0.0.1-alpha.10 (the last release) runs a TFLite runtime of this version: files
# that need a newer one (TRANSPOSE_CONV v4: 2.13; hybrid FULLY_CONNECTED v12: 2.17) fail to load there.
# tests/test_on_device.py checks this claim against the real package in Chromium.
TFJS_TFLITE_RUNTIME = "2.12.0"
LITERT_JS_TESTED = "@litertjs/core 2.5.3"
FORMAT = "kerasvae.tflite/1"


PRIOR_NAMES = {"StandardNormalPrior": "normal", "MixturePrior": "mixture", "VampPrior": "vamp"}
DEMO_PRIOR_SAMPLES = 256
DEMO_EXAMPLES = 1000


def describe_model(model, x=None, labels=None, name=None, author="", license=""):
    """What the on-device files say about a model (model.json, TFLite Metadata): classes, shapes, likelihood,
    prior, and for the browser demo the latent dimensions ordered by how much they
    carry: the variance of the posterior means over `x` (the active-units statistic), largest first.
    Priors other than N(0, I) also get DEMO_PRIOR_SAMPLES draws, which an app picks from instead of drawing
    z itself."""
    import kerasvae
    from kerasvae import likelihoods

    prior = PRIOR_NAMES.get(type(model.prior_layer).__name__, type(model.prior_layer).__name__)
    description = {
        "name": name,
        "model_class": type(model).__name__,
        "kerasvae_version": kerasvae.__version__,
        "input_shape": list(model.data_shape),
        "latent_dim": int(model.latent_dim),
        "likelihood": likelihoods.name_of(model.likelihood),
        "support": None if model.likelihood.support is None else list(model.likelihood.support),
        "prior": prior,
        "num_classes": model.num_classes,
        "author": author,
        "license": license,
    }
    if model.code_space is not None:
        description["num_latents"], description["num_embeddings"] = (int(n) for n in model.code_space)
    if x is not None and model.code_space is None:
        labels = None if labels is None else np.asarray(labels[:DEMO_EXAMPLES])
        loc = np.asarray(model.posterior_params(np.asarray(x[:DEMO_EXAMPLES]), labels=labels)["loc"], np.float64)
        spread = loc.var(axis=0)
        description["demo"] = {
            "informative_dims": [int(i) for i in np.argsort(-spread, kind="stable")],
            "latent_mean": [round(float(v), 5) for v in loc.mean(axis=0)],
            "latent_std": [round(float(v), 5) for v in loc.std(axis=0)],
            "prior_samples": None
            if prior == "normal"
            else np.round(np.asarray(model.prior.sample(DEMO_PRIOR_SAMPLES, seed=(0, 7)), np.float64), 5).tolist(),
        }
    return description


def _runtime_note(min_runtime_version):
    support = runtime_support(min_runtime_version)
    note = f"Needs a TFLite runtime >= {min_runtime_version}"
    if support["tfjs-tflite"]:
        return note + "."
    return note + f"; @tensorflow/tfjs-tflite 0.0.1-alpha.10 (TFLite {TFJS_TFLITE_RUNTIME}) cannot load it."


def runtime_support(min_runtime_version):
    """Which runtimes load a file that needs TFLite runtime `min_runtime_version`."""
    needs = _version(min_runtime_version or "0")
    tfjs = needs <= _version(TFJS_TFLITE_RUNTIME)
    return {
        "litert": True,
        "litert.js": True,
        "tfjs-tflite": tfjs,
        **({} if tfjs else {"tfjs-tflite_reason": f"needs TFLite runtime {min_runtime_version}; "
                            f"@tensorflow/tfjs-tflite 0.0.1-alpha.10 runs {TFJS_TFLITE_RUNTIME}"}),
    }


def _version(text):
    return tuple(int(part) for part in str(text).split(".")[:3] if part.isdigit())


LAYOUTS = {1: "NC", 2: "NTC", 3: "NHWC"}
PARAMETER_TEXT = {
    "logits": "Bernoulli (or categorical) logits of p(x|z) per element",
    "loc": "location of p(x|z) per element",
    "scale": "scale of p(x|z) per element",
    "probs": "probabilities of p(x|z) per element",
}


def tensor_descriptions(description, function, aliases=None):
    """{"inputs": {name: {...}}, "outputs": {name: {...}}} for a SavedModel signature `function`: dtype and
    shape with a null batch for inputs, a description, and for data tensors their layout and value range.
    Outputs named in `aliases` (TFLite files keep one name per tensor) are left out."""
    description = description or {}
    rank = len(description.get("input_shape") or function.structured_input_signature[1].get("x", tf.TensorSpec([None])).shape[1:])
    data = {"layout": LAYOUTS.get(rank, "N..."), "range": description.get("support")}
    known = {
        "z": {"description": "latent code z; N(0, I) draws for a standard-normal prior, else draws from the prior",
              "range": None},
        "label": {"description": f"class label in [0, {description.get('num_classes')}) for the conditional model",
                  "range": [0, (description.get("num_classes") or 1) - 1]},
        "codes": {"description": "code indices, one per latent position",
                  "range": [0, max((description.get("num_embeddings") or 1) - 1, 0)]},
        "x": {"description": "input data", **data},
    }
    noise = {"description": "standard-normal noise of a lower latent level (z_l = mean + std * noise); N(0, I) draws "
                            "to generate, zeros for the level's conditional mean", "range": None}
    inputs = {
        name: {"dtype": spec.dtype.name, "shape": [None, *spec.shape[1:]],
               **known.get(name, noise if name.startswith("noise_") else {"description": name})}
        for name, spec in function.structured_input_signature[1].items()
    }
    names = [name for name in function.structured_outputs if name not in (aliases or {})]
    if "mean" not in names:  # an encoder
        outputs = {name: {"description": f"{name} of q(z|x) (encode's output)", "range": None} for name in names}
    else:
        outputs = {"mean": {"description": "mean of p(x|z): the generated data", **data}}
        for name in sorted(set(names) - {"mean"}):
            # a categorical's logits carry one more axis, the K categories, after the data's
            extra = len(function.structured_outputs[name].shape) - 1 - rank
            layout = data["layout"] + ("K" if extra == 1 else "")
            outputs[name] = {"description": PARAMETER_TEXT.get(name, f"{name} of p(x|z)"), "layout": layout, "range": None}
    return {"inputs": inputs, "outputs": outputs}


def file_metadata(description, kind, mode, batch, function, aliases=None, min_runtime_version=None):
    """The TFLite Metadata of one file (tflite_metadata.add_metadata's dict); `aliases` name the outputs the
    file leaves out because they equal another, `min_runtime_version` the TFLite runtime the file needs."""
    description = description or {}
    signature = KIND_SIGNATURES[kind]
    tensors = tensor_descriptions(description, function, aliases)
    name = description.get("name") or "model"
    what = {"decoder": "decoder p(x|z)", "encoder": "encoder q(z|x)", "codes_decoder": "codes decoder p(x|codes)"}[kind]
    return {
        "name": f"kerasvae {name} {kind} ({mode}, batch {batch})",
        "description": (
            f"{description.get('model_class', 'kerasvae')} {what} with a {description.get('likelihood', '')} "
            f"likelihood, {mode} weights, static batch {batch}; signature '{signature}'. "
            f"Outputs are laid out {tensors['outputs'].get('mean', {}).get('layout', '')}. "
            + _runtime_note(min_runtime_version) + " See model.json."
        ).replace("  ", " "),
        "version": str(description.get("kerasvae_version", "")),
        "author": description.get("author", ""),
        "license": description.get("license", ""),
        "inputs": [{"name": n, "description": t["description"], "range": t.get("range")} for n, t in tensors["inputs"].items()],
        "outputs": [_output_metadata(n, t, description) for n, t in tensors["outputs"].items()],
    }


def _output_metadata(name, tensor, description):
    entry = {"name": name, "description": tensor["description"], "range": tensor.get("range"), "content": "feature"}
    if name == "mean" and tensor.get("layout") == "NHWC" and description.get("input_shape", [0])[-1] in (1, 3):
        entry.update(content="image", color_space="RGB" if description["input_shape"][-1] == 3 else "GRAYSCALE")
    return entry


def model_json(saved_model_dir, signatures, report, files, description, batch_sizes):
    """The model.json sidecar (see the format in docs/on_device.md)."""
    description = dict(description or saved_description(saved_model_dir))
    sidecar = {
        "format": FORMAT,
        **{k: v for k, v in description.items() if k != "support"},
        "batch_sizes": list(batch_sizes),
        "recommended_mode": report["recommended_mode"],
        "recommendation": report["recommendation"],
        "runtimes": {
            "litert": "ai-edge-litert (Python Interpreter and CompiledModel), LiteRT on Android/iOS: any version at "
                      "or above each file's min_runtime_version",
            "litert.js": f"{LITERT_JS_TESTED} (tested in Chromium)",
            "tfjs-tflite": f"0.0.1-alpha.10 runs TFLite {TFJS_TFLITE_RUNTIME}: only files whose runs_in says so",
        },
    }
    for kind in files:
        signature = KIND_SIGNATURES[kind]
        aliases = report[kind]["float32"].get("aliases", {})
        tensors = tensor_descriptions(description, signatures[signature], aliases)
        for name, tensor in tensors["outputs"].items():  # dtype and shape as the files have them, any batch
            raw = files[kind]["float32"]["1"]["tensors"]["outputs"][name]
            tensor.update(dtype=raw["dtype"], shape=[None, *raw["shape"][1:]])
        sidecar[kind] = {"signature": signature, **tensors, **({"aliases": aliases} if aliases else {}), "files": files[kind]}
    sidecar["modes"] = {
        mode: {k: entry[k] for k in ("size_bytes", "psnr_db", "max_abs_error", "latency_ms", "offered", "reason", "activations",
                                     "logit_clip") if k in entry}  # an app computing log p(x|z) must know of the clip
        for mode, entry in report["decoder"].items()
    }
    return sidecar


def saved_description(saved_model_dir):
    path = Path(saved_model_dir) / "assets.extra" / "kerasvae.json"
    if not path.is_file():
        return {}
    info = json.loads(path.read_text())
    return {k: info[k] for k in ("model_class", "input_shape", "latent_dim", "likelihood", "kerasvae_version") if k in info}
