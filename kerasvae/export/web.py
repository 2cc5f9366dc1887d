"""A static browser demo of a TFLite decoder: `kerasvae export ... --web` writes it beside the decoders.

`write_web_demo(tflite_dir)` copies index.html, demo.js and demo.css (package data in kerasvae/export/web/)
into the folder that holds model.json and the decoder files, copies the LiteRT.js runtime into
`litert/`, and writes `demo_config.json` (the decoder file the page loads). Serve the folder with
`python -m http.server -d <tflite_dir>` and open http://localhost:8000/: no CDN, no build step, no network.

The page decodes every image in the browser with LiteRT.js (the WebAssembly CPU path, XNNPack), one call
of the batch-1 `decode` signature per image:
    - a grid of samples from the prior, reproducible from a seed (`prior_draws` below is the same draw
      in Python), or rows of model.json's demo.prior_samples for priors other than N(0, I);
    - sliders for the most informative latent dimensions (model.json demo.informative_dims) that move
      the selected sample's z and redraw it live;
    - an interpolation strip, linear in z, between two samples of the grid;
    - a class selector for conditional models (the decoder's `label` input).
It shows the model, the decoder file and its size, and the runtime's per-call latency.

Seeded draws (page and `prior_draws`): mulberry32 seeded with the seed as an unsigned 32-bit integer gives
uniforms u = next() / 2**32; each pair (u1, u2) gives two normals by Box-Muller,
sqrt(-2 ln(1 - u1)) * cos(2 pi u2) and sqrt(-2 ln(1 - u1)) * sin(2 pi u2), filling the grid's latents
row by row; each value is then rounded to float32 (the decoder's input type). For priors other than
"normal", sample i is instead row floor(u_i * n) of model.json's demo.prior_samples (n rows).

The page also takes ?mode=<mode> (any mode with a batch-1 file in model.json) to run another decoder, and
exposes window.kerasvaeDemo (the drawn tiles with their z, label and canvas rectangle; setSeed, select,
setSlider, setInterpolation, setLabel, idle) and document.body.dataset.state ("ready", "error: ...") for
tests/test_web_demo.py. The runtime copy is about 19 MB, nearly all of it the two .wasm builds.
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np

ASSETS_DIR = Path(__file__).with_name("web")
ASSETS = ("index.html", "demo.js", "demo.css")
CONFIG_FILE = "demo_config.json"
RUNTIME_PACKAGE = "@litertjs/core"
RUNTIME_DIR = "litert"
# loadLiteRt(dir) without the `threads` or `jspi` options (which need cross-origin isolation and JSPI)
# loads litert_wasm_internal.js where the browser has WebAssembly relaxed SIMD (Chromium) and
# litert_wasm_compat_internal.js where it has not: the page ships both, each a .js + .wasm pair (9.6 MB).
WASM_VARIANTS = ("litert_wasm_internal", "litert_wasm_compat_internal")
GRID_SIZE = 16
SLIDER_DIMS = 6


CONTINUOUS_Z = "the web demo needs a decoder with a continuous z input"


def _check_image_shape(shape):
    shape = list(shape or [])
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise ValueError(f"the web demo draws images of shape (height, width, 1 or 3 channels); this model's: {shape}.")


def check_demo_model(model):
    """Raise ValueError, before any export work, unless the demo can draw `model`'s decoder: images
    (H, W, 1 or 3) decoded from a continuous z (not the codes of a VQ-VAE or a discrete VAE)."""
    if model.code_space is not None:
        raise ValueError(f"{CONTINUOUS_Z}; {type(model).__name__} decodes codes.")
    if model.decode_noise_shapes():  # the page's sliders set z alone
        raise ValueError(f"{CONTINUOUS_Z} alone; {type(model).__name__}'s decoder also takes {sorted(model.decode_noise_shapes())}.")
    _check_image_shape(model.data_shape)


def validate_model_info(info):
    """Raise ValueError unless model.json describes a decoder the demo can draw: image outputs
    (input_shape H, W, C with C 1 or 3, a `mean` output) from a continuous `z` input."""
    decoder = info.get("decoder") or {}
    inputs = decoder.get("inputs") or {}
    if "z" not in inputs:
        raise ValueError(f"{CONTINUOUS_Z}; this one takes {sorted(inputs) or 'nothing'}.")
    if "codes_decoder" in info or "num_latents" in info:
        raise ValueError(f"{CONTINUOUS_Z}; this {info.get('model_class', 'model')} decodes codes.")
    _check_image_shape(info.get("input_shape"))
    if "mean" not in (decoder.get("outputs") or {}):
        raise ValueError("the web demo needs the decoder's `mean` output, which model.json does not list.")
    if info.get("num_classes") is not None and "label" not in inputs:
        raise ValueError("model.json names num_classes but the decoder takes no `label` input.")
    if info.get("prior", "normal") != "normal" and not (info.get("demo") or {}).get("prior_samples"):
        raise ValueError(
            f"the web demo samples prior {info.get('prior')!r} from model.json demo.prior_samples, which is empty."
        )


def choose_decoder(info, tflite_dir, mode=None):
    """(mode, file name) of the batch-1 decoder the page loads: `mode`, else model.json's recommended_mode."""
    files = (info.get("decoder") or {}).get("files") or {}
    available = [
        m for m, by_batch in files.items() if _batch1(by_batch) and (Path(tflite_dir) / _batch1(by_batch)["file"]).is_file()
    ]
    chosen = mode or info.get("recommended_mode")
    if chosen is None:
        raise ValueError(f"model.json recommends no mode; pass one of {available} for the web demo.")
    if chosen not in available:
        source = "asked for" if mode else "recommended by model.json"
        raise ValueError(
            f"no batch-1 decoder file for mode {chosen!r} ({source}) in {tflite_dir}; available: {available}."
        )
    return chosen, _batch1(files[chosen])["file"]


