"""What each TFLite decoder mode costs and keeps, for an MLP and a conv VAE: file size, PSNR of `mean`
against the SavedModel, and the latency of a batch-1 call on one thread in LiteRT's Python interpreter
(from the export's report.json) and in LiteRT.js (@litertjs/core, wasm CPU, headless Chromium), with
each mode's latency as a ratio to float32 in the same run.

    python benchmarks/tflite_modes.py                       # Fashion-MNIST when installed, else digits
    python benchmarks/tflite_modes.py --dataset digits --out /tmp/tflite_modes

Trains `mlp-vae` for 2 epochs and `conv-vae` for 1 with the command line, exports all four modes, and
times LiteRT.js over --calls calls (the page clock is coarsened to 0.1 ms, so the mean of the whole loop is
reported). Prints a markdown table. About 3 minutes on 2 cores with Fashion-MNIST.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import browser_harness  # noqa: E402

from kerasvae import data  # noqa: E402
from kerasvae.cli import main  # noqa: E402

MODELS = {"mlp-vae": 2, "conv-vae": 1}


def measure(dataset, out, calls):
    rows = []
    for model, epochs in MODELS.items():
        run, saved = out / f"run_{model}", out / "saved" / model.replace("-", "_")
        extra = ["--binarize", "dynamic"] if dataset != "digits" else []
        assert main(["train", "--model", model, "--dataset", dataset, *extra, "--epochs", str(epochs), "--out", str(run), "--force"]) == 0
        assert main(["export", str(run), "--to", str(saved), "--tflite", "float32,dynamic,float16,int8", "--force", "--version", "1"]) == 0
        report = json.loads((saved / "tflite" / "report.json").read_text())
        sidecar = json.loads((saved / "tflite" / "model.json").read_text())
        z = np.random.default_rng(0).standard_normal((1, sidecar["latent_dim"])).astype(np.float32)
        modes = [m for m, e in report["decoder"].items() if e["offered"]]
        jobs = [{"runtime": "litertjs", "file": str(saved / "tflite" / report["decoder"][m]["file"]), "signature": "decode",
                 "inputs": {"z": z}, "repeats": calls} for m in modes]
        browser = dict(zip(modes, browser_harness.run(jobs)))
        for mode, entry in report["decoder"].items():
            js = browser.get(mode, {}).get("mean_latency_ms")
            rows.append({
                "model": model, "mode": mode, "offered": entry["offered"], "size_kib": entry["size_bytes"] / 1024,
                "size_ratio": entry["size_bytes"] / report["decoder"]["float32"]["size_bytes"],
                "psnr_db": entry["psnr_db"], "max_abs_error": entry["max_abs_error"],
                "activations": entry.get("activations"), "litert_ms": entry["latency_ms"],
                "litert_ratio": entry["latency_ms"] / report["decoder"]["float32"]["latency_ms"],
                "litertjs_ms": js, "recommended": mode == report["recommended_mode"],
            })
        for row in rows[-len(report["decoder"]):]:
            base = next(r["litertjs_ms"] for r in rows if r["model"] == model and r["mode"] == "float32")
            row["litertjs_ratio"] = None if row["litertjs_ms"] is None else row["litertjs_ms"] / base
    return rows


def table(rows):
    lines = ["| decoder | mode | size KiB (x float32) | PSNR dB | max error | LiteRT Python ms (x float32) | LiteRT.js ms (x float32) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        mode = r["mode"] + (" (recommended)" if r["recommended"] else "") + ("" if r["offered"] else " (withdrawn)")
        js = "-" if r["litertjs_ms"] is None else f"{r['litertjs_ms']:.3f} ({r['litertjs_ratio']:.2f})"
        lines.append(f"| {r['model']} | {mode} | {r['size_kib']:.0f} ({r['size_ratio']:.2f}) | {r['psnr_db']:.1f} | "
                     f"{r['max_abs_error']:.4f} | {r['litert_ms']:.3f} ({r['litert_ratio']:.2f}) | {js} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist" if data.fashion_mnist_available() else "digits")
    parser.add_argument("--out", default=None)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    reason = browser_harness.unavailable()
    if reason:
        sys.exit(f"tflite_modes: {reason}")
    out = Path(args.out or tempfile.mkdtemp(prefix="tflite_modes_"))
    rows = measure(args.dataset, out, args.calls)
    (out / "tflite_modes.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{args.dataset}, {out / 'tflite_modes.json'}\n")
    print(table(rows))
