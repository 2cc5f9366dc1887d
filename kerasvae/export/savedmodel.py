"""SavedModels for TF Serving: `<base>/<version>/` with tag `serve`, the signatures of the contract, a
warmup file and kerasvae's metadata, written atomically (temp sibling + rename) so a server polling
the folder never loads half a version.

Signatures (inputs -> outputs, float32 unless said):
    encode       x [None, *input_shape]          -> loc, scale [None, latent_dim] (scale = 0 for a plain AE);
                 VQ-VAE: codes int32 [None, num_latents], z [None, latent_dim] (the quantized latents)
                 DiscreteVAE: logits, codes int32 [None, num_latents], z [None, latent_dim] (model.encode_outputs)
    decode       z [None, latent_dim]            -> mean [None, *input_shape] + the likelihood's parameters
    HierarchicalVAE (L levels, z_1 next to x, z_L = z the top; d_l = latent_dims[l-1]):
    encode       x -> loc, scale [None, d_L] of the top level and loc_l, scale_l [None, d_l] for l = 1..L-1:
                 q's parameters of every level along the posterior-mean path (each level conditioned on
                 the means of the levels it depends on; exact where a level depends on x alone: z_1 under
                 bottom-up inference, z_L under top-down; the top's under bottom-up is q(z_L | z_(L-1) = its
                 mean), narrower than the marginal q(z_L|x), a mixture)
    decode       z [None, d_L], noise_l [None, d_l] for l = 1..L-1 -> as decode above: the descent
                 z_l = mu_l(z_(l+1)) + sigma_l(z_(l+1)) * noise_l through p(z_l|z_(l+1)); noise_l ~ N(0, I)
                 draws ancestral samples, zeros the conditionals' means (the graphs hold no random ops)
                 (the inputs besides z and label come from model.decode_noise_shapes())
    reconstruct  x                               -> reconstruction
    serving_default = reconstruct
    sample       num_samples int32 [], seed int32 [2] -> x [num_samples, *input_shape] (stateless: same seed,
                 same samples on every load and every server)
    score        x                               -> elbo, reconstruction_error, anomaly_score [None]
                 (the ELBO's posterior sample uses the fixed stateless seed SCORE_SEED: deterministic);
                 a model calibrated by kerasvae.apps.AnomalyDetector adds is_anomaly bool [None]
                 (anomaly_score > its threshold, anomaly_score then being the calibrated method's score)
    Conditional models (ConditionalVAE) add an input `label` int32 [None] to encode, decode, reconstruct,
    serving_default, score and sample (there one label for all samples, or one per sample).
    decode_codes codes int32 [None, num_latents] -> as decode (VQ-VAE, DiscreteVAE: models with codes_to_latents)
    log_importance_weights  x, num_samples int32 [], seed int32 [2] -> log_weights [None, num_samples]: the
                 model's own log importance weights log p(x, z_k) - log q(z_k|x) over every latent, whose
                 logsumexp minus log num_samples estimates log p(x) (kerasvae.evaluation.saved_model_nll).
                 Only models whose decode takes noise besides z (HierarchicalVAE): their lower latents are not
                 in encode's outputs, so encode and decode alone cannot estimate the likelihood.
"""

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kerasvae.apps.anomaly import served_anomaly_score
from kerasvae.apps.anomaly_scores import SCORE_SEED

WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "kerasvae.json"
SIGNATURES = ("serving_default", "encode", "decode", "reconstruct", "sample", "score")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def signature_functions(model):
    """{name: (fn, input_signature)} for every signature; fns return dicts of named tensors."""
    x_spec = tf.TensorSpec([None, *model.data_shape], tf.float32, name="x")
    z_spec = tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")

    def encode(x, label=None):
        return model.encode_outputs(x, labels=label)

    noise_names = list(model.decode_noise_shapes())

    def decode(z, *inputs):  # inputs: the label (conditional models), then the noise the model declares
        label = inputs[0] if model.num_classes is not None else None
        return model.decode_outputs(z, labels=label, **dict(zip(noise_names, inputs[len(inputs) - len(noise_names):])))

    def reconstruct(x, label=None):
        return {"reconstruction": model(x, training=False, labels=label)}

    def sample(num_samples, seed, label=None):
        z_seed, x_seed = tfp.random.split_seed(seed, n=2)
        labels = None if label is None else tf.broadcast_to(label, [num_samples])
        return {"x": model.sample_batch(num_samples, z_seed, x_seed, mean=True, temperature=1.0, labels=labels)}

    def score(x, label=None):
        seed = tf.constant(SCORE_SEED, tf.int32)
        scores = model.score_batch(x, seed, labels=label)
        if model.anomaly_threshold is not None:
            scores["anomaly_score"] = served_anomaly_score(model, x, seed, scores, labels=label)
            scores["is_anomaly"] = scores["anomaly_score"] > model.anomaly_threshold
        return scores

    sample_specs = [tf.TensorSpec([], tf.int32, name="num_samples"), tf.TensorSpec([2], tf.int32, name="seed")]
    label = [tf.TensorSpec([None], tf.int32, name="label")] if model.num_classes is not None else []
    noise_specs = [tf.TensorSpec([None, *shape], tf.float32, name=name) for name, shape in model.decode_noise_shapes().items()]
    functions = {
        "serving_default": (reconstruct, [x_spec, *label]),
        "encode": (encode, [x_spec, *label]),
        "decode": (decode, [z_spec, *label, *noise_specs]),
        "reconstruct": (reconstruct, [x_spec, *label]),
        "sample": (sample, sample_specs + label),
        "score": (score, [x_spec, *label]),
    }
    if model.code_space is not None:
        codes_spec = tf.TensorSpec([None, model.code_space[0]], tf.int32, name="codes")
        functions["decode_codes"] = (lambda codes: decode(model.codes_to_latents(codes)), [codes_spec])
    if noise_names:
        def log_importance_weights(x, num_samples, seed, label=None):
            return {"log_weights": tf.transpose(model.log_importance_weights(x, num_samples, seed, labels=label))}

        functions["log_importance_weights"] = (log_importance_weights, [x_spec, *sample_specs, *label])
    return functions


def write_savedmodel(model, directory):
    """Write `model` as a SavedModel with every signature to `directory` (which must not exist)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, specs) in signature_functions(model).items():
        archive.add_endpoint(name=name, fn=tf.function(fn), input_signature=specs)
    archive.write_out(str(directory), verbose=False)
    return Path(directory)


def warmup_inputs(model, batch_size=2):
    """One small request per signature: {signature: {input key: numpy array}}."""
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, *model.data_shape)).astype(np.float32)
    z = rng.standard_normal((batch_size, model.latent_dim)).astype(np.float32)
    inputs = {
        "serving_default": {"x": x},
        "encode": {"x": x},
        "decode": {"z": z, **{name: rng.standard_normal((batch_size, *shape)).astype(np.float32)
                              for name, shape in model.decode_noise_shapes().items()}},
        "reconstruct": {"x": x},
        "sample": {"num_samples": np.int32(batch_size), "seed": np.array([1, 2], np.int32)},
        "score": {"x": x},
    }
    if model.code_space is not None:
        inputs["decode_codes"] = {"codes": np.zeros((batch_size, model.code_space[0]), np.int32)}
    if model.decode_noise_shapes():
        inputs["log_importance_weights"] = {"x": x, "num_samples": np.int32(3), "seed": np.array([1, 2], np.int32)}
    if model.num_classes is not None:
        for name in [name for name in inputs if name != "decode_codes"]:
            inputs[name]["label"] = np.zeros(batch_size, np.int32)
    return inputs


def write_warmup(directory, requests, model_name):
    """assets.extra/tf_serving_warmup_requests: a TFRecord of PredictionLogs, one per signature of
    `requests` ({signature: {input key: array}}, e.g. `warmup_inputs(model)`), that TF Serving replays at
    load so the first real request does not pay for graph initialization."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = Path(directory) / "assets.extra" / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, inputs in requests.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def versions(base_dir):
    """The integer version folders under a model's base folder, ascending."""
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        return []
    return sorted(int(p.name) for p in base_dir.iterdir() if p.is_dir() and p.name.isdigit())


