// A Mixtral-8x7B-sized expert layer (swiglu, d 4096, f 14336, 8 experts, top-2) stored as int4 or
// int8: created from weights given one expert at a time (weights.wGateProj = (e) => slice, …), so
// the f32 layer (5.6 GB) never exists, then one forward. Checks:
//   - y against a float64 reference that quantizes each chosen expert's weights by the documented
//     rule (docs/numerics.md, "Quantized expert weights") in JavaScript, one expert matrix at a time,
//     and rounds each GEMM's input rows to 16 bits as the int8 and int4 kernels do;
//   - the layer's WebAssembly memory ≤ 1.15 × its quantized expert bytes + its gating weights
//     (f32) + its arena.
// Prints one JSON line; exits 1 when a check fails. Memory: the wasm memory (~0.9 GiB int4,
// ~1.4 GiB int8) plus one f32 expert matrix (235 MB) at a time in JavaScript. ~1 min on 2 cores.
//   node bench/mixtral-size.mjs [--dtype=int4|int8] [--batch=2] [--d=4096] [--h=14336] [--n=8] [--k=2]
// Needs `npm run build` (dist/).
import { createMoE } from "../dist/index.js";

const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const [k, v] = a.replace(/^--/, "").split("=");
    return [k, v ?? true];
  }),
);
const dtype = String(args.dtype ?? "int4");
if (dtype !== "int4" && dtype !== "int8") throw new Error("--dtype must be int4 or int8");
const d = Number(args.d ?? 4096);
const h = Number(args.h ?? 14336);
const n = Number(args.n ?? 8);
const k = Number(args.k ?? 2);
const batch = Number(args.batch ?? 2);

// The layer's memory: the kernels' instance, seen as it is made.
const memories = [];
const instantiate = WebAssembly.instantiate;
WebAssembly.instantiate = async (...a) => {
  const result = await instantiate.apply(WebAssembly, a);
  const instance = result.instance ?? result;
  if (instance.exports?.memory) memories.push(instance.exports.memory);
  return result;
};

// ---- weights: uniform with the init's std (1/√fan-in), from a per-(tensor, expert) xorshift ----
const TENSORS = { wGateProj: 1, wUp: 2, wDown: 3 };
function fillUniform(out, seed, std) {
  let s = (seed * 0x9e3779b1) | 0 || 1;
  const a = (std * Math.sqrt(3)) / 2 ** 31;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = a * s;
  }
  return out;
}
const expertMatrix = (name, e) => {
  const down = name === "wDown";
  return fillUniform(new Float32Array(d * h), TENSORS[name] * 1000 + e + 1, 1 / Math.sqrt(down ? h : d));
};
const wGate = fillUniform(new Float32Array(d * n), 7, 1 / Math.sqrt(d));
const x = fillUniform(new Float32Array(batch * d), 11, 1);

const t0 = performance.now();
const layer = await createMoE({
  dModel: d,
  dHidden: h,
  numExperts: n,
  k,
  expert: "swiglu",
  noisyGating: false,
  dtype,
  backend: "cpu",
  threads: 1,
  weights: {
    wGate,
    wGateProj: (e) => expertMatrix("wGateProj", e),
    wUp: (e) => expertMatrix("wUp", e),
    wDown: (e) => expertMatrix("wDown", e),
  },
});
const createMs = performance.now() - t0;
const t1 = performance.now();
const { y, topkIndices, topkGates } = await layer.forward(x);
const forwardMs = performance.now() - t1;
const memoryBytes = Math.max(...memories.map((m) => m.buffer.byteLength));

// ---- bytes the bound allows ----
const PANEL = 8;
const roundUp = (v, m) => Math.ceil(v / m) * m;
const panelBytes = (rows) => (dtype === "int8" ? PANEL * rows + 4 * PANEL : Math.ceil(rows / 32) * ((32 * PANEL) / 2 + 4 * PANEL));
const hp = roundUp(h, PANEL);
const dp = roundUp(d, PANEL);
const quantizedBytes = n * (((2 * hp) / PANEL) * panelBytes(d) + (dp / PANEL) * panelBytes(hp));
const gatingBytes = 4 * d * roundUp(n, PANEL);
// one call's arena (src/cpu/layout.ts): x, y, dy, dx, gathered rows and activations, plus small per-row state
const pairs = batch * k;
const arenaBytes = 4 * (4 * batch * d + pairs * (d + 2 * hp + hp + dp)) + 64 * 1024;
const allowedBytes = 1.15 * quantizedBytes + gatingBytes + arenaBytes;

// ---- the reference: the quantization rule in JavaScript, one chosen expert's matrix at a time ----
const f = Math.fround;
/** Round half to even (WebAssembly's f32.nearest). */
const nearest = (v) => {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
};
const quantize = (w, scale, limit) => (scale === 0 ? 0 : Math.min(limit, Math.max(-limit, nearest(f(w / scale)))));

