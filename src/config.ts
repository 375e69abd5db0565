// Validation at the door: every option and weight of createMoE, with errors a user can act on.
import { fail } from "./errors.ts";
import { validateRouting, validateShared, type RoutingSpec, type SharedSpec } from "./routing.ts";
import { checkKeys, CONFIG_KEYS, INIT_KEYS, WEIGHT_KEYS } from "./options.ts";
import type { BackendChoice, ExpertKind, ExpertSlices, MoEConfigInput, MoEWeights, MoEWeightsInput, WeightDtype } from "./types.ts";

export const EXPERT_KINDS: readonly ExpertKind[] = ["relu", "gelu", "swiglu"];
const BACKENDS: readonly BackendChoice[] = ["cpu", "gpu", "auto"];
export const WEIGHT_DTYPES: readonly WeightDtype[] = ["f32", "f16", "bf16", "int8", "int4"];

/** A validated configuration with every default filled in. */
export interface LayerSpec {
  dModel: number;
  dHidden: number;
  numExperts: number;
  k: number;
  expert: ExpertKind;
  noisyGating: boolean;
  noiseEpsilon: number;
  wImportance: number;
  wLoad: number;
  backend: BackendChoice;
  seed: number;
  checkFinite: boolean;
  /** Threads for the CPU expert pass ("auto": resolved at creation, src/cpu/threads.ts). */
  threads: number | "auto";
  /** Seed of the random expert weights the caller left out (config.init), if any. */
  initSeed: number | undefined;
  /** The router (the paper's top-k softmax unless config.routing says otherwise). */
  routing: RoutingSpec;
  /** The shared expert, run as `shared.slices` extra experts every row routes to. */
  shared: SharedSpec | undefined;
  /** Storage of the expert weights. */
  dtype: WeightDtype;
  /** The expert GEMMs' activations: "int8" quantizes them per row (W8A8, dtype "int8" only). */
  activations: "f32" | "int8";
}

/** Name and expected length of every weight an expert kind needs, in the input layout. */
export function weightShapes(
  spec: Pick<LayerSpec, "dModel" | "dHidden" | "numExperts" | "expert" | "noisyGating" | "shared">,
): Array<[keyof MoEWeights, number[]]> {
  const { dModel: d, dHidden: h, numExperts: n } = spec;
  const shapes: Array<[keyof MoEWeights, number[]]> = [["wGate", [d, n]]];
  if (spec.noisyGating) shapes.push(["wNoise", [d, n]]);
  if (spec.expert === "swiglu") {
    shapes.push(["wGateProj", [n, d, h]], ["wUp", [n, d, h]], ["wDown", [n, h, d]]);
  } else {
    shapes.push(["w1", [n, d, h]], ["b1", [n, h]], ["w2", [n, h, d]], ["b2", [n, d]]);
  }
  if (spec.shared) {
    const hs = spec.shared.dHidden;
    shapes.push(["sharedGateProj", [d, hs]], ["sharedUp", [d, hs]], ["sharedDown", [hs, d]]);
    if (spec.shared.gated) shapes.push(["sharedGate", [d]]);
  }
  return shapes;
}

