// kerasvae browser demo: decodes latents with a batch-1 TFLite decoder in LiteRT.js (WebAssembly CPU).
// Plain ES module, no build step. Files it reads beside index.html: model.json (written by the TFLite
// export), demo_config.json (written by `kerasvae export --web`: the decoder file), litert/ (the runtime).
//
// Prior draws: mulberry32 seeded with the seed (unsigned 32-bit) gives uniforms u in [0, 1); each pair
// (u1, u2) gives two N(0, 1) values by Box-Muller, r cos(2 pi u2) and r sin(2 pi u2) with
// r = sqrt(-2 ln(1 - u1)), filling the grid's latents row by row, each rounded to float32.
// kerasvae.export.web.prior_draws(seed, count, latent_dim) is the same draw in Python. For priors other
// than "normal", each sample is instead the row floor(u * n) of model.json's demo.prior_samples.
//
// URL parameter: ?mode=<mode> runs model.json's batch-1 decoder of that mode instead of demo_config.json's.
// Test hooks: window.kerasvaeDemo (below) and document.body.dataset.state ("loading", "ready",
// "error: <message>").

import {loadLiteRt, loadAndCompile, Tensor} from './litert/index.js';

const INTERPOLATION_STEPS = 8;
const TILE_PIXELS = 96;       // grid and interpolation images: about this many CSS pixels a side
const SELECTED_PIXELS = 256;  // the selected sample, larger

const $ = (id) => document.getElementById(id);

export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) | 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function normalDraws(seed, count, dim) {
  const next = mulberry32(seed);
  const values = [];
  while (values.length < count * dim) {
    const u1 = next();
    const u2 = next();
    const r = Math.sqrt(-2 * Math.log(1 - u1));
    values.push(r * Math.cos(2 * Math.PI * u2), r * Math.sin(2 * Math.PI * u2));
  }
  const rows = [];
  for (let i = 0; i < count; i++) rows.push(Float32Array.from(values.slice(i * dim, (i + 1) * dim)));
  return rows;
}

function priorRows(seed, count, dim, priorSamples) {
  if (!priorSamples) return normalDraws(seed, count, dim);
  const next = mulberry32(seed);
  return Array.from({length: count}, () => Float32Array.from(priorSamples[Math.floor(next() * priorSamples.length)]));
}

