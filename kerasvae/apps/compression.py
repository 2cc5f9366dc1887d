"""Lossy compression with a VAE: quantize the posterior mean, entropy-code the bins with the prior.

    k = round(mean of q(z|x) / delta)                        (per latent dimension)
    bits(x) = sum_d -log2 P_d(k_d),  P_d(k) = prior mass of [(k - 1/2) delta, (k + 1/2) delta)
    x_hat = E[x | z = k * delta]

A simple scheme without bits-back coding: the rate is the discretized prior's information content of the
quantized code, the distortion that of decoding the bin centre. The prior must be a diagonal Gaussian
(the `normal` prior, or an autoencoder's fitted code prior). The bins are range-coded by `constriction`
(Rust), whose QuantizedGaussian is this discretized prior.

File format (.kvz), little-endian: magic b"KVZ", format version (one ASCII digit: the b"KVZ1" files of the
earlier arithmetic coder read as version 1), latent_dim uint16, num_images uint32, delta float64, model
fingerprint uint32 (crc32 of the weights), rank uint8, the input shape (rank x uint16), the range-coded
payload (uint32 words), and a crc32 of everything before it.
"""

import struct
import zlib

import constriction
import numpy as np
from scipy.special import ndtr

from kerasvae import objectives, progress
from kerasvae.apps import inference
from kerasvae.apps.baselines import PCABaseline
from kerasvae.apps.metrics import psnr

MAGIC, VERSION = b"KVZ", b"2"
HEADER = struct.Struct("<3scHIdIB")
CHECKSUM = struct.Struct("<I")
TAIL = 10.0  # the coded bins span the prior's mean +- TAIL standard deviations (N(0, 1) puts 1.5e-23 beyond)
MAX_BINS = 1 << 16  # constriction gives every bin >= 2^-24 probability; more bins would take real mass


class DiscretizedGaussian:
    """Integer bins k of width delta under per-dimension Gaussians N(loc_d, scale_d^2), restricted to the
    bins [low, high] that cover every dimension's mean +- TAIL standard deviations, and renormalized there:

        P_d(k) = [Phi(((k + 1/2) delta - loc_d) / scale_d) - Phi(((k - 1/2) delta - loc_d) / scale_d)] / Z_d

    This is constriction's QuantizedGaussian in units of bins; the range coder rounds its probabilities
    to 24 bits, so a file is within a few bytes of `code_length`. Bins outside [low, high] are clamped.
    """

    def __init__(self, loc, scale, delta):
        self.delta = float(delta)
        scale = np.asarray(scale, np.float64)
        if not self.delta > 0 or not np.all(scale > 0):
            raise ValueError(f"Expected delta > 0 and positive prior scales, got delta {delta}.")
        self.mean, self.std = np.asarray(loc, np.float64) / self.delta, scale / self.delta
        self.low = int(np.floor(np.min(self.mean - TAIL * self.std)))
        self.high = int(np.ceil(np.max(self.mean + TAIL * self.std)))
        if self.high - self.low + 1 > MAX_BINS:
            raise ValueError(f"delta {delta} is too small for the prior's scale: over {MAX_BINS} bins per latent.")
        self.model = constriction.stream.model.QuantizedGaussian(self.low, self.high)

    def clamp(self, bins):
        return np.clip(np.asarray(bins, np.int64), self.low, self.high)

    def code_length(self, bins):
        """Bits per row [n] of the ideal code for (clamped) bins [n, latent_dim]: sum_d -log2 P_d(k_d). (A bin
        over ~5 standard deviations out costs the coder at most ~24 bits, less than this, as every bin keeps
        a probability of at least 2^-24.)"""
        bins = self.clamp(bins)
        lower, upper = (bins - 0.5 - self.mean) / self.std, (bins + 0.5 - self.mean) / self.std
        # Above the mean, the mass is taken from the upper tail: 1 - Phi would round small masses to 0.
        mass = np.where(lower > 0, ndtr(-lower) - ndtr(-upper), ndtr(upper) - ndtr(lower))
        total = ndtr((self.high + 0.5 - self.mean) / self.std) - ndtr((self.low - 0.5 - self.mean) / self.std)
        return -np.sum(np.log2(mass / total), axis=1)

    def encode(self, bins):
        """bytes: the (clamped) bins [n, latent_dim], row by row."""
        bins = self.clamp(bins)
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode(bins.astype(np.int32).ravel(), self.model, *self._parameters(len(bins)))
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, payload, n):
        """bins [n, latent_dim] from `encode`'s bytes."""
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        return decoder.decode(self.model, *self._parameters(n)).reshape(n, -1).astype(np.int64)

    def _parameters(self, n):
        """The mean and std of every coded symbol, in bins: row-major [n, latent_dim] flattened."""
        return np.tile(self.mean, n), np.tile(self.std, n)


