"""Latent regression and ordering (kerasvae.apps.regression, kerasvae.apps.ordering): hand-checked pieces,
then the real-data claims against the same method on PCA codes or pixels: digits rotated by angles the
model never sees, scikit-learn's diabetes data, and rotated and interpolated Fashion-MNIST frames."""

import json

import keras
import numpy as np
import pytest
from conftest import small_vae
from scipy.ndimage import gaussian_filter, rotate
from scipy.stats import spearmanr

import kerasvae as kv
from kerasvae.apps.ordering import order_points, path_length
from kerasvae.apps.regression import (
    FeatureRegressor,
    _fit_variance,
    regression_metrics,
    regression_report,
)

MAX_ANGLE = 60.0


def rotate_images(x, angles):
    """Each image [H, W, 1] turned by its angle in degrees about its centre (bilinear, corners black)."""
    turned = [rotate(image[..., 0], angle, reshape=False, order=1, mode="constant") for image, angle in zip(x, angles)]
    return np.clip(np.stack(turned), 0, 1)[..., None].astype(np.float32)


@pytest.fixture(scope="module")
def rotated_digits(digits):
    """(model, x_train, angles_train, x_test, angles_test): a VAE trained without angles on two randomly
    rotated copies of every training digit, and rotated test digits."""
    x_train, _, x_test, _ = digits
    rng = np.random.default_rng(0)
    angles_train = rng.uniform(-MAX_ANGLE, MAX_ANGLE, 2 * len(x_train)).astype(np.float32)
    rotated_train = rotate_images(np.concatenate([x_train, x_train]), angles_train)
    angles_test = rng.uniform(-MAX_ANGLE, MAX_ANGLE, len(x_test)).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=8, hidden=(256, 128), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(rotated_train, epochs=30, batch_size=64, verbose=0)
    return model, rotated_train, angles_train, rotate_images(x_test, angles_test), angles_test


# === Regression: hand-checked pieces ===


def test_regression_metrics_by_hand():
    y, mean, std = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0, 5.0]), np.array([1.0, 1.0, 1.0, 1.0])
    metrics = regression_metrics(y, mean, std)
    assert metrics["rmse"] == pytest.approx(1.0)  # sqrt(4 / 4)
    assert metrics["r2"] == pytest.approx(1 - 4 / 5)  # SSE 4 against total sum of squares 5
    assert metrics["nlpd"] == pytest.approx(0.5 * np.log(2 * np.pi) + 0.5 * 4 / 4)
    assert metrics["coverage_90"] == 0.75  # |2| > 1.645


def test_variance_model_recovers_its_parameters():
    """Residuals drawn from N(0, c s^2 + sigma^2) give back c and sigma^2; without a spread, sigma^2 is the
    mean squared residual exactly."""
    rng = np.random.default_rng(0)
    spread_variance = rng.uniform(0.1, 4.0, 20000)
    residuals = rng.normal(0, np.sqrt(0.5 * spread_variance + 2.0))
    scale, noise = _fit_variance(residuals**2, spread_variance)
    assert scale == pytest.approx(0.5, rel=0.1) and noise == pytest.approx(2.0, rel=0.1)
    assert _fit_variance(np.array([1.0, 4.0, 9.0]), 0.0) == (0.0, pytest.approx(14 / 3))


def test_ridge_on_exactly_linear_targets():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 3))
    y = features @ np.array([2.0, -1.0, 0.5]) + 3.0
    mean, std = FeatureRegressor("ridge").fit(features, y).predict(features[:5])
    np.testing.assert_allclose(mean, y[:5], atol=0.05)
    assert np.all(std < 0.05)


