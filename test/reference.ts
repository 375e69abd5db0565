// A float64 reference of the whole forward pass of the sparsely-gated MoE layer, written from the
// definitions in test/fixtures/vectors/README.md (Shazeer et al. 2017; tensor2tensor's
// noisy_top_k_gating, _prob_in_top_k, cv_squared). Plain loops, no cleverness: it is the spec in
// code, checked against the golden vectors in golden.test.ts, and the yardstick of the property
// tests on random layers.
import type { ExpertKind, MoEConfig, MoEWeights } from "edge-moe";

// ---- erf, Φ --------------------------------------------------------------------------------
// erf to ~1e-15: for |x| < 3 the series erf(x) = 2/√π · e^(−x²) · Σ_{m≥0} 2^m x^(2m+1) / (1·3·…·(2m+1))
// (Abramowitz & Stegun 7.1.6; all terms positive, so no cancellation); for |x| ≥ 3 erfc from its
// continued fraction erfc(x) = e^(−x²)/√π · 1/(x + ½/(x + 1/(x + (3/2)/(x + 2/(x + …)))))
// (A&S 7.1.14), evaluated bottom-up.

const SQRT_PI = Math.sqrt(Math.PI);
const SERIES_LIMIT = 3;

/** erf(x) for 0 ≤ x < SERIES_LIMIT by the series. */
function erfSeries(x: number): number {
  const x2 = x * x;
  let term = x;
  let sum = x;
  for (let m = 1; m < 200; m++) {
    term *= (2 * x2) / (2 * m + 1);
    sum += term;
    if (term < 1e-17 * sum) break;
  }
  return (2 / SQRT_PI) * Math.exp(-x2) * sum;
}

/** erfc(x) for x ≥ SERIES_LIMIT by the continued fraction (80 levels: converged to 1 ulp). */
function erfcContinuedFraction(x: number): number {
  let f = x;
  for (let j = 80; j >= 1; j--) f = x + j / 2 / f;
  return Math.exp(-x * x) / (SQRT_PI * f);
}

export function erfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x < 0) return 2 - erfc(-x);
  return x < SERIES_LIMIT ? 1 - erfSeries(x) : erfcContinuedFraction(x);
}

export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  const e = ax < SERIES_LIMIT ? erfSeries(ax) : 1 - erfcContinuedFraction(ax);
  return x < 0 ? -e : e;
}

/** For tests of the two branches against each other. */
export const erfBranches = { erfSeries, erfcContinuedFraction, SERIES_LIMIT };

/** Φ, the standard normal CDF, accurate in both tails. */
export function normalCdf(z: number): number {
  return z < 0 ? 0.5 * erfc(-z / Math.SQRT2) : 1 - 0.5 * erfc(z / Math.SQRT2);
}

/** Φ⁻¹ by bisection to full precision (slow; for statistics in tests only). */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) return p === 0 ? -Infinity : p === 1 ? Infinity : NaN;
  let lo = -40;
  let hi = 40;
  for (let i = 0; i < 200 && hi - lo > 1e-15 * Math.max(1, Math.abs(lo)); i++) {
    const mid = 0.5 * (lo + hi);
    if (normalCdf(mid) < p) lo = mid;
    else hi = mid;
  }
  return 0.5 * (lo + hi);
}

// ---- activations -------------------------------------------------------------------------

export const softplus = (t: number): number => Math.max(t, 0) + Math.log1p(Math.exp(-Math.abs(t)));
export const relu = (a: number): number => (a > 0 ? a : 0);
/** The exact-erf GELU: a·Φ(a) (not the tanh approximation). */
export const gelu = (a: number): number => a * normalCdf(a);
export const silu = (g: number): number => g / (1 + Math.exp(-g));

// ---- the layer -----------------------------------------------------------------------------

export interface RefLayer {
  d: number;
  h: number;
  n: number;
  k: number;
  expert: ExpertKind;
  noisy: boolean;
  noiseEpsilon: number;
  wImportance: number;
  wLoad: number;
  weights: MoEWeights;
}

/** The reference layer of a createMoE configuration, with the package's documented defaults. */
export function refLayer(config: MoEConfig): RefLayer {
  return {
    d: config.dModel,
    h: config.dHidden,
    n: config.numExperts,
    k: config.k,
    expert: config.expert,
    noisy: config.noisyGating ?? true,
    noiseEpsilon: config.noiseEpsilon ?? 1e-2,
    wImportance: config.wImportance ?? 0.1,
    wLoad: config.wLoad ?? 0.1,
    weights: config.weights ?? {},
  };
}

