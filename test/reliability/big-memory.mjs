// Layers whose scratch or weights end between 2 and 4 GiB of wasm memory, checked against a float64
// reference of the few rows and weights it looks at. Run as a child process (a 4 GiB memory must not
// stay in a test worker): node test/reliability/big-memory.mjs scratch|weights|sgd|adam [threads]. Prints one JSON line
// { ok, maxMemory, failures } and exits 0 only when every check passed.
import { createMoE, MoEError } from "../../dist/index.js";

const GiB = 2 ** 30;
let maxMemory = 0;
const grow = WebAssembly.Memory.prototype.grow;
WebAssembly.Memory.prototype.grow = function (delta) {
  const r = grow.call(this, delta);
  maxMemory = Math.max(maxMemory, this.buffer.byteLength);
  return r;
};

const failures = [];
const check = (what, ok, detail = "") => {
  if (!ok) failures.push(`${what}${detail ? `: ${detail}` : ""}`);
};
const close = (got, want, tol) => Math.abs(got - want) <= tol * Math.max(1, Math.abs(want));

/** A small deterministic generator (xorshift32) for weights and inputs. */
function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 31 - 1;
  };
}
/** A cheap value in [-0.5, 0.5) for index i (multiplicative hashing). */
const hash = (i) => Math.imul(i, 0x9e3779b1) / 2 ** 32;
const fill = (length, r, scale = 1) => Float32Array.from({ length }, () => r() * scale);

/** float64 forward of one row of a relu layer (eval mode, or given noise): y and the chosen experts. */
function refRow(cfg, w, xRow, noiseRow) {
  const { dModel: d, dHidden: h, numExperts: n, k } = cfg;
  const H = new Float64Array(n);
  for (let e = 0; e < n; e++) {
    let clean = 0,
      raw = 0;
    for (let i = 0; i < d; i++) {
      clean += xRow[i] * w.wGate[i * n + e];
      raw += xRow[i] * w.wNoise[i * n + e];
    }
    const std = Math.log1p(Math.exp(raw)) + 1e-2;
    H[e] = noiseRow ? clean + noiseRow[e] * std : clean;
  }
  const order = [...H.keys()].sort((a, b) => H[b] - H[a] || a - b).slice(0, k);
  const m = Math.max(...order.map((e) => H[e]));
  const z = order.reduce((s, e) => s + Math.exp(H[e] - m), 0);
  const gates = order.map((e) => Math.exp(H[e] - m) / z);
  const y = new Float64Array(d);
  order.forEach((e, s) => {
    for (let j = 0; j < h; j++) {
      let pre = w.b1[e * h + j];
      for (let i = 0; i < d; i++) pre += xRow[i] * w.w1[(e * d + i) * h + j];
      if (pre <= 0) continue;
      for (let o = 0; o < d; o++) y[o] += gates[s] * pre * w.w2[(e * h + j) * d + o];
    }
    for (let o = 0; o < d; o++) y[o] += gates[s] * w.b2[e * d + o];
  });
  return { y, order, gates };
}

/** Rows far enough apart to hit the start, the middle and the end (past 2 GiB) of the scratch. */
const sampleRows = (B) => [0, 1, 2, 3, B >> 1, B - 4, B - 3, B - 2, B - 1];

