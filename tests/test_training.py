"""kerasvae.training: run folders survive crashes. Atomic writes, a history that continues after a resume,
`kerasvae train` killed by SIGKILL and run again finishing with every epoch once, a refused resume with other
settings, and a diverging run stopped with a message that names the non-finite term."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasvae import cli, training

pytestmark = pytest.mark.slow  # training runs, resumed and killed: the full suite runs them, `-m 'not slow'` does not


def test_atomic_write_replaces_whole_files_or_leaves_the_old_one(tmp_path):
    path = tmp_path / "latest.weights.h5"
    path.write_text("old")
    seen = []

    def torn_write(tmp):
        seen.append(tmp)
        Path(tmp).write_text("half a fi")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        training.atomic_write(path, torn_write)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["latest.weights.h5"]
    assert seen[0].endswith(".weights.h5")  # savers that check the suffix (Keras's save_weights) accept it
    training.write_json(path.with_name("history.json"), {"loss": [1.5]})
    assert json.loads(path.with_name("history.json").read_text()) == {"loss": [1.5]}


def test_history_writer_continues_a_resumed_run(tmp_path):
    # A run killed after epoch 3's history entry but before its backup resumes at epoch index 2: epoch 3 runs
    # again and must replace its first entry, not follow it.
    path = tmp_path / "history.json"
    training.write_json(path, {"loss": [3.0, 2.0, 1.5]})
    writer = training.HistoryWriter(path)
    for epoch, loss in [(2, 1.4), (3, 1.2)]:
        writer.on_epoch_begin(epoch)
        writer.on_epoch_end(epoch, {"loss": loss})
    assert json.loads(path.read_text()) == writer.history
    assert writer.history["loss"] == [3.0, 2.0, 1.4, 1.2]
    assert writer.history["epoch_seconds"][:2] == [None, None] and all(t >= 0 for t in writer.history["epoch_seconds"][2:])


def test_sigkill_then_the_same_command_finishes_with_every_epoch_once(tmp_path, capsys):
    out, epochs = tmp_path / "run", 3
    command = ["train", "--dataset", "digits", "--latent-dim", "4", "--batch-size", "64", "--epochs", str(epochs), "--out", str(out)]
    metadata = out / "backup" / "training_metadata.json"
    process = subprocess.Popen([sys.executable, "-m", "kerasvae.cli", *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    try:
        while not (metadata.is_file() and json.loads(metadata.read_text())["epoch"] >= 1):
            assert time.monotonic() < deadline and process.poll() is None, "no backup of epoch 1"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    resume_at = json.loads(metadata.read_text())["epoch"]
    before = json.loads((out / "history.json").read_text())
    assert resume_at <= len(before["loss"]) < epochs and not (out / "model.keras").exists()

    assert cli.main(command) == 0  # the same command, now in this process
    started = [int(n) for n in re.findall(rf"Epoch (\d+)/{epochs}", capsys.readouterr().out)]
    assert started == list(range(resume_at + 1, epochs + 1))  # resumed from the backup, not from scratch
    history = json.loads((out / "history.json").read_text())
    assert all(len(values) == epochs for values in history.values())  # each epoch exactly once
    assert history["loss"][:resume_at] == before["loss"][:resume_at]  # the killed run's epochs are kept
    assert history["loss"][-1] < history["loss"][0]
    assert not (out / "backup").exists() and not list(out.glob(".*"))  # no backup, no temporary files left
    model = keras.saving.load_model(out / "model.keras")
    x, _ = training.test_images(json.loads((out / "config.json").read_text()))
    test_loss = -float(np.mean(model.log_likelihood(x, num_samples=model.num_samples, seed=0)))  # val_loss's bound
    assert test_loss == pytest.approx(history["val_loss"][-1], rel=0.05)


def test_resuming_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "run"
    (out / "backup").mkdir(parents=True)
    config = {"model": "vae", "dataset": "digits", "binarize": None, "likelihood": "logistic", "epochs": 3, "latent_dim": 4,
              "batch_size": 128, "learning_rate": 0.001, "weight_averaging": 0.999, "early_stopping": None, "validation": "test",
              "seed": 0, "input_shape": [8, 8, 1], "model_class": "VAE", "precision": "float32"}
    training.write_json(out / "config.json", {**config, "learning_rate": 0.01})
    with pytest.raises(ValueError, match=r"other settings \(learning_rate 0.01 -> 0.001\).*delete .*backup"):
        training.train_run(out, epochs=5, latent_dim=4, batch_size=128, figures=False)
    # A run from before config.json named the likelihood trained the presets' Bernoulli, not what auto picks now.
    training.write_json(out / "config.json", {k: v for k, v in config.items() if k != "likelihood"})
    with pytest.raises(ValueError, match=r"other settings \(likelihood 'bernoulli' -> 'logistic'\)"):
        training.train_run(out, epochs=5, latent_dim=4, batch_size=128, figures=False)


def test_divergence_stops_with_the_term_and_the_fix(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"diverged in epoch 1, batch \d+: .*(kl|reconstruction) = (nan|inf).*--learning-rate, now 1e\+08"):
        training.train_run(out, epochs=2, latent_dim=4, batch_size=256, learning_rate=1e8, figures=False, verbose=0)
    history = json.loads((out / "history.json").read_text())
    assert not np.isfinite(history["loss"][-1])  # the diverged epoch is on record
    assert not (out / "model.keras").exists() and not (out / "backup").exists()  # nothing to resume into NaNs


def test_info_reports_devices_versions_and_acceleration(capsys):
    assert cli.main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"tensorflow", "keras", "tensorflow_probability", "gpus", "xla_auto_jit", "onednn"} <= set(info)
    assert any("CPU" in device for device in info["devices"]) and info["dtype_policy"] == "float32"
    flags = Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else ""
    assert info["cpu_bfloat16"] == ("avx512_bf16" in flags or "amx_bf16" in flags)
    if not info["gpus"]:  # bfloat16 where the CPU multiplies it natively (AVX512_BF16, AMX), else float32
        assert info["suggested_precision"] == ("mixed_bfloat16" if info["cpu_bfloat16"] else "float32")


def test_the_presets_training_defaults_fill_what_the_command_leaves_unset(tmp_path, monkeypatch):
    import doctest

    from kerasvae import presets

    assert doctest.testmod(presets).failed == 0
    assert presets.training_defaults("vae-best")["epochs"] == 45 and presets.training_defaults("mlp_vae")["epochs"] == 10
    assert presets.training_defaults("vae")["weight_averaging"] == 0.999 and presets.training_defaults("mlp-vae")["weight_averaging"] == 0.999
    assert presets.training_defaults("mlp-vae")["learning_rate"] == 5e-4
    assert presets.training_defaults("denoising-ae")["weight_averaging"] is None
    with pytest.raises(ValueError, match="Unknown model"):
        presets.training_defaults("transformer")
    monkeypatch.setattr(presets.mlp_vae, "recipe", presets.mlp_vae.recipe.replace(epochs=2, batch_size=500))
    base = ["train", "--model", "mlp-vae", "--dataset", "digits", "--latent-dim", "2"]
    assert cli.main([*base, "--out", str(tmp_path / "tuned")]) == 0
    told_args = ["--batch-size", "100", "--learning-rate", "0.01", "--weight-averaging", "0.99"]
    assert cli.main([*base, *told_args, "--out", str(tmp_path / "told")]) == 0
    tuned, told = (json.loads((tmp_path / run / "config.json").read_text()) for run in ("tuned", "told"))
    assert (tuned["epochs"], tuned["batch_size"], tuned["learning_rate"], tuned["weight_averaging"]) == (2, 500, 5e-4, 0.999)
    assert (told["epochs"], told["batch_size"], told["learning_rate"], told["weight_averaging"]) == (2, 100, 0.01, 0.99)
    # the preset's epoch count reached fit, not only config.json
    assert len(json.loads((tmp_path / "tuned" / "history.json").read_text())["loss"]) == 2


def test_vae_best_is_the_vae_with_a_vamp_prior_and_saves_whole(tmp_path):
    import kerasvae as kv

    model = kv.presets.get("vae-best")(input_shape=(8, 8, 1), latent_dim=4, seed=0)
    assert isinstance(model.prior_layer, kv.priors.VampPrior) and model.prior_layer.num_components == 500
    assert model.num_samples == 5 and model.encoder.units == (1024, 512)  # IWAE-5: IWAE-10 would not fit its hour
    assert model.gradient_estimator == "reparameterized" and not model.decoder.input_skip  # as measured over its 45 epochs
    default = kv.presets.vae()
    assert default.num_samples == 10 and default.gradient_estimator == "dreg"
    assert default.encoder.filters == (32, 64, 128) and default.encoder.dense_units == 512
    assert default.decoder.units == (512, 1024, 1024) and default.decoder.input_skip
    x = np.random.default_rng(0).integers(0, 2, (6, 8, 8, 1)).astype("float32")
    model.save(tmp_path / "best.keras")
    reloaded = kv.saving.load_model(tmp_path / "best.keras")
    np.testing.assert_allclose(reloaded.elbo(x, seed=1), model.elbo(x, seed=1), rtol=1e-5)


def test_validation_sees_the_weight_average_that_fit_ends_with(binary_digits):
    import kerasvae as kv

    x_train, _, x_test, _ = binary_digits
    seen = {}

    class Probe(keras.callbacks.Callback):  # after ValidateAveragedWeights in the list: sees what validation sees
        def on_test_begin(self, logs=None):
            seen["validated"] = [np.asarray(w) for w in self.model.trainable_weights]
            seen["average"] = [np.asarray(v) for v in self.model.optimizer._model_variables_moving_average]

        def on_epoch_end(self, epoch, logs=None):
            seen["trained"] = [np.asarray(w) for w in self.model.trainable_weights]

    model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4, hidden=(64, 32), seed=0)
    model.compile(optimizer=kv.optimizers.Adam(3e-3, use_ema=True, ema_momentum=0.999))
    train, val = (kv.data.pipeline(x, batch_size=64, shuffle=False) for x in (x_train, x_test))
    keras.utils.set_random_seed(0)
    history = model.fit(train, validation_data=val, epochs=2, verbose=0, callbacks=[training.ValidateAveragedWeights(), Probe()])
    for validated, average in zip(seen["validated"], seen["average"]):
        np.testing.assert_array_equal(validated, average)
    assert not all(np.array_equal(a, b) for a, b in zip(seen["trained"], seen["average"]))  # trained on the last step's
    for final, average in zip(model.trainable_weights, seen["average"]):
        np.testing.assert_array_equal(final, average)  # and fit ended with the average that was validated
    assert model.evaluate(val, verbose=0, return_dict=True)["loss"] == pytest.approx(history.history["val_loss"][-1], rel=0.01)


def test_a_short_run_shortens_the_presets_kl_warm_up_and_ends_on_the_full_bound(tmp_path):
    import kerasvae as kv

    assert kv.presets.vae().kl_warmup_steps == 5000  # 36% of 30 Fashion-MNIST epochs: unchanged there
    model, _ = training.train_run(tmp_path / "run", model="vae", dataset="digits", epochs=3, latent_dim=4, figures=False, verbose=0)
    run_steps = 3 * int(np.ceil(len(kv.data.load_arrays("digits", "train")[0]) / 128))
    assert model.kl_warmup_steps == int(0.4 * run_steps) and int(model.optimizer.iterations) == run_steps
    assert float(model.kl_weight(training=True)) == 1.0  # with 5,000 steps it would end at 0.007
    assert kv.saving.load_model(tmp_path / "run" / "model.keras").kl_warmup_steps == model.kl_warmup_steps


def test_early_stopping_ends_on_the_best_validated_weight_average(binary_digits):
    import kerasvae as kv

    x_train, _, x_test, _ = binary_digits
    averages = []

    class Probe(keras.callbacks.Callback):  # after ValidateAveragedWeights in the list: sees what validation sees
        def on_test_begin(self, logs=None):
            averages.append([np.asarray(w) for w in self.model.trainable_weights])

    # 128 training images and a network far too big for them: the held-out loss bottoms out, then climbs.
    model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=8, hidden=(512, 256), seed=0)
    model.compile(optimizer=kv.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9))
    train, val = kv.data.pipeline(x_train[:128], batch_size=64, shuffle=False), kv.data.pipeline(x_test, batch_size=512, shuffle=False)
    stopper = training.StopAtBestValidation(patience=10)
    keras.utils.set_random_seed(0)
    history = model.fit(train, validation_data=val, epochs=300, verbose=0,
                        callbacks=[training.ValidateAveragedWeights(), Probe(), stopper]).history["val_loss"]
    best = int(np.argmin(history))
    assert len(history) < 300 and len(history) - 1 - best == 10  # stopped 10 epochs after the best, long before 300
    assert history[best] < history[0] - 5 and history[best] < min(history[best + 1:])
    for final, validated in zip(model.trainable_weights, averages[best]):
        np.testing.assert_array_equal(final, validated)  # the best epoch's weight average, the weights that scored best


def test_stock_early_stopping_and_checkpoints_keep_the_weight_average_that_validation_scored(binary_digits, tmp_path):
    """Keras's own callbacks in a user's `fit` with a weight average. They snapshot the model at
    `on_epoch_end`, where it held the last step's weights again: EarlyStopping(restore_best_weights=True)
    ended, and ModelCheckpoint(save_best_only=True) saved, weights no validation scored. BackupAndRestore
    must still save the trained weights, which a resumed run continues from."""
    import kerasvae as kv

    x_train, _, x_test, _ = binary_digits
    averages, trained = [], []

    class Probe(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):  # the average validation scores, wherever the probe is listed
            averages.append([np.asarray(v) for v in self.model.optimizer._model_variables_moving_average])

        def on_train_batch_end(self, batch, logs=None):
            trained[:] = [np.asarray(w) for w in self.model.trainable_weights]

    # The overfitting set-up of the test above: the held-out loss bottoms out, then climbs.
    model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=8, hidden=(512, 256), seed=0)
    model.compile(optimizer=kv.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9))
    train, val = kv.data.pipeline(x_train[:128], batch_size=64, shuffle=False), kv.data.pipeline(x_test, batch_size=512, shuffle=False)
    callbacks = [Probe(), keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True),
                 keras.callbacks.ModelCheckpoint(tmp_path / "best.keras", save_best_only=True),
                 keras.callbacks.BackupAndRestore(tmp_path / "backup", delete_checkpoint=False)]
    keras.utils.set_random_seed(0)
    history = model.fit(train, validation_data=val, epochs=300, verbose=0, callbacks=callbacks).history["val_loss"]
    best = int(np.argmin(history))
    assert len(history) < 300 and len(history) - 1 - best == 5 and history[best] < history[0] - 5
    checkpoint = kv.saving.load_model(tmp_path / "best.keras")
    for final, saved, validated in zip(model.trainable_weights, checkpoint.trainable_weights, averages[best]):
        np.testing.assert_array_equal(final, validated)
        np.testing.assert_array_equal(saved, validated)
    backup = kv.saving.load_model(tmp_path / "best.keras")
    backup.load_weights(tmp_path / "backup" / "latest.weights.h5")
    for resumed, last_step, validated in zip(backup.trainable_weights, trained, averages[-1]):
        np.testing.assert_array_equal(resumed, last_step)
    assert not all(np.array_equal(a, b) for a, b in zip(trained, averages[-1]))  # the two differ


def test_a_fit_that_raises_while_callbacks_see_the_average_keeps_the_trained_weights(binary_digits):
    """Keras's fit has no finally: a callback raising at on_epoch_end, after the average went in, would leave
    the model on it, and a next fit would train on from the average. Keras's SwapEMAWeights swaps by itself,
    so callbacks holding one are left as they are (two swaps would trade the average for the weights)."""
    import kerasvae as kv

    trained = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            trained[:] = [np.asarray(w) for w in self.model.trainable_weights]

    class Fails(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise OSError("disk full")

    model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), seed=0)
    model.compile(optimizer=kv.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9))
    with pytest.raises(OSError, match="disk full"):
        model.fit(binary_digits[0][:256], epochs=2, batch_size=64, verbose=0, callbacks=[Probe(), Fails()])
    average = model.optimizer._model_variables_moving_average
    for weight, last_step in zip(model.trainable_weights, trained):
        np.testing.assert_array_equal(weight, last_step)
    assert not all(np.array_equal(a, b) for a, b in zip(average, trained))
    swapper = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    assert kv.callbacks.with_weight_average([swapper]) == [swapper]


def test_a_resumed_early_stopping_counts_from_the_history_and_keeps_the_saved_best(tmp_path):
    best_weights = [np.full((2, 2), 7.0, np.float32), np.arange(3, dtype=np.float32)]
    np.savez(tmp_path / "best.npz", *best_weights)
    training.write_json(tmp_path / "history.json", {"val_loss": [5.0, 3.0, 4.0, 9.0]})  # epoch 3 ran again: ignored
    stopper = training.StopAtBestValidation(patience=2, best_path=tmp_path / "best.npz", history_path=tmp_path / "history.json")
    stopper.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    stopper.on_train_begin()
    stopper.on_epoch_begin(3)  # resumed after epochs 0-2: best 3.0 at epoch 1, one epoch without improvement since
    assert (stopper.best, stopper.best_epoch, stopper.wait) == (3.0, 1, 1)
    for kept, saved in zip(stopper.best_weights, best_weights):
        np.testing.assert_array_equal(kept, saved)
    stopper.on_epoch_end(3, {"val_loss": 3.5})  # the second epoch without improvement: patience 2 is spent
    assert stopper.model.stop_training and stopper.stopped_epoch == 3


def test_train_run_with_early_stopping_holds_out_the_last_sixth_of_the_training_images(tmp_path):
    import kerasvae as kv

    out = tmp_path / "run"
    model, history = training.train_run(out, model="mlp-vae", dataset="digits", epochs=4, latent_dim=4, early_stopping=2,
                                        learning_rate=3e-3, figures=False, verbose=0)
    x_train, _ = kv.data.load_arrays("digits", "train")
    config = json.loads((out / "config.json").read_text())
    held_out = round(len(x_train) / 6)
    assert (config["early_stopping"], config["validation"]) == (2, f"train[{len(x_train) - held_out}:]")
    x_held_out, _ = kv.data.load_arrays("digits", config["validation"])
    np.testing.assert_array_equal(x_held_out, x_train[-held_out:])
    assert int(model.optimizer.iterations) == len(history["loss"]) * int(np.ceil((len(x_train) - held_out) / 128))
    saved = keras.saving.load_model(out / "model.keras")
    held_out_loss = saved.evaluate(kv.data.pipeline(x_held_out, shuffle=False), verbose=0, return_dict=True)["loss"]
    assert held_out_loss == pytest.approx(min(history["val_loss"]), rel=0.02)  # validation was on these images, best kept
    assert not (out / "backup").exists()


def test_train_run_on_one_class_trains_and_validates_on_it_and_records_it(tmp_path):
    import kerasvae as kv

    out = tmp_path / "run"
    model, history = training.train_run(out, model="mlp-vae", dataset="digits", classes=3, epochs=2, latent_dim=2, early_stopping=2,
                                        batch_size=32, learning_rate=3e-3, figures=False, verbose=0)
    config = json.loads((out / "config.json").read_text())
    x3, _ = kv.data.load_arrays("digits", "train", classes=[3])
    held_out = round(len(x3) / 6)
    assert (config["classes"], config["validation"]) == ([3], f"train[{len(x3) - held_out}:]")
    assert int(model.optimizer.iterations) == 2 * int(np.ceil((len(x3) - held_out) / 32))  # the threes only
    x_val, _ = kv.data.load_arrays("digits", config["validation"], classes=config["classes"])
    np.testing.assert_array_equal(x_val, x3[-held_out:])
    saved = keras.saving.load_model(out / "model.keras")
    val_loss = saved.evaluate(kv.data.pipeline(x_val, shuffle=False), verbose=0, return_dict=True)["loss"]
    # validated on the held-out threes: one-sample bounds on 24 images vary by a few %, other digits score ~50% worse
    assert val_loss == pytest.approx(min(history["val_loss"]), rel=0.1)
    x_test, y_test = training.test_images(config)  # scoring still sees every class
    assert x_test.shape == (360, 8, 8, 1) and set(y_test) == set(range(10))
    x_normal, y_normal = training.test_images(config, "train", limit=50, classes=config["classes"])
    assert len(x_normal) == 50 and set(y_normal) == {3}


def test_train_run_starts_a_data_vamp_prior_from_the_training_images(tmp_path, digits):
    """The hvae preset's pseudo-inputs start from grey training images drawn with the run's seed, as
    benchmarks/hvae.py measured it (learning rate 0 keeps them where the run put them)."""
    model, _ = training.train_run(tmp_path / "run", model="hvae", dataset="digits", binarize="dynamic", epochs=1,
                                  learning_rate=1e-12, seed=3, figures=False, verbose=0)
    x_train = digits[0]
    chosen = np.random.default_rng(3).choice(len(x_train), model.prior_layer.num_components, replace=False)
    np.testing.assert_allclose(model.prior_layer.pseudo_inputs.numpy(), x_train[chosen], atol=1e-6)
