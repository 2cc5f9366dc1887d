#!/usr/bin/env node
// Runs .tflite / .onnx models in headless Chromium with the runtimes browsers use, all jobs in one launch.
//
//   node run_models.mjs JOBS.json      (or JSON on stdin)   ->   JSON list of results on stdout
//
// JOBS.json: {"timeout": seconds for the whole run (default 300), "jobs": [job, ...]}; a job:
//   {"runtime": "litertjs" | "tfjs-tflite" | "onnxruntime-web", "file": "/abs/path/model.tflite",
//    "signature": "decode" (tflite, optional), "repeats": int (optional),
//    "inputs": {name: {"dtype": "float32" | "int32", "shape": [...], "data": base64 of little-endian bytes}},
//    "input_names": {signature name: raw tensor name}, "output_names": {raw tensor name: signature name}
//    (both optional, tfjs-tflite only)}
// A result: {"ok", "error", "stage", "outputs": {name: {"dtype", "shape", "data"}}, "second_outputs",
//   "latency_ms", "info"}, in job order. Nothing else goes to stdout: server and browser messages go to stderr.
//
// A local server on 127.0.0.1 serves runner.html / runner_*.js from this folder, the runtimes from
// ./node_modules, and job i's file as /model/<i>/<basename>. Each job runs in a fresh page of one browser.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import puppeteer from 'puppeteer-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NODE_MODULES = path.join(HERE, 'node_modules');
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.wasm': 'application/wasm', '.json': 'application/json', '.map': 'application/json',
};

const log = (...args) => process.stderr.write(`[run_models] ${args.join(' ')}\n`);

// Console chatter that says nothing about a job: LiteRT.js's INFO lines (printed as console.error), the
// WebGPU probe of a GPU-less headless browser, and resource errors (the server logs its 404s itself).
const QUIET = [
  /^\s*$/, /^INFO: /, /^WARNING: \[npu_registry/, /^No available adapters/, /^Failed to create default WebGPU device/,
  /^Failed to load resource/,
];
// tfjs-tflite first looks for its wasm loader next to tf-tflite.min.js, then under setWasmPath's folder.
const EXPECTED_404 = [/^\/node_modules\/@tensorflow\/tfjs-tflite\/dist\/tflite_web_api_cc[\w]*\.js$/];

function readSpec() {
  const text = process.argv[2] ? fs.readFileSync(process.argv[2], 'utf8') : fs.readFileSync(0, 'utf8');
  const spec = JSON.parse(text);
  return Array.isArray(spec) ? {jobs: spec} : spec;
}

function inside(root, relative) {
  const full = path.resolve(root, '.' + path.posix.normalize('/' + relative));
  return full === root || full.startsWith(root + path.sep) ? full : null;
}

function startServer(jobs) {
  const server = http.createServer((req, res) => {
    let pathname = '';
    try {
      pathname = decodeURIComponent(new URL(req.url, 'http://127.0.0.1').pathname);
    } catch {
      pathname = '/bad-url';
    }
    if (process.env.HARNESS_DEBUG) log(`GET ${pathname}`);
    let file = null;
    let match;
    if (pathname === '/runner.html' || /^\/runner_[\w-]+\.js$/.test(pathname)) {
      file = path.join(HERE, pathname.slice(1));
    } else if (pathname.startsWith('/node_modules/')) {
      file = inside(NODE_MODULES, pathname.slice('/node_modules/'.length));
    } else if ((match = /^\/model\/(\d+)\/[^/]*$/.exec(pathname)) && jobs[Number(match[1])]) {
      file = jobs[Number(match[1])].file;
    }
    if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      if (!EXPECTED_404.some((re) => re.test(pathname))) log(`404 ${pathname}`);
      res.writeHead(404, {'Content-Type': 'text/plain'});
      res.end('not found');
      return;
    }
    res.writeHead(200, {
      'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
      'Content-Length': fs.statSync(file).size,
      'Cache-Control': 'no-store',
    });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what} did not finish within ${Math.round(ms / 1000)} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function failure(error, stage = 'harness') {
  return {ok: false, error, stage, outputs: {}, second_outputs: {}, latency_ms: null, info: {}};
}

async function runJob(browser, base, job, index, msLeft) {
  const tag = `[job ${index} ${job.runtime} ${path.basename(job.file)}]`;
  const page = await browser.newPage();
  page.on('console', (msg) => {
    const type = msg.type();
    if (['error', 'warn', 'warning'].includes(type) && !QUIET.some((re) => re.test(msg.text()))) {
      log(`${tag} console.${type}: ${msg.text()}`);
    }
  });
  page.on('pageerror', (e) => log(`${tag} page error: ${e.message || e}`));
  page.on('requestfailed', (r) => {
    if (EXPECTED_404.some((re) => re.test(new URL(r.url()).pathname))) return;
    log(`${tag} request failed: ${r.url()} ${r.failure()?.errorText || ''}`);
  });
  try {
    const work = (async () => {
      await page.goto(`${base}/runner.html`, {waitUntil: 'load'});
      await page.waitForFunction('window.harnessReady === true');
      const pageJob = {...job, url: `${base}/model/${index}/${encodeURIComponent(path.basename(job.file))}`};
      delete pageJob.file;
      return page.evaluate((j) => window.runJob(j), pageJob);
    })();
    return await withTimeout(work, msLeft, `job ${index}`);
  } catch (e) {
    return failure(`harness: ${e.message || e}`);
  } finally {
    page.close().catch(() => {});
  }
}

async function launch(protocolTimeout) {
  const args = [
    '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check', '--disable-extensions',
    // Only the local server is reachable: a runtime that reached for a CDN would fail here, not pass silently.
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
  ];
  const options = {executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, protocolTimeout};
  const root = process.getuid && process.getuid() === 0;
  if (!root) {
    try {
      return await puppeteer.launch({...options, args});
    } catch (e) {
      // Containers often lack the user namespaces Chromium's sandbox needs; the pages load only local files.
      log(`launch with the sandbox failed (${String(e.message || e).split('\n')[0]}); retrying with --no-sandbox`);
    }
  }
  return puppeteer.launch({...options, args: [...args, '--no-sandbox']});
}

async function main() {
  const spec = readSpec();
  const jobs = spec.jobs || [];
  const deadline = Date.now() + 1000 * (spec.timeout || 300);
  const results = [];
  const server = await startServer(jobs);
  const base = `http://127.0.0.1:${server.address().port}`;
  let browser = null;
  try {
    browser = await launch(1000 * (spec.timeout || 300) + 10000);
    for (const [index, job] of jobs.entries()) {
      const msLeft = deadline - Date.now();
      if (msLeft <= 0) {
        results.push(failure('harness: not run, the run timed out before this job'));
        continue;
      }
      if (!job.file || !fs.existsSync(job.file)) {
        results.push(failure(`load: no such file ${job.file}`, 'load'));
        continue;
      }
      results.push(await runJob(browser, base, job, index, msLeft));
    }
  } finally {
    if (browser) await browser.close().catch((e) => log(`browser close: ${e.message || e}`));
    server.close();
  }
  // Exit only once the (possibly large) JSON is flushed: a pipe write is asynchronous.
  await new Promise((resolve) => process.stdout.write(JSON.stringify(results), resolve));
}

main().then(
  () => process.exit(0),
  (e) => {
    log(`fatal: ${e && e.stack ? e.stack : e}`);
    process.exit(2);
  },
);
