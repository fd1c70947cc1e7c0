// The page: picks reference images with the File API (they go to this page's own worker, in
// memory, never to a server), shows settings, progress, the gate's verdicts, and hands the
// release over as a zip.

const $ = (id) => document.getElementById(id);
const worker = new Worker('worker.js', { type: 'module' });
const IMAGE = /\.(png|jpe?g|dcm)$/i;
const SETTINGS = ['candidates', 'guidance', 'steps', 'rounds', 'seed'];

let info = null;
let referenceCount = 0;
let run = null; // { started, firstSample, drawn, released, rejected, references }

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = !message;
}

function busy(on) {
  for (const id of ['generate', 'sample', 'files', 'folder']) $(id).disabled = on || (id === 'generate' && (!info || referenceCount === 0));
  $('cancel').disabled = !on;
}

// The backend, as the worker found it: the denoising loop on WebGPU, or everything on the CPU
// (tract compiled to WebAssembly) with the reason WebGPU is not used.
function describeBackend(backend, adapter, fallback) {
  const gpu = backend.startsWith('webgpu');
  $('backend').textContent = gpu
    ? `Backend: WebGPU on ${adapter} — ${backend}, in a Web Worker.`
    : `Backend: CPU (tract compiled to WebAssembly, in a Web Worker). WebGPU is not used: ${fallback}.`;
  $('backend').dataset.backend = gpu ? 'webgpu' : 'cpu';
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(1)} s`;
}

function readSettings() {
  const settings = {};
  for (const id of SETTINGS) {
    const input = $(id);
    const value = Number(input.value);
    if (input.value === '' || !Number.isFinite(value) || value < Number(input.min) || (input.max && value > Number(input.max))) {
      throw new Error(`${input.parentElement.textContent.trim()}: ${input.value || 'empty'} is not between ${input.min} and ${input.max || '∞'}`);
    }
    settings[id] = id === 'guidance' ? value : Math.round(value);
  }
  if (!$('solver-choice').hidden) settings.solver = $('solver').value;
  // The distilled student learnt its teacher's guidance: it takes none.
  if (settings.solver === 'distilled') delete settings.guidance;
  return settings;
}

// The bundle's defaults for `solver` (each solver has its own steps; the student no guidance).
function applyDefaults(solver) {
  const d = info.solvers.find((s) => s.solver === solver) || info.defaults;
  for (const id of SETTINGS) $(id).value = id === 'guidance' ? Number(d[id].toFixed(3)) : d[id];
  $('guidance').disabled = d.solver === 'distilled';
}

const SOLVER_NAMES = { heun: 'Heun (guided)', 'dpmpp-2m': 'DPM-Solver++ (guided)', distilled: 'Distilled student (fast)' };

// Files from the picker or a drop: images by extension, a filelist by name; the rest is listed
// as ignored. Paths inside a picked folder are kept so that the filelist can name them.
async function sendFiles(entries) {
  $('references').dataset.state = 'reading';
  const images = [];
  let filelist = null;
  let ignored = 0;
  for (const { file, path } of entries) {
    if (IMAGE.test(file.name)) images.push({ name: path, bytes: await file.arrayBuffer() });
    else if (/\.txt$/i.test(file.name) && !filelist) filelist = { name: path, text: await file.text() };
    else ignored += 1;
  }
  if (images.length === 0) {
    showError('None of the picked files is a PNG, JPEG or DICOM (.dcm) image.');
    $('references').dataset.state = 'refused';
    return;
  }
  showError('');
  busy(true);
  $('references').textContent = `Reading ${images.length} images…`;
  worker.postMessage({ type: 'files', images, filelist, ignored }, images.map((i) => i.bytes));
}

async function droppedEntries(items) {
  const out = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      out.push({ file: await new Promise((ok, fail) => entry.file(ok, fail)), path: prefix + entry.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (batch.length === 0) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  };
  for (const entry of [...items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean)) await walk(entry, '');
  return out;
}

function cell(shown, kind, reference) {
  const div = document.createElement('div');
  div.className = `cell ${kind}`;
  div.dataset.reference = reference;
  const img = document.createElement('img');
  img.src = `data:image/png;base64,${shown.png}`;
  img.alt = kind === 'pass' ? 'released synthetic image' : 'rejected candidate';
  const verdict = document.createElement('div');
  verdict.className = 'verdict';
  verdict.textContent = kind === 'pass' ? `released · score ${shown.score.toFixed(3)}` : `rejected · score ${shown.score.toFixed(3)}`;
  div.append(img, verdict);
  if (shown.reason) {
    const reason = document.createElement('div');
    reason.textContent = shown.reason;
    div.append(reason);
  }
  div.title = `guidance ${shown.guidance.toFixed(2)}`;
  return div;
}

function updateProgress(k, fraction) {
  const total = run.references;
  $('progress-images').max = total;
  $('progress-images').value = k;
  const done = (k + fraction) / total;
  const elapsed = performance.now() - run.started;
  if (done > 0.01) $('eta').textContent = `about ${seconds((elapsed / done) * (1 - done))} left (estimated)`;
}

worker.onmessage = ({ data }) => {
  switch (data.type) {
    case 'ready': {
      info = data.info;
      describeBackend(info.backend, data.adapter, data.fallback);
      $('solver').replaceChildren(...info.solvers.map((s) => Object.assign(document.createElement('option'), {
        value: s.solver, textContent: `${SOLVER_NAMES[s.solver] || s.solver}, ${s.steps} steps`,
      })));
      $('solver').value = info.defaults.solver;
      $('solver-choice').hidden = info.solvers.length < 2;
      applyDefaults(info.defaults.solver);
      $('bundle').textContent = `Bundle “${info.name}”: ${info.shape[1]}×${info.shape[2]} images, ${info.labels} labels; the gate rejects a candidate at same-person probability ≥ ${info.threshold.toFixed(3)} against its own reference image and ≥ ${info.neighbour_threshold.toFixed(3)} against the ${info.neighbours} nearest others. Model weights: ${info.policy}.`;
      $('bundle').dataset.ready = 'true';
      busy(false);
      break;
    }
    case 'references': {
      referenceCount = data.count;
      $('references').textContent = `${data.count} reference images ${data.source === 'sample' ? "from the bundle's sample" : 'picked'}${data.ignored ? ` (${data.ignored} other files ignored)` : ''}; they stay in this tab's memory.`;
      $('notices').replaceChildren(...data.notices.map((n) => Object.assign(document.createElement('li'), { textContent: n })));
      $('references').dataset.state = 'ready';
      busy(false);
      break;
    }
    case 'step': {
      $('progress-steps').max = data.total;
      $('progress-steps').value = data.done;
      updateProgress(data.k, data.round === 0 ? data.done / data.total : 1);
      break;
    }
    case 'drawn': {
      const now = performance.now();
      if (run.firstSample === null && data.drawn.released.length > 0) run.firstSample = now - run.started;
      for (const shown of data.drawn.released) $('grid').append(cell(shown, 'pass', data.k));
      for (const shown of data.drawn.rejected) $('grid').append(cell(shown, 'rejected', data.k));
      run.released += data.drawn.released.length;
      run.rejected += data.drawn.rejected.length;
      run.drawn = data.k + 1;
      updateProgress(data.k + 1, 0);
      $('summary').textContent = `${run.released} released from ${run.drawn} of ${run.references} reference images; ${run.rejected} rejected candidate${run.rejected === 1 ? '' : 's'}.`;
      break;
    }
    case 'done': {
      const total = performance.now() - run.started;
      const first = run.firstSample === null ? 'no sample released' : `first sample after ${seconds(run.firstSample)}`;
      $('timing').textContent = `${data.cancelled ? 'Cancelled' : 'Done'}: ${first}, total ${seconds(total)} for ${run.drawn} reference images.`;
      Object.assign($('timing').dataset, { firstSampleMs: run.firstSample ?? '', totalMs: total, done: 'true' });
      $('eta').textContent = '';
      $('download').disabled = run.drawn === 0;
      busy(false);
      break;
    }
    case 'zip': {
      const url = URL.createObjectURL(new Blob([data.bytes], { type: 'application/zip' }));
      const a = Object.assign(document.createElement('a'), { href: url, download: 'unpersonal-release.zip' });
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      break;
    }
    case 'error': {
      showError(`${{ load: 'Cannot load the model bundle', files: 'Cannot use the picked files', sample: "Cannot use the bundle's sample", generate: 'Generation stopped', zip: 'Cannot make the zip' }[data.during] || 'Error'}: ${data.message}`);
      if (data.during === 'files' || data.during === 'sample') {
        referenceCount = 0;
        $('references').textContent = 'No reference images: the picked set was refused.';
        $('references').dataset.state = 'refused';
      }
      if (data.during === 'load') {
        $('bundle').textContent = 'The model bundle could not be loaded; nothing can be generated.';
        $('backend').textContent = 'Backend: none (the bundle did not load).';
      }
      busy(false);
      if (data.during === 'load') $('generate').disabled = true;
      break;
    }
  }
};
worker.onerror = (event) => showError(`The worker failed: ${event.message || 'it could not start (is WebAssembly allowed?)'}`);