function positiveInteger(name: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    fail("INVALID_CONFIG", `${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

function finiteNumber(name: string, value: unknown, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min) {
    fail("INVALID_CONFIG", `${name} must be a finite number ≥ ${min}, got ${String(value)}`);
  }
  return value;
}

export function checkSeed(name: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    fail("INVALID_CONFIG", `${name} must be an integer in [0, 2^53), got ${String(value)}`);
  }
  return value;
}

export function validateConfig(config: MoEConfigInput): LayerSpec {
  if (typeof config !== "object" || config === null) fail("INVALID_CONFIG", "createMoE needs a configuration object");
  // First, so that a misspelt size is reported as such, not as that size missing.
  checkKeys(config, CONFIG_KEYS, "createMoE");
  const dModel = positiveInteger("dModel", config.dModel);
  const dHidden = positiveInteger("dHidden", config.dHidden);
  const numExperts = positiveInteger("numExperts", config.numExperts);
  if (typeof config.k !== "number" || !Number.isInteger(config.k) || config.k < 1 || config.k > numExperts) {
    fail("INVALID_CONFIG", `k must be an integer with 1 ≤ k ≤ numExperts (${numExperts}), got ${String(config.k)}`);
  }
  if (!EXPERT_KINDS.includes(config.expert)) {
    fail("UNKNOWN_EXPERT", `expert must be one of ${EXPERT_KINDS.map((e) => `"${e}"`).join(", ")}, got ${JSON.stringify(config.expert)}`);
  }
  const backend = config.backend ?? "cpu";
  if (!BACKENDS.includes(backend)) {
    fail("INVALID_CONFIG", `backend must be "cpu", "gpu" or "auto", got ${JSON.stringify(backend)}`);
  }
  if (config.gpu !== undefined && (typeof config.gpu !== "object" || config.gpu === null)) {
    fail("INVALID_CONFIG", "gpu must be a GPUDevice (from adapter.requestDevice())");
  }
  if (config.crossover !== undefined && (typeof config.crossover !== "number" || !(config.crossover >= 1))) {
    fail("INVALID_CONFIG", `crossover must be a number ≥ 1 (B·k; Infinity keeps backend "auto" on the CPU), got ${String(config.crossover)}`);
  }
  if (config.onWarning !== undefined && typeof config.onWarning !== "function") {
    fail("INVALID_CONFIG", "onWarning must be a function (warning) => void");
  }
  const routing = validateRouting(config.routing, numExperts, config.k);
  const shared = validateShared(config.shared, config.expert, dHidden);
  const paperRouting = routing.score === "topk-softmax";
  const noisyGating = config.noisyGating ?? paperRouting;
  if (typeof noisyGating !== "boolean") fail("INVALID_CONFIG", "noisyGating must be a boolean");
  if (noisyGating && !paperRouting)
    fail("INVALID_CONFIG", `noisy gating is the paper's top-k softmax; routing.score ${JSON.stringify(routing.score)} needs noisyGating: false`);
  const checkFinite = config.checkFinite ?? true;
  if (typeof checkFinite !== "boolean") fail("INVALID_CONFIG", "checkFinite must be a boolean");
  const threads = config.threads ?? 1;
  if (threads !== "auto" && (typeof threads !== "number" || !Number.isInteger(threads) || threads < 1 || threads > 256)) {
    fail("INVALID_CONFIG", `threads must be an integer in [1, 256] or "auto", got ${String(threads)}`);
  }
  const dtype = config.dtype ?? "f32";
  if (!WEIGHT_DTYPES.includes(dtype)) {
    fail(
      "INVALID_CONFIG",
      `dtype must be one of ${WEIGHT_DTYPES.map((t) => `"${t}"`).join(", ")} (the storage of the expert weights), got ${JSON.stringify(dtype)}`,
    );
  }
  const activations = config.activations ?? "f32";
  if (activations !== "f32" && activations !== "int8") {
    fail("INVALID_CONFIG", `activations must be "f32" or "int8", got ${JSON.stringify(activations)}`);
  }
  if (activations === "int8" && dtype !== "int8") {
    fail("INVALID_CONFIG", `activations "int8" multiplies int8 activations by int8 weights: it needs dtype "int8", got ${JSON.stringify(dtype)}`);
  }
  // Limits of the 32-bit wasm address space: the largest single weight tensor must fit.
  const biggest = (numExperts + (shared?.slices ?? 0)) * dModel * dHidden;
  if (biggest > 2 ** 29) {
    fail("INVALID_CONFIG", `numExperts·dModel·dHidden = ${biggest} floats exceeds what a 4 GiB wasm memory can hold (2^29)`);
  }
  return {
    dModel,
    dHidden,
    numExperts,
    k: config.k,
    expert: config.expert,
    noisyGating,
    noiseEpsilon: finiteNumber("noiseEpsilon", config.noiseEpsilon, 1e-2),
    wImportance: finiteNumber("wImportance", config.wImportance, 0.1),
    wLoad: finiteNumber("wLoad", config.wLoad, 0.1),
    backend,
    seed: config.seed === undefined ? 0 : checkSeed("seed", config.seed),
    checkFinite,
    threads,
    initSeed: initSeedOf(config.init),
    routing,
    shared,
    dtype,
    activations,
  };
}

function initSeedOf(init: MoEConfigInput["init"]): number | undefined {
  if (init === undefined) return undefined;
  if (typeof init !== "object" || init === null) fail("INVALID_CONFIG", "init must be an object { seed }");
  checkKeys(init, INIT_KEYS, "init", "init.");
  return checkSeed("init.seed", init.seed);
}

/**
 * An expert tensor given per expert (types.ts ExpertSlices). It stands in the map of validated
 * weights as an empty Float32Array, so that the steps between validation and packing pass it on
 * unchanged; the engine's loadWeights asks it for one expert's slice at a time.
 */
export class ExpertSliceSource extends Float32Array {
  readonly tensor: keyof MoEWeights;
  /** Floats of one expert's slice. */
  readonly sliceLength: number;
  private readonly slices: ExpertSlices;

  constructor(tensor: keyof MoEWeights, slices: ExpertSlices, sliceLength: number) {
    super(0);
    this.tensor = tensor;
    this.slices = slices;
    this.sliceLength = sliceLength;
  }

  /** Expert e's slice, checked for type and length. */
  expert(e: number): Float32Array {
    const value: unknown = this.slices(e);
    if (!(value instanceof Float32Array) || value.length !== this.sliceLength) {
      fail(
        "WEIGHT_SHAPE",
        `weights.${this.tensor}(${e}) must return a Float32Array of ${this.sliceLength} floats (expert ${e}'s slice), got ${value instanceof Float32Array ? `length ${value.length}` : Object.prototype.toString.call(value)}`,
      );
    }
    return value;
  }
}

/** Expert tensors that may be given as functions (types.ts ExpertTensorName). */
const PER_EXPERT: ReadonlyArray<keyof MoEWeights> = ["w1", "b1", "w2", "b2", "wGateProj", "wUp", "wDown"];

/**
 * Checks presence, type and length of every weight given; returns them by name. W_g and W_noise
 * may be missing (they start at zero), expert weights only when spec.initSeed is set
 * (src/train/init.ts fills in what is missing). An expert tensor given as a function becomes an
 * ExpertSliceSource.
 */
export function validateWeights(spec: LayerSpec, weights: MoEWeightsInput | undefined): Map<keyof MoEWeights, Float32Array> {
  if (weights === undefined && spec.initSeed !== undefined) weights = {};
  if (typeof weights !== "object" || weights === null) {
    fail(
      "MISSING_WEIGHT",
      "weights is required: { wGate, wNoise, w1, b1, w2, b2 } (swiglu: { wGate, wNoise, wGateProj, wUp, wDown }), or init: { seed } to draw the expert weights",
    );
  }
  checkKeys(weights, WEIGHT_KEYS, "weights", "weights.");
  const out = new Map<keyof MoEWeights, Float32Array>();
  for (const [name, shape] of weightShapes(spec)) {
    const value: unknown = weights[name];
    const expected = shape.reduce((a, b) => a * b, 1);
    if (value === undefined || value === null) {
      if (name === "wGate" || name === "wNoise" || name === "sharedGate" || spec.initSeed !== undefined) continue;
      fail(
        "MISSING_WEIGHT",
        `weights.${name} [${shape.join(", ")}] is required for a ${spec.expert} layer, or pass init: { seed } to draw the expert weights at random`,
      );
    }
    if (typeof value === "function" && PER_EXPERT.includes(name)) {
      if (spec.shared) fail("INVALID_CONFIG", `weights.${name} is a function, but a layer with a shared expert needs its expert tensors whole (Float32Array)`);
      out.set(name, new ExpertSliceSource(name, value as ExpertSlices, expected / spec.numExperts));
      continue;
    }
    if (!(value instanceof Float32Array)) {
      const perExpert = PER_EXPERT.includes(name) ? " or a function (expert) => Float32Array of one expert's slice" : "";
      fail("WEIGHT_SHAPE", `weights.${name} must be a Float32Array${perExpert}, got ${Object.prototype.toString.call(value)}`);
    }
    if (value.length !== expected) {
      fail("WEIGHT_SHAPE", `weights.${name} must hold ${expected} floats ([${shape.join(", ")}]), got ${value.length}`);
    }
    out.set(name, value);
  }
  return out;
}

/** Whether any of the validated weights is given per expert (the GPU then gets them from the engine). */
export function hasExpertSlices(weights: Map<keyof MoEWeights, Float32Array>): boolean {
  for (const value of weights.values()) if (value instanceof ExpertSliceSource) return true;
  return false;
}
