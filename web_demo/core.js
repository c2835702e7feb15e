// EdgeKD's preprocessing and decision in JavaScript (an ES module, no dependencies, no DOM).
//
// A port of kd_core/data/transforms.py (resize_uint8, normalize), runtimes/quant.py (the
// quantized-I/O rules) and kd_core.deploy.Decision (softmax at the temperature, then the
// threshold), read from one manifest entry (docs/MANIFEST.md). tests/test_web_core.py holds it to
// the Python code on the same decoded pixels: resized pixels, float and quantized tensors
// bit-exact; probabilities within 1e-15 (Math.exp and numpy's exp may differ by an ulp);
// decisions equal. Every float64 step is a separate multiply and add (JavaScript never fuses);
// float32 steps round each result with Math.fround, which equals float32 arithmetic for + - * /.

export const RESIZE_RULES = ['squash', 'center_crop'];
export const LAYOUTS = ['NHWC', 'NCHW'];
const QRANGE = { int8: [-128, 127], uint8: [0, 255] };

/** A manifest that breaks the deploy contract; the message names the field. */
export class ContractError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ContractError';
  }
}

const isFiniteNumber = (v) => typeof v === 'number' && Number.isFinite(v);

function need(ok, where, message) {
  if (!ok) throw new ContractError(`${where}: ${message}`);
}

function readQuant(spec, where) {
  const q = spec.quantization;
  if (q === null || q === undefined) return null;
  need(isFiniteNumber(q.scale) && q.scale > 0 && Number.isInteger(q.zero_point), where,
    `quantization needs scale > 0 and an integer zero_point, got ${JSON.stringify(q)}`);
  need(spec.dtype in QRANGE, where, `quantized dtype must be int8 or uint8, got ${spec.dtype}`);
  return { scale: q.scale, zeroPoint: q.zero_point };
}

function readDecision(entry, where) {
  const labels = entry.labels;
  need(Array.isArray(labels) && labels.length >= 2 && labels.every((l) => typeof l === 'string' && l),
    where, `labels must be at least 2 non-empty strings, got ${JSON.stringify(labels)}`);
  const t = entry.temperature;
  need(isFiniteNumber(t) && t > 0 && t <= 1000, where, `temperature must be in (0, 1000], got ${t}`);
  const pos = entry.positive_index ?? null;
  if (pos === null) {
    need(entry.threshold === null || entry.threshold === undefined, where,
      'a threshold needs a positive class');
    return { labels, positiveIndex: null, temperature: t, threshold: null, targetSensitivity: null };
  }
  need(Number.isInteger(pos) && pos >= 0 && pos < labels.length, where,
    `positive_index must be 0..${labels.length - 1}, got ${pos}`);
  const thr = entry.threshold;
  need(isFiniteNumber(thr) && thr >= 0 && thr <= 1, where,
    `threshold must be a probability in [0, 1], got ${thr}`);
  const target = entry.target_sensitivity ?? null;
  need(target === null || (isFiniteNumber(target) && target > 0 && target <= 1), where,
    `target_sensitivity must be in (0, 1], got ${target}`);
  return { labels, positiveIndex: pos, temperature: t, threshold: thr, targetSensitivity: target };
}

function readPreprocessing(p, where) {
  need(p && typeof p === 'object', where, 'preprocessing must be an object');
  need(Number.isInteger(p.size) && p.size >= 8, where, `preprocessing.size must be >= 8, got ${p.size}`);
  need(RESIZE_RULES.includes(p.resize), where, `unknown resize rule ${JSON.stringify(p.resize)}`);
  const interpolation = p.interpolation ?? 'bilinear_antialias';
  need(interpolation === 'bilinear_antialias', where, `unsupported interpolation ${interpolation}`);
  for (const key of ['mean', 'std']) {
    need(Array.isArray(p[key]) && p[key].length === 3 && p[key].every(isFiniteNumber), where,
      `preprocessing.${key} must be 3 numbers`);
  }
  need(p.std.every((s) => s !== 0), where, 'preprocessing.std must not be 0');
  return { size: p.size, mean: p.mean, std: p.std, resize: p.resize };
}

/** The trimmed entry's parity-gate record, {status, detail}, or null when there is none. */
function readGate(gate, where) {
  if (gate === undefined || gate === null) return null;
  need(typeof gate === 'object' && typeof gate.status === 'string', where,
    'gate must be an object with a string status');
  return { status: gate.status, detail: typeof gate.detail === 'string' ? gate.detail : '' };
}

/**
 * The contract of one artefact of a (trimmed) manifest: by name, else the only entry.
 * Returns {name, path, format, precision, dataset, gate, preprocessing, input, output, decision};
 * `gate` is the {status, detail} record exporters.sync_demos adds (null in an untrimmed manifest).
 */
