"""Anomaly scores that compare an input with normal data, beside the model's own ELBO, NLL and
reconstruction scores, and the statistics of normal data they need.

A likelihood score -log p(x) is confounded by input complexity: simple inputs (large flat backgrounds) get
high likelihood whatever class they show (Nalisnick et al. 2019, "Do deep generative models know what they
don't know?"; Serra et al. 2020, "Input complexity and out-of-distribution detection with likelihood-based
generative models"). The scores here correct for it or look elsewhere. All are nats-like, higher = more
anomalous; `reference` is the dict of normal-data statistics `fit_reference` computes:

    typicality        | -ELBO(x) - m |, m the mean -ELBO of held-out normal data (Nalisnick et al. 2019's
                      typicality test for a batch of one: normal data has typical, not maximal, likelihood)
    complexity        -ELBO(x) - L(x) ln 2, L(x) the PNG code length of the 8-bit image in bits (Serra et
                      al.'s S(x): the model's code length minus a generic lossless compressor's)
    latent_density    1/2 (mu(x) - m)^T S^-1 (mu(x) - m): -log of a Gaussian fitted to the posterior means
                      mu of normal data, up to a constant (the Mahalanobis distance in latent space)
    latent_neighbors  mean Euclidean distance from mu(x) to its k nearest normal posterior means
    ensemble          sum over `ensemble_parts` of w_s (s(x) - mean_s) / std_s, each score standardized on
                      held-out normal data: the likelihood says how well x is explained (complexity-corrected
                      where p(x|z) is a probability of 8-bit levels, else the ELBO), the neighbours how usual
                      its code is; with 8-bit images also the reconstruction's squared error, which weighs
                      every pixel alike where the learned likelihood forgives pixels it finds uncertain.
                      w_s is proportional to the part's separation d'_s = mean standardized score of
                      pseudo-anomalies made from the held-out data (`pseudo_anomalies`), clipped at 0 and
                      scaled to a mean of 1: for standardized, independent parts the weights that separate
                      two means best (Fisher's discriminant) are proportional to the shifts. A conditional
                      model's parts weigh 1 (pseudo-anomalies have no labels)

Every score is written once, on tensors, and serves both `AnomalyDetector.score` and the exported `score`
signature (kerasvae.export), so a served score equals the Python one.
"""

import weakref

import numpy as np
import tensorflow as tf

from kerasvae import objectives
from kerasvae.choices import ANOMALY_MODEL_SCORES as MODEL_SCORES
from kerasvae.choices import ANOMALY_REFERENCE_SCORES as REFERENCE_SCORES

NEIGHBORS = 5  # k of latent_neighbors
MAX_NEIGHBORS = 2000  # normal posterior means kept as neighbours (kept in the model's config)
SCORE_SEED = (0, 0)  # the stateless seed of every served score: a request's scores repeat exactly


def available(model):
    """The scores that apply to `model`, in METHODS order: latent scores need continuous latents, the
    complexity score 8-bit images (height, width, 1 or 3 channels)."""
    continuous = model.code_space is None
    applies = {"typicality": True, "complexity": _is_image(model.data_shape), "latent_density": continuous,
               "latent_neighbors": continuous, "ensemble": continuous}
    return MODEL_SCORES + tuple(name for name in REFERENCE_SCORES if applies[name])


def ensemble_parts(model):
    """The scores the "ensemble" standardizes, weighs and adds. For 8-bit likelihoods of images: the
    complexity-corrected likelihood (their raw ELBO ranks simple images as normal: one-class Fashion-MNIST
    AUROC 0.51-0.59 on pullovers, coats and T-shirts), the latent neighbours and the reconstruction error
    (which raised one-class Fashion-MNIST from a mean AUROC of 0.936 to 0.942 and from 7 to 9 classes of 10
    above PCA; BENCHMARKS.md). Otherwise the ELBO, a density's own weighting of the errors, and the latent
    neighbours."""
    if model.likelihood.eight_bit and _is_image(model.data_shape):
        return ("complexity", "latent_neighbors", "reconstruction_error")
    return ("elbo", "latent_neighbors")


def _is_image(shape):
    return len(shape) == 3 and shape[-1] in (1, 3)