@pytest.mark.parametrize("method", ["ridge", "mlp"])
def test_spread_follows_the_posterior_width_of_the_unit_that_decides_y(method):
    """Codes as a VAE leaves them: y = 2 z_1 + N(0, 0.3^2) for a z_1 drawn from its posterior, whose std
    varies from example to example, so Var[y | x] = 4 width_1^2 + 0.09 (c = 1, sigma^2 = 0.09); z_2 is unused
    (means within +-0.02 of 0, draws of std 1). Standardized by its means' spread, z_2's draws sat 50
    standard units out: the MLP's spread followed them (rank correlation with width_1 0.17, c = 0) and
    ridge's calibration drifted (c = 0.67, sigma^2 = 0)."""
    rng = np.random.default_rng(0)
    n, draws_per_example = 400, 64
    means = np.stack([rng.normal(0, 1, n), rng.normal(0, 0.02, n)], axis=1)
    widths = np.stack([rng.uniform(0.05, 0.6, n), np.ones(n)], axis=1)
    draws = means + widths * rng.normal(size=(draws_per_example, n, 2))
    y = 2 * (means[:, 0] + widths[:, 0] * rng.normal(size=n)) + rng.normal(0, 0.3, n)
    head = FeatureRegressor(method).fit(means, y, draws)
    assert list(head.units) == [0]
    assert 0.8 < head.spread_scale < 1.25 and 0.03 < head.noise_variance < 0.2, (head.spread_scale, head.noise_variance)
    _mean, std = head.predict(means, draws)
    assert spearmanr(std, widths[:, 0])[0] > 0.9


def test_regress_refuses_discrete_codes_and_too_few_samples(digits):
    model = kv.presets.vqvae(input_shape=(8, 8, 1), num_embeddings=8, embedding_dim=2)
    with pytest.raises(ValueError, match="discrete codes"):
        kv.apps.regress(model, digits[0][:20], np.zeros(20))
    with pytest.raises(ValueError, match="at least 6"):
        FeatureRegressor().fit(np.zeros((4, 2)), np.zeros(4))


# === Regression on real data ===


@pytest.mark.slow
def test_rotation_angle_from_latents_beats_pca(rotated_digits):
    """The angle, never shown in training, is read from the latent code better than from PCA codes of the
    same dimension by the same regressor, and the spread from posterior draws is calibrated."""
    model, x_train, angles_train, x_test, angles_test = rotated_digits
    half = len(x_train) // 2  # one rotated copy of each training digit: the regressors' cost halves
    report, _ = regression_report(model, x_train[:half], angles_train[:half], x_test, angles_test, method="mlp", baselines=("pca",))
    latent, pca = report["latent"], report["pca"]
    print(f"\nangle: {json.dumps(report)}")
    assert latent["r2"] > 0.95 and latent["rmse"] < pca["rmse"], report
    assert latent["nlpd"] < pca["nlpd"], report
    assert 0.85 <= latent["coverage_90"] <= 0.96, report


