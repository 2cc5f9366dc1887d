"""The browser demo of `kerasvae export --web` (kerasvae/export/web.py): a tiny VAE trained on digits, exported
to a SavedModel and batch-1 TFLite decoders, its page served on 127.0.0.1 and driven in headless Chromium by
tests/browser/demo_screenshot.mjs. Every image the page draws is checked against the SavedModel's `decode` of
the z the page reports for it.

`python tests/test_web_demo.py` redraws the README's screenshot, docs/gallery/web_demo.png, from a small
Fashion-MNIST VAE (draw_gallery_screenshot; about 40 s).
"""

import contextlib
import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import browser_harness
import kerasvae as kv
from conftest import fit
from kerasvae.export import describe_model
from kerasvae.export.savedmodel import write_savedmodel
from kerasvae.export.tflite import export_tflite
from kerasvae.export.web import (
    ASSETS_DIR, check_demo_model, find_runtime, prior_draws, validate_model_info, write_web_demo,
)

pytestmark = pytest.mark.slow  # Chromium: the full suite runs them, `-m 'not slow'` does not

ROOT = Path(__file__).resolve().parent.parent
BROWSER_DIR = ROOT / "tests" / "browser"
RUNTIME = BROWSER_DIR / "node_modules" / "@litertjs" / "core"
SCRIPT = BROWSER_DIR / "demo_screenshot.mjs"
GRID = 16
# The recommended (int8) decoder quantizes: the page's bytes stay this close to round(255 * SavedModel mean).
MIN_PSNR_DB = 35.0
MAX_BYTE_ERROR = 12


def export_demo(model, x, directory, name, labels=None, modes=("float32", "int8")):
    """SavedModel and TFLite export of `model` plus the web demo, in `directory`: (savedmodel, tflite dir)."""
    saved = write_savedmodel(model, directory / "savedmodel")
    x, labels = x[:500], None if labels is None else np.asarray(labels[:500], np.int32)
    z = np.asarray(model.encode(x, labels=labels).sample(seed=(0, 1)), np.float32)
    tflite_dir = directory / "tflite"
    options = {} if labels is None else {"calibration_labels": labels}
    export_tflite(saved, tflite_dir, modes=modes, calibration_z=z, batch_sizes=(1,),
                  description=describe_model(model, x, labels=labels, name=name), **options)
    if (RUNTIME / "package.json").is_file():  # else the browser tests skip (or fail under $CI): require()
        write_web_demo(tflite_dir, runtime_dir=RUNTIME)
    return saved, tflite_dir


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    x_train = digits[0]
    model = kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=4, hidden=(64, 32), seed=0)
    fit(model, x_train, epochs=5)
    return export_demo(model, x_train, tmp_path_factory.mktemp("web_demo"), "digits")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def static_servers():
    """start(folder) -> base URL of a `python -m http.server`-like server of `folder` on 127.0.0.1; all
    stopped on exit."""
    servers = []

    def start(folder):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture()
def serve():
    with static_servers() as start:
        yield start


def drive(pages, tmp_path, timeout=60):
    """Run demo_screenshot.mjs on `pages` (its plan format) and return its result's pages."""
    plan, result = tmp_path / "plan.json", tmp_path / "result.json"
    plan.write_text(json.dumps({"chromium": browser_harness.chromium(), "timeout_ms": timeout * 1000, "pages": pages}))
    process = subprocess.run(["node", str(SCRIPT), str(plan), str(result)], cwd=BROWSER_DIR, capture_output=True,
                             text=True, timeout=timeout + 30)
    output = json.loads(result.read_text()) if result.is_file() else {"pages": []}
    for page in output["pages"]:
        assert page["state"] == "ready", f"{page['url']}: {page['state']}\n" + "\n".join(page["console"] + page["errors"])
    assert process.returncode == 0, process.stderr[-3000:]
    return output["pages"]