export function readContract(manifest, name = null) {
  need(manifest && manifest.manifest_version === 1, 'manifest',
    `manifest_version ${manifest?.manifest_version} is not supported (this demo reads 1)`);
  const arts = manifest.artifacts;
  need(Array.isArray(arts) && arts.length > 0, 'manifest', 'no artifacts');
  const entry = name === null ? (arts.length === 1 ? arts[0] : null) : arts.find((a) => a.name === name);
  need(entry, 'manifest', name === null ? `${arts.length} artefacts; name one`
    : `no artefact named ${name}`);
  const where = `manifest (artefact ${entry.name})`;
  need(typeof entry.path === 'string' && entry.path && !entry.path.split('/').includes('..'),
    where, 'path must be a relative path inside the manifest folder');
  const inp = entry.input ?? {};
  const out = entry.output ?? {};
  need(LAYOUTS.includes(inp.layout ?? 'NCHW'), where, `unknown layout ${inp.layout}`);
  const preprocessing = readPreprocessing(entry.preprocessing, where);
  const decision = readDecision(entry, where);
  const size = preprocessing.size;
  const layout = inp.layout ?? 'NCHW';
  return {
    name: entry.name, path: entry.path, format: entry.format, precision: entry.precision,
    dataset: entry.dataset ?? manifest.dataset ?? null,
    gate: readGate(entry.gate, where),
    preprocessing, decision,
    input: {
      layout, dtype: inp.dtype ?? 'float32', quant: readQuant(inp, `${where} input`),
      shape: layout === 'NHWC' ? [1, size, size, 3] : [1, 3, size, size],
    },
    output: { dtype: out.dtype ?? 'float32', quant: readQuant(out, `${where} output`),
      kind: out.kind ?? 'logits' },
  };
}

// ---- images ---------------------------------------------------------------------------------

/** An 8-bit RGB image: rows top to bottom, pixels interleaved R, G, B. */
export function rgbImage(width, height, pixels) {
  if (!(width > 0 && height > 0) || pixels.length !== width * height * 3) {
    throw new RangeError(`expected ${width}x${height}x3 bytes, got ${pixels.length}`);
  }
  return { width, height, pixels };
}

/** From canvas RGBA (ImageData.data); images with any transparency are refused, as in Python. */
export function rgbFromRgba(width, height, rgba) {
  const n = width * height;
  if (rgba.length !== n * 4) throw new RangeError(`expected ${n * 4} RGBA bytes, got ${rgba.length}`);
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    if (rgba[4 * i + 3] !== 255) throw new RangeError('the image has transparent pixels; use an RGB image');
    out[3 * i] = rgba[4 * i];
    out[3 * i + 1] = rgba[4 * i + 1];
    out[3 * i + 2] = rgba[4 * i + 2];
  }
  return rgbImage(width, height, out);
}

/** Rows [first, first + count) of the antialiased triangle filter: [{lo, weights}]. */
export function taps(inSize, outSize, first = 0, count = outSize) {
  const scale = inSize / outSize;
  const support = scale >= 1.0 ? scale : 1.0;
  const invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  const rows = [];
  for (let i = first; i < first + count; i++) {
    const center = scale * (i + 0.5);
    const lo = Math.max(Math.trunc(center - support + 0.5), 0); // Python int(): toward zero
    const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    const w = new Float64Array(hi - lo);
    for (let j = lo; j < hi; j++) w[j - lo] = Math.max(1.0 - Math.abs((j - center + 0.5) * invscale), 0.0);
    let total = 0.0; // left to right, as transforms._taps
    for (const v of w) total += v;
    for (let t = 0; t < w.length; t++) w[t] = w[t] / total;
    rows.push({ lo, weights: w });
  }
  return rows;
}

/** transforms.resized_shape: [height, width] before the crop. */
export function resizedShape(height, width, size, rule) {
  if (rule === 'squash') return [size, size];
  if (height <= width) return [size, Math.trunc((size * width) / height)];
  return [Math.trunc((size * height) / width), size];
}

/** transforms.resize_uint8: horizontal pass, vertical pass (float64), round half up, clip. */
export function resizeUint8(image, size, rule = 'squash') {
  if (!RESIZE_RULES.includes(rule)) throw new RangeError(`unknown resize rule ${rule}`);
  const { width: w, height: h, pixels } = image;
  const [newH, newW] = resizedShape(h, w, size, rule);
  const wx = taps(w, newW, Math.trunc((newW - size) / 2), size);
  const wy = taps(h, newH, Math.trunc((newH - size) / 2), size);
  const horiz = new Float64Array(h * size * 3); // [y][ox][c]
  for (let y = 0; y < h; y++) {
    for (let ox = 0; ox < size; ox++) {
      const { lo, weights } = wx[ox];
      for (let c = 0; c < 3; c++) {
        let acc = 0.0;
        for (let k = 0; k < weights.length; k++) acc = acc + pixels[(y * w + lo + k) * 3 + c] * weights[k];
        horiz[(y * size + ox) * 3 + c] = acc;
      }
    }
  }
  const out = new Uint8Array(size * size * 3);
  for (let oy = 0; oy < size; oy++) {
    const { lo, weights } = wy[oy];
    for (let ox = 0; ox < size; ox++) {
      for (let c = 0; c < 3; c++) {
        let acc = 0.0;
        for (let k = 0; k < weights.length; k++) acc = acc + weights[k] * horiz[((lo + k) * size + ox) * 3 + c];
        out[(oy * size + ox) * 3 + c] = Math.min(Math.max(Math.floor(acc + 0.5), 0), 255);
      }
    }
  }
  return rgbImage(size, size, out);
}