function formatBytes(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kB` : `${n} B`;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// Redraws run one at a time; a newer request for the same key replaces a pending one (live sliders).
const queue = new Map();
let draining = null;
let failure = null;

function schedule(key, job) {
  queue.set(key, job);
  if (!draining) {
    draining = (async () => {
      try {
        while (queue.size) {
          const [first, next] = queue.entries().next().value;
          queue.delete(first);
          await next();
        }
      } catch (error) {
        fail(error);
      } finally {
        draining = null;
      }
    })();
  }
  return draining;
}

function fail(error) {
  failure = error;
  const message = error && error.message ? error.message : String(error);
  document.body.dataset.state = `error: ${message}`;
  $('status').textContent = `Error: ${message}`;
  console.error(error);
}

const state = {
  info: null, config: null, model: null, shape: null, latentDim: 0, conditional: false,
  seed: 1, label: 0, grid: [], original: [], selected: 0, from: 0, to: 1, sliderDims: [],
  latencies: [], benchmark: null, drawn: new Map(), fileBytes: 0,
};

async function decode(z, label) {
  const inputs = {z: new Tensor(Float32Array.from(z), [1, state.latentDim])};
  if (state.conditional) inputs.label = new Tensor(new Int32Array([label]), [1]);
  let outputs;
  const start = performance.now();
  try {
    outputs = await state.model.run('decode', inputs);
  } finally {
    for (const tensor of Object.values(inputs)) tensor.delete();
  }
  state.latencies.push(performance.now() - start);
  try {
    return await outputs.mean.data();
  } finally {
    for (const tensor of Object.values(outputs)) tensor.delete();
  }
}

// `mean` is NHWC in [0, 1]: byte = round(255 * clamp(v)), each latent pixel a scale x scale block.
function paint(canvas, mean, scale) {
  const [height, width, channels] = state.shape;
  canvas.width = width * scale;
  canvas.height = height * scale;
  const context = canvas.getContext('2d');
  const image = context.createImageData(width * scale, height * scale);
  const toByte = (v) => (v > 0 ? (v < 1 ? Math.round(255 * v) : 255) : 0);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const base = (y * width + x) * channels;
      const rgb = channels === 1 ? [mean[base], mean[base], mean[base]] : [mean[base], mean[base + 1], mean[base + 2]];
      const bytes = rgb.map(toByte);
      for (let dy = 0; dy < scale; dy++) {
        let offset = ((y * scale + dy) * width * scale + x * scale) * 4;
        for (let dx = 0; dx < scale; dx++, offset += 4) {
          image.data[offset] = bytes[0];
          image.data[offset + 1] = bytes[1];
          image.data[offset + 2] = bytes[2];
          image.data[offset + 3] = 255;
        }
      }
    }
  }
  context.putImageData(image, 0, 0);
}

async function drawTile(canvasId, role, index, z, scale) {
  const zCopy = Float32Array.from(z);
  const label = state.label;
  const mean = await decode(zCopy, label);
  const canvas = $(canvasId);
  paint(canvas, mean, scale);
  const [height, width] = state.shape;
  state.drawn.set(canvasId, {
    canvasId, role, index, x: 0, y: 0, width: width * scale, height: height * scale, scale,
    z: Array.from(zCopy), label: state.conditional ? label : null,
  });
  showLatency();
}

function scaleFor(pixels) {
  return Math.max(1, Math.floor(pixels / Math.max(state.shape[0], state.shape[1])));
}

function figure(container, canvasId, caption) {
  const fig = document.createElement('figure');
  fig.className = 'tile';
  const canvas = document.createElement('canvas');
  canvas.id = canvasId;
  const [height, width] = state.shape;
  const scale = scaleFor(TILE_PIXELS);
  canvas.width = width * scale;
  canvas.height = height * scale;
  const text = document.createElement('figcaption');
  text.textContent = caption;
  fig.append(canvas, text);
  container.append(fig);
  return fig;
}

function buildPage() {
  const {info, config} = state;
  $('model-name').textContent = info.name || 'kerasvae model';
  const shape = state.shape.join('×');
  const prior = info.prior === 'normal' ? 'N(0, I) prior' : `${info.prior} prior`;
  $('model-info').innerHTML = `<b>${info.model_class}</b> · ${info.likelihood} likelihood · images ${shape} · ` +
    `latent dim ${state.latentDim} · ${prior}` + (state.conditional ? ` · ${info.num_classes} classes` : '');

  const grid = $('grid');
  for (let i = 0; i < config.grid_size; i++) {
    const fig = figure(grid, `tile-${i}`, `#${i}`);
    fig.addEventListener('click', () => api.select(i));
  }
  const strip = $('strip');
  for (let j = 0; j < INTERPOLATION_STEPS; j++) {
    figure(strip, `interp-${j}`, `t = ${(j / (INTERPOLATION_STEPS - 1)).toFixed(2)}`);
  }
  for (const id of ['from', 'to']) {
    const select = $(id);
    for (let i = 0; i < config.grid_size; i++) select.append(new Option(`#${i}`, String(i)));
    select.value = String(state[id]);
    select.addEventListener('change', () => api.setInterpolation(Number($('from').value), Number($('to').value)));
  }
  if (state.conditional) {
    $('label-control').hidden = false;
    for (let c = 0; c < info.num_classes; c++) $('label').append(new Option(String(c), String(c)));
    $('label').addEventListener('change', () => api.setLabel(Number($('label').value)));
  }

  // Slider ranges: +-3 for N(0, I); the range of the prior samples otherwise.
  const samples = info.demo && info.demo.prior_samples;
  const sliders = $('sliders');
  for (const dim of state.sliderDims) {
    let [low, high] = [-3, 3];
    if (samples) {
      const column = samples.map((row) => row[dim]);
      [low, high] = [Math.min(...column), Math.max(...column)];
    }
    const name = document.createElement('label');
    name.htmlFor = `slider-${dim}`;
    name.textContent = `z[${dim}]`;
    const input = document.createElement('input');
    Object.assign(input, {type: 'range', id: `slider-${dim}`, min: String(low), max: String(high), step: '0.01'});
    input.dataset.dim = String(dim);
    const output = document.createElement('output');
    output.id = `slider-${dim}-value`;
    input.addEventListener('input', () => api.setSlider(dim, Number(input.value)));
    sliders.append(name, input, output);
  }
  $('seed').addEventListener('change', () => api.setSeed(Number($('seed').value)));
  $('next-seed').addEventListener('click', () => api.setSeed(state.seed + 1));
  $('reset').addEventListener('click', () => {
    state.grid[state.selected] = Float32Array.from(state.original[state.selected]);
    redrawSelected();
  });
}