export interface RefGating {
  batch: number;
  /** x·W_g [B, n] */
  clean: Float64Array;
  /** softplus(x·W_noise) + ε [B, n]; only when the noise is applied (train and noisy). */
  std?: Float64Array;
  /** H [B, n]: clean + noise·std when the noise is applied, else clean. */
  h: Float64Array;
  /** [B, k], each row by descending H (ties: lower expert index first). */
  topkIndices: Int32Array;
  /** [B, k] softmax over the k selected H. */
  topkGates: Float64Array;
  /** [B] the smallest gap between neighbours among the top min(k+2, n) values of H (Infinity if n = 1). */
  topGap: Float64Array;
}

export interface RefResult extends RefGating {
  /** [B, d] */
  y: Float64Array;
  /** [B, n] gates scattered (k nonzeros per row). */
  gates: Float64Array;
  /** training mode only: */
  importance?: Float64Array;
  load?: Float64Array;
  /** [B, n] P(x, i), prob mode only. */
  loadProb?: Float64Array;
  loadMode?: "prob_in_top_k" | "count";
  lossImportance?: number;
  lossLoad?: number;
}

export interface RefOptions {
  train?: boolean;
  /** [B, n] standard normals (train and noisy only). */
  noise?: ArrayLike<number>;
  /** Applied to each expert GEMM's input row (x before the up-projection, the activations before the down-projection). */
  roundActivations?: (row: ArrayLike<number>) => number[];
}

/** Round half to even (the kernels' `nearest`). */
function roundEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v - Math.trunc(v)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The int8 and int4 kernels' activations: a row rounded to 16 bits with one scale, in f32 steps
 * as assembly/quant-a16.ts computes them: q = nearest(f32(f32(x / max|x|) · 32767)), x̂ = q · f32(max|x| / 32767).
 */
export function roundActivations16(row: ArrayLike<number>): number[] {
  let top = 0;
  for (let i = 0; i < row.length; i++) top = Math.max(top, Math.abs(Math.fround(row[i])));
  const out = new Array<number>(row.length).fill(0);
  if (!(top > 0)) return out;
  const scale = Math.fround(top / 32767);
  for (let i = 0; i < row.length; i++) out[i] = roundEven(Math.fround(Math.fround(Math.fround(row[i]) / top) * 32767)) * scale;
  return out;
}

function need(weights: MoEWeights, name: keyof MoEWeights): Float32Array {
  const w = weights[name];
  if (!w) throw new Error(`reference: weights.${name} missing`);
  return w;
}

/** Gating only: logits, noise, top-k and softmax. */
export function referenceGating(layer: RefLayer, x: ArrayLike<number>, options: RefOptions = {}): RefGating {
  const { d, n, k } = layer;
  const batch = x.length / d;
  const applyNoise = (options.train ?? false) && layer.noisy;
  const wGate = need(layer.weights, "wGate");
  const clean = new Float64Array(batch * n);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += x[b * d + j] * wGate[j * n + i];
      clean[b * n + i] = s;
    }
  }
  let std: Float64Array | undefined;
  let h = clean;
  if (applyNoise) {
    const wNoise = need(layer.weights, "wNoise");
    const noise = options.noise;
    if (!noise || noise.length !== batch * n) throw new Error("reference: training with noisy gating needs noise [B, n]");
    std = new Float64Array(batch * n);
    h = new Float64Array(batch * n);
    for (let b = 0; b < batch; b++) {
      for (let i = 0; i < n; i++) {
        let raw = 0;
        for (let j = 0; j < d; j++) raw += x[b * d + j] * wNoise[j * n + i];
        const s = softplus(raw) + layer.noiseEpsilon; // ε after the softplus, as tensor2tensor
        std[b * n + i] = s;
        h[b * n + i] = clean[b * n + i] + noise[b * n + i] * s;
      }
    }
  }
  const topkIndices = new Int32Array(batch * k);
  const topkGates = new Float64Array(batch * k);
  const topGap = new Float64Array(batch);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let b = 0; b < batch; b++) {
    const row = h.subarray(b * n, b * n + n);
    // stable sort: on equal H the lower index ranks first
    const sorted = order.slice().sort((i, j) => row[j] - row[i]);
    let gap = Infinity;
    for (let j = 1; j < Math.min(k + 2, n); j++) gap = Math.min(gap, row[sorted[j - 1]] - row[sorted[j]]);
    topGap[b] = gap;
    const top = row[sorted[0]];
    let sum = 0;
    for (let s = 0; s < k; s++) sum += Math.exp(row[sorted[s]] - top);
    for (let s = 0; s < k; s++) {
      topkIndices[b * k + s] = sorted[s];
      topkGates[b * k + s] = Math.exp(row[sorted[s]] - top) / sum;
    }
  }
  return { batch, clean, std, h, topkIndices, topkGates, topGap };
}