async function scratchCase(threads) {
  // Small layer, huge batch: 1,372 bytes of scratch per row lie before y (x twice, logits, noise,
  // std, H, top-k, and k rows each of gathered x, pre- and post-activation [2·64 floats], expert
  // output), so with 1.7M rows y (and dy, dx after it) lies wholly between 2.1 and 2.6 GiB.
  const cfg = { dModel: 8, dHidden: 64, numExperts: 6, k: 2, expert: "relu" };
  const r = rng(7);
  const { dModel: d, dHidden: h, numExperts: n } = cfg;
  const w = {
    wGate: fill(d * n, r),
    wNoise: fill(d * n, r, 0.3),
    w1: fill(n * d * h, r, 0.5),
    b1: fill(n * h, r, 0.1),
    w2: fill(n * h * d, r, 0.5),
    b2: fill(n * d, r, 0.1),
  };
  const B = 1_700_000;
  const x = new Float32Array(B * d);
  for (let i = 0; i < x.length; i++) x[i] = hash(i);
  // Both loss weights 0: a row's dx then depends on its row only (used below).
  const trainCfg = { ...cfg, wImportance: 0, wLoad: 0, weights: w, wasmBuild: threads > 1 ? "simd-threads" : "simd" };
  const big = await createMoE({ ...trainCfg, threads });
  const out = await big.forward(x);
  for (const row of sampleRows(B)) {
    const ref = refRow(cfg, w, x.subarray(row * d, row * d + d));
    for (let s = 0; s < cfg.k; s++)
      check(`eval row ${row} slot ${s} expert`, out.topkIndices[row * cfg.k + s] === ref.order[s], `${out.topkIndices[row * cfg.k + s]} vs ${ref.order[s]}`);
    for (let o = 0; o < d; o++) check(`eval y[${row}, ${o}]`, close(out.y[row * d + o], ref.y[o], 1e-5), `${out.y[row * d + o]} vs ${ref.y[o]}`);
  }
  // Training: a forward with given noise, then backward: the last rows' y and dx must match the same
  // rows run alone in a small layer with the same noise.
  const noise = new Float32Array(B * n);
  for (let i = 0; i < noise.length; i++) noise[i] = 2 * hash(i + 1);
  const tb = await big.forward(x, { train: true, noise });
  const dy = new Float32Array(B * d);
  for (let i = 0; i < dy.length; i++) dy[i] = hash(i + 2) * 1e-3;
  const grads = await big.backward(dy);
  const rows = [B - 4, B - 3, B - 2, B - 1];
  const small = await createMoE({ ...trainCfg, threads: 1, wasmBuild: "simd" });
  const pick = (a, width) => Float32Array.from(rows.flatMap((row) => [...a.subarray(row * width, row * width + width)]));
  const ts = await small.forward(pick(x, d), { train: true, noise: pick(noise, n) });
  const gs = await small.backward(pick(dy, d));
  rows.forEach((row, i) => {
    for (let o = 0; o < d; o++) {
      check(`train y[${row}, ${o}]`, tb.y[row * d + o] === ts.y[i * d + o], `${tb.y[row * d + o]} vs ${ts.y[i * d + o]}`);
      check(`dx[${row}, ${o}]`, close(grads.x[row * d + o], gs.x[i * d + o], 1e-5), `${grads.x[row * d + o]} vs ${gs.x[i * d + o]}`);
    }
  });
  check("the scratch ended past 2 GiB", maxMemory > 2 * GiB, `${maxMemory}`);
}

/** d = 1 relu layers with huge hidden widths; only every STRIDE-th hidden unit is non-zero. */
function wideWeights(h, n, seed) {
  const r = rng(seed);
  const STRIDE = 4099;
  const w1 = new Float32Array(n * h),
    b1 = new Float32Array(n * h),
    w2 = new Float32Array(n * h);
  for (let e = 0; e < n; e++) {
    for (let j = h - 1; j >= 0; j -= STRIDE) {
      w1[e * h + j] = r();
      b1[e * h + j] = 0.1 * r();
      w2[e * h + j] = r();
    }
  }
  // the top two experts for x > 0 are 7 and 6: the ones whose panels lie highest in memory
  const wGate = Float32Array.from({ length: n }, (_, e) => e);
  return { wGate, wNoise: new Float32Array(n), w1, b1, w2, b2: fill(n, r, 0.1) };
}

async function weightsCase() {
  // w2 alone is n·hp·dp·4 = 8·2^23·8·4 bytes = 2 GiB (dModel 1 pads to 8): the last experts lie past 2 GiB.
  const n = 8,
    h = 2 ** 23;
  const cfg = { dModel: 1, dHidden: h, numExperts: n, k: 2, expert: "relu" };
  const w = wideWeights(h, n, 11);
  const layer = await createMoE({ ...cfg, weights: w, wasmBuild: "simd" });
  check("the weights ended past 2 GiB", maxMemory > 2 * GiB, `${maxMemory}`);
  const x = new Float32Array([0.5]);
  const out = await layer.forward(x);
  const ref = refRow(cfg, w, x);
  check("experts", out.topkIndices[0] === 7 && out.topkIndices[1] === 6, `${out.topkIndices}`);
  check("y", close(out.y[0], ref.y[0], 1e-5), `${out.y[0]} vs ${ref.y[0]}`);
  const back = await layer.getWeights();
  for (const name of ["w1", "b1", "w2", "b2", "wGate"]) {
    const a = back[name],
      b = w[name];
    let same = a.length === b.length;
    for (let i = 0; same && i < a.length; i++) same = Object.is(a[i], b[i]);
    check(`getWeights().${name} round trip`, same);
  }
  // Gradients need as much memory again: past 4 GiB, refused with a typed error, the layer intact.
  await layer.forward(x, { train: true, noise: new Float32Array(n) });
  let error;
  try {
    await layer.backward(new Float32Array([1]));
  } catch (e) {
    error = e;
  }
  check("backward past 4 GiB: a typed INVALID_CONFIG", error instanceof MoEError && error.code === "INVALID_CONFIG", String(error));
  const again = await layer.forward(x);
  check("the layer still works after the refusal", again.y[0] === out.y[0], `${again.y[0]} vs ${out.y[0]}`);
}

