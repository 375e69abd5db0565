// createMoE's routing and shared options (the routers of other model families): a float64
// reference of each rule, getWeights round trips, errors, and the same layer on the GPU back end.
import { describe, expect, it } from "vitest";
import { createMoE, MoEError, type MoEConfig, type RoutingOptions } from "edge-moe";
import { gpuSuite, probeGpu } from "./gpu_support.ts";
import { Rng } from "./helpers.ts";

const probe = await probeGpu();
const [d, h, n, k, hs] = [12, 8, 8, 2, 20];

function layerConfig(rng: Rng, routing: RoutingOptions, shared?: { gated: boolean }): MoEConfig {
  const w = (len: number, scale: number) => rng.normals(len).map((v) => v * scale);
  return {
    dModel: d,
    dHidden: h,
    numExperts: n,
    k,
    expert: "swiglu",
    routing,
    ...(shared && { shared: { dHidden: hs, gated: shared.gated } }),
    weights: {
      wGate: w(d * n, 0.5),
      wGateProj: w(n * d * h, 0.3),
      wUp: w(n * d * h, 0.3),
      wDown: w(n * h * d, 0.3),
      ...(shared && { sharedGateProj: w(d * hs, 0.3), sharedUp: w(d * hs, 0.3), sharedDown: w(hs * d, 0.3) }),
      ...(shared?.gated && { sharedGate: w(d, 0.5) }),
    },
  };
}

/** The layer in float64, written from the rule's definition (not from the kernels). */
function reference(config: MoEConfig, x: Float32Array) {
  const r = config.routing!;
  const W = config.weights!;
  const batch = x.length / d;
  const y = new Float64Array(batch * d);
  const idx: number[] = [];
  const gates: number[] = [];
  const silu = (v: number) => v / (1 + Math.exp(-v));
  const mlp = (row: number, g: Float32Array, u: Float32Array, dn: Float32Array, width: number, at: number, factor: number) => {
    for (let j = 0; j < width; j++) {
      let a = 0,
        b = 0;
      for (let i = 0; i < d; i++) {
        a += x[row * d + i] * g[at * d * width + i * width + j];
        b += x[row * d + i] * u[at * d * width + i * width + j];
      }
      const act = silu(a) * b;
      for (let o = 0; o < d; o++) y[row * d + o] += factor * act * dn[at * width * d + j * d + o];
    }
  };
  for (let row = 0; row < batch; row++) {
    const logits = Array.from({ length: n }, (_, e) => {
      let z = 0;
      for (let i = 0; i < d; i++) z += x[row * d + i] * W.wGate![i * n + e];
      return z;
    });
    let scores: number[];
    let choice: number[];
    if (r.score === "sigmoid") {
      scores = logits.map((z) => 1 / (1 + Math.exp(-z)));
      choice = scores.map((s, e) => s + (r.choiceBias?.[e] ?? 0));
      if (r.groups) {
        const size = n / r.groups.nGroup;
        const groupScore = Array.from({ length: r.groups.nGroup }, (_, g) =>
          choice
            .slice(g * size, (g + 1) * size)
            .sort((a, b) => b - a)
            .slice(0, 2)
            .reduce((a, b) => a + b, 0),
        );
        const kept = groupScore
          .map((s, g) => [s, g])
          .sort((a, b) => b[0] - a[0] || a[1] - b[1])
          .slice(0, r.groups.topkGroup)
          .map(([, g]) => g);
        choice = choice.map((c, e) => (kept.includes(Math.floor(e / size)) ? c : 0));
      }
    } else {
      const m = Math.max(...logits);
      const e = logits.map((z) => Math.exp(z - m));
      const sum = e.reduce((a, b) => a + b, 0);
      scores = e.map((v) => v / sum);
      choice = logits;
    }
    const chosen = choice
      .map((c, e) => [c, e])
      .sort((a, b) => b[0] - a[0] || a[1] - b[1])
      .slice(0, k)
      .map(([, e]) => e);
    let weights = chosen.map((e) => scores[e]);
    if (r.renormalize) {
      const sum = weights.reduce((a, b) => a + b, 0) + (r.renormEpsilon ?? 0);
      weights = weights.map((v) => v / sum);
    }
    weights = weights.map((v) => v * (r.scale ?? 1));
    chosen.forEach((e, s) => mlp(row, W.wGateProj!, W.wUp!, W.wDown!, h, e, weights[s]));
    if (config.shared) {
      let factor = 1;
      if (config.shared.gated) {
        let z = 0;
        for (let i = 0; i < d; i++) z += x[row * d + i] * W.sharedGate![i];
        factor = 1 / (1 + Math.exp(-z));
      }
      mlp(row, W.sharedGateProj!, W.sharedUp!, W.sharedDown!, hs, 0, factor);
    }
    idx.push(...chosen);
    gates.push(...weights);
  }
  return { y, idx, gates };
}

