// The page: load model/manifest.json and its .tflite with LiteRT.js (WebAssembly, CPU), then
// classify each image the user picks or drops. Preprocessing and the decision are core.js.
//
// For tests and benchmarks.browser, window.edgekd exposes `ready` (a promise of the model's
// facts) and `result(i)` (a promise of the i-th classification: logits, probabilities, decision,
// timings and the SHA-256 of the resized pixels).
import { loadAndCompile, loadLiteRt, Tensor } from '@litertjs/core';
import { modelInput, predict, readContract, rgbFromRgba } from './core.js';

const MODEL_DIR = 'model/';
const LITERT_DIR = 'node_modules/@litertjs/core/';
const TENSOR_TYPES = ['float32', 'int32', 'uint8']; // what LiteRT.js takes (no int8)
const ARRAYS = { float32: Float32Array, int32: Int32Array, uint8: Uint8Array };

const $ = (id) => document.getElementById(id);
const short = (v) => String(Number(v.toPrecision(3))); // 0.07420872 -> "0.0742" (display only)
const results = [];
const waiting = new Map();

function settle(i, record) {
  results[i] = record;
  waiting.get(i)?.(record);
  waiting.delete(i);
}

function showError(message) {
  $('status').textContent = message;
  $('status').className = 'error';
}

async function fetchJson(url) {
  const response = await fetch(url, { cache: 'no-store' });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function checkTensors(contract, model) {
  for (const [which, spec] of [['input', contract.input], ['output', contract.output]]) {
    if (!TENSOR_TYPES.includes(spec.dtype)) {
      throw new Error(`LiteRT.js takes ${TENSOR_TYPES.join(', ')} tensors; ${contract.name} has an ` +
        `${spec.dtype} ${which}. Sync the int8_float_io artefact (python -m exporters.sync_demos).`);
    }
  }
  const [detail] = model.getInputDetails();
  const shape = Array.from(detail.shape);
  if (shape.join() !== contract.input.shape.join() || detail.dtype !== contract.input.dtype) {
    throw new Error(`the model takes ${detail.dtype} [${shape}], the manifest says ` +
      `${contract.input.dtype} [${contract.input.shape}]`);
  }
}

async function run(model, data, shape) {
  const input = new Tensor(data, shape);
  const start = performance.now();
  const outputs = await model.run(input);
  const values = outputs[0].toTypedArray().slice();
  const ms = performance.now() - start;
  input.delete();
  for (const t of outputs) t.delete();
  return { values, ms };
}

async function load() {
  const manifest = await fetchJson(`${MODEL_DIR}manifest.json`);
  const contract = readContract(manifest);
  const version = (await fetchJson(`${LITERT_DIR}package.json`)).version;
  const start = performance.now();
  await loadLiteRt(`${LITERT_DIR}wasm/`);
  const model = await loadAndCompile(`${MODEL_DIR}${contract.path}`, { accelerator: 'wasm' });
  const loadMs = performance.now() - start;
  checkTensors(contract, model);
  const zeros = new ARRAYS[contract.input.dtype](contract.input.shape.reduce((a, b) => a * b));
  const warmupMs = (await run(model, zeros, contract.input.shape)).ms;
  const runtime = `LiteRT.js ${version} (WebAssembly, CPU)`;
  showModel(contract, runtime, loadMs, warmupMs);
  return { contract, model, runtime, litertVersion: version, loadMs, warmupMs,
    userAgent: navigator.userAgent };
}

function showModel(contract, runtime, loadMs, warmupMs) {
  const { decision, preprocessing: prep } = contract;
  $('model-name').textContent = `${contract.name} (${contract.precision}, ${prep.size}×${prep.size} px)`;
  $('model-dataset').textContent = contract.dataset ?? 'not recorded in the manifest';
  const gate = contract.gate;
  $('model-gate').textContent = gate === null ? 'no gate record in the manifest'
    : gate.status === 'pass' ? gate.detail : `NOT parity-checked (${gate.detail})`;
  $('model-gate').className = gate?.status === 'pass' ? '' : 'warning';
  $('model-runtime').textContent = `${runtime}; loaded in ${loadMs.toFixed(0)} ms, first run ` +
    `${warmupMs.toFixed(1)} ms`;
  $('model-decision').textContent = decision.positiveIndex === null
    ? 'the most likely class'
    : `referral when p(${decision.labels[decision.positiveIndex]}) ≥ ${short(decision.threshold)}` +
      ` at temperature ${short(decision.temperature)}` + (decision.targetSensitivity
      ? ` (threshold set for ${(decision.targetSensitivity * 100).toFixed(0)} % sensitivity on validation)`
      : '');
  $('model-info').hidden = false;
  $('status').textContent = 'Ready.';
  $('file').disabled = false;
}

async function decode(file) {
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return rgbFromRgba(canvas.width, canvas.height, ctx.getImageData(0, 0, canvas.width, canvas.height).data);
}

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function classify(app, file, index) {
  const t0 = performance.now();
  const image = await decode(file);
  const t1 = performance.now();
  const input = modelInput(app.contract, image);
  const t2 = performance.now();
  const out = await run(app.model, input.data, input.shape);
  const r = predict(app.contract, out.values);
  show(app.contract, file, image, input.pixels, r, { decode: t1 - t0, preprocess: t2 - t1, inference: out.ms });
  return { index, file: file.name, width: image.width, height: image.height,
    logits: Array.from(r.logits), probabilities: Array.from(r.probabilities),
    positiveProbability: r.positiveProbability, positive: r.positive, label: r.label,
    decodeMs: t1 - t0, preprocessMs: t2 - t1, inferenceMs: out.ms,
    pixelsSha256: await sha256(input.pixels.pixels) };
}

function drawPixels(canvas, pixels) {
  const { width, height } = pixels;
  canvas.width = width;
  canvas.height = height;
  const rgba = new ImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    rgba.data.set(pixels.pixels.subarray(3 * i, 3 * i + 3), 4 * i);
    rgba.data[4 * i + 3] = 255;
  }
  canvas.getContext('2d').putImageData(rgba, 0, 0);
}