def export_savedmodel(model, base_dir, version=None, force=False, metadata=None):
    """Export `model` to `base_dir/<version>/` and return that path.

    Args:
        model: a kerasvae model.
        base_dir: str or Path. The model's folder in the serving root, e.g. saved_models/fmnist.
        version: int or None. None takes the next free version (1 for a new model).
        force: bool. Replace an existing version instead of refusing.
        metadata: dict or None. Training config and metrics, stored as assets.extra/kerasvae.json.

    Raises:
        ValueError: if the version exists and force is False, or the folder name is not a valid model name.
    """

    def build(folder):
        saved = write_savedmodel(model, folder)
        write_warmup(saved, warmup_inputs(model), Path(base_dir).name)
        return write_metadata(saved, {
            "model_class": type(model).__name__,
            "input_shape": list(model.data_shape),
            "latent_dim": model.latent_dim,
            "likelihood": type(model.likelihood).__name__,
            "signatures": list(signature_functions(model)),
            "score_seed": list(SCORE_SEED),
            "anomaly_threshold": model.anomaly_threshold,
            "anomaly_method": model.anomaly_method,
            **(metadata or {}),
        })

    return publish_version(base_dir, build, version, force)


def write_metadata(saved, info):
    """Write assets.extra/kerasvae.json (the kerasvae version first, then `info`) into the SavedModel folder
    `saved`; returns `saved`."""
    path = Path(saved) / "assets.extra" / METADATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kerasvae_version": _package_version(), **info}, indent=2) + "\n")
    return Path(saved)


def publish_version(base_dir, build, version=None, force=False):
    """`base_dir/<version>/` written atomically: `build(folder)` writes a SavedModel into a fresh folder
    and returns it; it is built beside the target and renamed into place, so a server polling base_dir never
    loads half a version. Then models.config in base_dir's parent lists it. Returns the version's path.
    Raises ValueError as export_savedmodel does."""
    base_dir = Path(base_dir)
    if not MODEL_NAME.fullmatch(base_dir.name):
        raise ValueError(f"Model name {base_dir.name!r} must be 1-128 letters, digits, '_', '.' or '-'.")
    existing = versions(base_dir)
    version = int(version) if version is not None else (existing[-1] + 1 if existing else 1)
    if version < 1:
        raise ValueError(f"Version must be a positive integer, got {version}.")
    target = base_dir / str(version)
    if target.exists() and not force:
        raise ValueError(f"{target} already exists; pass --force to replace it or omit --version for the next one.")
    base_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(base_dir)
    # Built beside the target so the final rename is atomic; the name is not an integer, so TF Serving
    # ignores it while it is being written.
    staging = Path(tempfile.mkdtemp(dir=base_dir, prefix=f".tmp-{version}-"))
    try:
        saved = build(staging / "savedmodel")
        if target.exists():  # two renames, not a delete: the old version stays whole until the new one lands
            os.replace(target, staging / "replaced")
        os.replace(saved, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    update_models_config(base_dir.parent)
    return target


STALE_STAGING_SECONDS = 3600


def _remove_abandoned_staging(base_dir):
    """Delete staging folders of exports killed mid-write (untouched for an hour: not a running export's)."""
    for staging in base_dir.glob(".tmp-*"):
        if staging.is_dir() and time.time() - staging.stat().st_mtime > STALE_STAGING_SECONDS:
            shutil.rmtree(staging, ignore_errors=True)


def update_models_config(root):
    """Rewrite `root/models.config` (TF Serving's --model_config_file text proto) to list every model
    folder under root that holds at least one version."""
    root = Path(root)
    blocks = [
        f'  config {{\n    name: "{d.name}"\n    base_path: "{d.resolve()}"\n    model_platform: "tensorflow"\n  }}'
        for d in sorted(root.iterdir())
        if d.is_dir() and MODEL_NAME.match(d.name) and versions(d)
    ]
    path = root / "models.config"
    tmp = path.with_name(".models.config.tmp")
    tmp.write_text("model_config_list {\n" + "\n".join(blocks) + "\n}\n")
    os.replace(tmp, path)
    return path


def _package_version():
    import kerasvae

    return kerasvae.__version__
