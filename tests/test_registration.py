"""`keras.saving.load_model` finds every kerasvae class without custom_objects, whichever kerasvae module a
script imports first, though the package imports lazily (kerasvae.registration)."""

import subprocess
import sys

import numpy as np
import pytest

import kerasvae as kv

pytestmark = pytest.mark.slow  # one fresh Python process (a TensorFlow start) per case

LOAD = """
import sys
{imports}
import keras, numpy as np
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[2], model.reconstruct(np.load(sys.argv[3])))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registration")
    model = kv.presets.mlp_vae(input_shape=(6,), latent_dim=2, hidden=(8,), prior="mixture", likelihood="gaussian")
    x = np.random.default_rng(0).random((4, 6)).astype("float32")
    model.save(folder / "model.keras")
    np.save(folder / "x.npy", x)
    return folder, model.reconstruct(x)


@pytest.mark.parametrize(
    "imports",
    [
        "import kerasvae",  # the package alone: Keras loads after it
        "import keras\nimport kerasvae",  # Keras first
        "import kerasvae.data",  # a module whose `import tensorflow` pulls Keras in mid-import
        "from kerasvae.priors import MixturePrior",  # a registering module first
        "from kerasvae.code_priors import CodePrior",  # one that needs another's class (priors.Prior) as it loads
        "from kerasvae.serving import RestClient",  # a light module only, then Keras
    ],
)
def test_load_model_after_any_first_import(saved, imports):
    folder, expected = saved
    result = subprocess.run(
        [sys.executable, "-c", LOAD.format(imports=imports), str(folder / "model.keras"), str(folder / "out.npy"), str(folder / "x.npy")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(folder / "out.npy"), expected, atol=1e-6)
