"""Applications of trained autoencoders, each measured against a classical baseline (PCA, mean imputation,
pixel dictionaries, zlib):

- anomaly detection: `AnomalyDetector` (threshold calibrated on normal data, stored on the model and
  served by the exported `score` signature as `is_anomaly`), `detection_metrics`;
- denoising: `denoise`, `add_noise`, `evaluate_denoising` (PSNR before/after);
- compression: `compress`, `decompress` (.kvz files: quantized posterior means, range-coded (constriction) with the
  prior), `evaluate_compression` (bits per image, PSNR);
- navigation: `interpolate` (linear, spherical), `traverse` (one latent dimension at a time),
  `informative_dimensions` (latents by KL);
- visualization: `embed` (PCA or t-SNE maps of the posterior means), `manifold` (2-D latent grid);
- features: `features`, `linear_probe`, `probe_report`, `semi_supervised` (accuracy vs label budget);
- sparse coding on latents: `SparseLatentCoder`, `sparsity_curve`;
- imputation: `impute` (posterior mode given the observed elements, or pseudo-Gibbs), `evaluate_imputation`;
- regression: `regress` (ridge or a small MLP on posterior means; `predict` gives a mean and a spread
  calibrated from posterior draws), `regression_report` (against PCA and pixels);
- ordering: `order` (the permutation and 1-D coordinates of items along their path in latent space, with
  codes compared through the decoder by default).

Figures live in `kerasvae.apps.figures`; the `kerasvae` command's app subcommands in `kerasvae.apps.cli`.
"""

import lazy_loader

# Loaded on first use: `kerasvae.apps.cli` builds its parsers before TensorFlow loads.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["cli", "figures"],
    submod_attrs={
        "anomaly": ["AnomalyDetector", "detection_metrics"],
        "baselines": ["PCABaseline"],
        "compression": ["compress", "decompress", "evaluate_compression"],
        "denoising": ["add_noise", "denoise", "evaluate_denoising"],
        "features": ["features", "labelled_subset", "linear_probe", "probe_report", "semi_supervised"],
        "imputation": ["block_mask", "evaluate_imputation", "impute", "mean_imputation", "random_mask"],
        "metrics": ["mse", "psnr"],
        "navigation": ["informative_dimensions", "interpolate", "interpolate_latents", "traverse"],
        "ordering": ["order", "order_points"],
        "regression": ["LatentRegressor", "regress", "regression_metrics", "regression_report"],
        "sparse_coding": ["SparseLatentCoder", "sparsity_curve"],
        "visualization": ["embed", "manifold"],
    },
)
