// Initial weights for what createMoE's caller leaves out.
//   W_g, W_noise: zeros, as the paper initialises the gating network (Shazeer et al. 2017,
//     appendix A: "we initialize W_g and W_noise to all zeros, which yields no signal and some
//     noise"), so every expert starts equally likely.
//   Expert weights, with init: { seed }: the up-projections (w1, wGateProj, wUp) ~ N(0, 1/d), the
//     down-projections (w2, wDown) ~ N(0, 1/h), the biases zero. The normals come from the
//     kernels' Philox4x32-10 generator (key = seed, one stream per tensor), so a seed gives the
//     same weights in every runtime.
import type { CpuEngine } from "../cpu/engine.ts";
import { weightShapes } from "../config.ts";
import type { MoEWeights } from "../types.ts";

/** Streams of the init normals: far above the forward pass's noise streams (0, 1, 2, …). */
const INIT_STREAM = 0x80000000;

const UP_PROJECTIONS: ReadonlyArray<keyof MoEWeights> = ["w1", "wGateProj", "wUp", "sharedGateProj", "sharedUp"];
const DOWN_PROJECTIONS: ReadonlyArray<keyof MoEWeights> = ["w2", "wDown", "sharedDown"];

/**
 * Every weight the layer needs: the given ones (already validated) and, for each missing one,
 * zeros (gating, biases) or seeded normals (expert matrices; validateWeights lets them be missing
 * only when initSeed is set).
 */
export function completeWeights(
  engine: CpuEngine,
  given: Map<keyof MoEWeights, Float32Array>,
  initSeed: number | undefined,
): Map<keyof MoEWeights, Float32Array> {
  const { dModel: d, dHidden: h } = engine.spec;
  const all = new Map(given);
  weightShapes(engine.spec).forEach(([name, shape], tensorIndex) => {
    if (all.has(name)) return;
    const length = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(length);
    const fanIn = name === "sharedDown" ? shape[0] : h;
    const std = UP_PROJECTIONS.includes(name) ? Math.sqrt(1 / d) : DOWN_PROJECTIONS.includes(name) ? Math.sqrt(1 / fanIn) : 0;
    if (std > 0 && initSeed !== undefined) fillNormals(engine, values, std, initSeed, INIT_STREAM + tensorIndex);
    all.set(name, values);
  });
  return all;
}

/** values[i] = std · (normal i of the stream), one expert-sized chunk at a time through staging. */
function fillNormals(engine: CpuEngine, values: Float32Array, std: number, seed: number, stream: number): void {
  const chunk = Math.min(values.length, 1 << 20);
  const staging = engine.staging(4 * chunk);
  const seedLo = seed >>> 0;
  const seedHi = Math.floor(seed / 2 ** 32) >>> 0;
  for (let first = 0; first < values.length; first += chunk) {
    const count = Math.min(chunk, values.length - first);
    engine.kernels.normalNoise(staging, count, first, stream, seedLo, seedHi);
    const normals = engine.f32(staging, count);
    for (let i = 0; i < count; i++) values[first + i] = std * normals[i];
  }
}