def decoded_bytes(saved, z, labels=None):
    """round(255 * clip(mean)) of the SavedModel's decode of z, as the page draws it: [n, h, w, 3] uint8."""
    inputs = {"z": tf.constant(np.asarray(z, np.float32))}
    if labels is not None:
        inputs["label"] = tf.constant(np.asarray(labels, np.int32))
    mean = tf.saved_model.load(str(saved)).signatures["decode"](**inputs)["mean"].numpy()
    if mean.shape[-1] == 1:
        mean = np.repeat(mean, 3, axis=-1)
    return np.round(255 * np.clip(mean, 0, 1)).astype(np.uint8)


def tile_bytes(tile, shape):
    return np.asarray(tile["pixels"], np.uint8).reshape(shape[0], shape[1], 3)


def compare(saved, tiles, shape):
    """(PSNR in dB, max abs byte error) of the page's tiles against the SavedModel's decode of their z."""
    got = np.stack([tile_bytes(t, shape) for t in tiles]).astype(np.float64)
    labels = None if tiles[0]["label"] is None else [t["label"] for t in tiles]
    want = decoded_bytes(saved, [t["z"] for t in tiles], labels).astype(np.float64)
    mse = np.mean((got - want) ** 2)
    return (float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)), float(np.abs(got - want).max())


def by_role(snapshot, role):
    return [t for t in snapshot["tiles"] if t["role"] == role]


def test_page_decodes_like_the_savedmodel(exported, serve, tmp_path):
    browser_harness.require()
    saved, tflite_dir = exported
    info = json.loads((tflite_dir / "model.json").read_text())
    shape = info["input_shape"]
    dim = info["demo"]["informative_dims"][0]
    url = serve(tflite_dir)
    screenshot = tmp_path / "demo.png"
    actions = [
        {"name": "slider", "type": "input", "selector": f"#slider-{dim}", "value": "1.5"},
        {"name": "select", "type": "call", "method": "select", "args": [5]},
        {"name": "seed", "type": "call", "method": "setSeed", "args": [7]},
    ]
    recommended, float32 = drive([
        {"url": url, "screenshot": str(screenshot), "actions": actions},
        {"url": url + "?mode=float32", "screenshot": None, "actions": []},
    ], tmp_path)
    initial, slid, selected, reseeded = recommended["snapshots"]
    mode = info["recommended_mode"]
    assert initial["state"]["mode"] == mode and initial["state"]["file"] == info["decoder"]["files"][mode]["1"]["file"]
    assert initial["state"]["fileBytes"] == (tflite_dir / initial["state"]["file"]).stat().st_size
    assert initial["latency"]["calls"] >= GRID + 1 + 8 and initial["latency"]["ms_per_call"] > 0
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The grid is the documented seeded draw; the tiles are whole blocks of one colour, fully opaque.
    grid = by_role(initial, "grid")
    assert len(grid) == GRID
    np.testing.assert_allclose([t["z"] for t in grid], prior_draws(1, GRID, info["latent_dim"]), rtol=0, atol=1e-6)
    assert all(t["uniform"] and t["opaque"] and t["scale"] >= 2 for t in initial["tiles"])
    np.testing.assert_allclose([t["z"] for t in by_role(reseeded, "grid")], prior_draws(7, GRID, info["latent_dim"]), atol=1e-6)

    # Every drawn image, recommended (int8) decoder in the browser, against the SavedModel's decode of the same z.
    for snapshot in recommended["snapshots"]:
        psnr, worst = compare(saved, snapshot["tiles"], shape)
        print(f"{mode} {snapshot['name']}: {len(snapshot['tiles'])} images, PSNR {psnr:.1f} dB, max byte error {worst:.0f}")
        assert psnr >= MIN_PSNR_DB and worst <= MAX_BYTE_ERROR, (snapshot["name"], psnr, worst)
    # The float32 decoder matches it up to float rounding at the byte boundaries.
    psnr, worst = compare(saved, float32["snapshots"][0]["tiles"], shape)
    print(f"float32: PSNR {psnr:.1f} dB, max byte error {worst:.0f}; page load {recommended['load_ms']} ms; "
          f"latency {initial['latency']}")
    assert worst <= 1, (psnr, worst)

    # Interpolation: 8 steps, linear in z, its ends the first two samples (same z, same pixels).
    strip = by_role(initial, "interpolation")
    assert len(strip) == 8
    a, b = np.asarray(grid[0]["z"], np.float32), np.asarray(grid[1]["z"], np.float32)
    np.testing.assert_array_equal(strip[0]["z"], a)
    np.testing.assert_array_equal(strip[-1]["z"], b)
    for tile in strip:
        np.testing.assert_allclose(tile["z"], (1 - tile["t"]) * a + tile["t"] * b, atol=1e-6)
    np.testing.assert_array_equal(strip[0]["pixels"], grid[0]["pixels"])
    np.testing.assert_array_equal(strip[-1]["pixels"], grid[1]["pixels"])

    # A slider (a DOM input event) moves only its dimension of the selected sample (#0), which is redrawn in
    # the grid, in the large view and as the interpolation's start.
    before, after = np.asarray(grid[0]["z"]), np.asarray(by_role(slid, "grid")[0]["z"])
    assert after[dim] == 1.5
    np.testing.assert_array_equal(np.delete(after, dim), np.delete(before, dim))
    assert by_role(slid, "selected")[0]["z"] == list(after)
    assert by_role(slid, "interpolation")[0]["z"] == list(after)
    assert [t["z"] for t in by_role(slid, "grid")[1:]] == [t["z"] for t in grid[1:]]
    np.testing.assert_array_equal(tile_bytes(by_role(slid, "grid")[0], shape), tile_bytes(by_role(slid, "selected")[0], shape))
    large = by_role(selected, "selected")[0]
    assert large["index"] == 5 and large["z"] == by_role(selected, "grid")[5]["z"] and large["scale"] > grid[0]["scale"]


