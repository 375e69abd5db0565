// The benchmark cases, their weights and inputs, and the arithmetic of their roofline.
// Runtime-neutral: imported by every runtime the suite runs in.

/** The benchmark's (d, h, n, k) shapes, each with relu and swiglu experts, at every batch size. */
export const SHAPES = [
  { d: 512, h: 2048, n: 8, k: 2 },
  { d: 1024, h: 1024, n: 64, k: 4 },
  { d: 256, h: 512, n: 16, k: 2 },
];
export const EXPERTS = ["relu", "swiglu"];
export const BATCHES = [1, 8, 64, 512];

export function caseName(shape, expert) {
  return `${expert} d${shape.d} h${shape.h} n${shape.n} k${shape.k}`;
}

/** A small fast generator (xorshift32) filling uniform values in [-scale, scale). */
export function fillUniform(array, seed, scale) {
  let s = seed >>> 0 || 1;
  for (let i = 0; i < array.length; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    array[i] = (s / 4294967296 - 0.5) * 2 * scale;
  }
  return array;
}

/**
 * Weights of one case in the package's input layout. Scales keep activations O(1): x ~ U(-1,1),
 * up-projections ~ 1/√d, down-projections ~ 1/√h.
 */
export function makeWeights({ d, h, n }, expert, seed = 1) {
  const f = (length, s, scale) => fillUniform(new Float32Array(length), seed * 7919 + s, scale);
  const up = 1 / Math.sqrt(d);
  const down = 1 / Math.sqrt(h);
  const gate = { wGate: f(d * n, 1, up), wNoise: f(d * n, 2, up) };
  if (expert === "swiglu") {
    return { ...gate, wGateProj: f(n * d * h, 3, up), wUp: f(n * d * h, 4, up), wDown: f(n * h * d, 5, down) };
  }
  return { ...gate, w1: f(n * d * h, 3, up), b1: f(n * h, 4, 0.1), w2: f(n * h * d, 5, down), b2: f(n * d, 6, 0.1) };
}

export function makeInput(batch, d, seed = 99) {
  return fillUniform(new Float32Array(batch * d), seed + batch, 1);
}

/** Useful floating-point work of one inference forward: gating GEMM + the B·k expert MLPs. */
export function forwardFlops({ d, h, n, k }, expert, batch) {
  return 2 * batch * d * n + batch * k * (expert === "swiglu" ? 6 : 4) * d * h;
}

/** Bytes of one expert's weights (with biases for relu/gelu). */
export function expertBytes({ d, h }, expert) {
  return 4 * (expert === "swiglu" ? 3 * d * h : 2 * d * h + d + h);
}

/**
 * Bytes a forward must read at least: every expert it touches, once, plus the gate weights
 * (inference reads W_g only).
 */
export function forwardBytes(shape, expert, expertsTouched) {
  return expertsTouched * expertBytes(shape, expert) + 4 * shape.d * shape.n;
}

/** The roofline floor in ms: max(bytes / bandwidth, flops / peak); bandwidth in GB/s, peak in GFLOP/s. */
export function rooflineMs(bytes, flops, bandwidthGBs, peakGflops) {
  return Math.max(bytes / (bandwidthGBs * 1e6), flops / (peakGflops * 1e6));
}

// ---- quantized expert weights ------------------------------------------------------------------

/**
 * The quantized engines' dtypes: edge-moe's int8 and int4 weights, and int8 weights with int8
 * activations (W8A8); `dtype` and `activations` are createMoE's options.
 */
export const QUANT_DTYPES = {
  int8: { dtype: "int8", bits: 8 },
  int4: { dtype: "int4", bits: 4 },
  w8a8: { dtype: "int8", activations: "int8", bits: 8 },
};

/**
 * Relative RMS error of y, ‖y − y_f32‖ / ‖y_f32‖, against edge-moe's f32 y of the same run, that a
 * quantized engine (edge-moe's or ORT's QMoE) must stay within to be timed.
 */
export const QUANT_BOUND = { int8: 2e-2, int4: 2e-1, w8a8: 6e-2 };

/**
 * The cases the quantized engines run on, at every batch size: the expert-heavy shape (relu, 64
 * experts, B = 1 is the int8/int4 target's row) and the wide-hidden one (swiglu, 8 experts), which
 * keeps the dimension to ~10 minutes of the full suite.
 */
export const QUANT_CASES = [
  { d: 1024, h: 1024, n: 64, k: 4, expert: "relu" },
  { d: 512, h: 2048, n: 8, k: 2, expert: "swiglu" },
];

export function isQuantCase(shape, expert) {
  return QUANT_CASES.some((c) => c.d === shape.d && c.h === shape.h && c.n === shape.n && c.k === shape.k && c.expert === expert);
}

/**
 * Bytes of one [rows, cols] expert matrix in a dtype's panels (assembly/quant.ts,
 * assembly/quant-dot.ts): int8 one byte a weight and a 4-byte scale per column; W8A8 the same and
 * a 4-byte column sum; int4 half a byte a weight and a 4-byte scale per column and block of 32 rows.
 */
export function matrixBytes(rows, cols, dtype) {
  if (dtype === "int8") return rows * cols + 4 * cols;
  if (dtype === "w8a8") return rows * cols + 8 * cols;
  if (dtype === "int4") return (rows * cols) / 2 + 4 * cols * Math.ceil(rows / 32);
  return 4 * rows * cols;
}

/** Bytes of one expert's weights in a dtype (f32, int8, int4, w8a8); biases stay f32. */
export function expertBytesOf({ d, h }, expert, dtype = "f32") {
  if (expert === "swiglu") return 2 * matrixBytes(d, h, dtype) + matrixBytes(h, d, dtype);
  return matrixBytes(d, h, dtype) + matrixBytes(h, d, dtype) + 4 * (d + h);
}

/** forwardBytes for a dtype: the experts touched in that dtype, and the gate weights (always f32). */
export function forwardBytesOf(shape, expert, expertsTouched, dtype = "f32") {
  return expertsTouched * expertBytesOf(shape, expert, dtype) + 4 * shape.d * shape.n;
}

/** ‖a − b‖₂ / ‖b‖₂: the quantized engines' agreement with edge-moe's f32 y. */
export function relativeRms(a, b) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}
