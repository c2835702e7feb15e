// Unit tests of core.js with Node's test runner: `node --test test/` in web_demo/.
// Cross-language parity with the Python definitions is in tests/test_web_core.py.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ContractError, dequantize, modelInput, normalize, numpySum, predict, quantize, readContract,
  resizeUint8, resizedShape, rgbFromRgba, rgbImage, rint, softmax, taps,
} from '../core.js';

const PREP = { size: 8, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], resize: 'squash',
  interpolation: 'bilinear_antialias' };

function manifest(entry = {}, top = {}) {
  return {
    manifest_version: 1, dataset: 'HAM10000', ...top,
    artifacts: [{
      name: 'm_tflite_int8_float_io', path: 'm.tflite', format: 'tflite', precision: 'int8_float_io',
      input: { shape: [1, 8, 8, 3], layout: 'NHWC', dtype: 'float32', quantization: null },
      output: { shape: [1, 2], dtype: 'float32', quantization: null, kind: 'logits' },
      preprocessing: PREP, labels: ['other', 'melanoma'], positive_index: 1, temperature: 1.5,
      threshold: 0.3, ...entry,
    }],
  };
}

test('the triangle filter halves as PIL does', () => {
  const [first, second] = taps(4, 2);
  assert.equal(first.lo, 0);
  assert.deepEqual(Array.from(first.weights), [3 / 7, 3 / 7, 1 / 7]);
  assert.equal(second.lo, 1);
  assert.deepEqual(Array.from(second.weights), [1 / 7, 3 / 7, 3 / 7]);
});

test('resizing to the same size is the identity', () => {
  const same = rgbImage(4, 4, Uint8Array.from({ length: 48 }, (_, i) => (i * 53) % 256));
  assert.deepEqual(resizeUint8(same, 4, 'squash').pixels, same.pixels);
  assert.deepEqual(resizeUint8(same, 4, 'center_crop').pixels, same.pixels);
});

test('center_crop keeps the central square of the shorter side', () => {
  assert.deepEqual(resizedShape(2, 6, 2, 'center_crop'), [2, 6]);
  assert.deepEqual(resizedShape(7, 3, 3, 'center_crop'), [7, 3]);
  assert.deepEqual(resizedShape(7, 3, 3, 'squash'), [3, 3]);
  const cols = [10, 20, 30, 40, 50, 60]; // a 6 x 2 image: the middle two columns survive
  const px = Uint8Array.from({ length: 36 }, (_, i) => cols[Math.floor(i / 3) % 6]);
  const out = resizeUint8(rgbImage(6, 2, px), 2, 'center_crop');
  assert.deepEqual(Array.from(out.pixels), [30, 30, 30, 40, 40, 40, 30, 30, 30, 40, 40, 40]);
});

test('resizing rounds half up: 0 and 1 average to 1', () => {
  const px = Uint8Array.from([0, 0, 0, 1, 1, 1]);
  assert.deepEqual(Array.from(resizeUint8(rgbImage(2, 1, px), 1, 'squash').pixels), [1, 1, 1]);
});

test('normalisation is float32 and follows the layout', () => {
  const img = rgbImage(2, 1, Uint8Array.from([0, 128, 255, 10, 20, 30]));
  const nhwc = normalize(img, PREP.mean, PREP.std, 'NHWC');
  const nchw = normalize(img, PREP.mean, PREP.std, 'NCHW');
  const f = Math.fround;
  assert.equal(nhwc[0], f(f(0 - f(0.485)) / f(0.229)));
  assert.equal(nhwc[2], f(f(1 - f(0.406)) / f(0.225)));
  assert.deepEqual(Array.from(nchw), [nhwc[0], nhwc[3], nhwc[1], nhwc[4], nhwc[2], nhwc[5]]);
});

test('quantization rounds half to even and clamps', () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999].map(rint), [0, 2, 2, 0, -2, 2]);
  const q = quantize(Float32Array.from([0.25, 0.75, 100, -100]), { scale: 0.5, zeroPoint: -1 });
  assert.deepEqual(Array.from(q), [-1, 1, 127, -128]);
  const u = quantize(Float32Array.from([0.25, -100]), { scale: 0.5, zeroPoint: 3 }, 'uint8');
  assert.deepEqual(Array.from(u), [3, 0]);
  assert.deepEqual(Array.from(dequantize(Int8Array.from([5, -128]), { scale: 0.5, zeroPoint: 3 })),
    [1, -65.5]);
});

