"""How long the `kerasvae` command takes to answer when it has no TensorFlow work to do (issue 21).

Each command runs in a fresh process, ROUNDS times, the commands interleaved round by round; the table gives
the median wall time and its ratio to `python -c pass` (the interpreter's own start) measured in the same
run, with `import tensorflow` and `import kerasvae` beside them for scale.

    python benchmarks/cli_startup.py [--rounds 7]
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "kerasvae --help": ["kerasvae", "--help"],
    "kerasvae --version": ["kerasvae", "--version"],
    "kerasvae train --model vea --out x": ["kerasvae", "train", "--model", "vea", "--out", "x"],
    "kerasvae evaluate missing/": ["kerasvae", "evaluate", "missing/"],
    "import kerasvae": [sys.executable, "-c", "import kerasvae"],
    "from kerasvae.serving import RestClient": [sys.executable, "-c", "from kerasvae.serving import RestClient"],
    "import tensorflow (reference)": [sys.executable, "-c", "import tensorflow"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("kerasvae") is None:
        sys.exit("kerasvae is not on PATH: pip install -e . first")
    seconds = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=False)
            seconds[name].append(time.perf_counter() - start)
    base = statistics.median(seconds["python -c pass"])
    print(f"| command | median wall time (s), {args.rounds} rounds | ratio to `python -c pass` |")
    print("|---|---:|---:|")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.3f} | {median / base:.1f}x |")


if __name__ == "__main__":
    main()
