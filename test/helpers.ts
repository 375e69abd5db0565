// Shared test helpers: the golden vectors (read with the package's own safetensors reader),
// the README's error metric, the file-name → option-name mapping of the weights, and a seeded
// JavaScript PRNG for random layers, and the CI rule. The fixtures live in the repo.
import { readFileSync } from "node:fs";
import type { RefLayer } from "./reference.ts";
import { readSafetensors, type ExpertKind, type MoEConfig, type MoEWeights, type SafetensorsFile } from "edge-moe";

export const VECTORS_DIR = new URL("./fixtures/vectors/", import.meta.url);

/** One entry of test/fixtures/vectors/index.json. */
export interface CaseInfo {
  name: string;
  file: string;
  expert: ExpertKind;
  noisy: boolean;
  k: number;
  n: number;
  B: number;
  d: number;
  h: number;
  w_importance: number;
  w_load: number;
  noise_epsilon: number;
  cv_epsilon: number;
  load_mode: "prob_in_top_k" | "count";
  description: string;
  bytes: number;
  sha256: string;
}

export function listCases(): CaseInfo[] {
  const index = JSON.parse(readFileSync(new URL("index.json", VECTORS_DIR), "utf8")) as { cases: CaseInfo[] };
  return index.cases;
}

export function readCaseBytes(info: Pick<CaseInfo, "file">): Uint8Array {
  return readFileSync(new URL(info.file, VECTORS_DIR));
}

/** A golden case: its parameters (from the file's metadata), inputs and reference outputs. */
export interface GoldenCase {
  info: CaseInfo;
  file: SafetensorsFile;
  /** createMoE options of this case (backend "cpu"). */
  config: MoEConfig;
  x: Float32Array;
  /** [B, n] standard normals; only when noisy. */
  noise?: Float32Array;
  /** A reference tensor by its file name (e.g. "topk_gates"). */
  tensor(name: string): Float32Array | Int32Array;
  f32(name: string): Float32Array;
}

/** File tensor names of the weights → createMoE option names (w_gate → wGate, …). */
export const WEIGHT_NAMES: ReadonlyArray<[string, keyof MoEWeights]> = [
  ["w_gate", "wGate"],
  ["w_noise", "wNoise"],
  ["w1", "w1"],
  ["b1", "b1"],
  ["w2", "w2"],
  ["b2", "b2"],
  ["w_gate_proj", "wGateProj"],
  ["w_up", "wUp"],
  ["w_down", "wDown"],
];

/** The weights a file holds, under their option names. */
export function weightsOf(file: SafetensorsFile): MoEWeights {
  const weights: MoEWeights = {};
  for (const [fileName, optionName] of WEIGHT_NAMES) {
    const t = file.tensors[fileName];
    if (!t) continue;
    if (!(t.data instanceof Float32Array)) throw new Error(`${fileName} is not F32`);
    weights[optionName] = t.data;
  }
  return weights;
}

export function loadCase(info: CaseInfo): GoldenCase {
  const file = readSafetensors(readCaseBytes(info));
  const m = file.metadata;
  const tensor = (name: string) => {
    const t = file.tensors[name];
    if (!t) throw new Error(`case ${info.name} has no tensor ${name}`);
    return t.data;
  };
  const f32 = (name: string) => {
    const data = tensor(name);
    if (!(data instanceof Float32Array)) throw new Error(`${name} is not F32`);
    return data;
  };
  const noisy = m.noisy === "true";
  const config: MoEConfig = {
    dModel: Number(m.d),
    dHidden: Number(m.h),
    numExperts: Number(m.n),
    k: Number(m.k),
    expert: m.expert as ExpertKind,
    noisyGating: noisy,
    noiseEpsilon: Number(m.noise_epsilon),
    wImportance: Number(m.w_importance),
    wLoad: Number(m.w_load),
    weights: weightsOf(file),
    backend: "cpu",
  };
  return { info, file, config, x: f32("x"), noise: noisy ? f32("noise") : undefined, tensor, f32 };
}

/**
 * The golden vectors' metric (test/fixtures/vectors/README.md): max|cand − ref| / max|ref|,
 * or the absolute max|cand − ref| when the reference is all zeros. NaN anywhere, or a length
 * mismatch, gives Infinity so that it can never pass.
 */
export function relErr(cand: ArrayLike<number> | number, ref: ArrayLike<number> | number): number {
  const c = typeof cand === "number" ? [cand] : cand;
  const r = typeof ref === "number" ? [ref] : ref;
  if (c.length !== r.length) return Infinity;
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < r.length; i++) {
    const diff = Math.abs(c[i] - r[i]);
    if (!(diff <= maxDiff)) maxDiff = Number.isNaN(diff) ? Infinity : diff;
    maxRef = Math.max(maxRef, Math.abs(r[i]));
  }
  return maxRef === 0 ? maxDiff : maxDiff / maxRef;
}