@pytest.mark.slow
def test_diabetes_progression_from_a_tabular_vae_beats_pca():
    """scikit-learn's diabetes data (442 patients, 10 standardized features) through a 3-d Gaussian VAE: the
    default MLP head reads disease progression from the latent code better than from PCA-3 codes, over 5
    folds. Over four seeds: R2 0.380-0.420 against 0.372. The encoder and decoder have one hidden layer
    of 16: on 353 training rows, 64-32 scores lower held-out ELBOs (-12.84 against -12.74 nats, mean over
    seeds) and ridge reads its codes worse than PCA's (0.342-0.370 against 0.357; docs/applications.md)."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler

    x, y = load_diabetes(return_X_y=True)
    reports = []
    for fold, (train, test) in enumerate(KFold(5, shuffle=True, random_state=0).split(x)):
        xs = StandardScaler().fit(x[train]).transform(x).astype(np.float32)
        keras.utils.set_random_seed(fold)
        model = kv.presets.mlp_vae(input_shape=(10,), latent_dim=3, hidden=(16,), likelihood="gaussian", seed=fold)
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        # Eight passes per epoch: the same 80 passes as 80 epochs without Keras's per-epoch overhead.
        model.fit(np.tile(xs[train], (8, 1)), epochs=10, batch_size=32, verbose=0)
        reports.append({method: regression_report(model, xs[train], y[train], xs[test], y[test], method=method, baselines=("pca",))[0]
                        for method in ("mlp", "ridge")})
    mean = {method: {code: {metric: float(np.mean([r[method][code][metric] for r in reports])) for metric in ("r2", "nlpd")}
                     for code in ("latent", "pca")} for method in ("mlp", "ridge")}
    print(f"\ndiabetes, mean over 5 folds: {json.dumps(mean)}")
    mlp, ridge = mean["mlp"], mean["ridge"]
    assert mlp["latent"]["r2"] > mlp["pca"]["r2"] and mlp["latent"]["nlpd"] < mlp["pca"]["nlpd"], mean
    # Ridge reads the same codes level or better: 0.351-0.397 against 0.357 over four seeds.
    assert ridge["latent"]["r2"] > ridge["pca"]["r2"] - 0.03, mean


# === Ordering ===


def test_points_on_a_line_come_back_in_order_with_arc_length_positions():
    t = np.array([0.0, 0.1, 0.3, 0.35, 0.6, 1.0])
    points = np.stack([t, 2 * t, -t], axis=1) + np.array([1.0, 0.0, 2.0])
    shuffle = np.array([3, 0, 5, 1, 4, 2])
    for method in ("spectral", "chain"):
        indices, positions = order_points(points[shuffle], method)
        recovered = shuffle[indices]
        assert list(recovered) in (list(range(6)), list(range(6))[::-1]), method
        expected = t[shuffle] if recovered[0] == 0 else 1 - t[shuffle]
        np.testing.assert_allclose(positions, expected, atol=1e-12)


def test_copies_of_one_frame_stay_connected_to_the_rest():
    """A still scene: 8 copies of one frame among 20 frames of a helix. A copy's distance to its k-th
    neighbour was 0, so its local scale cut it off from every other frame, and the curve started from the
    split graph (|rho| 0.42)."""
    t = np.concatenate([np.linspace(0, 1, 20), np.full(8, 0.5)])
    points = np.stack([np.cos(3 * t), np.sin(3 * t), t], axis=1)
    shuffle = np.random.default_rng(0).permutation(len(t))
    for method in ("curve", "spectral", "chain"):
        _indices, positions = order_points(points[shuffle], method)
        assert abs(spearmanr(positions, t[shuffle])[0]) > 0.99, method


def test_principal_curve_orders_noisy_points_on_an_arc():
    """Points on a quarter circle with noise: the curve's coordinates follow the angle, and its positions
    span [0, 1]; threading every noisy point (spectral + 2-opt) does worse."""
    rng = np.random.default_rng(0)
    angle = np.sort(rng.uniform(0, np.pi / 2, 60))
    points = np.stack([np.cos(angle), np.sin(angle)], axis=1) + 0.03 * rng.standard_normal((60, 2))
    shuffle = rng.permutation(60)
    indices, positions = order_points(points[shuffle], "curve")
    rho = abs(spearmanr(positions, angle[shuffle])[0])
    assert rho > 0.99 and positions.min() == 0 and positions.max() == 1
    assert rho > abs(spearmanr(order_points(points[shuffle], "spectral")[1], angle[shuffle])[0])
    np.testing.assert_array_equal(np.sort(positions[indices]), positions[indices])


def test_two_opt_undoes_a_crossing():
    """A path whose middle is reversed (a crossing) is longer; the ordering finds the straight one."""
    points = np.stack([np.arange(8.0), np.zeros(8)], axis=1)
    crossed = np.array([0, 1, 5, 4, 3, 2, 6, 7])
    assert path_length(points, crossed) > path_length(points, np.arange(8))
    from kerasvae.apps.ordering import _pairwise_distances, _two_opt

    straight = _two_opt(crossed, _pairwise_distances(points))
    assert path_length(points, straight) == pytest.approx(7.0)


def test_order_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 3"):
        order_points(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="method"):
        order_points(np.zeros((5, 3)), "tsp")


def test_order_compares_codes_through_the_decoder_or_directly(digits):
    """distance="decoded" orders the model's reconstructions, "latent" its posterior means."""
    model, x = small_vae(), digits[2][:12]
    for distance, points in (("decoded", model.reconstruct(x)), ("latent", model.latent_features(x))):
        indices, positions = kv.apps.order(model, x, distance=distance)
        expected_indices, expected_positions = order_points(points)
        np.testing.assert_array_equal(indices, expected_indices)
        np.testing.assert_allclose(positions, expected_positions, atol=1e-12)
    with pytest.raises(ValueError, match="distance"):
        kv.apps.order(model, x, distance="pixels")