def batch_scores(model, x, method, num_samples, reference=None, labels=None, seed=SCORE_SEED):
    """Anomaly scores [batch] of a batch tensor x under `method`; graph-safe (the exported `score`
    signature calls it). The ELBO averages `num_samples` posterior draws that share one stateless noise
    draw across the batch (an example's score does not depend on its batch); "nll" draws its importance
    samples from the same stateless seed."""
    seed = tf.convert_to_tensor(seed, tf.int32)
    if method == "reconstruction":
        return -model.reconstruction_log_prob(x, labels=labels)
    if method == "reconstruction_error":
        return model.reconstruction_error(x, labels=labels)
    if method == "nll":
        return -objectives.iwae_bound(model.log_importance_weights(x, num_samples, seed, labels=labels))
    if method == "elbo":
        return -model.elbo_batch(x, num_samples, seed, shared_noise=True, labels=labels)
    if reference is None:
        raise ValueError(f"The {method!r} score compares inputs with normal data; call AnomalyDetector.fit(x_normal) first.")
    if method == "typicality":
        return tf.abs(batch_scores(model, x, "elbo", num_samples, labels=labels, seed=seed) - reference["elbo_mean"])
    if method == "complexity":
        return batch_scores(model, x, "elbo", num_samples, labels=labels, seed=seed) - png_bits(x) * np.log(2.0)
    if method == "ensemble":
        total = 0.0
        # A reference fitted before a part joined the ensemble (a calibrated model saved earlier) scores
        # with the parts it has statistics for, as it was calibrated; one fitted before the weights, with weight 1.
        for name in (name for name in ensemble_parts(model) if f"{name}_mean" in reference):
            score = batch_scores(model, x, name, num_samples, reference, labels=labels, seed=seed)
            total += reference.get(f"{name}_weight", 1.0) * _standardized(score, name, reference)
        return total
    codes = model.posterior_params(x, labels=labels)["loc"]
    if method == "latent_density":
        centred = codes - tf.constant(reference["latent_mean"], tf.float32)
        precision = tf.constant(reference["latent_precision"], tf.float32)
        return 0.5 * tf.reduce_sum(tf.matmul(centred, precision) * centred, axis=-1)
    if method == "latent_neighbors":
        return neighbor_distance(codes, tf.constant(reference["neighbors"], tf.float32), NEIGHBORS)
    raise ValueError(f"Unknown anomaly score method {method!r}.")


def neighbor_distance(points, neighbors, k):
    """Mean Euclidean distance [n] from each of `points` [n, d] to its k nearest rows of `neighbors` [m, d]:
    |a - b|^2 = |a|^2 - 2 a.b + |b|^2, then the k smallest."""
    squared = (tf.reduce_sum(tf.square(points), -1, keepdims=True) - 2.0 * tf.matmul(points, neighbors, transpose_b=True)
               + tf.reduce_sum(tf.square(neighbors), -1)[tf.newaxis])
    nearest = -tf.math.top_k(-squared, k=min(k, int(neighbors.shape[0]))).values
    return tf.reduce_mean(tf.sqrt(tf.maximum(nearest, 0.0)), axis=-1)


def png_bits(x):
    """PNG code length in bits [batch] of images in [0, 1] quantized to 8 bits (TensorFlow's PNG encoder at
    its highest compression level, in graph, so the served score computes it too)."""
    pixels = tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)
    lengths = tf.map_fn(lambda image: tf.strings.length(tf.io.encode_png(image, compression=9)), pixels,
                        fn_output_signature=tf.int32)
    return 8.0 * tf.cast(lengths, tf.float32)


def fit_reference(model, method, num_samples, x_reference, x_held_out, labels_reference=None, labels_held_out=None):
    """The normal-data statistics `method` needs, as a JSON-able dict (the model's config keeps it): from
    the posterior means of `x_reference` the latent Gaussian and the neighbours; from `x_held_out`, which
    the neighbours do not include, the means and standard deviations that standardize scores."""
    needs = set(ensemble_parts(model)) if method == "ensemble" else {method}
    reference = {}
    if needs & {"latent_density", "latent_neighbors"}:
        codes = np.asarray(model.latent_features(x_reference, labels=labels_reference), np.float64)
        if "latent_density" in needs:
            covariance = np.cov(codes, rowvar=False).reshape(codes.shape[1], codes.shape[1])
            # A small ridge keeps collapsed (constant) latent units from making the covariance singular.
            covariance += 1e-6 * np.eye(len(covariance)) * max(float(np.trace(covariance)) / len(covariance), 1.0)
            reference.update(latent_mean=_listed(codes.mean(0)), latent_precision=_listed(np.linalg.inv(covariance)))
        if "latent_neighbors" in needs:
            keep = np.random.default_rng(0).permutation(len(codes))[:MAX_NEIGHBORS]
            reference["neighbors"] = _listed(codes[np.sort(keep)])
    standardized = ensemble_parts(model) if method == "ensemble" else ("elbo",) if method == "typicality" else ()
    for name in standardized:  # typicality needs the ELBO's mean only; its std costs nothing
        scores = score_arrays(model, x_held_out, name, num_samples, reference, labels=labels_held_out)
        reference.update({f"{name}_mean": float(scores.mean()), f"{name}_std": float(scores.std() + 1e-6)})
    if method == "ensemble" and labels_held_out is None:
        reference.update(_ensemble_weights(model, num_samples, reference, x_held_out))
    return reference


