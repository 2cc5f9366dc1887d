"""The `kerasvae` command answers before TensorFlow loads, and is quiet once it has (issue 21).

Speed is measured in benchmarks/cli_startup.py; here the cause is proven instead: these commands finish
in a process where importing TensorFlow fails.
"""

import os
import re
import subprocess
import sys

import pytest
from conftest import WITHOUT_TENSORFLOW

from kerasvae import logs

NO_TENSORFLOW = WITHOUT_TENSORFLOW + """
from kerasvae.cli import main
sys.exit(main(sys.argv[1:]))
"""
TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} |oneDNN|cuda|absl::InitializeLog|TensorFlow binary", re.IGNORECASE)


def run_without_tensorflow(*args):
    return subprocess.run([sys.executable, "-c", NO_TENSORFLOW, *args], capture_output=True, text=True, timeout=120)


def run(*args):
    return subprocess.run([sys.executable, "-m", "kerasvae.cli", *args], capture_output=True, text=True, timeout=600)


def test_help_and_version_need_no_tensorflow():
    result = run_without_tensorflow("--help")
    assert result.returncode == 0 and "train" in result.stdout and "serve" in result.stdout
    result = run_without_tensorflow("train", "--help")
    assert result.returncode == 0 and "(default: vae)" in " ".join(result.stdout.split())
    result = run_without_tensorflow("--version")
    assert result.returncode == 0 and re.fullmatch(r"kerasvae \d+\.\d+\.\d+\n", result.stdout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "vea", "--out", "x"], "invalid choice 'vea'; did you mean 'vae'?"),
        (["evaluate", "missing/"], "missing is not a kerasvae run folder: it does not exist"),
        (["evaluate", "."], ". is not a kerasvae run folder: missing model.keras, config.json"),
        (["anomaly", "missing/"], "kerasvae anomaly: missing is not a kerasvae run folder"),
        (["train", "--epochs", "0", "--out", "x"], "--epochs must be >= 1"),
        (["serve"], "the following arguments are required: saved_models"),
    ],
)
def test_bad_arguments_and_missing_paths_answer_without_tensorflow(args, message):
    result = run_without_tensorflow(*args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_filtered_stderr_drops_start_up_lines_and_keeps_the_rest(capfd):
    with logs.filtered_stderr():
        os.write(2, b"I0000 00:00:1.2 1 port.cc:153] oneDNN custom operations are on. You may see ...\n")
        os.write(2, b"E0000 00:00:1.3 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n")
        os.write(2, b"E0000 00:00:1.4 1 something.cc:1] a real error\n")
        print("a Python warning", file=sys.stderr)
    assert sorted(capfd.readouterr().err.splitlines()) == ["E0000 00:00:1.4 1 something.cc:1] a real error", "a Python warning"]


@pytest.mark.slow
def test_info_and_a_training_run_print_no_tensorflow_log_lines(tmp_path):
    info = run("info")
    train = run("train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2", "--out", str(tmp_path / "run"))
    for result in (info, train):
        assert result.returncode == 0, result.stderr
        noise = [line for line in result.stderr.splitlines() if TF_LOG_LINE.search(line)]
        assert not noise, noise
    assert f"{tmp_path / 'run'}" in train.stderr.splitlines()[-1]  # train ends by saying where its files went


def test_the_names_the_parser_offers_are_the_librarys():
    # kerasvae.choices keeps the names importable before TensorFlow; the preset and likelihood tables are the
    # lists it repeats.
    from kerasvae import choices, likelihoods, presets

    assert choices.PRESET_NAMES == tuple(presets.PRESETS)
    assert choices.LIKELIHOOD_NAMES == tuple(likelihoods.LIKELIHOODS)
