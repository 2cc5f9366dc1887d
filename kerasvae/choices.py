"""The named options of the library, in one module that imports nothing heavy.

`kerasvae --help` and argument errors answer before TensorFlow loads (issue 21), so the names the command
line offers live here and the library modules take them from here: one list, two readers.
"""

PRESET_NAMES = (
    "mlp_vae", "vae", "vae_best", "hvae", "conv_vae", "mlp_ae", "ae", "stacked_ae", "sparse_ae", "denoising_ae", "vqvae",
    "binary_vae", "gumbel_vae", "conditional_vae", "sequence_vae", "sequence_ae",
)
# Presets `kerasvae train` builds: unconditional models of images (a conditional or sequence model needs
# labels or series the image datasets do not give it).
IMAGE_PRESET_NAMES = tuple(n for n in PRESET_NAMES if n not in ("conditional_vae", "sequence_vae", "sequence_ae"))

DATASET_NAMES = ("digits", "fashion_mnist", "mnist")
STRATEGIES = ("default", "mirrored", "multi-worker", "parameter-server")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# kerasvae.likelihoods.LIKELIHOODS's names; "auto" lets the training data choose (kerasvae.likelihoods.choose).
LIKELIHOOD_NAMES = ("auto", "bernoulli", "continuous_bernoulli", "gaussian", "gaussian_per_element", "logistic", "categorical")

ANOMALY_MODEL_SCORES = ("elbo", "nll", "reconstruction", "reconstruction_error")  # the model computes them alone
ANOMALY_REFERENCE_SCORES = ("typicality", "complexity", "latent_density", "latent_neighbors", "ensemble")  # against normal data
ANOMALY_METHODS = ("auto", *ANOMALY_MODEL_SCORES, *ANOMALY_REFERENCE_SCORES)
REGRESSORS = ("ridge", "mlp")  # kerasvae.apps.regression
ORDER_METHODS = ("spectral", "chain", "curve")  # kerasvae.apps.ordering
ORDER_DISTANCES = ("decoded", "latent")  # kerasvae.apps.ordering
IMPUTATION_METHODS = ("map", "pseudo_gibbs")
INTERPOLATIONS = ("linear", "spherical")
EMBEDDINGS = ("pca", "tsne")