def test_other_priors_sample_from_prior_samples(exported, serve, tmp_path):
    """A prior other than N(0, I): the page picks seeded rows of model.json's demo.prior_samples."""
    browser_harness.require()
    saved, tflite_dir = exported
    folder = shutil.copytree(tflite_dir, tmp_path / "mixture")
    info = json.loads((folder / "model.json").read_text())
    # Rows unlike N(0, I) draws, but near the range the int8 decoder was calibrated on: rows far outside it
    # (N(2, 0.5) before) once missed the byte-error bound, most likely by clipping in the quantized input.
    rows = np.round(np.random.default_rng(0).normal(1.0, 0.5, (32, info["latent_dim"])), 4)
    info.update(prior="mixture", demo={**info["demo"], "prior_samples": rows.tolist()})
    (folder / "model.json").write_text(json.dumps(info))
    (page,) = drive([{"url": serve(folder), "screenshot": None, "actions": []}], tmp_path)
    grid = by_role(page["snapshots"][0], "grid")
    np.testing.assert_array_equal([t["z"] for t in grid], prior_draws(1, GRID, info["latent_dim"], rows.tolist()))
    assert len({tuple(t["z"]) for t in grid}) > 8
    psnr, worst = compare(saved, page["snapshots"][0]["tiles"], info["input_shape"])
    assert psnr >= MIN_PSNR_DB and worst <= MAX_BYTE_ERROR, (psnr, worst)


