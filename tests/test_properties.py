"""Property tests of the public API (Hypothesis): for any batch size (0 and 1 included), any real dtype and
any seed the model methods return the shapes, ranges and values their contracts and hand computations
give on real digits; anything else is a ValueError that names what was expected; and the data loader turns
any damage to a .npy, .npz, .csv or gzipped IDX file into arrays or a ValueError, never another exception."""

import gzip
import io
import tempfile
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import DIGITS_SHAPE, fit, small_vae
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kerasvae as kv
from kerasvae.models.base import LatentVariableModel

PROPERTY = settings(max_examples=12, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
INT32 = st.integers(-(2**31), 2**31 - 1)
REAL_DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.uint8, np.int64, np.bool_])
METHODS = {
    "encode": lambda m, x: m.encode(x),
    "reconstruct": lambda m, x: m.reconstruct(x),
    "elbo": lambda m, x: m.elbo(x),
    "log_likelihood": lambda m, x: m.log_likelihood(x, num_samples=2),
    "anomaly_score": lambda m, x: m.anomaly_score(x, method="reconstruction"),
}


@pytest.fixture(scope="module")
def trained(binary_digits):
    """A small VAE fitted to binarized digits, with the public input check counted during fit and after."""
    model = small_vae(hidden=(32,))
    check = LatentVariableModel._check_inputs
    with mock.patch.object(LatentVariableModel, "_check_inputs", autospec=True, side_effect=check) as spy:
        fit(model, binary_digits[0], epochs=3)
        calls_in_fit = spy.call_count
        model.reconstruct(binary_digits[2][:2])
        calls_in_api = spy.call_count - calls_in_fit
    return model, calls_in_fit, calls_in_api


@pytest.fixture(scope="module")
def conditional():
    return kv.presets.conditional_vae(input_shape=DIGITS_SHAPE, num_classes=3, latent_dim=2, hidden=(8,), seed=0)


def test_fit_never_runs_the_public_input_checks(trained):
    _, calls_in_fit, calls_in_api = trained
    assert calls_in_fit == 0 and calls_in_api == 1  # validation costs the API, never a train step


@PROPERTY
@given(n=st.integers(0, 6), dtype=REAL_DTYPES, start=st.integers(0, 300))
def test_any_batch_size_and_real_dtype_give_the_contract_shapes_and_the_hand_computed_score(trained, binary_digits, n, dtype, start):
    model = trained[0]
    x32 = binary_digits[2][start : start + n]  # binary digits: valid in every real dtype
    x = x32.astype(dtype)
    q = model.encode(x)
    assert q.batch_shape == (n,) and q.event_shape == (model.latent_dim,)
    reconstruction = model.reconstruct(x)
    assert reconstruction.shape == (n, *DIGITS_SHAPE) and reconstruction.dtype == np.float32
    assert np.all((reconstruction >= 0) & (reconstruction <= 1))
    np.testing.assert_array_equal(reconstruction, model.reconstruct(x32))  # the dtype does not matter
    if n >= 2:  # nor the rest of the batch
        np.testing.assert_allclose(reconstruction[1:], model.reconstruct(x32[1:]), atol=1e-6)
    elbo = model.elbo(x, seed=(1, 2))
    assert elbo.shape == (n,) and np.all(np.isfinite(elbo)) and np.all(elbo <= 0)  # log p(x|z) <= 0, KL >= 0
    # -log Bernoulli(x | logits) by hand: sum over pixels of softplus(l) - x l, at z = mean of q(z|x).
    logits = np.asarray(model.decode(q.mean()).distribution.logits).reshape(n, 64)
    by_hand = np.sum(np.logaddexp(0, logits) - x32.reshape(n, 64) * logits, axis=1)
    np.testing.assert_allclose(model.anomaly_score(x, method="reconstruction"), by_hand, rtol=1e-5, atol=1e-3)


@PROPERTY
@given(n=st.integers(0, 5), seed=st.one_of(INT32, st.tuples(INT32, INT32)), mean=st.booleans())
def test_sample_is_a_pure_function_of_its_seed(trained, n, seed, mean):
    model = trained[0]
    samples = model.sample(n, seed=seed, mean=mean)
    assert samples.shape == (n, *DIGITS_SHAPE) and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, model.sample(n, seed=seed, mean=mean))
    if mean:
        assert np.all((samples >= 0) & (samples <= 1))
    else:  # draws from a Bernoulli likelihood are binary images
        assert set(np.unique(samples)) <= {0.0, 1.0}
    other = (seed + 1 if isinstance(seed, int) else (seed[0], seed[1] ^ 1))
    if n and mean:
        assert not np.array_equal(samples, model.sample(n, seed=other, mean=mean))


