"""Latent regression: predict a continuous target y from the code of x, with a predictive spread that
carries the posterior's uncertainty about the code.

A regressor f (ridge or a small MLP) is fitted on the posterior means mu(x) of labelled examples,
standardized by the aggregate posterior (each unit's mean and std over draws from q(z|x) of all examples,
Var mu + E sigma^2), so that the draws f is evaluated on stay in the range it was fitted on; units whose
means carry under 1% of that variance (inactive: noise around a constant) are left out. The prediction for
x is f(mu(x)), and its variance has two parts, what the encoder is unsure of and what the target keeps
beyond the code:

    Var[y | x] = c * s(x)^2 + sigma^2,    s(x)^2 = Var_{z ~ q(z|x)}[f(z)]

c and sigma^2 maximize the Gaussian likelihood of the out-of-fold residuals r_i = y_i - f_{-i}(mu_i)
(f_{-i}: fitted without x_i's fold, K-fold cross-validation), so the spread is calibrated on data f has not
seen: a posterior wider than what decides y (c < 1) or narrower (c > 1) is corrected, and s(x) still says
which inputs are uncertain. A deterministic code (a plain autoencoder, PCA) has s = 0 and its variance is
the mean squared out-of-fold residual.
"""

import numpy as np

from kerasvae.apps.baselines import PCABaseline
from kerasvae.choices import REGRESSORS

FOLDS = 3
INACTIVE_SHARE = 0.01  # a unit whose posterior means carry less of its aggregate variance is left out


