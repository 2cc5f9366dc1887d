"""Figures a person looks at: labelled image tables and grids, reconstructions beside their inputs, prior
samples and the 2-D latent map. Each `*_figure` function builds a matplotlib figure (callers and tests can
read its labels before it is written); `image_grid` and the `save_*` functions write a PNG and return its
path. Titles name the model: `model_title` by default, or the `title` given."""

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

DPI = 100  # at 100 dpi matplotlib's 10-point text is about 14 px high: readable without zooming in
# Labels of the named datasets (kerasvae.data), for legends; other data keep their integer labels.
CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple("0123456789"),
    "digits": tuple("0123456789"),
}


def class_names(dataset):
    """The class names of a dataset name ("fashion_mnist", "fashion-mnist", ...); None for other data."""
    return CLASS_NAMES.get(str(dataset).lower().replace("-", "_"))


def model_title(model):
    """'VAE, 8-d latent': the model's class (or the name it was given, when not Keras's automatic one) and
    its latent size."""
    kind = type(model).__name__
    automatic = re.sub(r"_\d+$", "", model.name).replace("_", "") == kind.lower()  # Keras names a VAE "vae_3"
    name = kind if automatic else model.name
    latent_dim = getattr(model, "latent_dim", None)
    return name if latent_dim is None else f"{name}, {latent_dim}-d latent"


# === Images ===


def as_images(images):
    """images as an array [n, H, W] (grey) or [n, H, W, 3]: a single channel is dropped, and flat vectors
    become square images where their length is a square, else one-pixel-high strips."""
    images = np.asarray(images, np.float32)
    if images.ndim == 2:
        side = round(np.sqrt(images.shape[1]))
        images = images.reshape(-1, side, side) if side * side == images.shape[1] else images[:, None, :]
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    return images