function showLatency() {
  const {latencies, config, benchmark} = state;
  const runtime = `LiteRT.js ${config.runtime.version} (wasm, CPU)`;
  const file = `<b>${config.file}</b> · ${config.mode} · ${formatBytes(state.fileBytes)}`;
  let timing = '';
  if (benchmark) {
    timing = ` · <b>${benchmark.ms_per_call.toFixed(3)} ms</b> per decode call ` +
      `(mean of ${benchmark.calls} back-to-back calls; the first call took ${latencies[0].toFixed(1)} ms)`;
  } else if (latencies.length) {
    timing = ` · first decode call ${latencies[0].toFixed(1)} ms`;
  }
  $('runtime-info').innerHTML = `${file} · ${runtime}${timing}`;
}

// Per-call latency: performance.now() is coarsened to 0.1 ms on pages without cross-origin isolation,
// less than a small decoder's call, so time back-to-back calls (up to `calls`, or `budgetMs`) together.
async function measureLatency(calls = 50, budgetMs = 500) {
  const z = new Float32Array(state.latentDim);
  const start = performance.now();
  let done = 0;
  while (done < calls && (done === 0 || performance.now() - start < budgetMs)) {
    await decode(z, 0);
    done++;
  }
  state.benchmark = {calls: done, ms_per_call: (performance.now() - start) / done};
  showLatency();
}

function updateSliders() {
  const z = state.grid[state.selected];
  for (const dim of state.sliderDims) {
    $(`slider-${dim}`).value = String(z[dim]);
    $(`slider-${dim}-value`).textContent = z[dim].toFixed(2);
  }
  $('edit-title').textContent = `sample #${state.selected}`;
  for (let i = 0; i < state.config.grid_size; i++) {
    $(`tile-${i}`).parentElement.classList.toggle('selected', i === state.selected);
  }
}

function redrawGridTile(i) {
  return schedule(`tile-${i}`, () => drawTile(`tile-${i}`, 'grid', i, state.grid[i], scaleFor(TILE_PIXELS)));
}

function redrawSelected() {
  const i = state.selected;
  updateSliders();
  $('selected-caption').textContent = `#${i}`;
  redrawGridTile(i);
  schedule('selected', () => drawTile('selected', 'selected', i, state.grid[i], scaleFor(SELECTED_PIXELS)));
  if (i === state.from || i === state.to) redrawInterpolation();
  return draining;
}

function redrawInterpolation() {
  return schedule('interpolation', async () => {
    const a = state.grid[state.from];
    const b = state.grid[state.to];
    for (let j = 0; j < INTERPOLATION_STEPS; j++) {
      const t = j / (INTERPOLATION_STEPS - 1);
      const z = a.map((value, k) => (1 - t) * value + t * b[k]);  // Float32Array.map rounds to float32
      await drawTile(`interp-${j}`, 'interpolation', j, z, scaleFor(TILE_PIXELS));
      state.drawn.get(`interp-${j}`).t = t;
    }
  });
}

function redrawAll() {
  for (let i = 0; i < state.config.grid_size; i++) redrawGridTile(i);
  redrawSelected();
  return redrawInterpolation();
}