/**
 * sgd: weights ≈ 1.3 GB (w2: 8·2^22·8·4 bytes), their gradients as much again beside them: the step
 * reads and writes gradients past 2 GiB. adam: weights ≈ 0.65 GB, and gradients and two moments
 * beside them: the moments end past 2 GiB.
 */
async function trainCase(optimizer) {
  const n = 8,
    h = optimizer === "adam" ? 2 ** 21 : 2 ** 22;
  const cfg = { dModel: 1, dHidden: h, numExperts: n, k: 2, expert: "relu", wImportance: 0, wLoad: 0 };
  const w = wideWeights(h, n, 13);
  const layer = await createMoE({ ...cfg, weights: w, wasmBuild: "simd" });
  const x = new Float32Array([0.5]);
  const out = await layer.forward(x, { train: true, noise: new Float32Array(n) });
  const dy = 0.25,
    lr = 0.5;
  await layer.backward(new Float32Array([dy]));
  await layer.step({ lr, optimizer });
  check("the gradients ended past 2 GiB", maxMemory > 2 * GiB, `${maxMemory}`);
  const ref = refRow(cfg, w, x);
  const got = await layer.getWeights();
  let checked = 0;
  ref.order.forEach((e, s) => {
    const g = ref.gates[s];
    check(`gate ${e}`, close(out.topkGates[s], g, 1e-6), `${out.topkGates[s]} vs ${g}`);
    for (let j = h - 1; j >= h - 4099 * 20; j -= 4099) {
      const at = e * h + j;
      const pre = x[0] * w.w1[at] + w.b1[at];
      const act = Math.max(pre, 0);
      // dJ/dW2 = gate·act·dy; dJ/db1 = gate·dy·W2·relu'(pre); dJ/dW1 = that · x
      const dPre = pre > 0 ? g * dy * w.w2[at] : 0;
      // SGD: w − lr·g. Adam's first step (bias-corrected moments g and g²): w − lr·g/(|g| + ε).
      const update = (grad) => (optimizer === "adam" ? (lr * grad) / (Math.abs(grad) + 1e-8) : lr * grad);
      const wantW2 = w.w2[at] - update(g * act * dy);
      check(`w2[${e}, ${j}]`, close(got.w2[at], wantW2, 1e-5), `${got.w2[at]} vs ${wantW2}`);
      check(`b1[${e}, ${j}]`, close(got.b1[at], w.b1[at] - update(dPre), 1e-5), `${got.b1[at]} vs ${w.b1[at] - update(dPre)}`);
      check(`w1[${e}, ${j}]`, close(got.w1[at], w.w1[at] - update(dPre * x[0]), 1e-5), `${got.w1[at]} vs ${w.w1[at] - update(dPre * x[0])}`);
      checked++;
    }
  });
  check("entries checked", checked === 40, `${checked}`);
  const after = await layer.forward(x);
  check("a forward after the step", Number.isFinite(after.y[0]));
}

const [which, threadsArg] = process.argv.slice(2);
const threads = Number(threadsArg ?? 1);
try {
  if (which === "scratch") await scratchCase(threads);
  else if (which === "weights") await weightsCase();
  else if (which === "sgd" || which === "adam") await trainCase(which);
  else throw new Error(`unknown case ${which}`);
} catch (error) {
  failures.push(`threw ${error?.name}: ${error?.message}`);
}
console.log(JSON.stringify({ ok: failures.length === 0, maxMemory, failures: failures.slice(0, 20) }));
process.exit(failures.length === 0 ? 0 : 1);
