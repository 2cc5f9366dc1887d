"""The figures a person reads: labelled rows and axes, titles naming the model, class names in legends,
readable sizes; and the TensorBoard image summaries written during `fit` (kerasvae.callbacks)."""

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from conftest import DIGITS_SHAPE, fit, small_vae

import kerasvae as kv
from kerasvae import callbacks, plots
from kerasvae.apps import figures

FASHION = plots.CLASS_NAMES["fashion_mnist"]


@pytest.fixture(scope="module")
def model(digits):
    model = small_vae()
    fit(model, digits[0], epochs=2)
    return model


def row_labels(fig):
    """The y labels of the figure's first column of axes, top to bottom."""
    first_column = [ax for ax in fig.axes if ax.get_subplotspec().colspan.start == 0]
    return [ax.get_ylabel() for ax in sorted(first_column, key=lambda ax: ax.get_subplotspec().rowspan.start)]


def test_model_title_names_the_class_or_the_given_name_and_the_latent_size():
    assert plots.model_title(small_vae()) == "VAE, 4-d latent"
    assert plots.model_title(kv.presets.mlp_ae(input_shape=DIGITS_SHAPE, latent_dim=3)) == "Autoencoder, 3-d latent"
    assert plots.model_title(small_vae(name="digits_vae")) == "digits_vae, 4-d latent"


def test_class_names_of_the_named_datasets():
    assert plots.class_names("fashion-mnist") == FASHION and FASHION[0] == "T-shirt/top" and FASHION[9] == "Ankle boot"
    assert plots.class_names("digits") == plots.class_names("mnist") == tuple("0123456789")
    assert plots.class_names("/data/my_images.npz") is None


def test_reconstruction_rows_are_labelled_and_hold_the_reconstructions(model, digits):
    x = digits[2][:12]
    fig = plots.reconstruction_figure(model, x, n=12, ncols=8)
    assert row_labels(fig) == ["input", "reconstruction", "input", "reconstruction"]
    assert fig.get_suptitle() == "VAE, 4-d latent: inputs and their reconstructions"
    drawn = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(drawn) == 24  # 12 inputs and 12 reconstructions; the short rows' other cells stay empty
    np.testing.assert_allclose(drawn[8], model.reconstruct(x[:1])[0, ..., 0], atol=1e-6)  # row 2, column 1
    np.testing.assert_allclose(drawn[16], x[8, ..., 0])  # row 3 starts with input 9
    assert plots.reconstruction_figure(model, x, title="mine").get_suptitle() == "mine"


def test_sample_grids_name_their_model(model, tmp_path):
    assert plots.samples_figure(model, n=8, seed=3).get_suptitle() == "VAE, 4-d latent: samples from the prior (seed 3)"
    path = plots.save_samples(model, tmp_path / "s.png", n=8, title="beta-VAE samples")
    assert matplotlib.image.imread(path).shape[1] >= 800


def test_latent_map_legend_names_the_classes_beside_a_readable_map(model, digits, tmp_path):
    _, _, x, y = digits
    fig = plots.latent_map_figure(model, x, y, class_names=FASHION)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(FASHION)
    assert "VAE, 4-d latent" in fig.axes[0].get_title()
    fig = plots.latent_map_figure(model, x[y < 3], y[y < 3])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["0", "1", "2"]  # the classes present, named by number
    height, width = matplotlib.image.imread(plots.save_latent_map(model, x, y, tmp_path / "map.png", class_names=FASHION)).shape[:2]
    assert width >= 900 and height >= 800
    for dims in (2, 3):  # the applications' scatter (latent-map command), also in 3-D
        path = figures.latent_scatter(np.random.default_rng(0).normal(size=(50, dims)), y[:50], tmp_path / f"{dims}.png", class_names=FASHION)
        height, width = matplotlib.image.imread(path).shape[:2]
        assert width >= 900 and height >= 800


def test_image_tables_name_their_axes(digits, tmp_path):
    images = digits[2][:6].reshape(2, 3, *DIGITS_SHAPE)
    fig = plots.table_figure(images, ["z0", "z1"], ["-1.0", "+0.0", "+1.0"], "traversal", "latent dimension", "value (prior std)")
    assert row_labels(fig) == ["z0", "z1"]
    assert [ax.get_title() for ax in fig.axes[:3]] == ["-1.0", "+0.0", "+1.0"]
    assert (fig.get_supylabel(), fig.get_supxlabel(), fig.get_suptitle()) == ("latent dimension", "value (prior std)", "traversal")
    assert matplotlib.image.imread(figures.image_table(images, tmp_path / "t.png", row_axis="dimension")).size


