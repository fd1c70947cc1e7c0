// The page in dist/ in headless Debian Chromium, end to end: serves dist/ on 127.0.0.1 with
// the page's Content-Security-Policy as a header, picks reference images through the file
// input, generates with WebGPU unavailable (the CPU fallback, which the page must announce),
// downloads the zip and checks it; then generates the same images with WebGPU on (Chromium's
// SwiftShader adapter, `--enable-unsafe-webgpu`) and compares them pixel by pixel; and checks
// that no request left the page's origin and none carried a body.
//
//   node tests/web/page.test.mjs                     the test (README's test command runs it)
//   node tests/web/page.test.mjs --timing N [cpu|webgpu] [C]
//       time to first sample and total for the default settings on N shipped reference images,
//       on the CPU or on WebGPU; with C, C candidates per image and one round (C·steps guided
//       denoiser evaluations per image, at C images per call)
//
// Output (screenshots, the zip, timings): $WEB_TEST_OUT, default target/web-test/.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dist = path.join(root, 'dist');
const out = process.env.WEB_TEST_OUT || path.join(root, 'target/web-test');
const sample = path.join(root, 'models/fashion-mnist/reference');
const timing = process.argv[2] === '--timing' ? Number(process.argv[3] || 4) : 0;
const timingOnGpu = process.argv[4] === 'webgpu';
const timingCandidates = Number(process.argv[5] || 0);
const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src 'self'; img-src 'self' data: blob:; style-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'";
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json', '.png': 'image/png', '.txt': 'text/plain' };

// A grayscale PNG (for the wrong-size case), with node's zlib and a table-free CRC-32.
function png(width, height, value) {
  const crc = (bytes) => {
    let c = ~0;
    for (const b of bytes) { c ^= b; for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1)); }
    return ~c >>> 0;
  };
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type), data]);
    const head = Buffer.alloc(4); head.writeUInt32BE(data.length);
    const tail = Buffer.alloc(4); tail.writeUInt32BE(crc(body));
    return Buffer.concat([head, body, tail]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0); ihdr.writeUInt32BE(height, 4); ihdr[8] = 8; ihdr[9] = 0;
  const rows = Buffer.alloc((width + 1) * height, value);
  for (let y = 0; y < height; y++) rows[y * (width + 1)] = 0;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
}