def _regressor(method, seed):
    """A scikit-learn regressor of standardized features (the MLP standardizes its targets too)."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    if method == "ridge":  # the penalty by efficient leave-one-out over a log grid, from one SVD of the features
        return RidgeCV(alphas=np.logspace(-3, 3, 13), gcv_mode="svd")
    if method == "mlp":
        mlp = MLPRegressor(hidden_layer_sizes=(64, 64), alpha=1e-3, learning_rate_init=3e-3, max_iter=500, early_stopping=True,
                           validation_fraction=0.15, n_iter_no_change=10, random_state=seed)
        return TransformedTargetRegressor(mlp, transformer=StandardScaler())
    raise ValueError(f"method must be one of {REGRESSORS}, got {method!r}.")


class FeatureRegressor:
    """f(features) -> y with the cross-validated noise sigma^2 of the module docstring. Features may come
    with draws [S, n, d] (posterior samples of each example's code): the std of f over them is that
    example's share of the spread, and the features are standardized by the draws' spread and rid of
    inactive units (module docstring); without draws the features are taken as exact and standardized by
    their own spread.

    Args:
        method: str. "mlp" (two hidden layers of 64, early stopping) or "ridge" (RidgeCV, penalty chosen by
            leave-one-out). Defaults to "mlp".
        seed: int. Seeds the MLP and the folds. Defaults to 0.
    """

    def __init__(self, method="mlp", seed=0):
        if method not in REGRESSORS:
            raise ValueError(f"method must be one of {REGRESSORS}, got {method!r}.")
        self.method, self.seed = method, int(seed)
        self.regressor = None
        self.spread_scale = self.noise_variance = None

    def fit(self, features, y, draws=None):
        """Fits f on features [n, d] and targets y [n] or [n, t]. Returns self."""
        from sklearn.model_selection import KFold, cross_val_predict

        features, y = _as_matrix(features), np.asarray(y, np.float64)
        if len(features) != len(y):
            raise ValueError(f"{len(features)} examples but {len(y)} targets.")
        if len(y) < 2 * FOLDS:
            raise ValueError(f"Regression needs at least {2 * FOLDS} labelled examples, got {len(y)}.")
        # Scaled by the means' own spread, an unused unit (means within +-0.02 of a constant, draws of std 1)
        # would put the draws 50 standard units out, and f's fit to noise there would fill s(x).
        codes = features if draws is None else np.asarray(draws, np.float64).reshape(-1, features.shape[1])
        self.center, scale = codes.mean(axis=0), codes.std(axis=0)
        self.scale = np.where(scale > 0, scale, 1.0)
        self.units = np.flatnonzero(np.var(features, axis=0) >= INACTIVE_SHARE * np.square(scale))
        if draws is None or self.units.size == 0:
            self.units = np.arange(features.shape[1])
        folds = KFold(FOLDS, shuffle=True, random_state=self.seed)
        held_out = cross_val_predict(_regressor(self.method, self.seed), self._standardized(features), y, cv=folds)
        self.regressor = _regressor(self.method, self.seed).fit(self._standardized(features), y)
        self.spread_scale, self.noise_variance = _fit_variance(np.square(y - held_out), np.square(self.spread(draws)))
        return self

    def _standardized(self, codes):
        """codes [..., d] -> [m, units] on the scale f is fitted on."""
        codes = np.asarray(codes, np.float64).reshape(-1, len(self.scale))
        return ((codes - self.center) / self.scale)[:, self.units]

    def spread(self, draws):
        """The std over draws [S, n, d] of f's output, [n] (or [n, t]); 0 without draws."""
        if draws is None:
            return np.zeros(())
        draws = np.asarray(draws, np.float64)
        outputs = self.regressor.predict(self._standardized(draws))
        return outputs.reshape(*draws.shape[:2], *np.shape(outputs)[1:]).std(axis=0)

    def predict(self, features, draws=None):
        """(mean, std) for features [n, d]: mean = f(features), std = sqrt(c * spread(draws)^2 + sigma^2)."""
        if self.regressor is None:
            raise ValueError("Call fit first.")
        mean = self.regressor.predict(self._standardized(_as_matrix(features)))
        variance = self.spread_scale * np.square(self.spread(draws)) + self.noise_variance
        return mean, np.broadcast_to(np.sqrt(variance), mean.shape)


class LatentRegressor:
    """A target predicted from a model's posterior: `predict(x)` returns (mean, std) arrays shaped like y.

    Args:
        model: a trained kerasvae model.
        method: str. "mlp" or "ridge" (see FeatureRegressor). Defaults to "mlp".
        num_samples: int. Draws from q(z|x) per example for the spread. Defaults to 32.
        seed: int. Seeds the draws, the folds and the MLP. Defaults to 0.
    """

    def __init__(self, model, method="mlp", num_samples=32, seed=0):
        if model.code_space is not None:
            raise ValueError(f"{type(model).__name__} has discrete codes; regression reads continuous posterior means.")
        if int(num_samples) < 2:
            raise ValueError(f"num_samples must be >= 2 for a spread, got {num_samples}.")
        self.model, self.num_samples, self.seed = model, int(num_samples), int(seed)
        self.head = FeatureRegressor(method, seed)

    def fit(self, x, y, labels=None):
        means, draws = self._codes(x, labels)
        self.head.fit(means, y, draws)
        return self

    def predict(self, x, labels=None):
        """(mean, std) of y for inputs x."""
        return self.head.predict(*self._codes(x, labels))

    def _codes(self, x, labels):
        """Posterior means [n, d] and draws [S, n, d] from q(z|x)."""
        q = self.model.encode(np.asarray(x, np.float32), labels=labels)
        return np.asarray(q.mean(), np.float32), np.asarray(q.sample(self.num_samples, seed=(self.seed, 7)), np.float32)


def regress(model, x, y, method="mlp", num_samples=32, seed=0, labels=None):
    """Fits a regressor of y on the posterior means of x; returns a LatentRegressor whose `predict(x)` is
    (mean, std).

    Args:
        model: a trained kerasvae model with continuous latents.
        x: array [n, *input_shape]. Inputs with known targets.
        y: array [n] or [n, t]. The targets.
        method: str. "mlp" (two hidden layers of 64, early stopping) or "ridge". Defaults to "mlp", which
            reads angles from rotated images' codes better than from PCA codes where ridge does not.
        num_samples: int. Posterior draws per example for the spread. Defaults to 32.
        seed: int. Defaults to 0.
        labels: int array [n] or None. Class labels, for conditional models.

    >>> regressor = kv.apps.regress(model, x_train, angles_train)
    >>> angle, spread = regressor.predict(x_test)
    """
    return LatentRegressor(model, method, num_samples, seed).fit(x, y, labels=labels)


def _fit_variance(squared_residuals, spread_variance):
    """(c, sigma^2) maximizing sum_i log N(r_i; 0, c s_i^2 + sigma^2) per output, both >= 0 (searched in
    log space); without a spread, c = 0 and sigma^2 = mean r^2, the closed form."""
    from scipy.optimize import minimize

    squared_residuals = np.asarray(squared_residuals, np.float64)
    if not np.any(spread_variance):
        return 0.0, np.mean(squared_residuals, axis=0)
    columns = squared_residuals.reshape(len(squared_residuals), -1)
    spreads = np.broadcast_to(spread_variance, squared_residuals.shape).reshape(columns.shape)
    scales, noises = [], []
    for r2, s2 in zip(columns.T, spreads.T):
        floor = 1e-9 * (np.mean(r2) + 1e-30)

        def negative_log_likelihood(log_params, r2=r2, s2=s2, floor=floor):
            variance = np.exp(log_params[0]) * s2 + np.exp(log_params[1]) + floor
            return np.sum(np.log(variance) + r2 / variance)

        start = np.log([np.mean(r2) / (2 * np.mean(s2) + 1e-30) + 1e-30, np.mean(r2) / 2 + 1e-30])
        best = minimize(negative_log_likelihood, start, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6})
        scales.append(np.exp(best.x[0]))
        noises.append(np.exp(best.x[1]) + floor)
    shape = squared_residuals.shape[1:]
    return np.reshape(scales, shape), np.reshape(noises, shape)


