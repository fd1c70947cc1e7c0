// The runtime's WebGPU parity cases in headless Debian Chromium: web/ built with its `parity`
// feature (scripts/parity.sh) runs every kernel case and every model of the shipped bundle on
// Chromium's WebGPU adapter (SwiftShader here, `--enable-unsafe-webgpu`) against tract
// compiled to wasm in the same page; each difference is printed and must lie within its bound
// (kernels 1e-4, models 1e-3).
//
//   bash scripts/parity.sh                                  the test (scripts/test.sh runs it)
//   bash scripts/parity.sh --timing B[,B…] N                the shipped denoiser's speed: N
//       calls of B random images each on tract (wasm) and on WebGPU, after one untimed call
//
// The wasm-bindgen output is read from $PARITY_PKG (scripts/parity.sh sets it).

import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const pkg = process.env.PARITY_PKG || path.join(root, 'target/parity-web');
const bundleDir = path.join(root, 'models/fashion-mnist');
const timing = process.argv[2] === '--timing' ? { batches: (process.argv[3] || '1').split(',').map(Number), evaluations: Number(process.argv[4] || 1) } : null;
const TYPES = { '.js': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json', '.onnx': 'application/octet-stream' };

// `/` is an empty page, `/pkg/…` the wasm-bindgen output, `/fashion-mnist/…` the shipped bundle.
const server = http.createServer(async (req, res) => {
  const url = decodeURIComponent(new URL(req.url, 'http://host').pathname);
  if (url === '/') return res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>WebGPU parity</title><link rel="icon" href="data:,">');
  const [base, dir] = url.startsWith('/pkg/') ? ['/pkg/', pkg] : url.startsWith('/fashion-mnist/') ? ['/fashion-mnist/', bundleDir] : [];
  const file = dir && path.join(dir, url.slice(base.length));
  if (!file || !file.startsWith(dir)) return res.writeHead(404).end();
  try {
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' }).end(await fs.readFile(file));
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const origin = `http://127.0.0.1:${server.address().port}`;

const args = ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu'];
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args });
try {
  const page = await browser.newPage();
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  await page.goto(`${origin}/`);
  // Loads the module and the bundle's files once; `parity` and `files` stay on the page.
  const adapter = await page.evaluate(async () => {
    const gpuAdapter = await navigator.gpu?.requestAdapter();
    if (!gpuAdapter) return null;
    window.parity = await import('/pkg/unpersonal_web.js');
    await window.parity.default();
    const json = await (await fetch('/fashion-mnist/bundle.json')).text();
    const names = ['bundle.json', ...new Set(Object.values(JSON.parse(json).models).map((m) => m.file))];
    window.files = new Map(await Promise.all(names.map(async (n) => [n, new Uint8Array(await (await fetch(`/fashion-mnist/${n}`)).arrayBuffer())])));
    const { vendor, architecture, description } = gpuAdapter.info;
    return { vendor, architecture, description };
  });
  assert.ok(adapter, 'Chromium gave no WebGPU adapter (it needs --enable-unsafe-webgpu)');
  console.log(`adapter: ${JSON.stringify(adapter)}`);

  if (timing) {
    const results = [];
    for (const batch of timing.batches) {
      for (const backend of ['tract', 'webgpu']) {
        const r = JSON.parse(await page.evaluate(([backend, batch, evaluations]) => window.parity.timeDenoiser('fashion-mnist', window.files, backend, batch, evaluations), [backend, batch, timing.evaluations]));
        r.evaluations_per_s = (r.evaluations * 1000) / r.ms;
        r.images_per_s = r.evaluations_per_s * r.batch;
        console.log(JSON.stringify(r));
        results.push(r);
      }
    }
    await fs.mkdir(path.join(root, 'target'), { recursive: true });
    await fs.writeFile(path.join(root, 'target/parity-timing.json'), JSON.stringify(results, null, 2));
  } else {
    const start = Date.now();
    const kernels = JSON.parse(await page.evaluate(() => window.parity.kernels()));
    const kernelMs = Date.now() - start;
    const models = JSON.parse(await page.evaluate(() => window.parity.models('fashion-mnist', window.files)));
    const modelMs = Date.now() - start - kernelMs;
    // As the native test prints them; NaN or an infinite difference arrives as null.
    const number = (x) => (typeof x === 'number' ? x.toExponential() : String(x));
    for (const d of [...kernels, ...models]) console.log(`${d.case} ${d.output}: max |webgpu − tract| = ${number(d.max)} (bound ${number(d.bound)})`);
    console.log(`${kernels.length} kernel outputs in ${kernelMs} ms, ${models.length} model outputs in ${modelMs} ms`);
    assert.ok(kernels.length > 0, 'no kernel case ran');
    assert.deepEqual([...new Set(models.map((d) => d.case))], ['denoiser.onnx', 'classifier.onnx', 'reid_embed.onnx', 'reid_head.onnx']);
    for (const [differences, bound] of [[kernels, 1e-4], [models, 1e-3]]) {
      for (const d of differences) {
        assert.ok(d.bound <= bound, `${d.case}: bound ${d.bound}`);
        assert.ok(typeof d.max === 'number' && d.max <= d.bound, `${d.case} ${d.output}: max |webgpu − tract| = ${d.max}, bound ${d.bound}`);
      }
    }
  }
  assert.deepEqual(consoleErrors, []);
} finally {
  await browser.close();
  server.close();
}