# === TensorBoard image summaries ===


def read_images(log_dir):
    """{(tag, step): uint8 image [H, W, C]} of the event files in log_dir."""
    images = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                width, height, png = tf.make_ndarray(value.tensor)
                image = tf.io.decode_png(png).numpy()
                assert image.shape[:2] == (int(height), int(width))
                images[value.tag, event.step] = image
    return images


def cells(picture, n, ncols, size, gap=2):
    """The n cells [n, size, size] (channel 0) of a panel tiled by kerasvae.plots.tile."""
    step = size + gap
    return np.stack([picture[(i // ncols) * step : (i // ncols) * step + size, (i % ncols) * step : (i % ncols) * step + size, 0] for i in range(n)])


def test_image_summaries_write_reconstructions_and_fixed_seed_samples_every_epoch(digits, tmp_path):
    x_train, _, x_test, _ = digits
    shown = x_test[:8]
    model = small_vae()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x_train, epochs=2, batch_size=64, verbose=0, callbacks=[callbacks.ImageSummaries(tmp_path / "logs", shown)])
    images = read_images(tmp_path / "logs")
    assert set(images) == {(tag, step) for tag in ("reconstructions", "samples") for step in (0, 1)}
    # 8x8 digits are enlarged 6 times to 48 px; 8 images make two panels of 2 columns by 4 rows, 2 px
    # apart, with 8 grey pixels between the panels; 16 samples make 4 by 4.
    assert images["reconstructions", 1].shape == (4 * 48 + 3 * 2, 2 * (2 * 48 + 2) + 8, 1)
    assert images["samples", 1].shape == (4 * 48 + 3 * 2, 4 * 48 + 3 * 2, 1)
    enlarged = lambda a: np.round(np.clip(a[..., 0], 0, 1) * 255).repeat(6, axis=1).repeat(6, axis=2)
    panel = 2 * 48 + 2 + 8
    for step in (0, 1):
        np.testing.assert_array_equal(cells(images["reconstructions", step], 8, 2, 48), enlarged(shown))
    # The last epoch's pictures are the trained model's reconstructions and its samples of seed 0.
    np.testing.assert_allclose(cells(images["reconstructions", 1][:, panel:], 8, 2, 48), enlarged(model.reconstruct(shown)), atol=1)
    np.testing.assert_allclose(cells(images["samples", 1], 16, 4, 48), enlarged(model.sample(16, seed=0)), atol=1)
    assert not np.array_equal(images["samples", 0], images["samples", 1])  # same draws, a model that learned


def test_image_summaries_every_and_models_without_sample(digits, tmp_path):
    x = digits[2][:4]
    model = small_vae()
    summaries = callbacks.ImageSummaries(tmp_path / "every", x, every=2)
    summaries.set_model(model)
    for epoch in range(3):
        summaries.on_epoch_end(epoch)
    summaries.on_train_end()
    assert set(read_images(tmp_path / "every")) == {("reconstructions", 1), ("samples", 1)}

    class ReconstructOnly:  # a model with `reconstruct` and no `sample`: reconstructions alone
        def reconstruct(self, x):
            return 1 - x

    summaries = callbacks.ImageSummaries(tmp_path / "plain", x)
    summaries.set_model(ReconstructOnly())
    summaries.on_epoch_end(0)
    summaries.on_train_end()
    assert set(read_images(tmp_path / "plain")) == {("reconstructions", 0)}
    with pytest.raises(ValueError, match="every"):
        callbacks.ImageSummaries(tmp_path, x, every=0)


def test_image_summaries_of_a_conditional_model(digits, tmp_path):
    x, y = digits[2][:4], digits[3][:4]
    model = kv.presets.conditional_vae(input_shape=DIGITS_SHAPE, num_classes=10, latent_dim=2, hidden=(16,), seed=0)
    summaries = callbacks.ImageSummaries(tmp_path, x, num_samples=10, labels=y)
    summaries.set_model(model)
    summaries.on_epoch_end(0)
    summaries.on_train_end()
    images = read_images(tmp_path)
    np.testing.assert_allclose(cells(images["reconstructions", 0][:, 2 * 48 + 2 + 8 :], 4, 2, 48)[:, ::6, ::6] / 255,
                               model.reconstruct(x, labels=y)[..., 0], atol=1 / 255)
    samples = model.sample(10, seed=0, labels=np.arange(10))  # one per class, in class order
    np.testing.assert_allclose(cells(images["samples", 0], 10, 4, 48)[:, ::6, ::6] / 255, samples[..., 0], atol=1 / 255)