def _rank_correlation(indices_positions, truth):
    return abs(spearmanr(indices_positions[1], truth)[0])


def _ordering_scores(model, tasks):
    """Mean |Spearman rho| of `kv.apps.order` with each distance, and of the same ordering of the pixels
    (as they are, and blurred by a Gaussian of sigma 1 pixel), over tasks [(frames in a shuffled order, the
    true coordinate of each)]."""
    scores = {"decoded": [], "latent": [], "pixels": [], "blurred_pixels": []}
    for frames, truth in tasks:
        for distance in ("decoded", "latent"):
            scores[distance].append(_rank_correlation(kv.apps.order(model, frames, distance=distance), truth))
        scores["pixels"].append(_rank_correlation(order_points(frames), truth))
        scores["blurred_pixels"].append(_rank_correlation(order_points(gaussian_filter(frames, (0, 1, 1, 0))), truth))
    return {name: round(float(np.mean(values)), 3) for name, values in scores.items()}


def _rotation_tasks(x, count, angles, noise, rng):
    """Shuffled rotations of each of the first `count` images, with Gaussian noise of std `noise`."""
    tasks = []
    for image in x[:count]:
        frames = rotate_images(np.repeat(image[None], len(angles), axis=0), angles)
        frames = np.clip(frames + noise * rng.standard_normal(frames.shape), 0, 1).astype(np.float32)
        shuffle = rng.permutation(len(angles))
        tasks.append((frames[shuffle], angles[shuffle]))
    return tasks


@pytest.mark.slow
def test_sparse_rotations_are_reordered_through_the_decoder_better_than_pixels(rotated_digits, digits):
    """Seven rotations of a digit 20 degrees apart, shuffled, come back in order (|Spearman rho| 0.963 over
    40 test digits) from the distances between the model's reconstructions, where the same ordering of
    the pixels scores 0.684 (blurred pixels 0.626): at 20-degree steps an 8x8 digit's rotations barely
    overlap, so pixel distances say little about which angles are neighbours, while the decoder has learnt
    how digits turn. Euclidean distances between the codes score 0.637. With dense steps (25 angles) the
    pixels order rotations perfectly and lead (docs/applications.md)."""
    rng = np.random.default_rng(0)
    tasks = _rotation_tasks(digits[2], 40, np.linspace(-MAX_ANGLE, MAX_ANGLE, 7), 0.0, rng)
    means = _ordering_scores(rotated_digits[0], tasks)
    print("\nordering 7 rotations of 40 digits, mean |Spearman rho|:", means)
    assert means["decoded"] >= 0.9 and means["decoded"] > means["pixels"] + 0.15, means


@pytest.fixture(scope="module")
def rotated_fashion():
    """(model, x_test): a denoising VAE (Gaussian noise of std 0.3 on its inputs in training) trained on
    6,000 randomly rotated Fashion-MNIST images, and test images."""
    if not kv.data.fashion_mnist_available():
        pytest.skip("needs dataset-fashion-mnist")
    x_train, _ = kv.data.load_arrays("fashion_mnist", "train[:6000]")
    x_test, _ = kv.data.load_arrays("fashion_mnist", "test[:100]")
    rotated = rotate_images(x_train, np.random.default_rng(0).uniform(-MAX_ANGLE, MAX_ANGLE, len(x_train)))
    keras.utils.set_random_seed(0)
    model = kv.presets.mlp_vae(input_shape=x_train.shape[1:], latent_dim=16, hidden=(512, 256), seed=0,
                               corruption=kv.corruptions.GaussianNoise(0.3, seed=0))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(rotated, epochs=10, batch_size=128, verbose=0)
    return model, x_test