/** transforms.normalize in float32: (pixel / 255 - mean) / std, in `layout` order (batch 1). */
export function normalize(image, mean, std, layout = 'NHWC') {
  const m = mean.map(Math.fround);
  const s = std.map(Math.fround);
  const hw = image.width * image.height;
  const out = new Float32Array(hw * 3);
  for (let i = 0; i < hw; i++) {
    for (let c = 0; c < 3; c++) {
      const v = Math.fround(image.pixels[3 * i + c] / 255);
      out[layout === 'NHWC' ? 3 * i + c : c * hw + i] = Math.fround(Math.fround(v - m[c]) / s[c]);
    }
  }
  return out;
}

/** Round half to even (numpy's rint). */
export function rint(v) {
  const f = Math.floor(v);
  const d = v - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/** runtimes.quant.quantize: clamp(rint(float32(x / scale)) + zero_point) as int8 or uint8. */
export function quantize(x, quant, dtype = 'int8') {
  const [lo, hi] = QRANGE[dtype];
  const scale = Math.fround(quant.scale);
  const out = dtype === 'int8' ? new Int8Array(x.length) : new Uint8Array(x.length);
  for (let i = 0; i < x.length; i++) {
    out[i] = Math.min(Math.max(rint(Math.fround(x[i] / scale)) + quant.zeroPoint, lo), hi);
  }
  return out;
}

/** runtimes.quant.dequantize: (q - zero_point) * scale in float64. */
export function dequantize(q, quant) {
  return Float64Array.from(q, (v) => (v - quant.zeroPoint) * quant.scale);
}

/** The model's input for a decoded RGB image: {pixels (resized), data (typed array), shape}. */
export function modelInput(contract, image) {
  const { size, resize, mean, std } = contract.preprocessing;
  const pixels = resizeUint8(image, size, resize);
  const x = normalize(pixels, mean, std, contract.input.layout);
  const q = contract.input.quant;
  return { pixels, data: q ? quantize(x, q, contract.input.dtype) : x, shape: contract.input.shape };
}

// ---- decision -------------------------------------------------------------------------------

/** numpy's float64 sum of a contiguous array: pairwise, blocks of 8 (np.add.reduce). */
export function numpySum(a) {
  return 0.0 + pairwise(a, 0, a.length);
}

function pairwise(a, start, n) {
  if (n < 8) {
    let res = 0.0;
    for (let i = 0; i < n; i++) res += a[start + i];
    return res;
  }
  if (n <= 128) {
    const r = Array.from({ length: 8 }, (_, j) => a[start + j]);
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[start + i + j];
    let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[start + i];
    return res;
  }
  let n2 = Math.trunc(n / 2);
  n2 -= n2 % 8;
  return pairwise(a, start, n2) + pairwise(a, start + n2, n - n2);
}

/** Decision.probabilities: softmax(logits / temperature) in float64, numpy's order of steps. */
export function softmax(logits, temperature) {
  const z = Float64Array.from(logits, (v) => v / temperature);
  let m = -Infinity;
  for (const v of z) m = v > m ? v : m;
  const e = Float64Array.from(z, (v) => Math.exp(v - m));
  const total = numpySum(e);
  return Float64Array.from(e, (v) => v / total);
}

function argmax(a, skip = -1) {
  let best = -1;
  for (let i = 0; i < a.length; i++) if (i !== skip && (best < 0 || a[i] > a[best])) best = i;
  return best < 0 ? skip : best;
}

/**
 * Decision.decide on the model's raw outputs (dequantized here when the output is quantized):
 * {probabilities, positiveProbability, positive, classIndex, label}. With a positive class,
 * positive = p[positive] >= threshold, and below it the label is the likeliest other class;
 * without one, the argmax of the logits.
 */
export function predict(contract, outputs) {
  const { labels, positiveIndex, temperature, threshold } = contract.decision;
  const q = contract.output.quant;
  const values = q ? dequantize(outputs, q) : Float64Array.from(outputs);
  if (values.length !== labels.length) {
    throw new RangeError(`the model gave ${values.length} outputs for ${labels.length} labels`);
  }
  const p = contract.output.kind === 'probabilities' ? values : softmax(values, temperature);
  if (positiveIndex === null) {
    const classIndex = argmax(values);
    return { logits: values, probabilities: p, positiveProbability: null, positive: null,
      classIndex, label: labels[classIndex] };
  }
  const positive = p[positiveIndex] >= threshold;
  const classIndex = positive ? positiveIndex : argmax(p, positiveIndex);
  return { logits: values, probabilities: p, positiveProbability: p[positiveIndex], positive,
    classIndex, label: labels[classIndex] };
}
