"""A preset carries its training recipe, so a plain Keras script trains the model `kerasvae train` trains."""

import keras
import numpy as np
import pytest

import kerasvae as kv
from kerasvae import training
from kerasvae.recipes import Recipe


def test_compile_builds_the_recipes_optimizer_and_fit_fits_the_warmup_to_the_run():
    x = kv.data.binarize_static(kv.data.load_arrays("digits", "train")[0][:300])
    model = kv.presets.vae(input_shape=(8, 8, 1), latent_dim=2, hidden=(16,), encoder_filters=(4,), num_samples=2, seed=0)
    assert model.recipe == Recipe(weight_averaging=0.999, kl_warmup_share=0.4) and model.kl_warmup_steps == 5000
    model.compile()
    assert isinstance(model.optimizer, kv.optimizers.Adam) and model.optimizer.use_ema
    assert model.optimizer.ema_momentum == 0.999 and float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    model.fit(x, epochs=2, batch_size=100, verbose=0)
    assert model.kl_warmup_steps == 2  # 40% of 2 epochs x 3 batches
    config = model.get_config()
    assert config["recipe"] == {"epochs": 10, "batch_size": 128, "learning_rate": 1e-3, "weight_averaging": 0.999,
                                "kl_warmup_share": 0.4}
    assert type(model).from_config(config).recipe == model.recipe


def test_a_model_without_a_preset_keeps_its_warmup_and_plain_adam():
    model = kv.VAE(kv.networks.MLP((8,)), kv.networks.MLP((8,)), latent_dim=2, input_shape=(4,), likelihood="gaussian",
                   kl_warmup_steps=1000)
    model.compile()
    assert not model.optimizer.use_ema
    model.fit(np.random.default_rng(0).random((64, 4)).astype("float32"), epochs=1, batch_size=32, verbose=0)
    assert model.kl_warmup_steps == 1000  # its own choice: no recipe share to fit it to the run


def test_a_call_can_pass_its_own_recipe():
    model = kv.presets.mlp_vae(input_shape=(4,), latent_dim=2, hidden=(8,), recipe=Recipe(learning_rate=3e-4))
    model.compile()
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4) and not model.optimizer.use_ema


@pytest.mark.slow
def test_a_keras_script_and_kerasvae_train_end_with_the_same_weights_and_history(tmp_path):
    keras.utils.set_random_seed(0)
    x_train, _ = kv.data.load_arrays("digits", "train")
    x_test, _ = kv.data.load_arrays("digits", "test")
    train = kv.data.pipeline(x_train, binarize="dynamic", batch_size=128, shuffle=True, seed=0)
    test = kv.data.pipeline(x_test, binarize="static", batch_size=128, shuffle=False, seed=0)
    script = kv.presets.vae(input_shape=x_train.shape[1:], seed=0)
    script.compile()
    history = script.fit(train, epochs=2, validation_data=test, verbose=0).history

    cli, cli_history = training.train_run(tmp_path / "run", model="vae", dataset="digits", binarize="dynamic", epochs=2,
                                          seed=0, figures=False, verbose=0)
    assert script.kl_warmup_steps == cli.kl_warmup_steps == 9  # 40% of 2 epochs x 12 batches
    for name, values in history.items():
        np.testing.assert_allclose(cli_history[name], values, rtol=1e-5, err_msg=name)
    for ours, theirs in zip(script.weights, cli.weights, strict=True):
        np.testing.assert_allclose(np.asarray(theirs), np.asarray(ours), rtol=1e-5, atol=1e-6, err_msg=ours.path)