def regression_metrics(y, mean, std):
    """{"r2", "rmse", "nlpd" (mean negative log predictive density of y under N(mean, std^2), nats),
    "coverage_90" (fraction of y inside the central 90% interval)}."""
    y, mean, std = (np.asarray(a, np.float64) for a in (y, mean, std))
    std = np.maximum(std, 1e-12)
    residual = y - mean
    nlpd = 0.5 * np.log(2 * np.pi * std**2) + 0.5 * (residual / std) ** 2
    return {
        "r2": float(1 - np.sum(residual**2) / np.sum((y - y.mean(axis=0)) ** 2)),
        "rmse": float(np.sqrt(np.mean(residual**2))),
        "nlpd": float(np.mean(nlpd)),
        "coverage_90": float(np.mean(np.abs(residual) <= 1.6448536269514722 * std)),
    }


def regression_report(model, x_train, y_train, x_test, y_test, method="mlp", num_samples=32, seed=0, baselines=("pca", "pixels")):
    """The latent regressor against the same regressor on `baselines`: "pca" (PCA codes of the same
    dimension) and "pixels" (the raw inputs). Returns ({"latent": metrics, <baseline>: metrics, "dim",
    "method"}, {"mean", "std"}: the latent regressor's predictions for x_test)."""
    latent = regress(model, x_train, y_train, method, num_samples, seed)
    mean, std = latent.predict(x_test)
    pca = PCABaseline(model.latent_dim, seed=seed).fit(x_train) if "pca" in baselines else None
    report = {"latent": regression_metrics(y_test, mean, std), "dim": int(model.latent_dim), "method": method}
    features = {"pca": pca.encode if pca is not None else None, "pixels": _as_matrix}
    for name in baselines:
        train, test = features[name](x_train), features[name](x_test)
        baseline = FeatureRegressor(method, seed).fit(train, y_train)
        report[name] = regression_metrics(y_test, *baseline.predict(test))
    return report, {"mean": mean, "std": std}


def _as_matrix(features):
    features = np.asarray(features, np.float64)
    return features.reshape(len(features), -1)
