// Routers other than the paper's, and shared experts: their options checked at the door, and the
// shared expert turned into extra experts that every row routes to (assembly/shared.ts), so that
// the plan and both expert back ends run it unchanged.
import { fail } from "./errors.ts";
import { checkKeys, GROUP_KEYS, ROUTING_KEYS, SHARED_KEYS } from "./options.ts";
import type { ExpertKind, MoEConfig, MoEWeights, RoutingOptions } from "./types.ts";

/** A validated router. */
export interface RoutingSpec {
  score: "topk-softmax" | "softmax" | "sigmoid";
  renormalize: boolean;
  renormEpsilon: number;
  scale: number;
  choiceBias: Float32Array | undefined;
  nGroup: number;
  topkGroup: number;
}

/** A validated shared expert: hidden width, gate, and the m expert slices of width dHidden it runs as. */
export interface SharedSpec {
  dHidden: number;
  gated: boolean;
  slices: number;
}

export const PAPER_ROUTING: RoutingSpec = Object.freeze({
  score: "topk-softmax",
  renormalize: false,
  renormEpsilon: 0,
  scale: 1,
  choiceBias: undefined,
  nGroup: 1,
  topkGroup: 1,
});

const SCORES = ["topk-softmax", "softmax", "sigmoid"] as const;

export function validateRouting(options: RoutingOptions | undefined, numExperts: number, k: number): RoutingSpec {
  if (options === undefined) return PAPER_ROUTING;
  if (typeof options !== "object" || options === null)
    fail("INVALID_CONFIG", "routing must be an object { score, renormalize, renormEpsilon, scale, choiceBias, groups }");
  checkKeys(options, ROUTING_KEYS, "routing", "routing.");
  const score = options.score ?? "topk-softmax";
  if (!SCORES.includes(score)) fail("INVALID_CONFIG", `routing.score must be "topk-softmax", "softmax" or "sigmoid", got ${JSON.stringify(score)}`);
  const renormalize = options.renormalize ?? false;
  if (typeof renormalize !== "boolean") fail("INVALID_CONFIG", "routing.renormalize must be a boolean");
  const number = (name: string, value: unknown, fallback: number, ok: (v: number) => boolean, range: string): number => {
    if (value === undefined) return fallback;
    if (typeof value !== "number" || !Number.isFinite(value) || !ok(value))
      fail("INVALID_CONFIG", `routing.${name} must be a finite number ${range}, got ${String(value)}`);
    return value;
  };
  const renormEpsilon = number("renormEpsilon", options.renormEpsilon, 0, (v) => v >= 0, "≥ 0");
  if (renormEpsilon !== 0 && score !== "sigmoid") fail("INVALID_CONFIG", 'routing.renormEpsilon applies to routing.score "sigmoid"');
  const scale = number("scale", options.scale, 1, (v) => v > 0, "> 0");
  let choiceBias: Float32Array | undefined;
  let nGroup = 1;
  let topkGroup = 1;
  if (score !== "sigmoid" && (options.choiceBias !== undefined || options.groups !== undefined)) {
    fail("INVALID_CONFIG", 'routing.choiceBias and routing.groups need routing.score "sigmoid"');
  }
  if (score === "topk-softmax" && (renormalize || scale !== 1 || renormEpsilon !== 0)) {
    fail(
      "INVALID_CONFIG",
      'routing.score "topk-softmax" gives weights that already sum to 1: renormalize, renormEpsilon and scale apply to "softmax" and "sigmoid"',
    );
  }
  if (options.choiceBias !== undefined) {
    const bias = options.choiceBias;
    if (!(bias instanceof Float32Array) || bias.length !== numExperts)
      fail("INVALID_CONFIG", `routing.choiceBias must be a Float32Array of numExperts (${numExperts}) values`);
    for (let i = 0; i < bias.length; i++) if (!Number.isFinite(bias[i])) fail("INVALID_CONFIG", `routing.choiceBias[${i}] is ${bias[i]}; it must be finite`);
    choiceBias = bias.slice();
  }
  if (options.groups !== undefined) {
    const g = options.groups;
    if (typeof g !== "object" || g === null) fail("INVALID_CONFIG", "routing.groups must be an object { nGroup, topkGroup }");
    checkKeys(g, GROUP_KEYS, "routing.groups", "routing.groups.");
    nGroup = g.nGroup;
    topkGroup = g.topkGroup;
    if (!Number.isInteger(nGroup) || nGroup < 1 || numExperts % nGroup !== 0 || numExperts / nGroup < 2) {
      fail("INVALID_CONFIG", `routing.groups.nGroup must divide numExperts (${numExperts}) into groups of at least 2 experts, got ${String(nGroup)}`);
    }
    if (!Number.isInteger(topkGroup) || topkGroup < 1 || topkGroup > nGroup)
      fail("INVALID_CONFIG", `routing.groups.topkGroup must be an integer in [1, nGroup = ${nGroup}], got ${String(topkGroup)}`);
    if (k > topkGroup * (numExperts / nGroup))
      fail("INVALID_CONFIG", `k (${k}) is more than the experts of topkGroup (${topkGroup}) groups of ${numExperts / nGroup}`);
  }
  return Object.freeze({ score, renormalize, renormEpsilon, scale, choiceBias, nGroup, topkGroup });
}