def test_conditional_page_feeds_the_chosen_class(digits, serve, tmp_path):
    browser_harness.require()
    x_train, y_train = digits[0], digits[1]
    model = kv.presets.conditional_vae(input_shape=(8, 8, 1), num_classes=10, latent_dim=4, hidden=(64, 32), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    keras.utils.set_random_seed(0)
    model.fit(x_train, y_train, epochs=5, batch_size=64, verbose=0)
    # float32 only: the page's wiring of `label` is under test here, not int8 calibration of the label path.
    saved, tflite_dir = export_demo(model, x_train, tmp_path / "cvae", "digits-cvae", labels=y_train, modes=("float32",))
    actions = [{"name": "class 3", "type": "input", "selector": "#label", "value": "3", "event": "change"}]
    (page,) = drive([{"url": serve(tflite_dir), "screenshot": None, "actions": actions}], tmp_path)
    initial, three = page["snapshots"]
    assert initial["state"]["file"] == "decoder_float32.tflite" and initial["state"]["label"] == 0
    assert {t["label"] for t in initial["tiles"]} == {0} and {t["label"] for t in three["tiles"]} == {3}
    assert [t["z"] for t in three["tiles"]] == [t["z"] for t in initial["tiles"]]
    for snapshot in page["snapshots"]:
        psnr, worst = compare(saved, snapshot["tiles"], model.data_shape)
        assert worst <= 1, (snapshot["name"], psnr, worst)
    assert np.mean([np.abs(np.subtract(a["pixels"], b["pixels"])).mean() for a, b in zip(initial["tiles"], three["tiles"])]) > 5


def fake_runtime(root):
    """An npm layout of @litertjs/core and its @litertjs/wasm-utils dependency under root/node_modules, with
    placeholder files: what write_web_demo copies, without Node."""
    scope = root / "node_modules" / "@litertjs"
    (scope / "core" / "dist").mkdir(parents=True)
    (scope / "core" / "wasm").mkdir()
    (scope / "wasm-utils" / "dist").mkdir(parents=True)
    (scope / "core" / "package.json").write_text(json.dumps({"name": "@litertjs/core", "version": "2.5.3"}))
    (scope / "core" / "dist" / "index.js").write_text("export {};\n")
    (scope / "wasm-utils" / "dist" / "index.js").write_text("export {};\n")
    for variant in ("", "_compat", "_threaded", "_jspi"):
        for suffix in (".js", ".wasm"):
            (scope / "core" / "wasm" / f"litert_wasm{variant}_internal{suffix}").write_text(variant + suffix)
    return scope / "core"


def test_write_web_demo_files(exported, tmp_path, monkeypatch):
    _, exported_dir = exported
    tflite_dir = shutil.copytree(exported_dir, tmp_path / "tflite", ignore=shutil.ignore_patterns("litert", "index.html"))
    monkeypatch.chdir(tmp_path)
    runtime = fake_runtime(tmp_path)
    # runtime_dir=None finds node_modules/@litertjs/core from the current folder up.
    assert write_web_demo(tflite_dir) == tflite_dir / "index.html"
    info = json.loads((tflite_dir / "model.json").read_text())
    config = json.loads((tflite_dir / "demo_config.json").read_text())
    assert config["mode"] == info["recommended_mode"] and config["file"] == f"decoder_{config['mode']}.tflite"
    assert config["runtime"]["version"] == "2.5.3" and config["slider_dims"] == min(6, info["latent_dim"])
    copied = sorted(str(p.relative_to(tflite_dir / "litert")) for p in (tflite_dir / "litert").rglob("*") if p.is_file())
    assert copied == ["NOTICE.txt", "index.js", "wasm-utils.js", "wasm/litert_wasm_compat_internal.js",
                      "wasm/litert_wasm_compat_internal.wasm", "wasm/litert_wasm_internal.js", "wasm/litert_wasm_internal.wasm"]
    for name in ("index.html", "demo.js", "demo.css"):
        assert (tflite_dir / name).read_bytes() == (ASSETS_DIR / name).read_bytes()
    # Another mode on request; one without a batch-1 file is refused in one line.
    write_web_demo(tflite_dir, runtime_dir=runtime, mode="float32")
    assert json.loads((tflite_dir / "demo_config.json").read_text())["file"] == "decoder_float32.tflite"
    with pytest.raises(ValueError, match="no batch-1 decoder file for mode 'float16'"):
        write_web_demo(tflite_dir, runtime_dir=runtime, mode="float16")
    (runtime / "wasm" / "litert_wasm_internal.wasm").unlink()
    with pytest.raises(ValueError, match="not a complete @litertjs/core install"):
        write_web_demo(tflite_dir, runtime_dir=runtime)
    with pytest.raises(ValueError, match="model.json not found"):
        write_web_demo(tmp_path, runtime_dir=runtime)


def test_missing_runtime_names_the_fixes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"npm install @litertjs/core.*--web-runtime PATH"):
        find_runtime()
    fake_runtime(tmp_path)
    (tmp_path / "sub").mkdir()
    assert find_runtime(tmp_path / "sub") == tmp_path / "node_modules" / "@litertjs" / "core"


