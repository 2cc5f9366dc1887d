// Runs one model job in the page: window.runJob(job) -> result (see run_models.mjs for the formats).
// Every runtime loads from the local server's /node_modules (no CDN); each job gets a fresh page, so the
// "first call" of a job really is the first inference of that model in that runtime instance.

const NM = '/node_modules';
const TYPED = {float32: Float32Array, int32: Int32Array};

function decode(array) {
  const binary = atob(array.data);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  const Typed = TYPED[array.dtype];
  if (!Typed) throw new Error(`unsupported input dtype ${array.dtype}`);
  return new Typed(bytes.buffer);
}

function encode(typed, shape, dtype) {
  const bytes = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return {dtype, shape: Array.from(shape, Number), data: btoa(binary)};
}

function dtypeOf(typed) {
  if (typed instanceof Float32Array) return 'float32';
  if (typed instanceof Int32Array) return 'int32';
  if (typed instanceof Uint8Array) return 'uint8';
  if (typed instanceof Int8Array) return 'int8';
  if (typed instanceof Float64Array) return 'float64';
  if (typed instanceof Int16Array) return 'int16';
  if (typed instanceof BigInt64Array) return 'int64';
  return typed.constructor.name;
}

function errorText(e) {
  if (e === undefined || e === null) return String(e);
  if (typeof e === 'object' && e.message) return String(e.message);
  return String(e);
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.onload = () => resolve();
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.appendChild(script);
  });
}

// Each runtime: load(job) -> {call(inputs) -> Promise<{name: {dtype, shape, typed}}>, info}. `inputs` is
// {signature input name: {dtype, shape, typed}}; outputs come back keyed by signature output names.

async function loadLiteRtJs(job) {
  const litert = await import('@litertjs/core');
  await litert.loadLiteRt(`${NM}/@litertjs/core/wasm/`);
  const model = await litert.loadAndCompile(job.url, {accelerator: 'wasm'});
  const signatures = Object.keys(model.signatures || {});
  const signature = job.signature || signatures[0] || null;
  if (job.signature && !signatures.includes(job.signature)) {
    throw new Error(`signature ${job.signature} not in model (has ${JSON.stringify(signatures)})`);
  }
  const call = async (inputs) => {
    const tensors = {};
    const results = {};
    try {
      for (const [name, x] of Object.entries(inputs)) tensors[name] = new litert.Tensor(x.typed, x.shape);
      const out = signature ? await model.run(signature, tensors) : await model.run(tensors);
      for (const [name, tensor] of Object.entries(out)) {
        const typed = (await tensor.data()).slice();
        results[name] = {dtype: dtypeOf(typed), shape: Array.from(tensor.type.layout.dimensions), typed};
        tensor.delete();
      }
    } finally {
      for (const t of Object.values(tensors)) t.delete();
    }
    return results;
  };
  return {call, info: {signatures, signature}};
}

let tfliteLoaded = null;
async function loadTfjsTflite(job) {
  if (!tfliteLoaded) {
    tfliteLoaded = (async () => {
      await loadScript(`${NM}/@tensorflow/tfjs-core/dist/tf-core.min.js`);
      await loadScript(`${NM}/@tensorflow/tfjs-backend-cpu/dist/tf-backend-cpu.min.js`);
      await loadScript(`${NM}/@tensorflow/tfjs-tflite/dist/tf-tflite.min.js`);
      await window.tf.setBackend('cpu');
      window.tflite.setWasmPath(`${NM}/@tensorflow/tfjs-tflite/wasm/`);
    })();
  }
  await tfliteLoaded;
  const tf = window.tf;
  // tfjs-tflite runs the primary subgraph and names tensors by their raw TFLite names ("decode_z:0",
  // "StatefulPartitionedCall:1"); the caller's input_names / output_names map them to signature names.
  const model = await window.tflite.loadTFLiteModel(job.url, {numThreads: 1});
  const rawInputs = model.inputs.map((t) => t.name);
  const rawOutputs = model.outputs.map((t) => t.name);
  const inputNames = job.input_names || {};
  const outputNames = job.output_names || {};
  const rawInputFor = (name) => {
    if (inputNames[name]) return inputNames[name];
    if (rawInputs.includes(name)) return name;
    const guesses = rawInputs.filter((raw) => raw === `${name}:0` || raw.endsWith(`_${name}:0`));
    if (guesses.length === 1) return guesses[0];
    throw new Error(`no model input for ${name}: model inputs are ${JSON.stringify(rawInputs)}; pass input_names`);
  };
  const call = async (inputs) => {
    const names = Object.keys(inputs);
    const tensors = {};
    const results = {};
    let out;
    try {
      for (const name of names) {
        const x = inputs[name];
        tensors[rawInputFor(name)] = tf.tensor(x.typed, x.shape, x.dtype);
      }
      out = rawInputs.length === 1 ? model.predict(Object.values(tensors)[0]) : model.predict(tensors);
      // predict returns a bare Tensor for single-output models, else a map by raw tensor name.
      const map = out instanceof tf.Tensor ? {[rawOutputs[0]]: out} : out;
      for (const [raw, tensor] of Object.entries(map)) {
        const typed = tensor.dataSync().slice();
        results[outputNames[raw] || raw] = {dtype: dtypeOf(typed), shape: tensor.shape, typed};
      }
    } finally {
      for (const t of Object.values(tensors)) t.dispose();
      if (out) tf.dispose(out);
    }
    return results;
  };
  return {call, info: {raw_inputs: model.inputs, raw_outputs: model.outputs}};
}