test('softmax: ties and saturated rows are exact; sums follow numpy', () => {
  assert.deepEqual(Array.from(softmax([3, 3], 1.7)), [0.5, 0.5]);
  assert.deepEqual(Array.from(softmax([0, 2000], 1)), [0, 1]);
  assert.equal(numpySum(Float64Array.from({ length: 300 }, () => 0.1)), 29.999999999999996 /* numpy; a plain loop gives 30.000000000000156 */);
  assert.equal(numpySum([0.1, 0.2, 0.3]), 0.6000000000000001);
});

test('the decision is p[positive] >= threshold at the temperature', () => {
  const c = readContract(manifest({ threshold: 0.5 }));
  const tie = predict(c, [1.25, 1.25]);
  assert.equal(tie.positiveProbability, 0.5);
  assert.equal(tie.positive, true);
  assert.equal(tie.label, 'melanoma');
  const low = predict(c, [2, -1]);
  assert.equal(low.positive, false);
  assert.equal(low.label, 'other');
  const hot = readContract(manifest({ temperature: 100, threshold: 0.5 }));
  assert.ok(predict(hot, [0, 1]).positiveProbability < predict(c, [0, 1]).positiveProbability);
});

test('int8 outputs are dequantized; multi-class decides by argmax', () => {
  const out = { shape: [1, 2], dtype: 'int8', quantization: { scale: 0.5, zero_point: 3 },
    kind: 'logits' };
  const r = predict(readContract(manifest({ output: out })), Int8Array.from([3, 5]));
  assert.deepEqual(Array.from(r.logits), [0, 1]);
  const multi = readContract(manifest({ labels: ['a', 'b', 'c'], positive_index: null,
    threshold: null }));
  const m = predict(multi, [0.1, 3, 2]);
  assert.equal(m.positive, null);
  assert.equal(m.label, 'b');
});

test('the contract reads the entry and names bad fields', () => {
  const c = readContract(manifest());
  assert.equal(c.dataset, 'HAM10000');
  assert.equal(c.gate, null);
  const gated = readContract(manifest({ gate: { status: 'pass', detail: 'parity gate passed', n: 3 } }));
  assert.deepEqual(gated.gate, { status: 'pass', detail: 'parity gate passed' });
  assert.throws(() => readContract(manifest({ gate: 'pass' })), /gate must be an object/);
  assert.deepEqual(c.input.shape, [1, 8, 8, 3]);
  assert.equal(c.decision.threshold, 0.3);
  assert.throws(() => readContract(manifest({ threshold: 1.5 })), /threshold must be a probability/);
  assert.throws(() => readContract(manifest({ preprocessing: { ...PREP, resize: 'zoom' } })),
    /unknown resize rule "zoom"/);
  assert.throws(() => readContract(manifest({ path: '../x.tflite' })), ContractError);
  const badQuant = { shape: [1, 8, 8, 3], layout: 'NHWC', dtype: 'int8',
    quantization: { scale: 0, zero_point: 0 } };
  assert.throws(() => readContract(manifest({ input: badQuant })), /input: quantization needs/);
  assert.throws(() => readContract({ ...manifest(), manifest_version: 2 }), /manifest_version 2/);
});

test('modelInput: resize, normalise, quantize by the contract', () => {
  const img = rgbImage(4, 4, Uint8Array.from({ length: 48 }, (_, i) => (i * 53) % 256));
  const float = modelInput(readContract(manifest()), img);
  assert.ok(float.data instanceof Float32Array && float.data.length === 192);
  const quant = { shape: [1, 8, 8, 3], layout: 'NHWC', dtype: 'uint8',
    quantization: { scale: 0.02, zero_point: 128 } };
  const q = modelInput(readContract(manifest({ input: quant })), img);
  assert.ok(q.data instanceof Uint8Array);
  assert.deepEqual(q.data, quantize(float.data, { scale: 0.02, zeroPoint: 128 }, 'uint8'));
});

test('transparent images are refused, opaque RGBA becomes RGB', () => {
  const rgba = Uint8Array.from([1, 2, 3, 255, 4, 5, 6, 255]);
  assert.deepEqual(Array.from(rgbFromRgba(2, 1, rgba).pixels), [1, 2, 3, 4, 5, 6]);
  rgba[7] = 0;
  assert.throws(() => rgbFromRgba(2, 1, rgba), /transparent/);
});
