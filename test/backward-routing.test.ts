// The backward pass through the checkpoints' routers (routing.score "softmax" and "sigmoid", with
// renormalisation, scale, choice bias and groups) and through shared experts (gated and not, also
// beside the paper's router): finite differences in random directions for every tensor, a check
// that a wrong gradient fails them, the importance loss's gradient alone (dy = 0), no gradient
// through the choice bias, and the same bits on the worker pool.
import { describe, expect, it } from "vitest";
import { createMoE, type Gradients, type MoEConfig, type MoEWeights, type RoutingOptions } from "edge-moe";
import { Rng, sameBits } from "./helpers.ts";

interface Case {
  label: string;
  d: number;
  h: number;
  n: number;
  k: number;
  expert: "relu" | "gelu" | "swiglu";
  routing?: RoutingOptions;
  noisy?: boolean;
  shared?: { dHidden: number; gated: boolean };
  dyScale: number;
}

const bias = (n: number) => Float32Array.from({ length: n }, (_, i) => 0.15 * Math.sin(3 * i + 1));

const CASES: Case[] = [
  { label: "softmax over all n, gelu experts", d: 7, h: 10, n: 6, k: 2, expert: "gelu", routing: { score: "softmax" }, dyScale: 1 },
  { label: "softmax, scale 1.7", d: 8, h: 9, n: 5, k: 2, expert: "swiglu", routing: { score: "softmax", scale: 1.7 }, dyScale: 1 },
  {
    label: "softmax, renormalised, scale 1.3, gated shared expert (Qwen2-MoE)",
    d: 8,
    h: 6,
    n: 6,
    k: 2,
    expert: "swiglu",
    routing: { score: "softmax", renormalize: true, scale: 1.3 },
    shared: { dHidden: 14, gated: true },
    dyScale: 1,
  },
  { label: "sigmoid, scale 2", d: 7, h: 8, n: 6, k: 3, expert: "swiglu", routing: { score: "sigmoid", scale: 2 }, dyScale: 1 },
  {
    label: "sigmoid + choice bias, 3 groups keep 2, renormalised (+ε), scale 2.5, ungated shared expert (DeepSeek-V3)",
    d: 9,
    h: 6,
    n: 6,
    k: 2,
    expert: "swiglu",
    routing: { score: "sigmoid", choiceBias: bias(6), groups: { nGroup: 3, topkGroup: 2 }, renormalize: true, renormEpsilon: 1e-3, scale: 2.5 },
    shared: { dHidden: 10, gated: false },
    dyScale: 1,
  },
  {
    label: "sigmoid + choice bias, renormalised, gated shared expert",
    d: 6,
    h: 8,
    n: 5,
    k: 2,
    expert: "swiglu",
    routing: { score: "sigmoid", choiceBias: bias(5), renormalize: true },
    shared: { dHidden: 8, gated: true },
    dyScale: 1,
  },
  {
    label: "the paper's router, clean, gated shared expert",
    d: 7,
    h: 6,
    n: 5,
    k: 2,
    expert: "swiglu",
    noisy: false,
    shared: { dHidden: 9, gated: true },
    dyScale: 1,
  },
  {
    label: "the paper's router, noisy (smooth load), gated shared expert",
    d: 7,
    h: 6,
    n: 6,
    k: 2,
    expert: "swiglu",
    noisy: true,
    shared: { dHidden: 7, gated: true },
    dyScale: 1,
  },
  { label: "softmax, dy = 0 (the importance loss alone)", d: 6, h: 5, n: 5, k: 2, expert: "relu", routing: { score: "softmax" }, dyScale: 0 },
  {
    label: "sigmoid + bias, renormalised, scaled, dy = 0 (the importance loss alone)",
    d: 6,
    h: 5,
    n: 6,
    k: 2,
    expert: "swiglu",
    routing: { score: "sigmoid", choiceBias: bias(6), renormalize: true, scale: 1.5 },
    dyScale: 0,
  },
];

const W_IMPORTANCE = 0.7;
const W_LOAD = 0.9;

