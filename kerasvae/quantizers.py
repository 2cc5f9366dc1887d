"""Vector quantization, in two modules since 2026-12-05: the codebook and its posterior head
(kerasvae.codebook) and the priors over codes (kerasvae.code_priors). This name keeps working."""

from kerasvae.code_priors import CodePrior, PixelCNNPrior
from kerasvae.codebook import QuantizedPosterior, VectorQuantizer

__all__ = ["CodePrior", "PixelCNNPrior", "QuantizedPosterior", "VectorQuantizer"]
