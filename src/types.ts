/** Public types of edge-moe. */
import type { GPUBufferLike } from "./gpu/types.ts";

export type { GPUBufferLike } from "./gpu/types.ts";

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
  /** The shared expert (config.shared, swiglu layers): `sharedGateProj [d,hs]`, `sharedUp [d,hs]`, `sharedDown [hs,d]`. */
  sharedGateProj?: Float32Array;
  sharedUp?: Float32Array;
  sharedDown?: Float32Array;
  /** `[d]`: the shared expert's output is multiplied by sigmoid(x · sharedGate) (config.shared.gated). */
  sharedGate?: Float32Array;
}

/**
 * One expert's slice of an expert tensor, on demand: createMoE calls it once per expert, e = 0 …
 * numExperts − 1 in order, and copies (or quantizes) the slice before asking for the next one, so
 * a layer far larger than JavaScript memory can hold in f32 (a quantized one) is built one expert
 * at a time. It returns expert e's part of the tensor in the same layout: w1, wGateProj, wUp
 * [dModel, dHidden]; w2, wDown [dHidden, dModel]; b1 [dHidden]; b2 [dModel].
 */
export type ExpertSlices = (expert: number) => Float32Array;

/** The expert tensors that may be given per expert (MoEWeightsInput). */
export type ExpertTensorName = "w1" | "b1" | "w2" | "b2" | "wGateProj" | "wUp" | "wDown";

/** createMoE's `weights`: MoEWeights, where each expert tensor may also be given per expert. */
export type MoEWeightsInput = { [K in keyof MoEWeights]?: K extends ExpertTensorName ? Float32Array | ExpertSlices : Float32Array };

/**
 * What createMoE takes: an MoEConfig whose expert tensors may be functions that return one
 * expert's slice (ExpertSlices), so that the whole f32 tensor never exists. Not with a shared
 * expert, and not for createMoEWorker, which cannot post functions to its worker.
 */
export type MoEConfigInput = Omit<MoEConfig, "weights"> & { weights?: MoEWeightsInput };

/**
 * What the package's types ask of a WebGPU device: any `GPUDevice` fits. Declared structurally so
 * that the published types need neither `@webgpu/types` nor a TypeScript lib with WebGPU in it.
 */