/** The README's tolerance for every forward output (topk indices: exact). */
export const TOL = 1e-4;

// ---- seeded PRNG ------------------------------------------------------------------------------
// xoshiro128** (Blackman & Vigna, "Scrambled linear pseudorandom number generators", 2018), seeded
// through the splitmix32 finaliser; normals by Box–Muller. Deterministic across runs and machines,
// so a failing random layer can be reproduced from its seed.

function splitmix32(state: number): () => number {
  let s = state >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare: number | undefined;

  constructor(seed: number) {
    const mix = splitmix32(seed);
    this.s0 = mix();
    this.s1 = mix();
    this.s2 = mix();
    this.s3 = mix();
  }

  /** A uniform 32-bit unsigned integer. */
  nextU32(): number {
    const rotl = (v: number, r: number) => ((v << r) | (v >>> (32 - r))) >>> 0;
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3 >>> 0, 11);
    this.s0 >>>= 0;
    this.s1 >>>= 0;
    this.s2 >>>= 0;
    return result;
  }

  /** Uniform in (0, 1). */
  uniform(): number {
    return (this.nextU32() + 0.5) / 4294967296;
  }

  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.uniform() * (hi - lo + 1));
  }

  pick<T>(values: readonly T[]): T {
    return values[Math.floor(this.uniform() * values.length)];
  }

  /** A standard normal (Box–Muller). */
  normal(): number {
    if (this.spare !== undefined) {
      const v = this.spare;
      this.spare = undefined;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(this.uniform()));
    const t = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(t);
    return r * Math.cos(t);
  }

  /** length values of N(0, std²), rounded to float32. */
  normals(length: number, std = 1): Float32Array {
    const out = new Float32Array(length);
    for (let i = 0; i < length; i++) out[i] = std * this.normal();
    return out;
  }
}

/** Shape and options of a random layer: the reference layer without weights, loss options optional. */
export type LayerShape = Omit<RefLayer, "weights" | "noiseEpsilon" | "wImportance" | "wLoad"> &
  Partial<Pick<RefLayer, "noiseEpsilon" | "wImportance" | "wLoad">>;

/**
 * Random weights drawn like the golden vectors' generator: w_gate ~ N(0, 1/d),
 * w_noise ~ N(0, 0.25/d), up-projections ~ N(0, 1/d), down-projections ~ N(0, 1/h),
 * biases ~ N(0, 0.1²).
 */
export function randomWeights(rng: Rng, shape: LayerShape): MoEWeights {
  const { d, h, n } = shape;
  const weights: MoEWeights = { wGate: rng.normals(d * n, Math.sqrt(1 / d)) };
  if (shape.noisy) weights.wNoise = rng.normals(d * n, Math.sqrt(0.25 / d));
  if (shape.expert === "swiglu") {
    weights.wGateProj = rng.normals(n * d * h, Math.sqrt(1 / d));
    weights.wUp = rng.normals(n * d * h, Math.sqrt(1 / d));
    weights.wDown = rng.normals(n * h * d, Math.sqrt(1 / h));
  } else {
    weights.w1 = rng.normals(n * d * h, Math.sqrt(1 / d));
    weights.b1 = rng.normals(n * h, 0.1);
    weights.w2 = rng.normals(n * h * d, Math.sqrt(1 / h));
    weights.b2 = rng.normals(n * d, 0.1);
  }
  return weights;
}

/** createMoE options of a layer shape with the given weights. */
export function configOf(shape: LayerShape, weights: MoEWeights): MoEConfig {
  return {
    dModel: shape.d,
    dHidden: shape.h,
    numExperts: shape.n,
    k: shape.k,
    expert: shape.expert,
    noisyGating: shape.noisy,
    noiseEpsilon: shape.noiseEpsilon ?? 1e-2,
    wImportance: shape.wImportance ?? 0.1,
    wLoad: shape.wLoad ?? 0.1,
    weights,
    backend: "cpu",
  };
}

/** Bit-exact equality of two typed arrays (NaN == NaN, +0 ≠ −0). */
export function sameBits(a: Float32Array | Int32Array, b: Float32Array | Int32Array): boolean {
  if (a.length !== b.length || a.constructor !== b.constructor) return false;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return false;
  return true;
}

/**
 * Whether this run is CI: any non-empty CI variable (CI providers set "true", "1" or their own
 * name), where a suite that needs a GPU may not skip.
 */
export function isCI(env: Record<string, string | undefined> = process.env): boolean {
  return (env.CI ?? "") !== "";
}