def latent_code(model, delta):
    """The DiscretizedGaussian of the model's prior p(z) with bin width delta."""
    if model.num_classes is not None:
        raise ValueError(f"{type(model).__name__} is conditional; compression needs an unconditional model.")
    inference.check_continuous_latents(model)
    prior = objectives.as_factorized_normal(model.prior)
    if prior is None:
        raise ValueError("Compression codes each latent with the prior's marginal: it needs a diagonal Gaussian prior ('normal').")
    return DiscretizedGaussian(np.asarray(prior.loc), np.asarray(prior.scale), delta)


def model_fingerprint(model):
    """crc32 of the model's weights: a file decodes only with the weights that wrote it."""
    crc = 0
    for variable in model.weights:
        crc = zlib.crc32(np.asarray(variable).tobytes(), crc)
    return crc


def quantize(model, x, delta):
    """Integer bins [n, latent_dim] of the posterior means, round(mean / delta)."""
    means = _batched(lambda batch: inference.posterior_means(model, batch), x, model, "encoding")
    return np.round(means / float(delta)).astype(np.int64)


def compress(model, x, delta=0.5):
    """x [n, *input_shape] -> bytes of a .kvz file (see the module docstring)."""
    return _write(model, quantize(model, np.asarray(x, np.float32), delta), delta)


def read_header(blob):
    """The header of a .kvz file as a dict: version, latent_dim, num_images, delta, fingerprint,
    input_shape, header_bytes, payload_bytes. Raises ValueError for anything but an intact .kvz file."""
    if blob[:3] != MAGIC:
        raise ValueError("Not a kerasvae compressed file (.kvz): bad magic bytes.")
    if blob[3:4] not in (VERSION, b""):  # b"": truncated, said below
        raise ValueError(f"A .kvz file of format version {blob[3:4].decode('latin-1')}; this kerasvae reads version {VERSION.decode()}.")
    if len(blob) < HEADER.size + CHECKSUM.size or zlib.crc32(blob[: -CHECKSUM.size]) != CHECKSUM.unpack_from(blob, len(blob) - CHECKSUM.size)[0]:
        raise ValueError("Corrupted or truncated .kvz file: its checksum does not match its contents.")
    _, version, latent_dim, n, delta, fingerprint, rank = HEADER.unpack_from(blob)
    header_bytes = HEADER.size + 2 * rank
    return {
        "version": int(version), "latent_dim": latent_dim, "num_images": n, "delta": delta, "fingerprint": fingerprint,
        "input_shape": list(struct.unpack_from(f"<{rank}H", blob, HEADER.size)), "header_bytes": header_bytes,
        "payload_bytes": len(blob) - header_bytes - CHECKSUM.size,
    }


def decompress_latents(model, blob):
    """The dequantized latents k * delta [n, latent_dim] of a .kvz file."""
    header = read_header(blob)
    if header["latent_dim"] != model.latent_dim or tuple(header["input_shape"]) != model.data_shape:
        raise ValueError(
            f"The file holds {header['latent_dim']}-dim codes of {header['input_shape']} images; the model has "
            f"latent_dim {model.latent_dim} and input shape {list(model.data_shape)}."
        )
    if header["fingerprint"] != model_fingerprint(model):
        raise ValueError("The file was written by another model (its weights' fingerprint differs): decompress it with the run that compressed it.")
    payload = blob[header["header_bytes"] : len(blob) - CHECKSUM.size]
    bins = latent_code(model, header["delta"]).decode(payload, header["num_images"])
    return (bins * header["delta"]).astype(np.float32)


def decompress(model, blob):
    """Images [n, *input_shape] in [0, 1]: the decoder's mean at the dequantized latents."""
    decoded = _batched(lambda z: inference.decoded_mean(model, z), decompress_latents(model, blob), model, "decoding")
    return np.clip(decoded, 0.0, 1.0)