const CASES: Array<[string, RoutingOptions, { gated: boolean } | undefined]> = [
  ["softmax over all n, top-k, no renormalisation (OLMoE, Qwen norm_topk_prob false)", { score: "softmax" }, undefined],
  ["softmax, renormalised, a gated shared expert (Qwen2-MoE)", { score: "softmax", renormalize: true }, { gated: true }],
  [
    "sigmoid + choice bias, 4 groups keep 2, renormalised, scaled, an ungated shared expert (DeepSeek-V3)",
    {
      score: "sigmoid",
      renormalize: true,
      renormEpsilon: 1e-20,
      scale: 2.5,
      groups: { nGroup: 4, topkGroup: 2 },
      choiceBias: Float32Array.from({ length: n }, (_, i) => 0.2 * Math.sin(3 * i)),
    },
    { gated: false },
  ],
];

describe("routing and shared experts on the CPU", () => {
  const rng = new Rng(4242);
  for (const [what, routing, shared] of CASES) {
    it(what, async () => {
      const config = layerConfig(rng, routing, shared);
      const layer = await createMoE(config);
      const x = rng.normals(9 * d);
      const got = await layer.forward(x);
      const want = reference(config, x);
      expect(Array.from(got.topkIndices)).toEqual(want.idx);
      got.topkGates.forEach((g, i) => expect(g).toBeCloseTo(want.gates[i], 5));
      const scale = Math.max(...Array.from(want.y, Math.abs));
      got.y.forEach((v, i) => expect(Math.abs(v - want.y[i])).toBeLessThanOrEqual(1e-5 * scale));
      // getWeights gives back what was given (the shared expert folded back from its slices)
      const weights = await layer.getWeights();
      for (const [name, value] of Object.entries(config.weights!)) expect(Array.from(weights[name as keyof typeof weights]!), name).toEqual(Array.from(value));
      // these routers train (test/backward-routing.test.ts checks the gradients): every tensor gets one
      await layer.forward(x, { train: true });
      const grads = await layer.backward(new Float32Array(x.length).fill(1));
      expect(Object.keys(grads).sort()).toEqual(["x", ...Object.keys(config.weights!)].sort());
      layer.dispose();
    });
  }

  it("rejects what a router does not take, with INVALID_CONFIG", async () => {
    const base = layerConfig(rng, { score: "softmax" });
    const bad: Array<Partial<MoEConfig>> = [
      { routing: { score: "softmax" }, noisyGating: true },
      { routing: { score: "topk-softmax", scale: 2 } },
      { routing: { score: "softmax", choiceBias: new Float32Array(n) } },
      { routing: { score: "sigmoid", groups: { nGroup: 3, topkGroup: 1 } } },
      { routing: { score: "sigmoid", groups: { nGroup: 4, topkGroup: 5 } } },
      { routing: { score: "sigmoid", choiceBias: new Float32Array(n - 1) } },
      { routing: { score: "sigmoid", renormEpsilon: -1 } },
      { routing: { score: "soft" as "softmax" } },
      { routing: { score: "softmax", scael: 2 } as RoutingOptions },
      { shared: { dHidden: 0 } },
      { expert: "relu", shared: { dHidden: 4 } },
    ];
    for (const extra of bad) {
      const error = await createMoE({ ...base, ...extra }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error, JSON.stringify(extra)).toBeInstanceOf(MoEError);
      expect((error as MoEError).code, JSON.stringify(extra)).toBe("INVALID_CONFIG");
    }
  });
});

gpuSuite("routing and shared experts on the GPU back end", probe, () => {
  it("every router and shared expert: the GPU's y agrees with the CPU's, the routing is the same", async () => {
    const rng = new Rng(99);
    for (const [, routing, shared] of CASES) {
      const config = layerConfig(rng, routing, shared);
      const layer = await createMoE({ ...config, backend: "gpu" });
      const x = rng.normals(40 * d);
      const gpu = await layer.forward(x);
      const cpu = layer.forwardSync(x);
      expect(gpu.backend).toBe("gpu");
      expect(Array.from(gpu.topkIndices)).toEqual(Array.from(cpu.topkIndices));
      const scale = Math.max(...Array.from(cpu.y, Math.abs));
      gpu.y.forEach((v, i) => expect(Math.abs(v - cpu.y[i])).toBeLessThanOrEqual(1e-4 * scale));
      layer.dispose();
    }
  });
});