@pytest.mark.slow
def test_noisy_rotations_and_interpolation_frames_are_reordered_better_than_pixels(rotated_fashion):
    """Noisy frames (Gaussian noise of std 0.3) of a rotation over +-60 degrees (7 frames) and of a latent
    interpolation between two test images (13 frames), shuffled, come back in order from a denoising VAE's
    reconstructions: |Spearman rho| 0.980 / 0.968 over 40 Fashion-MNIST items (models of seeds 1 and 2:
    0.929-0.961 / 0.956), against the same ordering of the noisy pixels' 0.777 / 0.868-0.910. Blurred pixels
    (a Gaussian of sigma 1 pixel) score 0.936 / 0.970-0.975: level on rotations, ahead on interpolation
    frames (docs/applications.md)."""
    model, x_test = rotated_fashion
    rng = np.random.default_rng(1)
    rotations = _rotation_tasks(x_test, 40, np.linspace(-MAX_ANGLE, MAX_ANGLE, 7), 0.3, rng)
    t = np.linspace(0, 1, 13)
    interpolations = []
    for i in range(40):
        ends = model.latent_features(x_test[[i, i + 40]])
        z = ((1 - t[:, None]) * ends[0] + t[:, None] * ends[1]).astype(np.float32)
        frames = np.asarray(model.likelihood.mean(model.likelihood_params(z)), np.float32)
        frames = np.clip(frames + 0.3 * rng.standard_normal(frames.shape), 0, 1).astype(np.float32)
        shuffle = rng.permutation(len(t))
        interpolations.append((frames[shuffle], t[shuffle]))
    means = {"rotation": _ordering_scores(model, rotations), "interpolation": _ordering_scores(model, interpolations)}
    print("\nordering noisy frames of 40 Fashion-MNIST items (7 rotations, 13 interpolation frames), mean |Spearman rho|:", means)
    for task in means.values():
        assert task["decoded"] >= 0.9 and task["decoded"] > task["pixels"] + 0.03, means


@pytest.mark.slow
def test_regress_command(rotated_digits, tmp_path, capsys):
    """`kerasvae regress` on a run folder and a targets file writes the report, figure and predictions, and
    refuses targets that do not match the data in one line."""
    from kerasvae import cli

    model, x_train, angles_train = rotated_digits[:3]
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    config = {"model": "mlp_vae", "dataset": "digits", "binarize": None, "seed": 0, "latent_dim": 8, "input_shape": [8, 8, 1]}
    (run / "config.json").write_text(json.dumps(config))
    np.save(tmp_path / "rotated.npy", x_train[:600])
    np.savetxt(tmp_path / "angles.csv", angles_train[:600])
    arguments = ["regress", str(run), "--data", str(tmp_path / "rotated.npy"), "--split", "train", "--method", "ridge",
                 "--out", str(tmp_path / "out")]
    assert cli.main([*arguments, "--targets", str(tmp_path / "angles.csv")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["examples"] == {"train": 480, "test": 120}
    assert report["latent"]["r2"] > 0.5 and set(report) >= {"pca", "pixels", "figure", "json"}
    predictions = np.load(tmp_path / "out" / "predictions.npy")
    assert predictions.shape == (120, 3) and (tmp_path / "out" / "regression.png").read_bytes()[:4] == b"\x89PNG"
    np.testing.assert_allclose(np.sort(predictions[:, 0]), np.sort(angles_train[:600][np.random.default_rng(0).permutation(600)[:120]]), rtol=1e-5)
    np.savetxt(tmp_path / "short.csv", angles_train[:10])
    assert cli.main([*arguments, "--targets", str(tmp_path / "short.csv")]) == 2
    assert capsys.readouterr().err.strip().startswith("kerasvae regress: --targets")