const served = [];
const server = http.createServer(async (req, res) => {
  let body = 0;
  for await (const part of req) body += part.length;
  served.push({ method: req.method, url: req.url, body });
  const file = path.join(dist, decodeURIComponent(new URL(req.url, 'http://host').pathname));
  if (!file.startsWith(dist)) return res.writeHead(403).end();
  try {
    const target = (await fs.stat(file)).isDirectory() ? path.join(file, 'index.html') : file;
    const data = await fs.readFile(target);
    res.writeHead(200, { 'content-type': TYPES[path.extname(target)] || 'application/octet-stream', 'content-security-policy': CSP, 'cache-control': 'no-store' });
    res.end(data);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const origin = `http://127.0.0.1:${server.address().port}`;
await fs.mkdir(out, { recursive: true });

const ARGS = ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const launch = (webgpu) => chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: webgpu ? [...ARGS, '--enable-unsafe-webgpu'] : ARGS });
const browser = await launch(timing && timingOnGpu);
const gpuBrowser = timing ? null : await launch(true);

// The 8-bit gray values of every image in the grid (released and rejected) drawn for the first
// `references` reference images, in order.
const gridPixels = (page, references) => page.$$eval(`#grid .cell:is(${[...Array(references).keys()].map((k) => `[data-reference="${k}"]`).join(',')}) img`, (images) => images.map((img) => {
  const canvas = new OffscreenCanvas(img.naturalWidth, img.naturalHeight);
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  return Array.from(context.getImageData(0, 0, img.naturalWidth, img.naturalHeight).data.filter((_, i) => i % 4 === 0));
}));
const requests = [];
const offOrigin = [];
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1200, height: 1000 } });
  // Every request is recorded; any outside the page's origin is refused and recorded.
  const watch = async (c) => {
    c.on('request', (r) => requests.push({ url: r.url(), method: r.method(), body: r.postDataBuffer() }));
    await c.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(`${origin}/`) || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
      offOrigin.push(url);
      return route.abort();
    });
  };
  await watch(context);
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  const loadStart = Date.now();
  await page.goto(`${origin}/`);
  await page.waitForSelector('#bundle[data-ready="true"]', { timeout: 300_000 });
  const loadMs = Date.now() - loadStart;
  // The weights' release policy, as `unpersonal info` words it.
  assert.match(await page.textContent('#bundle'), /Model weights: .*(policy: (site-only|shareable)|keep the bundle on site)/);
  if (!timing) {
    assert.equal(await page.getAttribute('#backend', 'data-backend'), 'cpu');
    assert.match(await page.textContent('#backend'), /CPU \(tract compiled to WebAssembly.*WebGPU is not used: the browser gave no WebGPU adapter/);
  }
  console.log(await page.textContent('#backend'));
  const names = (await fs.readFile(path.join(sample, 'filelist.txt'), 'utf8')).split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(/\s+/)[0]);
  const file = async (name) => ({ name: path.basename(name), mimeType: 'image/png', buffer: await fs.readFile(path.join(sample, name)) });
  const pick = async (files) => {
    await page.setInputFiles('#files', files);
    await page.waitForSelector('#references:is([data-state="ready"], [data-state="refused"])');
  };

  if (timing) {
    await pick(await Promise.all(names.slice(0, timing).map(file)));
    if (timingCandidates) for (const [id, value] of Object.entries({ candidates: timingCandidates, rounds: 1 })) await page.fill(`#${id}`, String(value));
    await page.click('#generate');
    await page.waitForSelector('#timing[data-done="true"]', { timeout: 3_600_000 });
    const t = await page.$eval('#timing', (e) => ({ ...e.dataset, text: e.textContent }));
    const settings = await page.$$eval('#settings input', (inputs) => Object.fromEntries(inputs.map((i) => [i.id, i.value])));
    const result = { references: timing, backend: await page.textContent('#backend'), settings, load_ms: loadMs, first_sample_ms: Number(t.firstSampleMs), total_ms: Number(t.totalMs), page: t.text };
    if (timingCandidates) result.guided_evaluations_per_s = (timing * timingCandidates * Number(settings.steps)) / (result.total_ms / 1000);
    console.log(JSON.stringify(result, null, 2));
    await fs.writeFile(path.join(out, 'timing.json'), JSON.stringify(result, null, 2));
  } else {
    // Bad input is shown in the page: a file named .png that is no image refuses the set.
    await pick([{ name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('not an image') }]);
    assert.equal(await page.getAttribute('#references', 'data-state'), 'refused');
    assert.match(await page.textContent('#error'), /notes\.png: cannot decode image/);
    assert.equal(await page.isDisabled('#generate'), true, 'nothing to generate from a refused set');

    // Three shipped images, one image of the wrong size (resized with a notice), a 64×64
    // 16-bit DICOM file (windowed and resized), and the filelist.
    const big = path.basename(names[3]);
    const dicom = 'MR_small.dcm';
    const listText = (await fs.readFile(path.join(sample, 'filelist.txt'), 'utf8')).replace(names[3], `images/${big}`) + `${dicom} 1 0 0 0 0 0 0 0 0 0\n`;
    await pick([
      ...(await Promise.all(names.slice(0, 3).map(file))),
      { name: big, mimeType: 'image/png', buffer: png(56, 56, 200) },
      { name: dicom, mimeType: 'application/dicom', buffer: await fs.readFile(path.join(root, 'tests/data/dicom', dicom)) },
      { name: 'filelist.txt', mimeType: 'text/plain', buffer: Buffer.from(listText) },
    ]);
    assert.equal(await page.isHidden('#error'), true, await page.textContent('#error'));
    assert.match(await page.textContent('#references'), /^5 reference images picked/);
    assert.match(await page.textContent('#notices'), new RegExp(`${big}: resized from 56×56 to 28×28`));
    assert.match(await page.textContent('#notices'), new RegExp(`${dicom}: resized from 64×64 to 28×28`));

    for (const [id, value] of Object.entries({ candidates: 2, steps: 6, rounds: 2, seed: 1 })) await page.fill(`#${id}`, String(value));
    await page.click('#generate');
    await page.waitForSelector('#timing[data-done="true"]', { timeout: 900_000 });
    assert.equal(await page.isHidden('#error'), true, await page.textContent('#error'));
    const released = await page.$$eval('#grid .cell.pass', (cells) => cells.length);
    const rejected = await page.$$eval('#grid .cell.rejected', (cells) => cells.length);
    const cpuTiming = await page.textContent('#timing');
    const cpuPixels = await gridPixels(page, 2);
    assert.ok(released >= 1 && released <= 5, `released ${released}`);
    await page.check('#show-rejected');
    await page.screenshot({ path: path.join(out, 'page.png'), fullPage: true });

    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    const zipPath = path.join(out, 'release.zip');
    await download.saveAs(zipPath);
    const listing = JSON.parse(execFileSync('python3', ['-c', `
import json, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
print(json.dumps({"names": z.namelist(), "filelist": z.read("filelist.txt").decode(), "report": json.loads(z.read("report.json"))}))`, zipPath]));
    const images = listing.names.filter((n) => /^images\/[0-9a-f]{16}\.png$/.test(n));
    assert.equal(images.length, released, `zip images vs grid: ${listing.names}`);
    assert.deepEqual(listing.names.filter((n) => !images.includes(n)).sort(), ['filelist.txt', 'report.json']);
    const lines = listing.filelist.trim().split('\n');
    assert.equal(lines.length, released);
    for (const line of lines) {
      const [file, ...labels] = line.split(' ');
      assert.ok(images.includes(file), line);
      assert.equal(labels.length, 10, line);
      assert.equal(labels.filter((l) => l === '1').length, 1, line);
    }
    const report = listing.report;
    assert.equal(report.privacy_gate.applied, true);
    assert.equal(report.released_images, released);
    assert.equal(report.reference_images, 5);
    assert.equal(report.run.reference.labels, 'filelist');
    assert.equal(report.run.settings.candidates, 2);
    assert.equal(report.rounds[0].rejected + (report.rounds[1]?.rejected ?? 0), rejected);
    assert.ok(!JSON.stringify(report).includes(big) && !JSON.stringify(report).includes(dicom), 'the report names no reference image');
    console.log(`CPU: released ${released}, rejected ${rejected}; page loaded in ${loadMs} ms; ${cpuTiming}`);

    // The same settings with WebGPU on: the denoising loop runs on the adapter and draws the
    // same images for the same references, up to one gray level (float rounding differs).
    const gpuContext = await gpuBrowser.newContext({ viewport: { width: 1200, height: 1000 } });
    await watch(gpuContext);
    const gpuPage = await gpuContext.newPage();
    gpuPage.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    gpuPage.on('pageerror', (e) => consoleErrors.push(String(e)));
    await gpuPage.goto(`${origin}/`);
    await gpuPage.waitForSelector('#bundle[data-ready="true"]', { timeout: 300_000 });
    assert.equal(await gpuPage.getAttribute('#backend', 'data-backend'), 'webgpu', await gpuPage.textContent('#backend'));
    console.log(await gpuPage.textContent('#backend'));
    // The first two of the same references (SwiftShader runs the kernels on the CPU, slowly).
    await gpuPage.setInputFiles('#files', [
      ...(await Promise.all(names.slice(0, 2).map(file))),
      { name: 'filelist.txt', mimeType: 'text/plain', buffer: Buffer.from(listText) },
    ]);
    await gpuPage.waitForSelector('#references[data-state="ready"]');
    for (const [id, value] of Object.entries({ candidates: 2, steps: 6, rounds: 2, seed: 1 })) await gpuPage.fill(`#${id}`, String(value));
    await gpuPage.click('#generate');
    await gpuPage.waitForSelector('#timing[data-done="true"]', { timeout: 900_000 });
    assert.equal(await gpuPage.isHidden('#error'), true, await gpuPage.textContent('#error'));
    const gpuPixels = await gridPixels(gpuPage, 2);
    assert.equal(gpuPixels.length, cpuPixels.length, 'WebGPU and the CPU drew as many images');
    let diff = 0;
    cpuPixels.forEach((image, i) => image.forEach((v, j) => { diff = Math.max(diff, Math.abs(v - gpuPixels[i][j])); }));
    console.log(`WebGPU: ${gpuPixels.length} images, max |webgpu − cpu| = ${diff} gray levels; ${await gpuPage.textContent('#timing')}`);
    assert.ok(diff <= 1, `images drawn on WebGPU differ from the CPU's by ${diff} gray levels`);
    await gpuPage.screenshot({ path: path.join(out, 'page-webgpu.png'), fullPage: true });
    await gpuContext.close();
  }

  if (!timing) {
    // A corrupt bundle file is reported on the page, by name, and nothing can be generated.
    const broken = await browser.newContext();
    broken.on('request', (r) => requests.push({ url: r.url(), method: r.method(), body: r.postDataBuffer() }));
    await broken.route('**/fashion-mnist/reid_head.onnx', async (route) => {
      const response = await route.fetch();
      const body = await response.body();
      await route.fulfill({ response, body: body.subarray(0, body.length >> 1) });
    });
    const page = await broken.newPage();
    await page.goto(`${origin}/`);
    await page.waitForSelector('#error:not([hidden])', { timeout: 300_000 });
    assert.match(await page.textContent('#error'), /Cannot load the model bundle: .*reid_head\.onnx/);
    assert.equal(await page.isDisabled('#generate'), true);
    await broken.close();
  }

  // Nothing left the origin, nothing carried a body; the worker's fetches were seen too.
  assert.deepEqual(offOrigin, [], 'requests outside the page origin');
  for (const r of requests) {
    assert.ok(r.url.startsWith(`${origin}/`) || r.url.startsWith('data:') || r.url.startsWith('blob:'), r.url);
    assert.equal(r.body, null, `${r.method} ${r.url} carried a body`);
  }
  assert.ok(requests.some((r) => r.url.endsWith('/fashion-mnist/denoiser.onnx')), 'the worker\'s requests are observed');
  for (const s of served) assert.ok(s.method === 'GET' && s.body === 0, `${s.method} ${s.url} with ${s.body} bytes`);
  assert.deepEqual(consoleErrors, []);
  console.log(`${requests.length} requests, all to ${origin}, none with a body`);
} finally {
  await browser.close();
  if (gpuBrowser) await gpuBrowser.close();
  server.close();
}