export interface GPUDeviceLike {
  readonly limits: object;
  readonly queue: { writeBuffer(...args: never[]): unknown };
  createBuffer(...args: never[]): unknown;
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
  /**
   * The weights. W_g and W_noise may be left out: they start at zero (the paper's
   * initialisation). Expert weights may be left out when `init` is given. createMoE also takes
   * expert tensors given per expert (MoEConfigInput).
   */
  weights?: MoEWeights;
  /**
   * Seeded random initialisation of the expert weights the caller leaves out: up-projections
   * (w1, wGateProj, wUp) ~ N(0, 1/dModel), down-projections (w2, wDown) ~ N(0, 1/dHidden), biases
   * zero; the same seed gives the same weights in every runtime.
   */
  init?: { seed: number };
  /**
   * Where the experts run. Default "cpu". "gpu": on a WebGPU device (fails with NO_GPU when
   * there is none); "auto": on the GPU when there is one and B·k ≥ `crossover`, else on the CPU.
   */
  backend?: BackendChoice;
  /**
   * The WebGPU device (a `GPUDevice`) for backend "gpu" / "auto", instead of the one the package
   * finds (navigator.gpu, or the optional `webgpu` package in Node and Bun). The caller keeps owning it.
   */
  gpu?: GPUDeviceLike;
  /**
   * B·k (rows × experts per row) at or above which backend "auto" runs the experts on the GPU.
   * Default: estimated from the expert size (Infinity on a software adapter); calibrate() measures it.
   */
  crossover?: number;
  /**
   * Receives the layer's warnings (e.g. the GPU device was lost: that call and later ones ran on the
   * CPU). Default: console.warn.
   */
  onWarning?: (warning: MoEWarning) => void;
  /** Seed of the layer's own noise stream, used by training calls that give neither noise nor seed. */
  seed?: number;
  /** Check x for NaN/Inf on every call (one pass over x, ~0.1% of a forward). Default true. */
  checkFinite?: boolean;
  /**
   * A compiled module, a Response, or the bytes of `edge-moe.simd.wasm`, for hosts where the
   * package cannot fetch or read its own wasm file (e.g. Vercel edge).
   */
  wasm?: WebAssembly.Module | Response | ArrayBuffer | ArrayBufferView | Promise<Response>;
  /**
   * Which of the package's kernel builds to load when `wasm` is not given. "auto" (the default)
   * takes the best one this host validates (`bestWasmBuild()`); "simd" gives the same bits in
   * every runtime; "relaxed" fails with WASM_LOAD where relaxed SIMD is missing.
   */
  wasmBuild?: "auto" | WasmBuild;
  /**
   * Threads for the expert pass on the CPU, and for the gating GEMM of large batches. Default 1. More than 1 loads a threaded build (shared
   * memory; needs SharedArrayBuffer, Atomics and workers: in browsers a cross-origin isolated page)
   * and starts threads − 1 workers once, at creation; `dispose()` ends them. "auto": one per
   * hardware thread where threads are available and the package picks the build (no `wasm`, and
   * `wasmBuild` "auto" or a "-threads" one), else 1. Every thread count gives the same bits.
   */
  threads?: number | "auto";
  /**
   * How the gating network turns a row's logits into its k experts and their weights. Default: the
   * paper's top-k softmax (noisy in training mode). Other routers: see RoutingOptions.
   */
  routing?: RoutingOptions;
  /**
   * A shared expert that every row goes through beside its k routed experts: a SwiGLU MLP of hidden
   * width `dHidden` (weights sharedGateProj, sharedUp, sharedDown), its output multiplied by
   * sigmoid(x · sharedGate) when `gated`. swiglu layers only.
   */
  shared?: { dHidden: number; gated?: boolean };
  /**
   * Storage of the expert weights (W1, W2 / gate, up, down projections), quantized once at
   * creation; the gating network and the biases stay f32, so routing is that of "f32". Default
   * "f32". "f16", "bf16": half floats (round to nearest even; f16 rejects weights beyond ±65504);
   * "int8": symmetric, one f32 scale per output column; "int4": symmetric, one f32 scale per
   * output column and block of 32 input rows. getWeights() returns the dequantized values;
   * backward and step fail with UNSUPPORTED.
   */
  dtype?: WeightDtype;
  /**
   * The activations of the CPU expert GEMMs. Default "f32". "int8" (with dtype "int8" only, else
   * INVALID_CONFIG): each A row (a token's x for the up-projection, its hidden activations for the
   * down-projection) is quantized on the fly, symmetric with one f32 scale per row, to 7 bits
   * ([−63, 63]), multiplied by the int8 weights with integer dot products (exact i32 sums) and
   * scaled back; biases and activation functions stay f32. Faster at large batches, less
   * accurate (docs/numerics.md); the integer sums are the same in the simd and relaxed
   * builds. The weights are stored once, in the layout of the dot products; getWeights() returns
   * the same values as with dtype "int8". A GPU expert pass runs them on f32 activations.
   */
  activations?: "f32" | "int8";
}

/**
 * A router other than the paper's. Its logits are x · wGate (no noise: noisyGating must be false,
 * which is its default here); the experts are chosen by score, and their weights come from it.
 */
export interface RoutingOptions {
  /**
   * "topk-softmax" (the default, the paper): softmax over the k largest logits.
   * "softmax": softmax over all n logits, then the k largest probabilities (Mixtral, Qwen-MoE,
   * OLMoE, Switch). "sigmoid": element-wise sigmoid scores (DeepSeek-V3).
   */
  score?: "topk-softmax" | "softmax" | "sigmoid";
  /** Divide the k weights by their sum (+ renormEpsilon). Default false. */
  renormalize?: boolean;
  /** Added to the sum when renormalising. Default 0. */
  renormEpsilon?: number;
  /** Multiplies the weights (after renormalisation). Default 1. */
  scale?: number;
  /** "sigmoid" only: [n] added to the scores for the choice of experts, never to their weights. */
  choiceBias?: Float32Array;
  /**
   * "sigmoid" only: group-limited choice. The n experts form nGroup equal groups; a group's score
   * is the sum of its two best (biased) scores; only the experts of the topkGroup best groups can
   * be chosen.
   */
  groups?: { nGroup: number; topkGroup: number };
}

/** Storage of the expert weights (MoEConfig.dtype). */
export type WeightDtype = "f32" | "f16" | "bf16" | "int8" | "int4";

