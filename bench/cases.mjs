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
