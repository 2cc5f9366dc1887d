"""Entropy coding of integers under a discretized Gaussian: an exact integer arithmetic coder and the
frequency tables it codes with.

The coder is the classic one of Witten, Neal & Cleary (1987) with 32-bit state and pending ("underflow")
bits: a symbol with cumulative frequencies [c_lo, c_hi) out of a total T narrows [low, high] to

    high = low + floor(span * c_hi / T) - 1,   low = low + floor(span * c_lo / T),   span = high - low + 1

and the interval is rescaled bit by bit. A message costs sum_i -log2(f_i / T) bits plus at most 2, so
with precise tables the file is the ideal code length to within a few bits.
"""

import bisect
import zlib

import numpy as np

STATE_BITS = 32
FULL = (1 << STATE_BITS) - 1
HALF = 1 << (STATE_BITS - 1)
QUARTER = 1 << (STATE_BITS - 2)
TABLE_TOTAL = 1 << 20  # T: far below QUARTER, so every symbol keeps a non-empty interval


class ArithmeticEncoder:
    """Encodes symbols one by one, each with its own cumulative frequency table; `finish()` -> bytes."""

    def __init__(self):
        self.low, self.high, self.pending = 0, FULL, 0
        self.bits = []

    def encode(self, cumulative, symbol):
        """cumulative: list of ints, cumulative[0] = 0, cumulative[-1] = total, strictly increasing."""
        total = cumulative[-1]
        span = self.high - self.low + 1
        self.high = self.low + span * cumulative[symbol + 1] // total - 1
        self.low = self.low + span * cumulative[symbol] // total
        while True:
            if self.high < HALF:
                self._emit(0)
            elif self.low >= HALF:
                self._emit(1)
                self.low -= HALF
                self.high -= HALF
            elif self.low >= QUARTER and self.high < HALF + QUARTER:
                # The interval straddles the middle: the next bit is not known yet, only that the one after
                # it is its opposite.
                self.pending += 1
                self.low -= QUARTER
                self.high -= QUARTER
            else:
                break
            self.low = 2 * self.low
            self.high = 2 * self.high + 1

    def finish(self):
        """The code as bytes (zero-padded to whole bytes; the decoder reads zeros past the end anyway)."""
        self.pending += 1
        self._emit(0 if self.low < QUARTER else 1)
        return np.packbits(np.asarray(self.bits, np.uint8)).tobytes()

    def _emit(self, bit):
        self.bits.append(bit)
        self.bits.extend([1 - bit] * self.pending)
        self.pending = 0


class ArithmeticDecoder:
    """Decodes what ArithmeticEncoder wrote, given the same sequence of tables."""

    def __init__(self, data):
        self.bits = np.unpackbits(np.frombuffer(data, np.uint8))
        self.position = 0
        self.low, self.high, self.value = 0, FULL, 0
        for _ in range(STATE_BITS):
            self.value = (self.value << 1) | self._next_bit()

    def decode(self, cumulative):
        total = cumulative[-1]
        span = self.high - self.low + 1
        scaled = ((self.value - self.low + 1) * total - 1) // span
        symbol = bisect.bisect_right(cumulative, scaled) - 1
        self.high = self.low + span * cumulative[symbol + 1] // total - 1
        self.low = self.low + span * cumulative[symbol] // total
        while True:
            if self.high < HALF:
                pass
            elif self.low >= HALF:
                self.low -= HALF
                self.high -= HALF
                self.value -= HALF
            elif self.low >= QUARTER and self.high < HALF + QUARTER:
                self.low -= QUARTER
                self.high -= QUARTER
                self.value -= QUARTER
            else:
                break
            self.low = 2 * self.low
            self.high = 2 * self.high + 1
            self.value = 2 * self.value + self._next_bit()
        return symbol

    def _next_bit(self):
        bit = int(self.bits[self.position]) if self.position < len(self.bits) else 0
        self.position += 1
        return bit


class DiscretizedGaussianCoder:
    """Codes integer bins k of width delta, per dimension d, with the probability a Gaussian N(loc_d,
    scale_d^2) puts on the bin:

        P_d(k) = Phi(((k + 1/2) delta - loc_d) / scale_d) - Phi(((k - 1/2) delta - loc_d) / scale_d)

    Bins beyond `tail` standard deviations are clamped to the outermost ones, which absorb the tails.
    The tables are computed in float64 from (loc, scale, delta) and rounded to integer frequencies that
    sum to TABLE_TOTAL, every bin at least 1; `checksum` identifies them, so a decoder with different
    tables refuses instead of decoding garbage.

    Args:
        loc, scale: arrays [latent_dim]. The per-dimension Gaussian.
        delta: float. Bin width.
        tail: float. Half-width of the coded range in standard deviations. Defaults to 10 (a standard normal
            puts 1.5e-23 beyond it).
    """

    def __init__(self, loc, scale, delta, tail=10.0):
        from scipy.special import ndtr

        self.loc, self.scale = np.asarray(loc, np.float64), np.asarray(scale, np.float64)
        self.delta = float(delta)
        if not self.delta > 0 or not np.all(self.scale > 0):
            raise ValueError(f"Expected delta > 0 and positive scales, got delta {delta}.")
        self.low = np.round((self.loc - tail * self.scale) / self.delta).astype(np.int64)
        self.high = np.round((self.loc + tail * self.scale) / self.delta).astype(np.int64)
        if np.max(self.high - self.low + 1) > TABLE_TOTAL // 4:
            raise ValueError(f"delta {delta} is too small for the prior's scale: over {TABLE_TOTAL // 4} bins per dimension.")
        self.cumulative, self.log2_probability = [], []
        for loc_d, scale_d, low, high in zip(self.loc, self.scale, self.low, self.high):
            edges = (np.arange(low, high + 2) - 0.5) * self.delta
            cdf = ndtr((edges - loc_d) / scale_d)
            cdf[0], cdf[-1] = 0.0, 1.0  # the outermost bins take the tails
            probability = np.diff(cdf)
            frequency = 1 + np.floor(probability * (TABLE_TOTAL - len(probability))).astype(np.int64)
            frequency[np.argmax(frequency)] += TABLE_TOTAL - frequency.sum()
            self.cumulative.append([0, *np.cumsum(frequency).tolist()])
            self.log2_probability.append(np.log2(frequency / TABLE_TOTAL))
        self.checksum = zlib.crc32(np.concatenate([np.asarray(c, np.int64) for c in self.cumulative]).tobytes())

    def clamp(self, bins):
        """bins [n, latent_dim] clamped to the coded range."""
        return np.clip(np.asarray(bins, np.int64), self.low, self.high)

    def code_length(self, bins):
        """Bits per row [n] of the tables' code for (clamped) bins: sum_d -log2 (f_d(k) / T)."""
        symbols = self.clamp(bins) - self.low
        return -np.sum([table[symbols[:, d]] for d, table in enumerate(self.log2_probability)], axis=0)

    def encode(self, bins):
        """bytes: the (clamped) bins [n, latent_dim], row by row."""
        encoder = ArithmeticEncoder()
        symbols = (self.clamp(bins) - self.low).tolist()
        for row in symbols:
            for table, symbol in zip(self.cumulative, row):
                encoder.encode(table, symbol)
        return encoder.finish()

    def decode(self, data, n):
        """bins [n, latent_dim] from `encode`'s bytes."""
        decoder = ArithmeticDecoder(data)
        symbols = [[decoder.decode(table) for table in self.cumulative] for _ in range(int(n))]
        return np.asarray(symbols, np.int64).reshape(int(n), len(self.cumulative)) + self.low
