"""The fused Adam is Keras's Adam: same updates on the same gradients, same config, same handling of
what surrounds the update (schedules, clipping); and the models compile with it by default."""

import keras
import numpy as np
import pytest

import kerasvae as kv
from kerasvae import optimizers


def _trajectory(optimizer, steps=5):
    rng = np.random.default_rng(0)
    weights = [keras.Variable(rng.normal(size=(6, 3)).astype("float32")), keras.Variable(np.zeros(3, "float32"))]
    for _ in range(steps):
        optimizer.apply([rng.normal(size=w.shape).astype("float32") for w in weights], weights)
    return [np.asarray(w) for w in weights]


@pytest.mark.parametrize(
    "options",
    [{"learning_rate": 0.01}, {"learning_rate": 0.01, "beta_1": 0.5, "epsilon": 1e-3}, {"learning_rate": 0.05, "clipnorm": 0.5},
     {"learning_rate": keras.optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)}, {"learning_rate": 0.01, "amsgrad": True}],
)
def test_fused_adam_makes_kerass_updates(options):
    fused = _trajectory(optimizers.Adam(**options))
    reference = _trajectory(keras.optimizers.Adam(**options))
    for a, b in zip(fused, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(reference[0], _trajectory(keras.optimizers.SGD(0.0))[0])  # the updates did move the weights


def test_models_compile_with_the_fused_adam_by_default():
    model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,))
    model.compile()
    assert type(model.optimizer) is optimizers.Adam  # the preset's recipe: Adam 5e-4 with a weight average
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-4) and model.optimizer.use_ema
    model.compile(optimizer="adam")
    assert type(model.optimizer) is optimizers.Adam
    model.compile(optimizer="sgd")
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizers.Adam(2e-3)))
    assert type(restored) is optimizers.Adam and restored.get_config()["learning_rate"] == pytest.approx(2e-3)



def test_a_saved_model_loads_compiled_with_its_optimizer_state(tmp_path):
    x = (np.random.default_rng(0).random((64, 8, 8, 1)) > 0.5).astype("float32")
    model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0)
    model.compile(optimizer=optimizers.Adam(2e-3))
    model.fit(x, epochs=2, batch_size=16, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = kv.saving.load_model(tmp_path / "model.keras")
    assert type(restored.optimizer) is optimizers.Adam and int(restored.optimizer.iterations) == 8
    for a, b in zip(restored.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    restored.fit(x, epochs=1, batch_size=16, verbose=0)
    assert int(restored.optimizer.iterations) == 12


def test_the_weight_average_warms_its_momentum_up_as_tensorflows_moving_average():
    # average_t = m_t average_{t-1} + (1 - m_t) w_t with m_t = min(0.9, (1 + t) / (10 + t)), m_0 = 0, by hand
    optimizer = optimizers.Adam(0.1, use_ema=True, ema_momentum=0.9)
    weight = keras.Variable(np.zeros(3, "float32"))
    average = None
    for t in range(40):
        optimizer.apply([np.ones(3, "float32")], [weight])
        momentum = 0.0 if t == 0 else min(0.9, (1 + t) / (10 + t))
        average = np.asarray(weight) if average is None else momentum * average + (1 - momentum) * np.asarray(weight)
    np.testing.assert_allclose(np.asarray(optimizer._model_variables_moving_average[0]), average, rtol=1e-5)
    assert not np.allclose(average, np.asarray(weight))


def test_fit_ends_with_the_averaged_weights_which_a_short_run_has_moved_off_its_start(binary_digits):
    x_train, _, x_test, _ = binary_digits

    def test_loss(model):
        return -float(np.mean(model.elbo(x_test, seed=0)))

    def trained(optimizer):  # (test loss of the weights fit ends with, of the last step's weights)
        model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4, hidden=(64, 32), seed=0)
        model.compile(optimizer=optimizer)
        last_step = LastWeights()
        keras.utils.set_random_seed(0)
        model.fit(x_train, epochs=3, batch_size=64, verbose=0, callbacks=[last_step])
        final = test_loss(model)
        model.set_weights(last_step.weights)
        return final, test_loss(model)

    # 3 epochs of 23 steps: the warmed-up average covers the run's last steps and tests as well as the last
    # weights; Keras's fixed momentum 0.999 would keep about 93% of the first step's weights.
    averaged, last = trained(optimizers.Adam(3e-3, use_ema=True, ema_momentum=0.999))
    fixed, _ = trained(keras.optimizers.Adam(3e-3, use_ema=True, ema_momentum=0.999))
    untrained = test_loss(kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4, hidden=(64, 32), seed=0))
    print(f"test loss: averaged {averaged:.2f}, last step {last:.2f}, Keras's fixed momentum {fixed:.2f}, untrained {untrained:.2f}")
    assert averaged != last and averaged < last + 0.5 and averaged < untrained - 10
    assert fixed > averaged + 5


class LastWeights(keras.callbacks.Callback):
    """The weights after the last step (fit replaces them with the average after its last epoch ends; its
    callbacks see the average at each epoch's end)."""

    def on_train_batch_end(self, batch, logs=None):
        self.weights = self.model.get_weights()
