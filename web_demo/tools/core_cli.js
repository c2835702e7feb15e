// A command line over core.js for tests/test_web_core.py (Python decodes the images and checks
// the results against kd_core; the page runs the same functions).
//
//   node tools/core_cli.js preprocess JOB.json   JOB: {manifest, out, images: [{name, path, width, height}]}
//     reads each raw RGB file (width x height x 3 bytes), writes OUT/NAME.u8 (resized pixels),
//     OUT/NAME.in (the model input: float32, int8 or uint8, little-endian, the manifest's layout)
//   node tools/core_cli.js decide JOB.json       JOB: {manifest, outputs, dtype, out}
//     reads N x K outputs (float64 or the output's int8/uint8), writes OUT.prob (float64 N x K),
//     OUT.dec (uint8 per row: 1 positive / 0 not, or the class index without a positive class)
//   node tools/core_cli.js contract MANIFEST     prints readContract(manifest) as JSON
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { modelInput, predict, readContract, rgbImage } from '../core.js';

const readJson = (path) => JSON.parse(readFileSync(path, 'utf8'));
const bytes = (typed) => Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength);
const ARRAYS = { float64: Float64Array, int8: Int8Array, uint8: Uint8Array };

function preprocess(job) {
  const contract = readContract(readJson(job.manifest));
  for (const img of job.images) {
    const raw = new Uint8Array(readFileSync(img.path));
    const input = modelInput(contract, rgbImage(img.width, img.height, raw));
    writeFileSync(join(job.out, `${img.name}.u8`), bytes(input.pixels.pixels));
    writeFileSync(join(job.out, `${img.name}.in`), bytes(input.data));
  }
}

function decide(job) {
  const contract = readContract(readJson(job.manifest));
  const k = contract.decision.labels.length;
  const buf = readFileSync(job.outputs);
  const Type = ARRAYS[job.dtype];
  const all = new Type(buf.buffer, buf.byteOffset, buf.byteLength / Type.BYTES_PER_ELEMENT);
  const n = all.length / k;
  const prob = new Float64Array(n * k);
  const dec = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const r = predict(contract, all.subarray(i * k, (i + 1) * k));
    prob.set(r.probabilities, i * k);
    dec[i] = r.positive === null ? r.classIndex : Number(r.positive);
  }
  writeFileSync(`${job.out}.prob`, bytes(prob));
  writeFileSync(`${job.out}.dec`, bytes(dec));
}

const [command, arg] = process.argv.slice(2);
if (command === 'preprocess') preprocess(readJson(arg));
else if (command === 'decide') decide(readJson(arg));
else if (command === 'contract') process.stdout.write(`${JSON.stringify(readContract(readJson(arg)))}\n`);
else {
  process.stderr.write('usage: node tools/core_cli.js preprocess|decide JOB.json | contract MANIFEST\n');
  process.exit(2);
}
