"""Every family passes the same harness (tests/family_harness.py): fit, config and .keras round trips,
every declared signature exported and matched, and the float32 TFLite decoder."""

import numpy as np
import pytest
from family_harness import run_family_test

import kerasvae as kv

pytestmark = pytest.mark.slow  # a fit, two saves and two conversions per family

IMAGE = (8, 8, 1)
SMALL = {"hidden": (16,)}
FAMILIES = {
    "vae": lambda: kv.presets.mlp_vae(input_shape=IMAGE, latent_dim=3, **SMALL),
    "iwae-dreg-vamp": lambda: kv.presets.mlp_vae(input_shape=IMAGE, latent_dim=3, num_samples=3, gradient_estimator="dreg",
                                                 prior="vamp", **SMALL),
    "conv_vae": lambda: kv.presets.conv_vae(input_shape=IMAGE, latent_dim=3, filters=(4, 8)),
    "ae": lambda: kv.presets.mlp_ae(input_shape=IMAGE, latent_dim=3, **SMALL),
    "sparse_ae": lambda: kv.presets.sparse_ae(input_shape=IMAGE, latent_dim=8),
    "denoising_ae": lambda: kv.presets.denoising_ae(input_shape=IMAGE, latent_dim=3),
    "vqvae": lambda: kv.presets.vqvae(input_shape=IMAGE, num_embeddings=8, embedding_dim=2),
    "binary_vae": lambda: kv.presets.binary_vae(input_shape=IMAGE, latent_dim=6, **SMALL),
    "gumbel_vae": lambda: kv.presets.gumbel_vae(input_shape=IMAGE, num_latents=3, num_categories=4, **SMALL),
    "hvae": lambda: kv.presets.hvae(input_shape=IMAGE, latent_dim=2, lower_dims=(3,), encoder_filters=None, level_hidden=(8,),
                                    num_samples=3, **SMALL),
}


@pytest.fixture(scope="module")
def images(binary_digits):
    return binary_digits[0][:256]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family(family, images, tmp_path):
    run_family_test(FAMILIES[family], images, tmp_path)


def test_conditional_family(binary_digits, tmp_path):
    x, y = binary_digits[0][:256], binary_digits[1][:256]
    run_family_test(lambda: kv.presets.conditional_vae(input_shape=IMAGE, num_classes=10, latent_dim=3, **SMALL),
                    x, tmp_path, labels=np.asarray(y, np.int32))


@pytest.mark.parametrize("family", ["sequence_vae", "sequence_ae"])
def test_sequence_family(family, tmp_path):
    t = np.linspace(0, 2 * np.pi, 12, dtype=np.float32)
    rng = np.random.default_rng(0)
    series = np.sin(t[None, :] + rng.uniform(0, 2 * np.pi, (64, 1))).astype(np.float32)[..., None]
    build = kv.presets.get(family)
    # The unrolled-recurrence TFLite decoder is checked in test_export_tflite_onnx.py; here it would double the time.
    run_family_test(lambda: build(input_shape=(12, 1), latent_dim=2, units=(4,), likelihood="gaussian"), series, tmp_path,
                    epochs=1, tflite=False)