function randomWeights(rng: Rng, c: Case): MoEWeights {
  const { d, h, n } = c;
  const w: MoEWeights = { wGate: rng.normals(d * n, Math.sqrt(1 / d)) };
  if (c.noisy) w.wNoise = rng.normals(d * n, Math.sqrt(0.25 / d));
  if (c.expert === "swiglu") {
    w.wGateProj = rng.normals(n * d * h, Math.sqrt(1 / d));
    w.wUp = rng.normals(n * d * h, Math.sqrt(1 / d));
    w.wDown = rng.normals(n * h * d, Math.sqrt(1 / h));
  } else {
    w.w1 = rng.normals(n * d * h, Math.sqrt(1 / d));
    w.b1 = rng.normals(n * h, 0.1);
    w.w2 = rng.normals(n * h * d, Math.sqrt(1 / h));
    w.b2 = rng.normals(n * d, 0.1);
  }
  if (c.shared) {
    const hs = c.shared.dHidden;
    w.sharedGateProj = rng.normals(d * hs, Math.sqrt(1 / d));
    w.sharedUp = rng.normals(d * hs, Math.sqrt(1 / d));
    w.sharedDown = rng.normals(hs * d, Math.sqrt(1 / hs));
    if (c.shared.gated) w.sharedGate = rng.normals(d, Math.sqrt(1 / d));
  }
  return w;
}

function configOf(c: Case, weights: MoEWeights): MoEConfig {
  return {
    dModel: c.d,
    dHidden: c.h,
    numExperts: c.n,
    k: c.k,
    expert: c.expert,
    noisyGating: c.noisy ?? false,
    ...(c.routing && { routing: c.routing }),
    ...(c.shared && { shared: c.shared }),
    wImportance: W_IMPORTANCE,
    wLoad: W_LOAD,
    weights,
    backend: "cpu",
  };
}

/**
 * The selection score of each expert for a row, in float64 from the definitions: the logits (the
 * paper's, with noise: H), or the sigmoid + bias after the group mask, and the groups' scores.
 * Rows are redrawn until every gap a step could close is ≥ 0.05: the choices stay fixed.
 */
function wellConditioned(c: Case, weights: MoEWeights, xr: Float32Array, nr: Float32Array): boolean {
  const { d, n, k } = c;
  const logit = (w: Float32Array, e: number) => {
    let z = 0;
    for (let j = 0; j < d; j++) z += xr[j] * w[j * n + e];
    return z;
  };
  let choice = Array.from({ length: n }, (_, e) => logit(weights.wGate!, e));
  const gapsOk = (values: number[], count: number) => {
    const sorted = values
      .slice()
      .sort((a, b) => b - a)
      .slice(0, Math.min(count + 1, values.length));
    return sorted.every((v, i) => i === 0 || sorted[i - 1] - v >= 0.05);
  };
  if (c.noisy) choice = choice.map((z, e) => z + nr[e] * (Math.log1p(Math.exp(logit(weights.wNoise!, e))) + 1e-2));
  if (c.routing?.score === "sigmoid") {
    choice = choice.map((z, e) => 1 / (1 + Math.exp(-z)) + (c.routing!.choiceBias?.[e] ?? 0));
    const groups = c.routing.groups;
    if (groups) {
      const size = n / groups.nGroup;
      const score = Array.from({ length: groups.nGroup }, (_, g) =>
        choice
          .slice(g * size, (g + 1) * size)
          .sort((a, b) => b - a)
          .slice(0, 2)
          .reduce((a, b) => a + b, 0),
      );
      if (!gapsOk(score, groups.topkGroup)) return false;
      const kept = score
        .map((s, g) => [s, g])
        .sort((a, b) => b[0] - a[0])
        .slice(0, groups.topkGroup)
        .map(([, g]) => g);
      choice = choice.map((v, e) => (kept.includes(Math.floor(e / size)) ? v : 0));
    }
  }
  return gapsOk(choice, c.noisy ? k + 1 : k);
}

function inputs(rng: Rng, c: Case, weights: MoEWeights, rows: number): { x: Float32Array; noise?: Float32Array } {
  const x = new Float32Array(rows * c.d);
  const noise = c.noisy ? new Float32Array(rows * c.n) : undefined;
  for (let r = 0; r < rows; r++) {
    for (;;) {
      const xr = rng.normals(c.d);
      const nr = rng.normals(c.n);
      if (!wellConditioned(c, weights, xr, nr)) continue;
      // relu: no pre-activation of a chosen expert near its kink (checked loosely: all experts)
      if (c.expert === "relu") {
        let ok = true;
        for (let e = 0; e < c.n && ok; e++) {
          for (let u = 0; u < c.h && ok; u++) {
            let a = weights.b1![e * c.h + u];
            for (let j = 0; j < c.d; j++) a += xr[j] * weights.w1![(e * c.d + j) * c.h + u];
            ok = Math.abs(a) >= 0.02;
          }
        }
        if (!ok) continue;
      }
      x.set(xr, r * c.d);
      noise?.set(nr, r * c.n);
      break;
    }
  }
  return { x, noise };
}