export function validateShared(shared: MoEConfig["shared"], expert: ExpertKind, dHidden: number): SharedSpec | undefined {
  if (shared === undefined) return undefined;
  if (typeof shared !== "object" || shared === null) fail("INVALID_CONFIG", "shared must be an object { dHidden, gated }");
  checkKeys(shared, SHARED_KEYS, "shared", "shared.");
  if (expert !== "swiglu") fail("INVALID_CONFIG", `shared experts are SwiGLU MLPs: they need expert "swiglu", got ${JSON.stringify(expert)}`);
  const hs = shared.dHidden;
  if (typeof hs !== "number" || !Number.isInteger(hs) || hs < 1) fail("INVALID_CONFIG", `shared.dHidden must be a positive integer, got ${String(hs)}`);
  const gated = shared.gated ?? false;
  if (typeof gated !== "boolean") fail("INVALID_CONFIG", "shared.gated must be a boolean");
  return { dHidden: hs, gated, slices: Math.ceil(hs / dHidden) };
}

/**
 * The expert tensors of the routed experts followed by the shared expert's m slices (hidden units
 * [j·h, (j+1)·h) of it each, the last zero-padded: a zero unit adds silu(0)·0 = 0).
 */
export function withSharedSlices(
  weights: Map<keyof MoEWeights, Float32Array>,
  shared: SharedSpec,
  d: number,
  h: number,
  n: number,
): Map<keyof MoEWeights, Float32Array> {
  const m = shared.slices;
  const hs = shared.dHidden;
  const out = new Map(weights);
  for (const [name, from] of [
    ["wGateProj", "sharedGateProj"],
    ["wUp", "sharedUp"],
  ] as const) {
    const all = new Float32Array((n + m) * d * h);
    all.set(weights.get(name)!);
    const src = weights.get(from)!; // [d, hs]
    for (let j = 0; j < m; j++) {
      const cols = Math.min(h, hs - j * h);
      for (let r = 0; r < d; r++) all.set(src.subarray(r * hs + j * h, r * hs + j * h + cols), (n + j) * d * h + r * h);
    }
    out.set(name, all);
  }
  const down = new Float32Array((n + m) * h * d);
  down.set(weights.get("wDown")!);
  const srcDown = weights.get("sharedDown")!; // [hs, d]
  for (let j = 0; j < m; j++) {
    const rows = Math.min(h, hs - j * h);
    down.set(srcDown.subarray(j * h * d, (j * h + rows) * d), (n + j) * h * d);
  }
  out.set("wDown", down);
  return out;
}

/** Inverse of withSharedSlices on unpacked weights: routed experts back to n, the shared expert reassembled. */
export function foldSharedSlices(weights: MoEWeights, shared: SharedSpec, d: number, h: number, n: number): MoEWeights {
  const m = shared.slices;
  const hs = shared.dHidden;
  const out: MoEWeights = { ...weights };
  for (const [name, to] of [
    ["wGateProj", "sharedGateProj"],
    ["wUp", "sharedUp"],
  ] as const) {
    const all = weights[name]!;
    const dst = new Float32Array(d * hs);
    for (let j = 0; j < m; j++) {
      const cols = Math.min(h, hs - j * h);
      for (let r = 0; r < d; r++) dst.set(all.subarray((n + j) * d * h + r * h, (n + j) * d * h + r * h + cols), r * hs + j * h);
    }
    out[name] = all.slice(0, n * d * h);
    out[to] = dst;
  }
  const down = weights.wDown!;
  const dst = new Float32Array(hs * d);
  for (let j = 0; j < m; j++) {
    const rows = Math.min(h, hs - j * h);
    dst.set(down.subarray((n + j) * h * d, (n + j) * h * d + rows * d), j * h * d);
  }
  out.wDown = down.slice(0, n * h * d);
  out.sharedDown = dst;
  return out;
}
