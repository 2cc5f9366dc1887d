"""Applications of trained autoencoders, each measured against a classical baseline (PCA, mean imputation,
pixel dictionaries, zlib):

- anomaly detection: `AnomalyDetector` (threshold calibrated on normal data, stored on the model and
  served by the exported `score` signature as `is_anomaly`), `detection_metrics`;
- denoising: `denoise`, `add_noise`, `evaluate_denoising` (PSNR before/after);
- compression: `compress`, `decompress` (.kvz files: quantized posterior means, arithmetic-coded with the
  prior), `evaluate_compression` (bits per image, PSNR);
- navigation: `interpolate` (linear, spherical), `traverse` (one latent dimension at a time),
  `informative_dimensions` (latents by KL);
- visualization: `embed` (PCA or t-SNE maps of the posterior means), `manifold` (2-D latent grid);
- features: `features`, `linear_probe`, `probe_report`, `semi_supervised` (accuracy vs label budget);
- sparse coding on latents: `SparseLatentCoder`, `sparsity_curve`;
- imputation: `impute` (posterior mode given the observed elements, or pseudo-Gibbs), `evaluate_imputation`.

Figures live in `kerasvae.apps.figures`; the `kerasvae` command's app subcommands in `kerasvae.apps.cli`.
"""

from kerasvae.apps.anomaly import AnomalyDetector, detection_metrics
from kerasvae.apps.baselines import PCABaseline
from kerasvae.apps.compression import compress, decompress, evaluate_compression
from kerasvae.apps.denoising import add_noise, denoise, evaluate_denoising
from kerasvae.apps.features import (
    features,
    labelled_subset,
    linear_probe,
    probe_report,
    semi_supervised,
)
from kerasvae.apps.imputation import (
    block_mask,
    evaluate_imputation,
    impute,
    mean_imputation,
    random_mask,
)
from kerasvae.apps.metrics import mse, psnr
from kerasvae.apps.navigation import (
    informative_dimensions,
    interpolate,
    interpolate_latents,
    traverse,
)
from kerasvae.apps.sparse_coding import SparseLatentCoder, sparsity_curve
from kerasvae.apps.visualization import embed, manifold

__all__ = [
    "AnomalyDetector",
    "PCABaseline",
    "SparseLatentCoder",
    "add_noise",
    "block_mask",
    "compress",
    "decompress",
    "denoise",
    "detection_metrics",
    "embed",
    "evaluate_compression",
    "evaluate_denoising",
    "evaluate_imputation",
    "features",
    "impute",
    "informative_dimensions",
    "interpolate",
    "interpolate_latents",
    "labelled_subset",
    "linear_probe",
    "manifold",
    "mean_imputation",
    "mse",
    "probe_report",
    "psnr",
    "random_mask",
    "semi_supervised",
    "sparsity_curve",
    "traverse",
]