async function objective(c: Case, weights: MoEWeights, x: Float32Array, noise: Float32Array | undefined, dy: Float32Array): Promise<number> {
  const layer = await createMoE(configOf(c, weights));
  const r = await layer.forward(x, { train: true, noise });
  layer.dispose();
  let j = 0;
  for (let i = 0; i < dy.length; i++) j += r.y[i] * dy[i];
  return j + r.lossImportance! + r.lossLoad!;
}

function randomDirection(rng: Rng, length: number): Float64Array {
  const u = Float64Array.from(rng.normals(length));
  const norm = Math.hypot(...u);
  return u.map((v) => v / norm);
}

/** As test/backward.test.ts: float32 forwards leave ≤ 4e-5·2ε|g| of noise in ΔJ; a 10% error misses. */
const TOL = 5e-4;

function agrees(dj: number, g: ArrayLike<number>, u: Float64Array, eps: number, gnorm: number): boolean {
  let predicted = 0;
  for (let i = 0; i < g.length; i++) predicted += 2 * eps * g[i] * u[i];
  return Math.abs(dj - predicted) <= TOL * 2 * eps * gnorm + 1e-7;
}

describe("finite differences in random directions through the routers and shared experts", () => {
  it.each(CASES.map((c, i) => [c.label, i] as const))("%s", async (_label, index) => {
    const c = CASES[index];
    const rng = new Rng(7100 + index);
    const B = 8;
    const weights = randomWeights(rng, c);
    const { x, noise } = inputs(rng, c, weights, B);
    const dy = rng.normals(B * c.d, c.dyScale);

    const layer = await createMoE(configOf(c, weights));
    await layer.forward(x, { train: true, noise });
    const grads = await layer.backward(dy);
    layer.dispose();
    expect(Object.keys(grads).sort()).toEqual(["x", ...Object.keys(weights)].sort());

    const eps = 1e-2;
    let caught = 0;
    let tried = 0;
    for (const key of ["x", ...Object.keys(weights)] as Array<keyof Gradients>) {
      const g = grads[key]!;
      const gnorm = Math.hypot(...g);
      if (gnorm === 0) {
        // dy = 0: the experts get nothing; the gating and x must still get the importance loss's gradient
        expect(c.dyScale === 0 && key !== "x" && key !== "wGate", `${key} is all zero`).toBe(true);
        continue;
      }
      const theta = key === "x" ? x : weights[key as keyof MoEWeights]!;
      const corrupted = [g.map((v, i) => v * (1 + 0.1 * Math.sign(Math.sin(i + 1)))), g.slice().reverse()];
      const missed = corrupted.map(() => 0);
      for (let direction = 0; direction < 3; direction++) {
        const u = randomDirection(rng, g.length);
        const at = (t: Float32Array) => (key === "x" ? { w: weights, x: t } : { w: { ...weights, [key]: t }, x });
        const a = at(theta.map((v, i) => v + eps * u[i]));
        const b = at(theta.map((v, i) => v - eps * u[i]));
        const dj = (await objective(c, a.w, a.x, noise, dy)) - (await objective(c, b.w, b.x, noise, dy));
        expect(agrees(dj, g, u, eps, gnorm), `${key}, direction ${direction}: ΔJ ${dj}, |g| ${gnorm}`).toBe(true);
        corrupted.forEach((wrong, i) => {
          if (agrees(dj, wrong, u, eps, gnorm)) missed[i]++;
        });
      }
      tried += corrupted.length;
      caught += missed.filter((m) => m < 3).length;
    }
    // the check has teeth: a gradient 10% off, or read in the wrong order, fails somewhere
    expect(tried).toBeGreaterThanOrEqual(4);
    expect(caught).toBe(tried);
  });
});