/** E_e(x_row) for one expert, [d]. */
export function referenceExpert(layer: RefLayer, e: number, xIn: ArrayLike<number>, round?: RefOptions["roundActivations"]): Float64Array {
  const { d, h } = layer;
  const xRow = round ? round(xIn) : xIn;
  const w = layer.weights;
  const act = new Float64Array(h);
  if (layer.expert === "swiglu") {
    const wg = need(w, "wGateProj");
    const wu = need(w, "wUp");
    for (let c = 0; c < h; c++) {
      let g = 0;
      let u = 0;
      for (let j = 0; j < d; j++) {
        g += xRow[j] * wg[(e * d + j) * h + c];
        u += xRow[j] * wu[(e * d + j) * h + c];
      }
      act[c] = silu(g) * u;
    }
  } else {
    const w1 = need(w, "w1");
    const b1 = need(w, "b1");
    const f = layer.expert === "relu" ? relu : gelu;
    for (let c = 0; c < h; c++) {
      let a = b1[e * h + c];
      for (let j = 0; j < d; j++) a += xRow[j] * w1[(e * d + j) * h + c];
      act[c] = f(a);
    }
  }
  const down = need(w, layer.expert === "swiglu" ? "wDown" : "w2");
  const a = round ? round(act) : act;
  const out = new Float64Array(d);
  for (let o = 0; o < d; o++) {
    let s = layer.expert === "swiglu" ? 0 : need(w, "b2")[e * d + o];
    for (let c = 0; c < h; c++) s += a[c] * down[(e * h + c) * d + o];
    out[o] = s;
  }
  return out;
}

/** CV² = population variance / (mean² + 1e-10) (tensor2tensor cv_squared, without its 1e-10 in the size). */
export function cvSquared(v: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += v[i];
  const mean = sum / v.length;
  let ss = 0;
  for (let i = 0; i < v.length; i++) ss += (v[i] - mean) ** 2;
  return ss / v.length / (mean * mean + 1e-10);
}

/** The whole forward pass. */
export function referenceForward(layer: RefLayer, x: ArrayLike<number>, options: RefOptions = {}): RefResult {
  const g = referenceGating(layer, x, options);
  const { d, n, k } = layer;
  const { batch, topkIndices, topkGates } = g;
  const y = new Float64Array(batch * d);
  const gates = new Float64Array(batch * n);
  for (let b = 0; b < batch; b++) {
    const xRow = Array.prototype.slice.call(x, b * d, b * d + d) as number[];
    for (let s = 0; s < k; s++) {
      const e = topkIndices[b * k + s];
      const gate = topkGates[b * k + s];
      gates[b * n + e] = gate;
      const out = referenceExpert(layer, e, xRow, options.roundActivations);
      for (let o = 0; o < d; o++) y[b * d + o] += gate * out[o];
    }
  }
  const result: RefResult = { ...g, y, gates };
  if (!(options.train ?? false)) return result;

  const importance = new Float64Array(n);
  for (let b = 0; b < batch; b++) for (let i = 0; i < n; i++) importance[i] += gates[b * n + i];
  const load = new Float64Array(n);
  const probMode = layer.noisy && k < n;
  if (probMode) {
    // P(x, i) = Φ((clean_i − kth_excluding(H, k, i)) / std_i): the threshold is the (k+1)-th
    // largest H when i is in the top k (H_i > it), else the k-th largest.
    const loadProb = new Float64Array(batch * n);
    const std = g.std!;
    for (let b = 0; b < batch; b++) {
      const row = g.h.subarray(b * n, b * n + n);
      const sorted = Array.from(row).sort((p, q) => q - p);
      const thrIn = sorted[k];
      const thrOut = sorted[k - 1];
      for (let i = 0; i < n; i++) {
        const thr = row[i] > thrIn ? thrIn : thrOut;
        const p = normalCdf((g.clean[b * n + i] - thr) / std[b * n + i]);
        loadProb[b * n + i] = p;
        load[i] += p;
      }
    }
    result.loadProb = loadProb;
    result.loadMode = "prob_in_top_k";
  } else {
    for (let j = 0; j < topkIndices.length; j++) load[topkIndices[j]] += 1;
    result.loadMode = "count";
  }
  result.importance = importance;
  result.load = load;
  result.lossImportance = layer.wImportance * cvSquared(importance);
  result.lossLoad = layer.wLoad * cvSquared(load);
  return result;
}
