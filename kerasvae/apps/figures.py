"""The applications' figures: labelled image tables, score histograms with ROC curves, latent maps, the
2-D manifold and metric curves. Each function writes one PNG and returns its path."""

import io

import numpy as np

from kerasvae import plots
from kerasvae.plots import plt

DPI = plots.DPI


def image_table(images, path, row_labels=None, column_labels=None, title=None, cell=0.9, row_axis=None, column_axis=None):
    """images [rows, columns, H, W(, C)] in [0, 1] as a grid, rows and columns labelled, and named by what
    they vary along: row_axis (e.g. "latent dimension"), column_axis (e.g. "value (prior std)")."""
    return _save(plots.table_figure(images, row_labels, column_labels, title, row_axis, column_axis, cell), path)


def image_rows(rows, path, n=8, title=None):
    """One row per entry of the dict rows {label: images [m, ...]}, the first n images of each."""
    labels = list(rows)
    return image_table(np.stack([np.asarray(rows[k][:n]) for k in labels]), path, row_labels=labels, title=title)


def anomaly_figure(scores, is_anomaly, threshold, path, baselines=None, method="elbo"):
    """Histograms of the model's scores (normal and anomalous examples apart when is_anomaly is given) with
    the threshold; with labels also ROC curves of the model and of each baseline {name: scores}, AUROC in
    the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    scores = np.asarray(scores)
    fig, axes = plt.subplots(1, 1 if is_anomaly is None else 2, figsize=(5 if is_anomaly is None else 10, 4), squeeze=False)
    left = axes[0, 0]
    bins = np.linspace(*np.percentile(scores, [0.5, 99.5]), 60)
    if is_anomaly is None:
        left.hist(scores, bins=bins, alpha=0.7, density=True, label=f"all ({len(scores)})")
    else:
        is_anomaly = np.asarray(is_anomaly, bool)
        left.hist(scores[~is_anomaly], bins=bins, alpha=0.6, density=True, label=f"normal ({(~is_anomaly).sum()})")
        left.hist(scores[is_anomaly], bins=bins, alpha=0.6, density=True, label=f"anomalous ({is_anomaly.sum()})")
    if threshold is not None:
        left.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.1f}")
    left.set_xlabel(f"anomaly score ({method}, nats)")
    left.set_ylabel("density")
    left.set_title("score histogram")
    left.legend(fontsize=9)
    if is_anomaly is not None:
        right = axes[0, 1]
        for name, values in {"model": scores, **(baselines or {})}.items():
            fpr, tpr, _ = roc_curve(is_anomaly, values)
            right.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(is_anomaly, values):.3f})")
        right.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
        right.set_xlabel("false positive rate")
        right.set_ylabel("true positive rate")
        right.set_title("ROC")
        right.legend(fontsize=9, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def latent_scatter(coordinates, labels, path, axis_name="principal component", title="posterior means", class_names=None):
    """A 2-D or 3-D scatter of coordinates [n, 2 or 3], coloured by integer labels with a legend of
    `class_names` (kerasvae.plots.class_names(dataset)), or in one colour without labels."""
    return _save(plots.scatter_figure(coordinates, labels, class_names, axis_name, title), path)


def manifold_figure(images, z1, z2, path, title="decoded latent manifold"):
    """images [n, n, H, W(, 1)] (row 0 = largest z2) tiled into one picture with z1 and z2 on the axes."""
    images = np.asarray(images)
    if images.ndim == 5:
        images = images[..., 0]
    n, _, height, width = images.shape
    canvas = images.transpose(0, 2, 1, 3).reshape(n * height, n * width)
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(np.clip(canvas, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ticks = np.arange(n)[:: max(1, n // 5)]
    ax.set_xticks(ticks * width + width / 2, [f"{z1[i]:.1f}" for i in ticks])
    ax.set_yticks(ticks * height + height / 2, [f"{z2[i]:.1f}" for i in ticks])
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def curves(x, series, path, xlabel, ylabel, title, xscale="linear", errors=None):
    """Lines y(x) for each {name: y values}, with optional error bars {name: std}."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, y in series.items():
        ax.errorbar(x, y, yerr=None if errors is None else errors.get(name), marker="o", capsize=3, label=name)
    ax.set_xscale(xscale)
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def regression_figure(y, mean, std, path, target="target", title="latent regression"):
    """Predicted against true target with 90% intervals (1.645 std) as error bars, and the diagonal."""
    y, mean, std = (np.asarray(a, np.float64).ravel() for a in (y, mean, std))
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.errorbar(y, mean, yerr=1.6448536269514722 * std, fmt="o", markersize=3, alpha=0.5, elinewidth=0.6, label="prediction, 90% interval")
    low, high = min(y.min(), mean.min()), max(y.max(), mean.max())
    ax.plot([low, high], [low, high], color="black", linewidth=1, label="y = prediction")
    ax.set_xlabel(f"true {target}")
    ax.set_ylabel(f"predicted {target}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def ordering_strip(rows, path, title="items ordered along their latent path"):
    """One strip per entry of {label: images [n, H, W(, 1)]} in the order given (e.g. "shuffled",
    "ordered by latent path"), each a single row of images."""
    labels = list(rows)
    return image_table(np.stack([np.asarray(rows[k]) for k in labels]), path, row_labels=labels, title=title, column_axis="position")


def rate_distortion_figure(reports, path):
    """PSNR against bits per image for the VAE and PCA transform coding, from `evaluate_compression`
    reports at several bin widths (each needs pca_* entries), with zlib's lossless rate in the title."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    dim = reports[0]["latent_dim"]
    ax.plot([r["bits_per_image"] for r in reports], [r["psnr"] for r in reports], marker="o", label=f"VAE ({dim}-d latents)")
    ax.plot([r["pca_bits_per_image"] for r in reports], [r["pca_psnr"] for r in reports], marker="s", label=f"PCA-{dim} transform coding")
    for r in reports:
        ax.annotate(f"bin {r['delta']:g}", (r["bits_per_image"], r["psnr"]), textcoords="offset points", xytext=(4, -11), fontsize=8)
    ax.set_xlabel("bits per image (range-coded .kvz file)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"rate-distortion (lossless zlib: {reports[0]['zlib_bits_per_image']:.0f} bits/image)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path):
    """Write the figure as a PNG with an adaptive 256-colour palette: the figures are grey images, a few
    line colours and text, so nothing visible is lost and the files come out several times smaller."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    buffer.seek(0)
    # Maximum coverage keeps the few saturated colours of a scatter's classes apart; median cut (PIL's
    # default) merged some of them into one grey-brown, so a legend's colours no longer matched its points.
    Image.open(buffer).convert("RGB").quantize(256, method=Image.Quantize.MAXCOVERAGE).save(path, format="PNG", optimize=True)
    return path