def find_runtime(start=None):
    """The installed @litertjs/core package folder: node_modules/@litertjs/core in `start` (default: the
    current directory) or the nearest parent that has one."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        candidate = folder / "node_modules" / RUNTIME_PACKAGE
        if (candidate / "package.json").is_file():
            return candidate
    raise ValueError(
        f"the web demo needs the LiteRT.js runtime: run `npm install {RUNTIME_PACKAGE}` here (or in a parent "
        "folder), or pass --web-runtime PATH to an installed @litertjs/core folder."
    )


def resolve_runtime(runtime_dir=None):
    """The @litertjs/core folder the demo copies: `runtime_dir` checked to be a complete install, or the one
    find_runtime finds. Export calls it before any work, so a missing runtime costs nothing."""
    runtime_dir = Path(runtime_dir) if runtime_dir is not None else find_runtime()
    if not (runtime_dir / "package.json").is_file():
        raise ValueError(f"--web-runtime {runtime_dir} is not an installed {RUNTIME_PACKAGE} folder (no package.json).")
    runtime_files(runtime_dir)
    return runtime_dir


def runtime_files(runtime_dir):
    """{path under litert/: source file} for what the page loads from an installed @litertjs/core."""
    runtime_dir = Path(runtime_dir)
    utils = _wasm_utils(runtime_dir)
    files = {"index.js": runtime_dir / "dist" / "index.js", "wasm-utils.js": utils / "dist" / "index.js"}
    for variant in WASM_VARIANTS:
        for suffix in (".js", ".wasm"):
            files[f"wasm/{variant}{suffix}"] = runtime_dir / "wasm" / f"{variant}{suffix}"
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise ValueError(f"{runtime_dir} is not a complete {RUNTIME_PACKAGE} install: missing {', '.join(missing)}.")
    return files


def write_web_demo(tflite_dir, runtime_dir=None, mode=None):
    """Write the browser demo into `tflite_dir` (which holds model.json and the decoders); returns the path
    of its index.html.

    Args:
        tflite_dir: str or Path. A TFLite export folder with model.json.
        runtime_dir: str, Path or None. An installed @litertjs/core package folder (`--web-runtime`);
            None looks for node_modules/@litertjs/core in the current directory and its parents.
        mode: str or None. The decoder mode the page runs; None takes model.json's recommended_mode.

    Raises:
        ValueError: no model.json, a decoder the demo cannot draw, no batch-1 file for the mode, or no runtime.
    """
    tflite_dir = Path(tflite_dir)
    model_json = tflite_dir / "model.json"
    if not model_json.is_file():
        raise ValueError(f"{model_json} not found: export TFLite decoders before the web demo.")
    info = json.loads(model_json.read_text())
    validate_model_info(info)
    mode, file = choose_decoder(info, tflite_dir, mode)
    runtime_dir = resolve_runtime(runtime_dir)
    package = json.loads((runtime_dir / "package.json").read_text())
    files = runtime_files(runtime_dir)

    target = tflite_dir / RUNTIME_DIR
    if target.exists():
        shutil.rmtree(target)
    for relative, source in files.items():
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / relative)
    (target / "NOTICE.txt").write_text(
        f"{RUNTIME_PACKAGE} {package.get('version')} and @litertjs/wasm-utils (LiteRT.js, "
        f"{package.get('license', 'Apache-2.0')}, https://github.com/google-ai-edge/LiteRT), copied by kerasvae.\n"
    )
    for name in ASSETS:
        shutil.copyfile(ASSETS_DIR / name, tflite_dir / name)
    config = {
        "mode": mode,
        "file": file,
        "size_bytes": (tflite_dir / file).stat().st_size,
        "runtime": {"package": RUNTIME_PACKAGE, "version": package.get("version"), "path": f"./{RUNTIME_DIR}/"},
        "grid_size": GRID_SIZE,
        "slider_dims": min(SLIDER_DIMS, int(info["latent_dim"])),
    }
    (tflite_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return tflite_dir / "index.html"


def prior_draws(seed, count, latent_dim, prior_samples=None):
    """The page's grid latents for `seed`: float32 [count, latent_dim], z ~ N(0, I), or rows of
    `prior_samples` (model.json demo.prior_samples) when given (module docstring)."""
    state = int(seed) & 0xFFFFFFFF
    if prior_samples is not None:
        rows = []
        for _ in range(count):
            state, u = _mulberry32(state)
            rows.append(prior_samples[math.floor(u * len(prior_samples))])
        return np.asarray(rows, np.float32).reshape(count, latent_dim)
    values = []
    while len(values) < count * latent_dim:
        state, u1 = _mulberry32(state)
        state, u2 = _mulberry32(state)
        radius = math.sqrt(-2.0 * math.log(1.0 - u1))
        values += [radius * math.cos(2.0 * math.pi * u2), radius * math.sin(2.0 * math.pi * u2)]
    return np.asarray(values[: count * latent_dim], np.float32).reshape(count, latent_dim)


def _mulberry32(state):
    """(next state, uniform in [0, 1)): one step of mulberry32 in 32-bit arithmetic, as the page computes it."""
    state = (state + 0x6D2B79F5) & 0xFFFFFFFF
    t = _imul(state ^ (state >> 15), state | 1)
    t = ((t + _imul(t ^ (t >> 7), t | 61)) & 0xFFFFFFFF) ^ t
    return state, ((t ^ (t >> 14)) & 0xFFFFFFFF) / 2**32


def _imul(a, b):
    return (a * b) & 0xFFFFFFFF


def _batch1(by_batch):
    return (by_batch or {}).get("1") or (by_batch or {}).get(1)


def _wasm_utils(runtime_dir):
    """@litertjs/wasm-utils, which @litertjs/core's index.js imports, found as Node resolves it: nested in
    core's node_modules, else in node_modules of core's ancestors (npm's flat layout puts it beside core)."""
    for folder in (runtime_dir, *runtime_dir.resolve().parents):
        candidate = folder / "node_modules" / "@litertjs" / "wasm-utils"
        if (candidate / "dist" / "index.js").is_file():
            return candidate
    raise ValueError(
        f"@litertjs/wasm-utils (a dependency of {RUNTIME_PACKAGE}) not found beside {runtime_dir}; reinstall it with npm."
    )