def tile(images, ncols, gap=2, fill=0.5):
    """images [n, ...] in [0, 1] as one pixel array [height, width(, 3)]: rows of `ncols` images, `gap`
    pixels of grey `fill` between them (and in the cells of a short last row)."""
    images = np.clip(as_images(images), 0, 1)
    n, height, width = images.shape[:3]
    nrows = -(-n // ncols)
    canvas = np.full((nrows * (height + gap) - gap, ncols * (width + gap) - gap, *images.shape[3:]), fill, np.float32)
    for i, image in enumerate(images):
        top, left = (i // ncols) * (height + gap), (i % ncols) * (width + gap)
        canvas[top : top + height, left : left + width] = image
    return canvas


def table_figure(images, row_labels=None, column_labels=None, title=None, row_axis=None, column_axis=None, cell=1.0):
    """images [rows, columns, H, W(, C)] in [0, 1] as a table of `cell`-inch pictures, rows and columns
    labelled, with the names of what they vary along (`row_axis`, `column_axis`, e.g. "latent dimension",
    "value"). NaN images leave their cell empty."""
    images = np.asarray(images, np.float32)
    rows, columns = images.shape[:2]
    flat = as_images(images.reshape(rows * columns, *images.shape[2:]))
    images = flat.reshape(rows, columns, *flat.shape[1:])
    left = (1.3 if row_labels is not None else 0.1) + (0.3 if row_axis else 0)
    height = rows * cell + (0.5 if title else 0.1) + (0.3 if column_labels is not None else 0) + (0.3 if column_axis else 0)
    fig, axes = plt.subplots(rows, columns, squeeze=False, figsize=(left + columns * cell, height), layout="constrained")
    for r in range(rows):
        for c in range(columns):
            ax, image = axes[r, c], images[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if np.isnan(image).all():
                ax.set_frame_on(False)
            else:
                ax.imshow(np.clip(image, 0, 1), cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=10)
            if r == 0 and column_labels is not None:
                ax.set_title(column_labels[c], fontsize=9)
    if row_axis:
        fig.supylabel(row_axis, fontsize=10)
    if column_axis:
        fig.supxlabel(column_axis, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def grid_figure(images, ncols=8, title=None):
    """images [n, ...] in rows of `ncols`, unlabelled (for images that are all alike, e.g. samples)."""
    images = as_images(images)
    ncols = min(ncols, len(images))
    return table_figure(_rows(images, ncols), title=title)


def image_grid(images, path, ncols=8, title=None):
    """Save images [n, H, W(, C)] (or flat square vectors) in [0, 1] as one PNG grid."""
    return save(grid_figure(images, ncols, title), path)


def reconstruction_figure(model, x, n=16, ncols=8, title=None, labels=None):
    """The first n inputs above their reconstructions, in labelled row pairs: "input", "reconstruction".
    `labels`: the inputs' classes, for conditional models."""
    x = np.asarray(x[:n])
    reconstructions = model.reconstruct(x, labels=None if labels is None else np.asarray(labels)[:n])
    ncols = min(ncols, len(x))
    rows = np.stack([row for pair in zip(_rows(x, ncols), _rows(reconstructions, ncols)) for row in pair])
    row_labels = ["input", "reconstruction"] * (len(rows) // 2)
    return table_figure(rows, row_labels=row_labels, title=title or f"{model_title(model)}: inputs and their reconstructions")


def save_reconstructions(model, x, path, n=16, title=None, labels=None):
    return save(reconstruction_figure(model, x, n, title=title, labels=labels), path)


def draw_samples(model, n, seed=0):
    """n samples of model.sample with a fixed seed; a conditional model's cycle through its classes."""
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        return model.sample(n, seed=seed)
    return model.sample(n, seed=seed, labels=np.arange(n) % num_classes)


def samples_figure(model, n=64, seed=0, title=None):
    return grid_figure(draw_samples(model, n, seed), title=title or f"{model_title(model)}: samples from the prior (seed {seed})")


def save_samples(model, path, n=64, seed=0, title=None):
    return save(samples_figure(model, n, seed, title), path)


# === The latent map ===


def scatter_figure(coordinates, labels=None, class_names=None, axis_name="principal component", title="posterior means"):
    """coordinates [n, 2 or 3] as a scatter, about 950x800 px, coloured by integer labels with a legend of
    `class_names` (default: the labels themselves) beside the points; over 20 classes get a colour bar."""
    coordinates = np.asarray(coordinates)
    three_d = coordinates.shape[1] == 3
    fig = plt.figure(figsize=(9.5, 8), layout="constrained")
    ax = fig.add_subplot(projection="3d" if three_d else None)
    if labels is None:
        ax.scatter(*coordinates.T, s=6)
    else:
        labels = np.asarray(labels).astype(int)
        num_classes = max(int(labels.max()) + 1, len(class_names or ()))
        # One fixed colour per class (not per label present): the same class looks the same in every figure.
        cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20" if num_classes <= 20 else "viridis")
        points = ax.scatter(*coordinates.T, c=labels, cmap=cmap, vmin=0, vmax=max(num_classes - 1, 1), s=6, alpha=0.8)
        if num_classes <= 20:
            names = class_names or [str(k) for k in range(num_classes)]
            handles = [Line2D([], [], marker="o", linestyle="", markersize=8, color=points.to_rgba(k), label=names[k])
                       for k in np.unique(labels)]
            fig.legend(handles=handles, title="class", loc="outside right center", fontsize=11, title_fontsize=11)
        else:
            fig.colorbar(points, ax=ax, label="label", shrink=0.8)
    ax.set_xlabel(f"{axis_name} 1", fontsize=11)
    ax.set_ylabel(f"{axis_name} 2", fontsize=11)
    if three_d:
        ax.set_zlabel(f"{axis_name} 3", fontsize=11)
        ax.set_box_aspect(None, zoom=0.85)  # room for the z label, which the layout does not reserve
    ax.set_title(title, fontsize=13)
    return fig


def latent_map_figure(model, x, labels=None, class_names=None, title=None):
    """Posterior means in 2-D, coloured by label: the means themselves when latent_dim == 2, else their
    first two principal components."""
    means = np.asarray(model.encode(x).mean())
    axis_name, how = "z", ""
    if means.shape[1] > 2:
        from sklearn.decomposition import PCA

        means = PCA(n_components=2, random_state=0).fit_transform(means)
        axis_name, how = "principal component", ", first two principal components"
    title = title or f"{model_title(model)}: posterior means of {len(means)} images{how}"
    return scatter_figure(means, labels, class_names, axis_name, title)


def save_latent_map(model, x, labels, path, class_names=None, title=None):
    return save(latent_map_figure(model, x, labels, class_names, title), path)


def save(fig, path, dpi=DPI):
    """Write the figure as a PNG and close it; returns the path."""
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return path


def _rows(images, ncols):
    """images [n, ...] as [rows, ncols, ...], the last row padded with NaN images (empty cells)."""
    images = np.asarray(images, np.float32)
    padding = -len(images) % ncols
    images = np.concatenate([images, np.full((padding, *images.shape[1:]), np.nan, np.float32)])
    return images.reshape(-1, ncols, *images.shape[1:])
