// Drives kerasvae's browser demo (kerasvae/export/web/) in headless Chromium for tests/test_web_demo.py.
//
//   node tests/browser/demo_screenshot.mjs plan.json result.json
//
// plan.json: {"chromium": "/usr/bin/chromium", "timeout_ms": 60000, "width": 1000, "height": 800, "args": [],
//             "pages": [{"url": "http://127.0.0.1:PORT/", "screenshot": "/path/shot.png" or null,
//                        "actions": [{"name": "slider", "type": "input", "selector": "#slider-2", "value": "1.5"},
//                                    {"name": "seed", "type": "call", "method": "setSeed", "args": [7]}]}]}
// For each page it waits until document.body.dataset.state leaves "loading", snapshots every drawn tile,
// then runs each action (set an element's value and dispatch its `input` event, or the `event` named; or
// call a method of window.kerasvaeDemo), waits for
// the page's redraws (kerasvaeDemo.idle()) and snapshots again; then takes the screenshot (full page).
// A snapshot is {name, state, latency, tiles: [{canvasId, role, index, z, label, t, width, height, scale,
// pixels: RGB bytes of each latent pixel (row-major, [h][w][3] flattened), uniform: whether each scale x
// scale block is one colour, opaque: whether every alpha byte is 255}]}.
// result.json: {pages: [{url, state, load_ms, snapshots, console, errors}]}. Exits 1 if a page failed.

import fs from 'node:fs';
import puppeteer from 'puppeteer-core';

const [planPath, resultPath] = process.argv.slice(2);
if (!planPath || !resultPath) {
  console.error('usage: node demo_screenshot.mjs plan.json result.json');
  process.exit(2);
}
const plan = JSON.parse(fs.readFileSync(planPath, 'utf8'));
const timeout = plan.timeout_ms ?? 60000;

const args = ['--headless=new', '--disable-gpu', '--no-first-run', '--no-default-browser-check', '--hide-scrollbars'];
if (process.getuid && process.getuid() === 0) args.push('--no-sandbox');
args.push(...(plan.args ?? []));

// Runs in the page: every drawn tile with its pixels read back from its canvas.
function snapshotInPage(name) {
  const demo = window.kerasvaeDemo;
  const tiles = demo.tiles.map((tile) => {
    const canvas = document.getElementById(tile.canvasId);
    const data = canvas.getContext('2d').getImageData(tile.x, tile.y, tile.width, tile.height).data;
    const w = tile.width / tile.scale;
    const h = tile.height / tile.scale;
    const pixels = [];
    let uniform = true;
    let opaque = true;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const corner = ((y * tile.scale) * tile.width + x * tile.scale) * 4;
        pixels.push(data[corner], data[corner + 1], data[corner + 2]);
        for (let dy = 0; dy < tile.scale; dy++) {
          for (let dx = 0; dx < tile.scale; dx++) {
            const o = ((y * tile.scale + dy) * tile.width + x * tile.scale + dx) * 4;
            if (data[o] !== data[corner] || data[o + 1] !== data[corner + 1] || data[o + 2] !== data[corner + 2]) uniform = false;
            if (data[o + 3] !== 255) opaque = false;
          }
        }
      }
    }
    return {...tile, pixels, uniform, opaque};
  });
  return {name, state: demo.state, latency: demo.latency, tiles};
}

const browser = await puppeteer.launch({executablePath: plan.chromium ?? '/usr/bin/chromium', headless: true, args});
const result = {pages: []};
let failed = false;
try {
  for (const spec of plan.pages) {
    const page = await browser.newPage();
    await page.setViewport({width: plan.width ?? 1000, height: plan.height ?? 800});
    const record = {url: spec.url, console: [], errors: [], snapshots: []};
    page.on('console', (message) => record.console.push(`${message.type()}: ${message.text()}`));
    page.on('pageerror', (error) => record.errors.push(String(error)));
    page.on('requestfailed', (request) => record.errors.push(`request failed: ${request.url()} ${request.failure()?.errorText}`));
    const start = Date.now();
    await page.goto(spec.url, {waitUntil: 'load', timeout});
    await page.waitForFunction(() => document.body.dataset.state !== 'loading', {timeout, polling: 50});
    record.load_ms = Date.now() - start;
    record.state = await page.evaluate(() => document.body.dataset.state);
    if (record.state !== 'ready') {
      failed = true;
      result.pages.push(record);
      continue;
    }
    record.snapshots.push(await page.evaluate(snapshotInPage, 'initial'));
    for (const action of spec.actions ?? []) {
      if (action.type === 'input') {
        await page.$eval(action.selector, (element, value, event) => {
          element.value = value;
          element.dispatchEvent(new Event(event, {bubbles: true}));
        }, action.value, action.event ?? 'input');
      } else if (action.type === 'call') {
        await page.evaluate((method, callArgs) => window.kerasvaeDemo[method](...callArgs), action.method, action.args ?? []);
      } else {
        throw new Error(`unknown action type ${action.type}`);
      }
      await page.evaluate(() => window.kerasvaeDemo.idle());
      record.snapshots.push(await page.evaluate(snapshotInPage, action.name));
    }
    if (spec.screenshot) await page.screenshot({path: spec.screenshot, fullPage: true});
    record.state = await page.evaluate(() => document.body.dataset.state);
    failed ||= record.state !== 'ready';
    result.pages.push(record);
    await page.close();
  }
} finally {
  await browser.close();
  fs.writeFileSync(resultPath, JSON.stringify(result));
}
process.exit(failed ? 1 : 0);
