// The page's worker: holds the bundle, the reference images (in memory only) and the release,
// and runs the wasm build of the `unpersonal-web` crate. Every fetch is relative to this
// script's own origin; nothing is ever sent.
import init, { openSession, bundleFiles, filelistPaths } from './unpersonal-web.js';

const BUNDLE = 'fashion-mnist';
let session = null;
let cancelled = false;

const post = (message, transfer) => self.postMessage(message, transfer || []);

async function fetchBytes(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: the page's server answered ${response.status} ${response.statusText}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function load() {
  await init({ module_or_path: new URL('./unpersonal-web_bg.wasm', import.meta.url) });
  const json = await fetchBytes(`${BUNDLE}/bundle.json`);
  const files = new Map([['bundle.json', json]]);
  for (const file of bundleFiles(new TextDecoder().decode(json))) {
    files.set(file, await fetchBytes(`${BUNDLE}/${file}`));
  }
  // The denoising loop runs on WebGPU when the browser gives an adapter; otherwise on the CPU,
  // and the page says why.
  let fallback = 'this browser offers no WebGPU';
  let adapter = null;
  if (self.navigator.gpu) {
    const found = await self.navigator.gpu.requestAdapter().catch(() => null);
    fallback = 'the browser gave no WebGPU adapter (WebGPU is switched off, or the GPU is blocked)';
    if (found) {
      adapter = [found.info?.vendor, found.info?.architecture, found.info?.description].filter(Boolean).join(' ') || 'unnamed adapter';
      try {
        session = await openSession(BUNDLE, files, true);
      } catch (error) {
        fallback = `the adapter (${adapter}) could not be used: ${String((error && error.message) || error)}`;
      }
    }
  }
  if (!session) session = await openSession(BUNDLE, files, false);
  post({ type: 'ready', info: JSON.parse(session.info()), adapter, fallback });
}

// Adds picked files: images by name (PNG/JPEG), an optional filelist for labels. A file named
// as an image that does not decode refuses the whole set: the gate must see every reference.
function addReferences(images, filelist) {
  session.clearReferences();
  const notices = [];
  for (const { name, bytes } of images) {
    const notice = session.addReference(name, new Uint8Array(bytes));
    if (notice) notices.push(notice);
  }
  if (filelist) session.labelReferences(filelist.name, filelist.text);
  return notices;
}

async function useSample() {
  const list = `${BUNDLE}/reference/filelist.txt`;
  const text = new TextDecoder().decode(await fetchBytes(list));
  const images = [];
  for (const path of filelistPaths('filelist.txt', text)) {
    images.push({ name: path, bytes: await fetchBytes(`${BUNDLE}/reference/${path}`) });
  }
  return addReferences(images, { name: 'filelist.txt', text });
}

async function generate(settings, references) {
  session.configure(JSON.stringify(settings));
  session.prepare();
  cancelled = false;
  for (let k = 0; k < references; k++) {
    const drawn = await session.draw(k, (round, done, total) => post({ type: 'step', k, round, done, total }));
    post({ type: 'drawn', k, drawn: JSON.parse(drawn) });
    // Let a cancel message in between reference images.
    await new Promise((resolve) => setTimeout(resolve, 0));
    if (cancelled) break;
  }
  post({ type: 'done', cancelled, report: JSON.parse(session.report()) });
}

const references = (notices, source, ignored) => post({ type: 'references', count: session.referenceCount(), notices, source, ignored });

self.onmessage = async ({ data }) => {
  try {
    switch (data.type) {
      case 'load': await load(); break;
      case 'sample': references(await useSample(), 'sample', 0); break;
      case 'files': references(addReferences(data.images, data.filelist), 'files', data.ignored); break;
      case 'generate': await generate(data.settings, session.referenceCount()); break;
      case 'cancel': cancelled = true; break;
      case 'zip': { const bytes = session.zip(); post({ type: 'zip', bytes }, [bytes.buffer]); break; }
      default: throw new Error(`unknown request ${data.type}`);
    }
  } catch (error) {
    // A reference set that failed half-way is no reference set: nothing may be drawn from it.
    if (session && (data.type === 'files' || data.type === 'sample')) session.clearReferences();
    post({ type: 'error', during: data.type, message: String((error && error.message) || error) });
  }
};
