"""The kerasvae command: a run folder from `train`, JSON from `evaluate`, the demo, and one-line errors
with exit status 2."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from kerasvae import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "kerasvae.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = cli.main(["train", "--dataset", "digits", "--binarize", "dynamic", "--epochs", "3", "--latent-dim", "4", "--out", str(out)])
    assert code == 0
    return out


def test_train_writes_the_run_folder(run_folder):
    for name in ("model.keras", "config.json", "history.json", "reconstructions.png", "samples.png", "latent_map.png"):
        assert (run_folder / name).stat().st_size > 0, name
    history = json.loads((run_folder / "history.json").read_text())
    assert len(history["loss"]) == 3 and "val_elbo" in history
    assert json.loads((run_folder / "config.json").read_text())["binarize"] == "dynamic"
    assert any((run_folder / "logs").rglob("*tfevents*"))


def test_train_refuses_to_overwrite_a_finished_run(run_folder, capsys):
    before = (run_folder / "model.keras").read_bytes()
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(run_folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "finished run" in err and "--force" in err
    assert (run_folder / "model.keras").read_bytes() == before


def test_train_likelihood_sets_the_saved_models_head_and_auto_chooses_by_the_data(tmp_path):
    from kerasvae import likelihoods, training

    expected = {(): (likelihoods.DiscretizedLogistic, "logistic"),  # auto: digits are 17 grey levels in [0, 1]
                ("--binarize", "static"): (likelihoods.Bernoulli, "bernoulli"),  # auto: binary images
                ("--likelihood", "gaussian"): (likelihoods.Gaussian, "gaussian")}
    for option, (head, name) in expected.items():
        out = tmp_path / ("-".join(option) or "default")
        assert cli.main(["train", "--model", "mlp-vae", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2",
                         "--batch-size", "256", "--quiet", "--out", str(out), *option]) == 0
        model, config = training.load_run(out)
        assert type(model.likelihood) is head and config.likelihood == name, option


@pytest.mark.slow
def test_train_force_trains_over_a_finished_run(run_folder, tmp_path):
    out = shutil.copytree(run_folder, tmp_path / "run")
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "4", "--out", str(out), "--force"]) == 0
    assert len(json.loads((out / "history.json").read_text())["loss"]) == 1


@pytest.mark.slow
def test_evaluate_prints_one_json_object(run_folder):
    result = run("evaluate", str(run_folder), "--num-samples", "50", "--limit", "100")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"elbo", "nll", "bits_per_dim", "reconstruction", "kl", "active_units"} <= set(report)
    assert report["num_examples"] == 100 and report["nll"] < -report["elbo"]


def test_evaluate_reports_progress_on_stderr_unless_quiet(run_folder, capsys):
    assert cli.main(["evaluate", str(run_folder), "--num-samples", "5", "--limit", "20"]) == 0
    out, err = capsys.readouterr()
    assert "IWAE NLL, k=5: 20/20 images (100%)" in err and json.loads(out)["nll"] > 0
    assert cli.main(["evaluate", str(run_folder), "--num-samples", "5", "--limit", "20", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "IWAE NLL" not in err and json.loads(out)["nll"] > 0
    float32 = json.loads(out)
    assert cli.main(["evaluate", str(run_folder), "--num-samples", "5", "--limit", "20", "--quiet", "--precision", "bfloat16"]) == 0
    half = json.loads(capsys.readouterr().out)  # the same draws through a bfloat16 decoder: close, said so
    assert half["nll_precision"] == "bfloat16" and "nll_precision" not in float32
    assert half["nll"] != float32["nll"] and abs(half["nll"] - float32["nll"]) < 0.01 * float32["nll"]


def test_sample_and_reconstruct_write_pngs(run_folder, tmp_path):
    assert cli.main(["sample", str(run_folder), "--num", "8", "--output", str(tmp_path / "s.png")]) == 0
    assert cli.main(["reconstruct", str(run_folder), "--num", "8", "--output", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "r.png").stat().st_size > 0


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    result = run("demo", "--dataset", "digits", "--epochs", "2", "--out", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert "IWAE NLL" in result.stdout and (tmp_path / "demo" / "samples.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "no/such/run"], "not a kerasvae run folder"),
        (["train", "--dataset", "no-such.npy", "--out", "x"], "no-such.npy"),
        (["train", "--dataset", "fashion_mnst", "--out", "x"], "did you mean 'fashion_mnist'?"),
        (["train", "--epochs", "0", "--out", "x"], "--epochs must be >= 1"),
        (["train", "--model", "transformer", "--out", "x"], "invalid choice"),
        (["train", "--weight-averaging", "1.5", "--out", "x"], "weight_averaging must be a momentum in (0, 1)"),
        (["train", "--early-stopping", "-2", "--out", "x"], "early_stopping must be a patience of at least 1 epoch"),
        (["train", "--out", "x", "--bogus"], "kerasvae train: error: unrecognized arguments: --bogus"),
        (["export", "run", "--to"], "kerasvae export: error: argument --to: expected one argument"),
        (["export", "missing.keras", "--to", "x"], "kerasvae export: No model file missing.keras"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_on_stderr_and_exit_2(args, message, tmp_path):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    # one line, argparse's errors included (no usage block), naming the subcommand; TF's start-up log aside
    ours = [line for line in result.stderr.splitlines() if line.startswith("kerasvae ") or line.startswith("usage:")]
    assert len(ours) == 1 and message in ours[0]


def test_help_shows_every_default():
    from kerasvae.cli import build_parser

    options = build_parser().commands.choices["train"].format_help().split("options:")[1]
    entries = {entry.split()[0]: " ".join(entry.split()) for entry in re.split(r"\n  (?=-)", options) if entry.strip()}
    for option, default in (("--model", "vae"), ("--dataset", "digits"), ("--seed", "0"), ("--precision", "float32"),
                            ("--likelihood", "auto")):
        assert f"(default: {default})" in entries[option], entries[option]
    export = " ".join(build_parser().commands.choices["export"].format_help().split())
    assert "(default: 1)" in export  # --tflite-batch


def test_help_names_every_presets_own_recipe():
    """The train options' help quotes the presets' recipes without importing TensorFlow, so it is written out by
    hand; this reads the recipes and fails when a preset's own value is missing from it."""
    from collections import Counter

    import kerasvae as kv
    from kerasvae.choices import IMAGE_PRESET_NAMES
    from kerasvae.cli import build_parser

    options = build_parser().commands.choices["train"].format_help().split("options:")[1]
    entries = {entry.split()[0]: " ".join(entry.split()) for entry in re.split(r"\n  (?=-)", options) if entry.strip()}

    def written(value):  # as the help writes numbers: 10, 0.999, 5e-4
        return "off" if value is None else f"{value:.0e}".replace("e-0", "e-") if 0 < value < 1e-2 else f"{value:g}"

    recipes = {name.replace("_", "-"): kv.presets.get(name).recipe for name in IMAGE_PRESET_NAMES}
    for field in ("epochs", "batch_size", "learning_rate", "weight_averaging"):
        help_text = entries["--" + field.replace("_", "-")].replace("- ", "-")  # argparse wraps at hyphens
        values = {name: getattr(recipe, field) for name, recipe in recipes.items()}
        common = Counter(values.values()).most_common(1)[0][0]
        assert written(common) in help_text, (field, help_text)
        for name, value in values.items():
            if value != common:
                assert re.search(rf"\b{re.escape(name)}\b", help_text) and written(value) in help_text, (field, name, help_text)


def test_info_reports_versions_and_devices():
    result = run("info")
    info = json.loads(result.stdout)
    assert result.returncode == 0 and info["keras_backend"] == "tensorflow" and info["devices"]