/** The dequantized [rows, cols] matrix, in place (int8: per column; int4: per column and 32-row block, best of 8 scales). */
function dequantize(w, rows, cols) {
  const top = new Float32Array(cols);
  if (dtype === "int8") {
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) top[c] = Math.max(top[c], Math.abs(w[r * cols + c]));
    const scale = top.map((t) => f(t / 127));
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) w[r * cols + c] = quantize(w[r * cols + c], scale[c], 127) * scale[c];
    return w;
  }
  const best = new Float32Array(cols);
  const bestErr = new Float64Array(cols);
  const err = new Float64Array(cols);
  for (let b0 = 0; b0 < rows; b0 += 32) {
    const b1 = Math.min(rows, b0 + 32);
    top.fill(0);
    for (let r = b0; r < b1; r++) for (let c = 0; c < cols; c++) top[c] = Math.max(top[c], Math.abs(w[r * cols + c]));
    for (let c = 0; c < cols; c++) {
      best[c] = f(top[c] / 7);
      bestErr[c] = Infinity;
    }
    for (let step = 0; step < 8; step++) {
      const factor = f(1 - f(step * f(0.03)));
      err.fill(0);
      for (let r = b0; r < b1; r++) {
        for (let c = 0; c < cols; c++) {
          const scale = f(f(top[c] * factor) / 7);
          if (scale === 0) continue;
          const v = w[r * cols + c];
          const diff = v - f(quantize(v, scale, 7) * scale);
          err[c] += diff * diff;
        }
      }
      for (let c = 0; c < cols; c++) {
        const scale = f(f(top[c] * factor) / 7);
        if (scale !== 0 && err[c] < bestErr[c]) {
          bestErr[c] = err[c];
          best[c] = scale;
        }
      }
    }
    for (let r = b0; r < b1; r++) for (let c = 0; c < cols; c++) w[r * cols + c] = f(quantize(w[r * cols + c], best[c], 7) * best[c]);
  }
  return w;
}

/**
 * The kernels' 16-bit activations (assembly/quant-a16.ts), row by row, in place: q =
 * nearest(f32(f32(x / max|x|) · 32767)), x̂ = q · f32(max|x| / 32767).
 */
function roundRows(a, inner) {
  for (let i = 0; i < a.length; i += inner) {
    let top = 0;
    for (let j = i; j < i + inner; j++) top = Math.max(top, Math.abs(f(a[j])));
    const scale = f(top / 32767);
    for (let j = i; j < i + inner; j++) a[j] = top > 0 ? nearest(f(f(f(a[j]) / top) * 32767)) * scale : 0;
  }
  return a;
}

/** out[rows.length × cols] = in[rows.length × inner] · w[inner × cols], float64. */
function matmul(input, w, inner, cols) {
  const m = input.length / inner;
  const out = new Float64Array(m * cols);
  for (let i = 0; i < m; i++) {
    for (let r = 0; r < inner; r++) {
      const v = input[i * inner + r];
      const row = r * cols;
      for (let c = 0; c < cols; c++) out[i * cols + c] += v * w[row + c];
    }
  }
  return out;
}

const t2 = performance.now();
const yRef = new Float64Array(batch * d);
for (let e = 0; e < n; e++) {
  const slots = [];
  for (let i = 0; i < batch * k; i++) if (topkIndices[i] === e) slots.push(i);
  if (slots.length === 0) continue;
  const rows = slots.map((i) => Math.floor(i / k));
  const xe = new Float64Array(rows.length * d);
  rows.forEach((row, j) => xe.set(x.subarray(row * d, (row + 1) * d), j * d));
  roundRows(xe, d);
  const g = matmul(xe, dequantize(expertMatrix("wGateProj", e), d, h), d, h);
  const u = matmul(xe, dequantize(expertMatrix("wUp", e), d, h), d, h);
  for (let i = 0; i < g.length; i++) g[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
  roundRows(g, h);
  const out = matmul(g, dequantize(expertMatrix("wDown", e), h, d), h, d);
  slots.forEach((slot, j) => {
    const row = rows[j];
    for (let c = 0; c < d; c++) yRef[row * d + c] += topkGates[slot] * out[j * d + c];
  });
}
const referenceMs = performance.now() - t2;

let maxRef = 0;
let maxDiff = 0;
for (let i = 0; i < y.length; i++) {
  maxRef = Math.max(maxRef, Math.abs(yRef[i]));
  maxDiff = Math.max(maxDiff, Math.abs(y[i] - yRef[i]));
}
const relativeError = maxDiff / maxRef;
const TOLERANCE = 1e-4;
const report = {
  dtype,
  d,
  h,
  n,
  k,
  batch,
  quantizedBytes,
  gatingBytes,
  arenaBytes,
  memoryBytes,
  allowedBytes: Math.floor(allowedBytes),
  memoryRatio: +(memoryBytes / quantizedBytes).toFixed(4),
  relativeError,
  tolerance: TOLERANCE,
  createMs: Math.round(createMs),
  forwardMs: Math.round(forwardMs),
  referenceMs: Math.round(referenceMs),
  ok: memoryBytes <= allowedBytes && relativeError <= TOLERANCE && Number.isFinite(relativeError),
};
layer.dispose();
console.log(JSON.stringify(report));
process.exitCode = report.ok ? 0 : 1;