const api = {
  ready: null,
  get tiles() {
    const order = ['grid', 'selected', 'interpolation'];
    return [...state.drawn.values()].sort((p, q) => order.indexOf(p.role) - order.indexOf(q.role) || p.index - q.index);
  },
  get state() {
    return {seed: state.seed, label: state.conditional ? state.label : null, selected: state.selected, from: state.from, to: state.to,
            sliderDims: [...state.sliderDims], mode: state.config && state.config.mode,
            file: state.config && state.config.file, fileBytes: state.fileBytes};
  },
  get latency() {
    const calls = state.latencies;
    return {calls: calls.length, first_ms: calls[0], median_ms: calls.length ? median(calls) : null,
            ...(state.benchmark ? {benchmark_calls: state.benchmark.calls, ms_per_call: state.benchmark.ms_per_call} : {})};
  },
  // Resolves when every scheduled redraw has been drawn (rejects if one failed).
  async idle() {
    while (draining) await draining;
    if (failure) throw failure;
  },
  setSeed(seed) {
    state.seed = Math.max(0, Math.floor(seed)) >>> 0;
    $('seed').value = String(state.seed);
    const samples = state.info.demo && state.info.demo.prior_samples;
    state.grid = priorRows(state.seed, state.config.grid_size, state.latentDim, state.info.prior === 'normal' ? null : samples);
    state.original = state.grid.map((z) => Float32Array.from(z));
    redrawAll();
    return api.idle();
  },
  select(i) {
    state.selected = i;
    redrawSelected();
    return api.idle();
  },
  setSlider(dim, value) {
    state.grid[state.selected][dim] = value;  // stored as float32
    $(`slider-${dim}`).value = String(value);
    redrawSelected();
    return api.idle();
  },
  setInterpolation(from, to) {
    [state.from, state.to] = [from, to];
    $('from').value = String(from);
    $('to').value = String(to);
    redrawInterpolation();
    return api.idle();
  },
  setLabel(label) {
    state.label = label;
    $('label').value = String(label);
    redrawAll();
    return api.idle();
  },
};
window.kerasvaeDemo = api;

async function main() {
  const [info, config] = await Promise.all(['model.json', 'demo_config.json'].map(async (file) => {
    const response = await fetch(file);
    if (!response.ok) throw new Error(`${file}: HTTP ${response.status}`);
    return response.json();
  }));
  // ?mode=float32 (any mode with a batch-1 file in model.json) overrides the exported choice.
  const wanted = new URLSearchParams(location.search).get('mode');
  if (wanted && wanted !== config.mode) {
    const entry = ((info.decoder.files || {})[wanted] || {})['1'];
    if (!entry) throw new Error(`model.json lists no batch-1 ${wanted} decoder`);
    Object.assign(config, {mode: wanted, file: entry.file});
  }
  Object.assign(state, {
    info, config, shape: info.input_shape, latentDim: info.latent_dim, conditional: info.num_classes != null,
  });
  state.sliderDims = (info.demo && info.demo.informative_dims ? info.demo.informative_dims : [...Array(info.latent_dim).keys()])
    .slice(0, config.slider_dims);
  $('status').textContent = `Loading LiteRT.js and ${config.file}…`;
  await loadLiteRt(`${config.runtime.path}wasm/`);
  const response = await fetch(config.file);
  if (!response.ok) throw new Error(`${config.file}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  state.fileBytes = bytes.byteLength;
  state.model = await loadAndCompile(bytes, {accelerator: 'wasm'});
  const signature = state.model.signatures.decode;
  if (!signature) throw new Error(`${config.file} has no 'decode' signature`);
  const names = signature.getInputDetails().map((d) => d.name);
  if (!names.includes('z')) throw new Error(`${config.file}'s decode signature has inputs ${names}, not z`);
  buildPage();
  showLatency();
  await api.setSeed(state.seed);
  await measureLatency();
  document.body.dataset.state = 'ready';
}

api.ready = main().catch((error) => {
  fail(error);
  throw error;
});