def _ensemble_weights(model, num_samples, reference, x_held_out):
    """{part_weight}: each ensemble part's separation d' of pseudo-anomalies from the held-out normal data it
    was standardized on, clipped at 0, scaled to a mean of 1 (equal weights where none separates). The
    pseudo-anomalies use another seed than AnomalyDetector's choice of score, which they would otherwise
    favour."""
    fake = pseudo_anomalies(x_held_out, seed=1)
    parts = ensemble_parts(model)
    shifts = np.array([max(float(np.mean(_standardized(score_arrays(model, fake, name, num_samples, reference), name, reference))), 0.0)
                       for name in parts])
    weights = shifts * len(parts) / shifts.sum() if shifts.sum() > 0 else np.ones(len(parts))
    return {f"{name}_weight": float(f"{weight:.6g}") for name, weight in zip(parts, weights)}


def _standardized(score, name, reference):
    """(s - mean_s) / std_s of an ensemble part's scores (tensor or numpy), with the held-out normal
    statistics `fit_reference` stored for it."""
    return (score - reference[f"{name}_mean"]) / reference[f"{name}_std"]


def _listed(array):
    # Six significant digits: the config stays about half the size of full float reprs, and distances move
    # by far less than scores differ.
    return [float(f"{v:.6g}") for v in array] if array.ndim == 1 else [_listed(row) for row in array]


def score_arrays(model, x, method, num_samples, reference=None, labels=None):
    """`batch_scores` over a numpy array, batch by batch: numpy [n]."""
    function = _compiled(model, method, int(num_samples), reference)
    size = model.eval_batch_size
    scores = [np.asarray(function(tf.constant(x[i:i + size]), *(() if labels is None else (tf.constant(labels[i:i + size]),))))
              for i in range(0, len(x), size)]
    return np.concatenate(scores) if scores else np.zeros([0], np.float32)


def _compiled(model, method, num_samples, reference):
    # One traced function per model, method, sample count and reference (whose arrays become graph
    # constants), kept while the model lives: a function made afresh per call would retrace per batch.
    functions = _COMPILED.setdefault(model, {})
    key = (method, num_samples, id(reference))
    if key not in functions or functions[key][0] is not reference:
        model_ref = weakref.ref(model)  # a strong reference from the value would keep its weak key alive

        def score(x, labels=None):
            return batch_scores(model_ref(), x, method, num_samples, reference, labels=labels)

        functions[key] = (reference, tf.function(score, reduce_retracing=True))
    return functions[key][1]


_COMPILED = weakref.WeakKeyDictionary()


def pseudo_anomalies(x, seed=0):
    """Anomalies made from normal examples x, for choosing a score without seeing real anomalies: an equal
    share of each of: flipped along the first axis (upside down), a quarter turn (square images), shifted
    cyclically by a fifth of the last spatial axis, and the elementwise maximum of two normal examples (two
    objects in one input). Returns an array like x."""
    x = np.asarray(x, np.float32)
    rng = np.random.default_rng(seed)
    spatial = x.shape[1:-1] if x.ndim > 2 else x.shape[1:]
    last = len(spatial)  # the last spatial axis of a batch
    kinds = [
        lambda a: a[:, ::-1],
        lambda a: np.roll(a, max(spatial[-1] // 5, 1), axis=last),
        lambda a: np.maximum(a, a[rng.permutation(len(a))]),
    ]
    if len(spatial) >= 2 and spatial[0] == spatial[1]:
        kinds.insert(1, lambda a: np.rot90(a, 1, axes=(1, 2)))
    order = rng.permutation(len(x))
    return np.concatenate([kind(x[order[i::len(kinds)]]) for i, kind in enumerate(kinds)]).astype(np.float32)