def test_rejects_decoders_it_cannot_draw():
    image = {"input_shape": [8, 8, 1], "latent_dim": 4, "prior": "normal", "num_classes": None,
             "decoder": {"inputs": {"z": {}}, "outputs": {"mean": {}}}}
    validate_model_info(image)
    with pytest.raises(ValueError, match="the web demo needs a decoder with a continuous z input"):
        validate_model_info({**image, "decoder": {"inputs": {"codes": {}}, "outputs": {"mean": {}}}})
    with pytest.raises(ValueError, match="the web demo needs a decoder with a continuous z input"):
        validate_model_info({**image, "model_class": "VQVAE", "num_latents": 49, "codes_decoder": {}})
    with pytest.raises(ValueError, match="images of shape"):
        validate_model_info({**image, "input_shape": [50, 3]})
    with pytest.raises(ValueError, match="images of shape"):
        validate_model_info({**image, "input_shape": [8, 8, 2]})
    with pytest.raises(ValueError, match="label"):
        validate_model_info({**image, "num_classes": 10})
    with pytest.raises(ValueError, match="prior_samples"):
        validate_model_info({**image, "prior": "mixture", "demo": {"prior_samples": None}})


def test_check_demo_model_refuses_before_export():
    check_demo_model(kv.presets.mlp_vae(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0))
    with pytest.raises(ValueError, match="the web demo needs a decoder with a continuous z input"):
        check_demo_model(kv.presets.vqvae(input_shape=(8, 8, 1), seed=0))
    with pytest.raises(ValueError, match="images of shape"):
        check_demo_model(kv.presets.sequence_vae(input_shape=(16, 1), latent_dim=2, units=(8,), seed=0))


def draw_gallery_screenshot(tmp_path):
    """docs/gallery/web_demo.png: the page of a small Fashion-MNIST VAE (latent 16) as the README shows it."""
    browser_harness.require()
    x_train, _ = kv.data.load_arrays("fashion_mnist", "train[:30000]")
    model = kv.presets.mlp_vae(input_shape=(28, 28, 1), latent_dim=16, seed=0)
    fit(model, x_train, epochs=8, batch_size=128, learning_rate=2e-3)  # about 25 s on 2 cores
    saved, tflite_dir = export_demo(model, x_train, tmp_path / "fmnist", "fmnist")
    shot = tmp_path / "web_demo.png"
    # Interpolate between the two most different samples of the grid (seed 1), as a visitor would pick them.
    images = decoded_bytes(saved, prior_draws(1, GRID, model.latent_dim)).reshape(GRID, -1).astype(np.float64)
    distances = ((images[:, None] - images[None]) ** 2).sum(-1)
    pair = [int(i) for i in np.unravel_index(np.argmax(distances), distances.shape)]
    actions = [{"name": "pair", "type": "call", "method": "setInterpolation", "args": pair},
               {"name": "select", "type": "call", "method": "select", "args": [pair[0]]}]
    with static_servers() as start:
        (page,) = drive([{"url": start(tflite_dir), "screenshot": str(shot), "actions": actions}], tmp_path)
    psnr, _ = compare(saved, page["snapshots"][0]["tiles"], model.data_shape)
    assert psnr >= MIN_PSNR_DB, psnr
    target = ROOT / "docs" / "gallery" / "web_demo.png"
    shutil.copyfile(shot, target)
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        draw_gallery_screenshot(Path(scratch))
