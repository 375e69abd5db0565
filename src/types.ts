/** Public types of edge-moe. */

export type ExpertKind = "relu" | "gelu" | "swiglu";
export type BackendChoice = "cpu" | "gpu" | "auto";
export type BackendName = "cpu" | "gpu";

/**
 * Weights, row-major, in the `x · W` layout (`[in, out]`), expert index first.
 * relu / gelu experts: `w1 [n,d,h]`, `b1 [n,h]`, `w2 [n,h,d]`, `b2 [n,d]`.
 * swiglu experts:      `wGateProj [n,d,h]`, `wUp [n,d,h]`, `wDown [n,h,d]` (no biases).
 * Gating: `wGate [d,n]`, `wNoise [d,n]` (wNoise only when noisyGating).
 */
export interface MoEWeights {
  wGate?: Float32Array;
  wNoise?: Float32Array;
  w1?: Float32Array;
  b1?: Float32Array;
  w2?: Float32Array;
  b2?: Float32Array;
  wGateProj?: Float32Array;
  wUp?: Float32Array;
  wDown?: Float32Array;
}

export interface MoEConfig {
  /** d: width of x and y. */
  dModel: number;
  /** h: hidden width of each expert. */
  dHidden: number;
  /** n: number of experts. */
  numExperts: number;
  /** Experts per row, 1 ≤ k ≤ n. */
  k: number;
  expert: ExpertKind;
  /** Noisy top-k gating (noise is added only in training mode). Default true. */
  noisyGating?: boolean;
  /** Added after the softplus: std = softplus(x·W_noise) + noiseEpsilon. Default 1e-2. */
  noiseEpsilon?: number;
  /** Weight of the importance loss. Default 0.1. */
  wImportance?: number;
  /** Weight of the load loss. Default 0.1. */
  wLoad?: number;
  weights: MoEWeights;
  /** Where the experts run. Default "cpu". */
  backend?: BackendChoice;
  /** Seed of the layer's own noise stream, used by training calls that give neither noise nor seed. */
  seed?: number;
  /** Check x for NaN/Inf on every call (one pass over x, ~0.1% of a forward). Default true. */
  checkFinite?: boolean;
  /**
   * A compiled module, a Response, or the bytes of `edge-moe.simd.wasm`, for hosts where the
   * package cannot fetch or read its own wasm file (e.g. Vercel edge).
   */
  wasm?: WebAssembly.Module | Response | ArrayBuffer | ArrayBufferView | Promise<Response>;
}

export interface ForwardOptions {
  /** Training mode: noise (when noisyGating) and the balancing losses. Default false. */
  train?: boolean;
  /** Standard normals [B, n] for the noisy gating; overrides `seed`. */
  noise?: Float32Array;
  /** Seed for the counter-based noise generator (Philox4x32-10 + Box–Muller): same seed, same noise, every runtime. */
  seed?: number;
  /** Caller-owned output buffers, written in place instead of fresh arrays. */
  out?: { y?: Float32Array; topkIndices?: Int32Array; topkGates?: Float32Array };
}

export interface ForwardResult {
  /** [B, d] */
  y: Float32Array;
  /** [B, k], each row sorted by descending H. */
  topkIndices: Int32Array;
  /** [B, k], softmax over the k selected logits. */
  topkGates: Float32Array;
  /** [n] Σ_x G(x) (training mode only). */
  importance?: Float32Array;
  /** [n] Σ_x P(x, i) in prob mode, or counts (training mode only). */
  load?: Float32Array;
  /** w_importance · CV(importance)² (training mode only). */
  lossImportance?: number;
  /** w_load · CV(load)² (training mode only). */
  lossLoad?: number;
  /** Where the experts ran. */
  backend: BackendName;
}

export interface MoELayer {
  readonly config: Readonly<Required<Pick<MoEConfig, "dModel" | "dHidden" | "numExperts" | "k" | "expert" | "noisyGating" | "noiseEpsilon" | "wImportance" | "wLoad">>>;
  forward(x: Float32Array, options?: ForwardOptions): Promise<ForwardResult>;
  dispose(): void;
}