describe("what the routers' gradients are made of", () => {
  it("the choice bias only chooses: the same layer without it, on the same choices, has the same gradients", async () => {
    // one row whose choices the bias does not change: the gradients must not depend on it
    const c = CASES[5];
    const rng = new Rng(99);
    const weights = randomWeights(rng, c);
    const run = async (routing: RoutingOptions, x: Float32Array) => {
      const layer = await createMoE(configOf({ ...c, routing }, weights));
      const r = await layer.forward(x, { train: true });
      const g = await layer.backward(Float32Array.from({ length: x.length }, (_, i) => Math.cos(i)));
      layer.dispose();
      return { idx: Array.from(r.topkIndices), g };
    };
    const tiny = Float32Array.from(c.routing!.choiceBias!, (v) => v * 1e-6);
    let found = 0;
    for (let tries = 0; tries < 50 && found < 3; tries++) {
      const x = rng.normals(c.d);
      const a = await run(c.routing!, x);
      const b = await run({ ...c.routing!, choiceBias: tiny }, x);
      if (a.idx.join() !== b.idx.join()) continue;
      found++;
      for (const key of Object.keys(a.g) as Array<keyof Gradients>) expect(sameBits(a.g[key]!, b.g[key]!), key).toBe(true);
    }
    expect(found).toBe(3);
  });

  it("an ungated shared expert adds nothing to the gating gradient; a gated one fills its gate's column", async () => {
    const rng = new Rng(5);
    const base = CASES[1];
    const x = rng.normals(6 * base.d);
    const dy = rng.normals(6 * base.d);
    const weights = randomWeights(rng, base);
    const grads = async (c: Case, w: MoEWeights) => {
      const layer = await createMoE(configOf(c, w));
      await layer.forward(x, { train: true });
      const g = await layer.backward(dy);
      layer.dispose();
      return g;
    };
    const plain = await grads(base, weights);
    const ungatedCase = { ...base, shared: { dHidden: 11, gated: false } };
    const sharedWeights = randomWeights(new Rng(6), ungatedCase);
    const ungated = await grads(ungatedCase, {
      ...weights,
      sharedGateProj: sharedWeights.sharedGateProj,
      sharedUp: sharedWeights.sharedUp,
      sharedDown: sharedWeights.sharedDown,
    });
    expect(sameBits(ungated.wGate!, plain.wGate!)).toBe(true);
    expect(ungated.sharedGate).toBeUndefined();
    expect(ungated.sharedDown!.some((v) => v !== 0)).toBe(true);
    const gatedCase = { ...base, shared: { dHidden: 11, gated: true } };
    const gated = await grads(gatedCase, {
      ...weights,
      sharedGateProj: sharedWeights.sharedGateProj,
      sharedUp: sharedWeights.sharedUp,
      sharedDown: sharedWeights.sharedDown,
      sharedGate: rng.normals(base.d, 0.3),
    });
    expect(gated.sharedGate!.length).toBe(base.d);
    expect(gated.sharedGate!.some((v) => v !== 0)).toBe(true);
  });
});

describe("the worker pool gives the bits of one thread", () => {
  it.each(CASES.slice(0, 8).map((c, i) => [c.label, i] as const))("%s", async (_label, index) => {
    const c = CASES[index];
    const rng = new Rng(300 + index);
    const config = configOf(c, randomWeights(rng, c));
    const layers = await Promise.all([1, 2, 3].map((threads) => createMoE({ ...config, wasmBuild: "simd-threads", threads })));
    for (const batch of [1, 7, 40]) {
      const x = rng.normals(batch * c.d);
      const dy = rng.normals(batch * c.d);
      const results = [];
      for (const layer of layers) {
        await layer.forward(x, { train: true, seed: batch });
        results.push(await layer.backward(dy));
      }
      for (const got of results.slice(1)) {
        for (const key of Object.keys(results[0]) as Array<keyof Gradients>) expect(sameBits(got[key]!, results[0][key]!), `B=${batch}: ${key}`).toBe(true);
      }
      for (const layer of layers) await layer.step({ lr: 1e-2, optimizer: "adam" });
    }
    const [a, b] = [await layers[0].getWeights(), await layers[2].getWeights()];
    for (const key of Object.keys(a) as Array<keyof MoEWeights>) expect(sameBits(a[key]!, b[key]!), `weights ${key}`).toBe(true);
    for (const layer of layers) layer.dispose();
  });
});
