// Unknown keys are typed errors: a misspelt option (`{ trian: true }`) would otherwise be ignored
// and the call would silently run with the default. Each list of keys is a Record over the option
// type, so the compiler fails here when an option is added to src/types.ts and not to its list.
import { fail } from "./errors.ts";
import type { BackwardOptions, CalibrateOptions, ForwardOptions, MoEConfig, MoEWeights, ResidentForwardOptions, RoutingOptions, StepOptions } from "./types.ts";

type Keys<T> = Record<keyof Required<T>, true>;

const keysOf = <T>(keys: Keys<T>): readonly string[] => Object.freeze(Object.keys(keys));

export const CONFIG_KEYS = keysOf<MoEConfig>({
  dModel: true,
  dHidden: true,
  numExperts: true,
  k: true,
  expert: true,
  noisyGating: true,
  noiseEpsilon: true,
  wImportance: true,
  wLoad: true,
  weights: true,
  init: true,
  backend: true,
  gpu: true,
  crossover: true,
  onWarning: true,
  seed: true,
  checkFinite: true,
  wasm: true,
  wasmBuild: true,
  activations: true,
  threads: true,
  routing: true,
  shared: true,
  dtype: true,
});
export const WEIGHT_KEYS = keysOf<MoEWeights>({
  wGate: true,
  wNoise: true,
  w1: true,
  b1: true,
  w2: true,
  b2: true,
  wGateProj: true,
  wUp: true,
  wDown: true,
  sharedGateProj: true,
  sharedUp: true,
  sharedDown: true,
  sharedGate: true,
});
export const ROUTING_KEYS = keysOf<RoutingOptions>({ score: true, renormalize: true, renormEpsilon: true, scale: true, choiceBias: true, groups: true });
export const GROUP_KEYS = keysOf<NonNullable<RoutingOptions["groups"]>>({ nGroup: true, topkGroup: true });
export const SHARED_KEYS = keysOf<NonNullable<MoEConfig["shared"]>>({ dHidden: true, gated: true });
export const INIT_KEYS = keysOf<NonNullable<MoEConfig["init"]>>({ seed: true });
export const FORWARD_KEYS = keysOf<ForwardOptions>({ train: true, noise: true, seed: true, out: true, backend: true });
export const RESIDENT_KEYS = keysOf<ResidentForwardOptions>({ train: true, noise: true, seed: true, batch: true, out: true, backend: true });
export const OUT_KEYS = keysOf<NonNullable<ForwardOptions["out"]>>({ y: true, topkIndices: true, topkGates: true });
export const BACKWARD_KEYS = keysOf<BackwardOptions>({ weights: true });
export const STEP_KEYS = keysOf<StepOptions>({ lr: true, optimizer: true, beta1: true, beta2: true, eps: true });
export const CALIBRATE_KEYS = keysOf<CalibrateOptions>({ batchSizes: true, repeats: true });

/**
 * Optimal string alignment distance (Levenshtein with adjacent transpositions), so that "trian"
 * is one edit from "train".
 */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const dist: number[] = new Array(rows * cols);
  for (let i = 0; i < rows; i++) dist[i * cols] = i;
  for (let j = 0; j < cols; j++) dist[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(dist[(i - 1) * cols + j] + 1, dist[i * cols + j - 1] + 1, dist[(i - 1) * cols + j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, dist[(i - 2) * cols + j - 2] + 1);
      dist[i * cols + j] = best;
    }
  }
  return dist[rows * cols - 1];
}

/**
 * The allowed key closest to `key`, or undefined when none is close enough to be a likely typo
 * (more edits than a third of the longer name, and always more than 3). Case is ignored for the
 * distance; an exact case-insensitive match wins.
 */
export function nearestKey(key: string, allowed: readonly string[]): string | undefined {
  const lower = key.toLowerCase();
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of allowed) {
    const distance = editDistance(lower, candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  if (best === undefined) return undefined;
  const limit = Math.min(3, Math.max(1, Math.floor(Math.max(key.length, best.length) / 3)));
  return bestDistance <= limit ? best : undefined;
}

/**
 * Fails with INVALID_CONFIG on the first own key of `value` that is not in `allowed`. `where`
 * names what the keys are options of ("forward", "createMoE"); `prefix` is the path of `value`
 * in the call ("options.", "weights.").
 */
export function checkKeys(value: object, allowed: readonly string[], where: string, prefix = ""): void {
  for (const key of Object.keys(value)) {
    if (allowed.includes(key)) continue;
    const near = nearestKey(key, allowed);
    const hint = near !== undefined ? `did you mean "${near}"?` : `the options are ${allowed.map((k) => `"${k}"`).join(", ")}`;
    fail("INVALID_CONFIG", `${prefix}${key} is not an option of ${where}; ${hint}`);
  }
}

/** An options argument: an object, or left out (undefined). */
function optionsObject(options: unknown, call: string, keys: readonly string[]): options is object {
  if (options === undefined) return false;
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    fail(
      "INVALID_CONFIG",
      `${call} options must be an object { ${keys.join(", ")} } or left out, got ${Array.isArray(options) ? "an array" : String(options)}`,
    );
  }
  return true;
}

/** forward / forwardSync: the options object, its keys, and the keys of options.out. */
export function checkForwardOptions(options: unknown): void {
  if (!optionsObject(options, "forward", FORWARD_KEYS)) return;
  checkKeys(options, FORWARD_KEYS, "forward", "options.");
  const out = (options as ForwardOptions).out;
  if (out === undefined || out === null) return;
  if (typeof out !== "object") {
    fail("OUTPUT_SHAPE", `options.out must be an object { ${OUT_KEYS.join("?, ")}? } of output buffers, got ${String(out)}`);
  }
  checkKeys(out, OUT_KEYS, "forward's options.out", "options.out.");
}

/** forward with a GPUBuffer x: the options object, its keys, and the keys of options.out. */
export function checkResidentOptions(options: unknown): void {
  if (!optionsObject(options, "forward", RESIDENT_KEYS)) return;
  checkKeys(options, RESIDENT_KEYS, "forward (GPUBuffer x)", "options.");
  const out = (options as ResidentForwardOptions).out;
  if (out === undefined || out === null) return;
  if (typeof out !== "object") fail("OUTPUT_SHAPE", `options.out must be an object { ${OUT_KEYS.join("?, ")}? } of GPUBuffers, got ${String(out)}`);
  checkKeys(out, OUT_KEYS, "forward's options.out", "options.out.");
}

export function checkBackwardOptions(options: unknown): void {
  if (optionsObject(options, "backward", BACKWARD_KEYS)) checkKeys(options, BACKWARD_KEYS, "backward", "options.");
}

export function checkStepOptions(options: unknown): void {
  if (options === undefined) fail("INVALID_CONFIG", `step needs an options object { ${STEP_KEYS.join(", ")} } (lr is required)`);
  if (optionsObject(options, "step", STEP_KEYS)) checkKeys(options, STEP_KEYS, "step", "options.");
}

export function checkCalibrateOptions(options: unknown): void {
  if (optionsObject(options, "calibrate", CALIBRATE_KEYS)) checkKeys(options, CALIBRATE_KEYS, "calibrate", "options.");
}
