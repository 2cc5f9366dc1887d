"""Figures a person looks at: image grids of reconstructions and samples, and the 2-D latent map."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def image_grid(images, path, ncols=8, title=None):
    """Save images [n, H, W(, C)] in [0, 1] as one PNG grid."""
    images = np.asarray(images)
    if images.ndim == 2:  # flat vectors: show square images when the length is a square
        side = int(round(np.sqrt(images.shape[1])))
        images = images.reshape(-1, side, side) if side * side == images.shape[1] else images[:, None, :]
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    nrows = int(np.ceil(len(images) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 1.0, nrows * 1.0 + (0.4 if title else 0)))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, image in zip(np.ravel(axes), images):
        ax.imshow(np.clip(image, 0, 1), cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def save_reconstructions(model, x, path, n=16):
    """Originals (odd rows) above their reconstructions (even rows)."""
    x = np.asarray(x[:n])
    reconstructions = model.reconstruct(x)
    pairs = []
    for start in range(0, len(x), 8):
        pairs.extend(x[start : start + 8])
        pairs.extend(reconstructions[start : start + 8])
    return image_grid(np.stack(pairs), path, ncols=min(8, len(x)), title="inputs / reconstructions")


def save_samples(model, path, n=64, seed=0):
    return image_grid(model.sample(n, seed=seed), path, ncols=8, title="samples from the prior")


def save_latent_map(model, x, labels, path):
    """Posterior means in 2-D, coloured by label: the means themselves when latent_dim == 2, else their
    first two principal components."""
    means = np.asarray(model.encode(x).mean())
    if means.shape[1] > 2:
        from sklearn.decomposition import PCA

        means = PCA(n_components=2, random_state=0).fit_transform(means)
        axes_label = "principal component"
    else:
        axes_label = "z"
    fig, ax = plt.subplots(figsize=(6, 5))
    scatter = ax.scatter(means[:, 0], means[:, 1], c=labels, cmap="tab10", s=4)
    if labels is not None:
        fig.colorbar(scatter, ax=ax, label="label")
    ax.set_xlabel(f"{axes_label} 1")
    ax.set_ylabel(f"{axes_label} 2")
    ax.set_title("posterior means")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