def malformed_inputs():
    """(inputs, fragment of the expected message): wrong shapes, non-real dtypes, NaN/inf, values outside
    the Bernoulli likelihood's [0, 1]."""
    wrong_shape = st.lists(st.integers(0, 9), max_size=5).filter(lambda s: len(s) != 4 or tuple(s[1:]) != DIGITS_SHAPE)
    valid_shape = st.integers(1, 4).map(lambda n: (n, *DIGITS_SHAPE))
    return st.one_of(
        wrong_shape.map(lambda s: (np.zeros(s, np.float32), r"\[batch, 8, 8, 1\]")),
        st.sampled_from([np.complex64, np.str_, object]).map(lambda t: (np.zeros((2, *DIGITS_SHAPE)).astype(t), "dtype")),
        st.tuples(valid_shape, st.sampled_from([np.nan, np.inf, -np.inf]), st.integers(0, 10**6)).map(
            lambda a: (_with_value_at(a[0], a[1], a[2]), "NaN or infinite")),
        st.tuples(valid_shape, st.one_of(st.floats(1.0001, 1e30), st.floats(-1e30, -1e-4)), st.integers(0, 10**6)).map(
            lambda a: (_with_value_at(a[0], a[1], a[2]), r"\[0, 1\]")),
    )


def _with_value_at(shape, value, position):
    x = np.full(shape, 0.5)
    x.flat[position % x.size] = value
    return x


@settings(PROPERTY, max_examples=40)
@given(case=malformed_inputs(), method=st.sampled_from(sorted(METHODS)))
def test_malformed_inputs_are_value_errors_naming_the_expectation(trained, case, method):
    x, fragment = case
    with pytest.raises(ValueError, match=fragment):
        METHODS[method](trained[0], x)


@settings(PROPERTY, max_examples=25)
@given(leading=st.lists(st.integers(0, 3), max_size=3), dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int32]),
       bad=st.sampled_from([None, "nan", "width", "string"]))
def test_decode_takes_any_leading_shape_of_finite_latents(trained, leading, dtype, bad):
    model = trained[0]
    z = np.random.default_rng(len(leading)).standard_normal((*leading, model.latent_dim)).astype(dtype)
    if bad is None:
        mean = np.asarray(model.decode(z).mean())
        assert mean.shape == (*leading, *DIGITS_SHAPE) and np.all((mean >= 0) & (mean <= 1))
        return
    z, fragment = {
        "nan": (np.full((2, model.latent_dim), np.nan), "NaN or infinite"),
        "width": (z[..., :-1], rf"\[\.\.\., {model.latent_dim}\]"),
        "string": (z.astype(str), "dtype"),
    }[bad]
    with pytest.raises(ValueError, match=fragment):
        model.decode(z)


@PROPERTY
@given(n=st.integers(1, 4), labels=st.one_of(st.none(), st.integers(-2, 4), st.lists(st.integers(-2, 4), max_size=5),
                                              st.lists(st.floats(0, 2), min_size=1, max_size=4)))
def test_conditional_labels_are_checked_for_count_range_and_dtype(conditional, binary_digits, n, labels):
    x = binary_digits[2][:n]
    array = None if labels is None else np.asarray(labels)
    valid = (
        array is not None and np.issubdtype(array.dtype, np.integer) and (array.ndim == 0 or array.shape == (n,))
        and bool(np.all((array >= 0) & (array < 3)))
    )
    if valid:
        assert conditional.reconstruct(x, labels=labels).shape == (n, *DIGITS_SHAPE)
        assert conditional.sample(n, seed=1, labels=labels).shape == (n, *DIGITS_SHAPE)
    else:
        with pytest.raises(ValueError, match="(?i)labels"):
            conditional.reconstruct(x, labels=labels)


def test_a_conditional_model_takes_an_empty_batch(conditional):
    assert conditional.reconstruct(np.zeros((0, *DIGITS_SHAPE)), labels=np.zeros(0, int)).shape == (0, *DIGITS_SHAPE)


def _valid_files():
    x = np.random.default_rng(0).integers(0, 256, (6, 4, 4), dtype=np.uint8)
    npy, npz = io.BytesIO(), io.BytesIO()
    np.save(npy, x)
    with zipfile.ZipFile(npz, "w") as archive:
        archive.writestr("x.npy", npy.getvalue())
        archive.writestr("y.npy", _npy(np.arange(6)))
    idx = bytes([0, 0, 8, 3, 0, 0, 0, 6, 0, 0, 0, 4, 0, 0, 0, 4]) + x.tobytes()  # IDX: magic, ndim 3, shape
    return {".npy": npy.getvalue(), ".npz": npz.getvalue(), ".csv": b"\n".join(b"0,1,0.5,1" for _ in range(4)),
            "-idx3-ubyte.gz": gzip.compress(idx)}


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


VALID_FILES = _valid_files()


@settings(PROPERTY, max_examples=200)
@given(suffix=st.sampled_from(sorted(VALID_FILES)), cut=st.integers(0, 400), flips=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), max_size=3),
       junk=st.binary(max_size=64))
def test_the_loader_turns_any_damaged_file_into_arrays_or_a_value_error(suffix, cut, flips, junk):
    content = bytearray(VALID_FILES[suffix][:cut] + junk if cut < len(VALID_FILES[suffix]) else VALID_FILES[suffix])
    for position, mask in flips:
        if content:
            content[position % len(content)] ^= mask
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / (f"t10k-images{suffix}" if "idx" in suffix else f"data{suffix}")
        path.write_bytes(bytes(content))
        source = folder if "idx" in suffix else path  # an IDX dataset is named by its folder
        try:
            x, y = kv.data.load_arrays(source, "test")
        except ValueError as error:
            assert str(source) in str(error), error
            return
    assert x.dtype == np.float32 and x.ndim >= 2 and np.all(np.isfinite(x))
    assert y is None or (y.dtype == np.int64 and y.shape == (len(x),))