def evaluate_compression(model, x, delta=0.5, x_fit=None, original=None):
    """Rate and distortion of compressing x, against classical baselines. Returns (report, outputs).

    Args:
        model, x, delta: as for `compress`; x is what the model takes (binarized, if it trained so).
        x_fit: images to fit the PCA baseline on (like `original`), or None for no baseline.
        original: the images x came from (greyscale before binarization), the reference of every PSNR, of
            zlib and of PCA. Defaults to x.

    report: bits_per_image (the whole file over n), payload_bits_per_image (the range code alone),
    ideal_bits_per_image (sum of -log2 P(k), what a perfect entropy coder reaches), psnr (dB, decompressed
    vs original), clamped (bins beyond the coded range), file_bytes; the lossless references
    raw_bits_per_image (8 bits per element) and zlib_bits_per_image (each original's 8-bit values deflated
    at level 9); with x_fit also PCA transform coding of the originals at the same rate: its whitened
    components quantized with the finest bin width pca_delta whose ideal code under N(0, 1) is no longer
    than the VAE's (pca_delta; pca_bits_per_image, its range code alone; pca_psnr).
    outputs: images "original", "decompressed" (and "pca"), and "file": the .kvz bytes.
    """
    x = np.asarray(x, np.float32)
    original = x if original is None else np.asarray(original, np.float32)
    if original.shape != x.shape:
        raise ValueError(f"Expected originals of the inputs' shape {list(x.shape)}, got {list(original.shape)}.")
    code = latent_code(model, delta)
    bins = quantize(model, x, delta)
    blob = _write(model, bins, delta)
    decoded = decompress(model, blob)
    n = len(x)
    ideal_bits = code.code_length(bins)
    eight_bit = np.round(original * 255).astype(np.uint8)
    report = {
        "delta": float(delta),
        "num_images": int(n),
        "latent_dim": int(model.latent_dim),
        "file_bytes": len(blob),
        "bits_per_image": 8 * len(blob) / n,
        "payload_bits_per_image": 8 * read_header(blob)["payload_bytes"] / n,
        "ideal_bits_per_image": float(np.mean(ideal_bits)),
        "psnr": psnr(decoded, original),
        "clamped": int(np.sum(code.clamp(bins) != bins)),
        "raw_bits_per_image": 8.0 * int(np.prod(x.shape[1:])),
        "zlib_bits_per_image": float(np.mean([8 * len(zlib.compress(image.tobytes(), 9)) for image in eight_bit])),
    }
    outputs = {"original": original, "decompressed": decoded, "file": blob}
    if x_fit is not None:
        pca = PCABaseline(model.latent_dim).fit(x_fit)
        whitened = pca.encode(original) / pca.component_stddev
        pca_delta = _finest_delta_within(whitened, np.sum(ideal_bits))
        pca_code = DiscretizedGaussian(np.zeros(model.latent_dim), np.ones(model.latent_dim), pca_delta)
        pca_bins = pca_code.clamp(np.round(whitened / pca_delta))
        outputs["pca"] = np.clip(pca.decode(pca_bins * pca_delta * pca.component_stddev), 0.0, 1.0)
        report["pca_delta"] = pca_delta
        report["pca_bits_per_image"] = 8 * len(pca_code.encode(pca_bins)) / n
        report["pca_psnr"] = psnr(outputs["pca"], original)
    return report, outputs


def _write(model, bins, delta):
    shape = model.data_shape
    header = HEADER.pack(MAGIC, VERSION, model.latent_dim, len(bins), float(delta), model_fingerprint(model), len(shape))
    body = header + struct.pack(f"<{len(shape)}H", *shape) + latent_code(model, delta).encode(bins)
    return body + CHECKSUM.pack(zlib.crc32(body))


def _batched(function, array, model, description):
    """function over array in slices of the model's evaluation batch, counted on a progress bar."""
    if len(array) == 0:
        raise ValueError("Expected at least one image, got none.")
    parts = []
    with progress.bar(len(array), description, unit="images") as bar:
        for start in range(0, len(array), model.eval_batch_size):
            parts.append(function(array[start : start + model.eval_batch_size]))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)


def _finest_delta_within(whitened, budget_bits):
    """The smallest bin width (to 0.1%) whose ideal code of the whitened codes under N(0, 1) takes at most
    budget_bits, by bisection in log delta: a finer bin costs more bits and keeps more of the image."""
    unit = np.zeros(whitened.shape[1]), np.ones(whitened.shape[1])

    def bits(delta):
        return np.sum(DiscretizedGaussian(*unit, delta).code_length(np.round(whitened / delta)))

    fine, coarse = 1e-3, 1e3  # N(0, 1) over 1e-3 bins: 20001 bins; over 1e3: one bin of mass ~1, 0 bits
    while coarse / fine > 1.001:
        middle = np.sqrt(fine * coarse)
        fine, coarse = (fine, middle) if bits(middle) <= budget_bits else (middle, coarse)
    return float(coarse)