async function loadOrtWeb(job) {
  const ort = await import('onnxruntime-web');
  ort.env.wasm.wasmPaths = `${NM}/onnxruntime-web/dist/`;
  ort.env.wasm.numThreads = 1;  // no cross-origin isolation on the plain test server: no SharedArrayBuffer
  ort.env.wasm.proxy = false;
  const session = await ort.InferenceSession.create(job.url, {executionProviders: ['wasm']});
  const call = async (inputs) => {
    const feeds = {};
    for (const [name, x] of Object.entries(inputs)) feeds[name] = new ort.Tensor(x.dtype, x.typed, x.shape);
    const out = await session.run(feeds);
    const results = {};
    for (const [name, tensor] of Object.entries(out)) {
      const typed = tensor.data.slice();
      results[name] = {dtype: dtypeOf(typed), shape: Array.from(tensor.dims), typed};
      if (tensor.dispose) tensor.dispose();
    }
    return results;
  };
  return {call, info: {input_names: session.inputNames, output_names: session.outputNames}};
}

const RUNTIMES = {'litertjs': loadLiteRtJs, 'tfjs-tflite': loadTfjsTflite, 'onnxruntime-web': loadOrtWeb};

function encodeOutputs(outputs) {
  const encoded = {};
  for (const [name, o] of Object.entries(outputs)) encoded[name] = encode(o.typed, o.shape, o.dtype);
  return encoded;
}

// What the runtimes print while a job runs: tfjs-tflite's load errors only say "Failed to create
// TFLiteWebModelRunner", the reason (e.g. "Didn't find op for builtin opcode ...") goes to console.warn.
const runtimeLog = [];
for (const level of ['warn', 'error']) {
  const original = console[level].bind(console);
  console[level] = (...args) => {
    runtimeLog.push(args.map(String).join(' ').trim());
    original(...args);
  };
}

window.runJob = async (job) => {
  const result = {ok: false, error: null, stage: 'load', outputs: {}, second_outputs: {}, latency_ms: null, info: {}};
  try {
    const load = RUNTIMES[job.runtime];
    if (!load) throw new Error(`unknown runtime ${job.runtime}`);
    const inputs = {};
    for (const [name, x] of Object.entries(job.inputs)) inputs[name] = {dtype: x.dtype, shape: x.shape, typed: decode(x)};
    const t0 = performance.now();
    const runtime = await load(job);
    result.info = {...runtime.info, load_ms: performance.now() - t0};
    result.stage = 'run';
    result.outputs = encodeOutputs(await runtime.call(inputs));
    result.stage = 'second_run';
    result.second_outputs = encodeOutputs(await runtime.call(inputs));
    const repeats = job.repeats || 0;
    if (repeats > 0) {
      result.stage = 'timing';
      const times = [];
      const begin = performance.now();
      for (let i = 0; i < repeats; i++) {
        const start = performance.now();
        await runtime.call(inputs);
        times.push(performance.now() - start);
      }
      result.latency_ms = median(times);
      // Pages without cross-origin isolation get a clock coarsened to 0.1 ms: the mean over the whole loop
      // resolves calls shorter than that.
      result.mean_latency_ms = (performance.now() - begin) / repeats;
    }
    result.stage = 'done';
    result.ok = true;
  } catch (e) {
    result.error = `${result.stage}: ${errorText(e)}`;
    const reasons = runtimeLog.filter((line) => /^ERROR: /.test(line));
    if (reasons.length) result.error += ` [runtime log: ${reasons.join(' | ')}]`;
  }
  return result;
};

window.harnessReady = true;
