"""The applications' figures: labelled image tables, score histograms with ROC curves, latent maps, the
2-D manifold and metric curves. Each function writes one PNG and returns its path."""

import io

import numpy as np

from kerasvae.plots import plt

DPI = 80


def image_table(images, path, row_labels=None, column_labels=None, title=None, cell=0.9):
    """images [rows, columns, H, W(, C)] in [0, 1] as a grid, rows and columns labelled."""
    images = np.asarray(images)
    if images.ndim == 5 and images.shape[-1] == 1:
        images = images[..., 0]
    rows, columns = images.shape[:2]
    left = 1.2 if row_labels is not None else 0.2
    fig, axes = plt.subplots(
        rows, columns, squeeze=False,
        figsize=(left + columns * cell, rows * cell + (0.5 if title else 0.1) + (0.3 if column_labels is not None else 0)),
    )
    for r in range(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.imshow(np.clip(images[r, c], 0, 1), cmap="gray" if images[r, c].ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=9)
            if r == 0 and column_labels is not None:
                ax.set_title(column_labels[c], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


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
    left.legend(fontsize=8)
    if is_anomaly is not None:
        right = axes[0, 1]
        for name, values in {"model": scores, **(baselines or {})}.items():
            fpr, tpr, _ = roc_curve(is_anomaly, values)
            right.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(is_anomaly, values):.3f})")
        right.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
        right.set_xlabel("false positive rate")
        right.set_ylabel("true positive rate")
        right.set_title("ROC")
        right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def latent_scatter(coordinates, labels, path, axis_name="principal component", title="posterior means"):
    """A 2-D or 3-D scatter of coordinates [n, 2 or 3], coloured by integer labels (or one colour)."""
    coordinates = np.asarray(coordinates)
    three_d = coordinates.shape[1] == 3
    fig = plt.figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot(projection="3d" if three_d else None)
    colour = {"c": labels, "cmap": "tab10"} if labels is not None else {}
    points = ax.scatter(*coordinates.T, s=5, **colour)
    if labels is not None:
        fig.colorbar(points, ax=ax, label="label", shrink=0.8, pad=0.12 if three_d else 0.05)
    ax.set_xlabel(f"{axis_name} 1")
    ax.set_ylabel(f"{axis_name} 2")
    if three_d:
        ax.set_zlabel(f"{axis_name} 3")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def manifold_figure(images, z1, z2, path, title="decoded latent manifold"):
    """images [n, n, H, W(, 1)] (row 0 = largest z2) tiled into one picture with z1 and z2 on the axes."""
    images = np.asarray(images)
    if images.ndim == 5:
        images = images[..., 0]
    n, _, height, width = images.shape
    canvas = images.transpose(0, 2, 1, 3).reshape(n * height, n * width)
    fig, ax = plt.subplots(figsize=(6, 6))
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
    fig, ax = plt.subplots(figsize=(6, 4))
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


def rate_distortion_figure(reports, path):
    """PSNR against bits per image for the VAE and PCA transform coding, from `evaluate_compression`
    reports at several bin widths (each needs pca_* entries), with zlib's lossless rate in the title."""
    fig, ax = plt.subplots(figsize=(6, 4))
    dim = reports[0]["latent_dim"]
    ax.plot([r["bits_per_image"] for r in reports], [r["psnr"] for r in reports], marker="o", label=f"VAE ({dim}-d latents)")
    ax.plot([r["pca_bits_per_image"] for r in reports], [r["pca_psnr"] for r in reports], marker="s", label=f"PCA-{dim} transform coding")
    for r in reports:
        ax.annotate(f"bin {r['delta']:g}", (r["bits_per_image"], r["psnr"]), textcoords="offset points", xytext=(4, -11), fontsize=7)
    ax.set_xlabel("bits per image (arithmetic-coded file)")
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
    Image.open(buffer).convert("RGB").quantize(256).save(path, format="PNG", optimize=True)
    return path