/**
 * A kernel build: "simd" (WebAssembly SIMD128, the baseline) or "relaxed" (adds relaxed SIMD:
 * fused multiply-add in the GEMMs where the hardware has it); "-threads": the same on a shared
 * memory, for threads > 1.
 */
export type WasmBuild = "simd" | "relaxed" | "simd-threads" | "relaxed-threads";

export interface ForwardOptions {
  /** Training mode: noise (when noisyGating) and the balancing losses. Default false. */
  train?: boolean;
  /** Standard normals [B, n] for the noisy gating; overrides `seed`. */
  noise?: Float32Array;
  /** Seed for the counter-based noise generator (Philox4x32-10 + Box–Muller): same seed, same noise, every runtime. */
  seed?: number;
  /** Caller-owned output buffers, written in place instead of fresh arrays. */
  out?: { y?: Float32Array; topkIndices?: Int32Array; topkGates?: Float32Array };
  /**
   * Where this call's experts run, overriding the layer's backend: "cpu", "gpu" (the layer must
   * have a GPU: created with backend "gpu" or "auto"), or "auto". forwardSync always uses the CPU.
   */
  backend?: BackendChoice;
}

/**
 * Options of a forward whose x is a GPUBuffer (the resident path: gating, plan and experts on the
 * GPU, no readback of x or y). See docs/gpu-resident.md.
 */
export interface ResidentForwardOptions {
  /** Training mode: noise (when noisyGating) and the balancing statistics, read back. Default false. */
  train?: boolean;
  /** Standard normals [B, n] for the noisy gating (uploaded); overrides `seed`. */
  noise?: Float32Array;
  /** Seed of the counter-based noise generator: the same normals as the CPU path's for this seed. */
  seed?: number;
  /**
   * Rows B. Default: x.size / (4·dModel), which must then be a whole number; with `batch`, x may
   * be larger than B·dModel floats (the rows are its first B·dModel floats).
   */
  batch?: number;
  /**
   * Caller-owned output buffers on the layer's device, written instead of fresh ones; each needs
   * COPY_DST usage and at least y: B·dModel, topkIndices and topkGates: B·k 4-byte elements.
   */
  out?: { y?: GPUBufferLike; topkIndices?: GPUBufferLike; topkGates?: GPUBufferLike };
  /** "gpu" or "auto" (the same here): a GPUBuffer x runs on the GPU. */
  backend?: BackendChoice;
}

/** The result of a forward with a GPUBuffer x: outputs stay on the layer's device. */
export interface ResidentForwardResult {
  /** [B, d] f32, row-major. Fresh (the caller owns it and destroys it) unless out.y was given. */
  y: GPUBufferLike;
  /** [B, k] i32, each row by descending H. */
  topkIndices: GPUBufferLike;
  /** [B, k] f32, softmax over the k selected logits. */
  topkGates: GPUBufferLike;
  /** Rows B of the call. */
  batch: number;
  /** [n] Σ_x G(x) (training mode only; read back). */
  importance?: Float32Array;
  /** [n] Σ_x P(x, i) in prob mode, or counts (training mode only; read back). */
  load?: Float32Array;
  /** w_importance · CV(importance)² (training mode only). */
  lossImportance?: number;
  /** w_load · CV(load)² (training mode only). */
  lossLoad?: number;
  backend: "gpu";
}

/** Something the caller should know that did not fail the call. */
export interface MoEWarning {
  /**
   * GPU_LOST: the GPU device was lost; GPU_ERROR: a GPU operation failed, or the GPU experts could
   * not be set up. Either way that call and every later one run their experts on the CPU.
   */
  code: "GPU_LOST" | "GPU_ERROR";
  message: string;
  cause?: unknown;
}

/** The layer's GPU, as the router sees it. */
export interface GpuStatus {
  /** The adapter, in words; undefined when the layer has no GPU. */
  adapter: string | undefined;
  /** A CPU implementation of WebGPU (SwiftShader, llvmpipe, WARP…): correct, and slow. */
  software: boolean;
  /** B·k at or above which backend "auto" runs the experts on the GPU. */
  crossover: number;
  /** Whether the experts can run on the GPU now. */
  available: boolean;
  /** Why not, when they cannot (no adapter, lost, failed, backend "cpu"). */
  reason?: string;
}