$('files').addEventListener('change', (e) => sendFiles([...e.target.files].map((file) => ({ file, path: file.name }))));
$('folder').addEventListener('change', (e) => sendFiles([...e.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }))));
$('sample').addEventListener('click', () => { showError(''); busy(true); $('references').dataset.state = 'reading'; worker.postMessage({ type: 'sample' }); });
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', async (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  sendFiles(await droppedEntries(e.dataTransfer.items));
});
$('generate').addEventListener('click', () => {
  let settings;
  try {
    settings = readSettings();
  } catch (error) {
    showError(error.message);
    return;
  }
  showError('');
  $('grid').replaceChildren();
  $('summary').textContent = '';
  $('timing').textContent = '';
  delete $('timing').dataset.done;
  $('download').disabled = true;
  run = { started: performance.now(), firstSample: null, drawn: 0, released: 0, rejected: 0, references: referenceCount };
  busy(true);
  worker.postMessage({ type: 'generate', settings });
});
$('cancel').addEventListener('click', () => {
  $('eta').textContent = 'stopping after the current image…';
  $('cancel').disabled = true;
  worker.postMessage({ type: 'cancel' });
});
$('download').addEventListener('click', () => worker.postMessage({ type: 'zip' }));
$('solver').addEventListener('change', () => applyDefaults($('solver').value));
$('show-rejected').addEventListener('change', (e) => $('grid').classList.toggle('hide-rejected', !e.target.checked));
$('grid').classList.add('hide-rejected');

busy(true);
$('backend').textContent = 'Backend: looking for WebGPU…';
worker.postMessage({ type: 'load' });
