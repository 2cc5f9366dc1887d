"""Lossy compression with a VAE: quantize the posterior mean, entropy-code the bins with the prior.

    k = round(mean of q(z|x) / delta)                        (per latent dimension)
    bits(x) = sum_d -log2 P(k_d),  P(k) = prior mass of [(k - 1/2) delta, (k + 1/2) delta)
    x_hat = E[x | z = k * delta]

A simple scheme without bits-back coding: the rate is the discretized prior's information content of the
quantized code, the distortion that of decoding the bin centre. The prior must be a diagonal Gaussian
(the `normal` prior, or an autoencoder's fitted code prior).

File format (.kvz), little-endian: magic b"KVZ1", latent_dim uint16, num_images uint32, delta float64,
table checksum uint32, payload length uint32, rank uint8, then the input shape (rank x uint16) and the
arithmetic-coded payload.
"""

import struct
import zlib

import numpy as np

from kerasvae import objectives
from kerasvae.apps import inference
from kerasvae.apps.baselines import PCABaseline
from kerasvae.apps.entropy_coding import DiscretizedGaussianCoder
from kerasvae.apps.metrics import psnr

MAGIC = b"KVZ1"
HEADER = struct.Struct("<4sHIdIIB")


def latent_coder(model, delta):
    """The DiscretizedGaussianCoder of the model's prior p(z) with bin width delta."""
    if model.num_classes is not None:
        raise ValueError(f"{type(model).__name__} is conditional; compression needs an unconditional model.")
    inference.check_continuous_latents(model)
    prior = objectives.as_factorized_normal(model.prior)
    if prior is None:
        raise ValueError("Compression codes each latent with the prior's marginal: it needs a diagonal Gaussian prior ('normal').")
    return DiscretizedGaussianCoder(np.asarray(prior.loc), np.asarray(prior.scale), delta)


def quantize(model, x, delta):
    """Integer bins [n, latent_dim] of the posterior means, round(mean / delta)."""
    return np.round(inference.posterior_means(model, x) / float(delta)).astype(np.int64)


def compress(model, x, delta=0.5):
    """x [n, *input_shape] -> bytes of a .kvz file (see the module docstring)."""
    x = np.asarray(x, np.float32)
    coder = latent_coder(model, delta)
    payload = coder.encode(quantize(model, x, delta))
    shape = model.data_shape
    header = HEADER.pack(MAGIC, model.latent_dim, len(x), float(delta), coder.checksum, len(payload), len(shape))
    return header + struct.pack(f"<{len(shape)}H", *shape) + payload


def read_header(blob):
    """The header of a .kvz file as a dict: latent_dim, num_images, delta, checksum, payload_bytes,
    input_shape, header_bytes."""
    if len(blob) < HEADER.size or blob[:4] != MAGIC:
        raise ValueError("Not a kerasvae compressed file (.kvz): bad magic bytes.")
    _, latent_dim, n, delta, checksum, payload_bytes, rank = HEADER.unpack_from(blob)
    shape = struct.unpack_from(f"<{rank}H", blob, HEADER.size)
    header_bytes = HEADER.size + 2 * rank
    if len(blob) != header_bytes + payload_bytes:
        raise ValueError(f"Truncated or padded .kvz file: {len(blob)} bytes, the header announces {header_bytes + payload_bytes}.")
    return {
        "latent_dim": latent_dim, "num_images": n, "delta": delta, "checksum": checksum,
        "payload_bytes": payload_bytes, "input_shape": list(shape), "header_bytes": header_bytes,
    }


def decompress_latents(model, blob):
    """The dequantized latents k * delta [n, latent_dim] of a .kvz file."""
    header = read_header(blob)
    if header["latent_dim"] != model.latent_dim or tuple(header["input_shape"]) != model.data_shape:
        raise ValueError(
            f"The file holds {header['latent_dim']}-dim codes of {header['input_shape']} images; the model has "
            f"latent_dim {model.latent_dim} and input shape {list(model.data_shape)}."
        )
    coder = latent_coder(model, header["delta"])
    if coder.checksum != header["checksum"]:
        raise ValueError("The model's code tables differ from the ones the file was written with: another model or other weights.")
    bins = coder.decode(blob[header["header_bytes"] :], header["num_images"])
    return (bins * header["delta"]).astype(np.float32)


def decompress(model, blob):
    """Images [n, *input_shape] in [0, 1]: the decoder's mean at the dequantized latents."""
    return np.clip(inference.decoded_mean(model, decompress_latents(model, blob)), 0.0, 1.0)


def evaluate_compression(model, x, delta=0.5, x_fit=None):
    """Rate and distortion of compressing x, against classical baselines. Returns (report, images).

    report: bits_per_image (the whole file, header included, over n), payload_bits_per_image (the
    arithmetic code alone), ideal_bits_per_image (sum of -log2 P(k), what a perfect entropy coder reaches),
    psnr (dB, decompressed vs x), clamped (bins beyond the coded range), file_bytes; the lossless
    references raw_bits_per_image (8 bits per element) and zlib_bits_per_image (each image's 8-bit values
    deflated at level 9); with x_fit also the classical lossy baseline of the same dimension: PCA
    transform coding, its whitened components quantized with the same delta and coded with the same coder
    under N(0, 1) (pca_bits_per_image, pca_psnr).
    """
    x = np.asarray(x, np.float32)
    coder = latent_coder(model, delta)
    bins = quantize(model, x, delta)
    blob = compress(model, x, delta)
    header = read_header(blob)
    decoded = decompress(model, blob)
    n = len(x)
    eight_bit = np.round(x * 255).astype(np.uint8)
    report = {
        "delta": float(delta),
        "num_images": int(n),
        "latent_dim": int(model.latent_dim),
        "file_bytes": len(blob),
        "bits_per_image": 8 * len(blob) / n,
        "payload_bits_per_image": 8 * header["payload_bytes"] / n,
        "ideal_bits_per_image": float(np.mean(coder.code_length(bins))),
        "psnr": psnr(decoded, x),
        "clamped": int(np.sum(coder.clamp(bins) != bins)),
        "raw_bits_per_image": 8.0 * int(np.prod(x.shape[1:])),
        "zlib_bits_per_image": float(np.mean([8 * len(zlib.compress(image.tobytes(), 9)) for image in eight_bit])),
    }
    images = {"original": x, "decompressed": decoded}
    if x_fit is not None:
        pca = PCABaseline(model.latent_dim).fit(x_fit)
        stddev = pca.component_stddev
        pca_bins = np.round(pca.encode(x) / stddev / delta).astype(np.int64)
        pca_coder = DiscretizedGaussianCoder(np.zeros(model.latent_dim), np.ones(model.latent_dim), delta)
        pca_payload = pca_coder.encode(pca_bins)
        images["pca"] = np.clip(pca.decode(pca_coder.clamp(pca_bins) * delta * stddev), 0.0, 1.0)
        report["pca_bits_per_image"] = 8 * len(pca_payload) / n
        report["pca_psnr"] = psnr(images["pca"], x)
    return report, images