export interface CalibrateOptions {
  /** Batch sizes B to time. Default [1, 4, 16, 64, 256]. */
  batchSizes?: number[];
  /** Timed calls per size and backend, after one warm-up. Default 3. */
  repeats?: number;
}

export interface Calibration {
  /** The crossover now set (B·k); Infinity when the GPU was faster at no size. */
  crossover: number;
  /** Median milliseconds of one forward call per batch size and backend. */
  samples: Array<{ batch: number; pairs: number; cpuMs: number; gpuMs: number }>;
  /** The GPU is a software adapter (timings of a CPU emulating a GPU). */
  software: boolean;
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

/**
 * Gradients of J = Σ y·dy + lossImportance + lossLoad (noise held fixed), in the input layouts:
 * `x` [B, d] and each weight under its MoEWeights name (wNoise only with noisyGating; w1, b1,
 * w2, b2 or wGateProj, wUp, wDown).
 */
export interface Gradients extends MoEWeights {
  x: Float32Array;
}

export interface BackwardOptions {
  /**
   * Also return the weight gradients as Float32Arrays. Default true; false returns only `x` and
   * leaves the weight gradients in the layer's memory, for step().
   */
  weights?: boolean;
}

export interface StepOptions {
  /** Learning rate, > 0. */
  lr: number;
  /** Default "sgd": w ← w − lr·g. "adam": Kingma & Ba (2015) with bias correction. */
  optimizer?: "sgd" | "adam";
  /** Adam's decay of the first moment, in [0, 1). Default 0.9. */
  beta1?: number;
  /** Adam's decay of the second moment, in [0, 1). Default 0.999. */
  beta2?: number;
  /** Adam's ε, > 0. Default 1e-8. */
  eps?: number;
}

export interface MoELayer {
  readonly config: Readonly<
    Required<Pick<MoEConfig, "dModel" | "dHidden" | "numExperts" | "k" | "expert" | "noisyGating" | "noiseEpsilon" | "wImportance" | "wLoad">>
  >;
  forward(x: Float32Array, options?: ForwardOptions): Promise<ForwardResult>;
  /**
   * The gradients of the last training-mode forward for the upstream gradient dy [B, d]. Runs on
   * the CPU and uses up that forward's state: a second backward needs a new forward.
   */
  backward(dy: Float32Array, options?: BackwardOptions): Promise<Gradients>;
  /** Applies the last backward's weight gradients to the layer's weights, in place. */
  step(options: StepOptions): Promise<void>;
  /** The layer's current weights, in the input layout (copies). */
  getWeights(): Promise<MoEWeights>;
  dispose(): void;
}

/**
 * `[Symbol.dispose]()` (it calls dispose()) where the consumer's TypeScript library declares
 * Symbol.dispose (ESNext.Disposable), so that `using layer = await createMoE(…)` type-checks; no
 * member otherwise, so the types compile without that library too. Layers have the method at run
 * time wherever the runtime has the symbol.
 */
export type Disposable = SymbolConstructor extends { readonly dispose: infer S extends symbol } ? { [K in S]: () => void } : unknown;

/** A layer made by createMoE in this thread: an MoELayer with the GPU router's controls, disposable. */
export type MoELocalLayer = MoELocalLayerMethods & Disposable;

export interface MoELocalLayerMethods extends MoELayer {
  /**
   * The resident path: x a GPUBuffer (STORAGE usage, f32 [B, dModel]) on the layer's device (a
   * layer with a GPU); y and the top-k come back as GPUBuffers on that device. Fails with GPU_LOST
   * when the device is lost (a layer on a new device: createMoE with `gpu` and getWeights()).
   */
  forward(x: GPUBufferLike, options?: ResidentForwardOptions): Promise<ResidentForwardResult>;
  forward(x: Float32Array, options?: ForwardOptions): Promise<ForwardResult>;
  /** forward on the CPU, synchronously (whatever the backend). */
  forwardSync(x: Float32Array, options?: ForwardOptions): ForwardResult;
  /**
   * Times the CPU and GPU experts on this machine for a few batch sizes and sets the crossover of
   * backend "auto" (without a GPU it measures nothing and changes nothing).
   */
  calibrate(options?: CalibrateOptions): Promise<Calibration>;
  /** The layer's GPU: adapter, crossover, whether it is usable and why not. */
  readonly gpuStatus: GpuStatus;
}