function show(contract, file, image, pixels, r, ms) {
  const { decision, preprocessing: prep } = contract;
  const preview = $('preview');
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  $('preview-caption').textContent = `${file.name}, ${image.width}×${image.height}`;
  drawPixels($('model-view'), pixels);
  $('model-view-caption').textContent = `what the model sees: ${prep.size}×${prep.size} (${prep.resize})`;
  const box = $('decision');
  if (decision.positiveIndex === null) {
    $('probability').textContent = `Most likely class: ${r.label} (p = ${r.probabilities[r.classIndex].toFixed(3)})`;
    box.textContent = 'This is not a diagnosis.';
    box.className = '';
  } else {
    const name = decision.labels[decision.positiveIndex];
    $('probability').textContent = `p(${name}) = ${r.positiveProbability.toFixed(3)}` +
      ` at the shipped temperature ${short(decision.temperature)}`;
    box.textContent = r.positive
      ? `Above the model's referral threshold (${short(decision.threshold)}): a screening model would ` +
        'refer this lesion to a clinician for assessment. This is not a diagnosis.'
      : `Below the model's referral threshold (${short(decision.threshold)}): a screening model would not ` +
        'refer this lesion. This is not a diagnosis; a clinician should see any lesion that worries you.';
    box.className = r.positive ? 'above' : 'below';
  }
  $('latency').textContent = `Inference ${ms.inference.toFixed(1)} ms (LiteRT.js, WebAssembly, CPU);` +
    ` decoding ${ms.decode.toFixed(1)} ms, preprocessing ${ms.preprocess.toFixed(1)} ms.`;
  $('result').hidden = false;
}

function start() {
  const ready = load();
  let queue = ready;
  let count = 0;
  const submit = (file) => {
    if (!file) return;
    const index = count++;
    queue = queue.then((app) => classify(app, file, index)
      .then((record) => { $('status').textContent = 'Ready.'; $('status').className = ''; return record; })
      .catch((e) => { showError(`${file.name}: ${e.message}`); return { index, file: file.name, error: e.message }; })
      .then((record) => { settle(index, record); return app; }));
  };
  const input = $('file');
  input.addEventListener('change', () => { submit(input.files[0]); input.value = ''; });
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    submit(e.dataTransfer.files[0]);
  });
  window.edgekd = {
    ready: ready.then((app) => ({ name: app.contract.name, runtime: app.runtime,
      litertVersion: app.litertVersion, loadMs: app.loadMs, warmupMs: app.warmupMs,
      userAgent: app.userAgent, dataset: app.contract.dataset, gate: app.contract.gate })),
    result: (i) => (results[i] ? Promise.resolve(results[i])
      : new Promise((resolve) => waiting.set(i, resolve))),
  };
  ready.catch((e) => showError(`The model could not be loaded: ${e.message}`));
}

start();
