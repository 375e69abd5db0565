// Training: getWeights, the paper's zero gating initialisation and seeded expert weights, the
// optimizer steps (exact SGD, Adam against a float64 reference, the loss going down, the padding
// of the packed panels staying zero), their errors, and a short run of the train-demo.
import { describe, expect, it } from "vitest";
import { createMoE, MoEError, type MoELayer, type MoEWeights } from "edge-moe";
import { configOf, randomWeights, Rng, sameBits, type LayerShape } from "./helpers.ts";
import { trainDemo, trainOnce } from "../scripts/train-demo.mjs";

const SHAPES: LayerShape[] = [
  { expert: "relu", noisy: true, d: 13, h: 37, n: 5, k: 2 },
  { expert: "gelu", noisy: false, d: 7, h: 21, n: 6, k: 3 },
  { expert: "swiglu", noisy: true, d: 31, h: 19, n: 7, k: 4 },
];
const label = (s: LayerShape) => `${s.expert}, ${s.noisy ? "noisy" : "clean"}, d=${s.d} h=${s.h} n=${s.n} k=${s.k}`;

async function expectMoEError(run: () => unknown, code: string): Promise<void> {
  let error: unknown;
  try {
    await run();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(MoEError);
  expect((error as MoEError).code).toBe(code);
}

/** A layer of `shape` with random weights, a batch and its noise, and an upstream gradient. */
async function setup(shape: LayerShape, seed: number, batch = 11) {
  const rng = new Rng(seed);
  const weights = randomWeights(rng, shape);
  const layer = await createMoE(configOf(shape, weights));
  const x = rng.normals(batch * shape.d);
  const noise = shape.noisy ? rng.normals(batch * shape.n) : undefined;
  const dy = rng.normals(batch * shape.d);
  /** J = Σ y·dy + both losses of one training forward (leaves that forward's state behind). */
  const objective = async (of: MoELayer = layer) => {
    const r = await of.forward(x, { train: true, noise });
    let j = 0;
    for (let i = 0; i < dy.length; i++) j += r.y[i] * dy[i];
    return j + r.lossImportance! + r.lossLoad!;
  };
  return { rng, weights, layer, x, noise, dy, objective };
}

describe("getWeights returns the weights in the input layout", () => {
  it.each(SHAPES.map((s) => [label(s), s] as const))("%s: bit-exact round trip", async (_label, shape) => {
    const { weights, layer } = await setup(shape, 1);
    const back = await layer.getWeights();
    expect(Object.keys(back).sort()).toEqual(Object.keys(weights).sort());
    for (const name of Object.keys(weights) as Array<keyof MoEWeights>) {
      expect(sameBits(back[name]!, weights[name]!), name).toBe(true);
    }
    layer.dispose();
    await expectMoEError(() => layer.getWeights(), "DISPOSED");
  });
});

describe("initialisation: zero gating (the paper's), seeded expert weights", () => {
  const base = { dModel: 24, dHidden: 40, numExperts: 6, k: 2 } as const;

  it("without wGate and wNoise the gating weights are zero, and the given expert weights are kept", async () => {
    const shape: LayerShape = { expert: "relu", noisy: true, d: 24, h: 40, n: 6, k: 2 };
    const { wGate: _g, wNoise: _n, ...experts } = randomWeights(new Rng(2), shape);
    const layer = await createMoE({ ...base, expert: "relu", weights: experts });
    const w = await layer.getWeights();
    expect(w.wGate!.length).toBe(24 * 6);
    expect(w.wGate!.every((v) => v === 0) && w.wNoise!.every((v) => v === 0)).toBe(true);
    expect(sameBits(w.w1!, experts.w1!) && sameBits(w.b2!, experts.b2!)).toBe(true);
    // zero gating: every logit is 0, so all gates of a row are equal
    const { topkGates } = await layer.forward(new Rng(3).normals(4 * 24));
    expect(Array.from(topkGates)).toEqual(new Array(8).fill(0.5));
    layer.dispose();
  });

  it.each(["relu", "gelu", "swiglu"] as const)(
    "%s: init { seed } draws the missing expert weights: N(0, 1/d) up, N(0, 1/h) down, zero biases",
    async (expert) => {
      const make = (seed: number, weights?: MoEWeights) => createMoE({ ...base, expert, init: { seed }, weights });
      const [a, b, c] = await Promise.all([make(11), make(11), make(12)]);
      const [wa, wb, wc] = await Promise.all([a.getWeights(), b.getWeights(), c.getWeights()]);
      const up: Array<keyof MoEWeights> = expert === "swiglu" ? ["wGateProj", "wUp"] : ["w1"];
      const down: keyof MoEWeights = expert === "swiglu" ? "wDown" : "w2";
      const std = (v: Float32Array) => Math.sqrt(v.reduce((s, t) => s + t * t, 0) / v.length);
      for (const name of [...up, down]) {
        expect(sameBits(wa[name]!, wb[name]!), `${name}: same seed, same weights`).toBe(true);
        expect(sameBits(wa[name]!, wc[name]!), `${name}: another seed, other weights`).toBe(false);
        const target = name === down ? Math.sqrt(1 / base.dHidden) : Math.sqrt(1 / base.dModel);
        expect(std(wa[name]!) / target, `${name} standard deviation`).toBeGreaterThan(0.95);
        expect(std(wa[name]!) / target, `${name} standard deviation`).toBeLessThan(1.05);
      }
      if (expert === "swiglu") expect(sameBits(wa.wGateProj!, wa.wUp!)).toBe(false);
      else expect(wa.b1!.every((v) => v === 0) && wa.b2!.every((v) => v === 0)).toBe(true);
      expect(wa.wGate!.every((v) => v === 0)).toBe(true);
      // a given tensor wins over init
      const w2 = new Rng(5).normals(6 * 40 * 24);
      if (expert !== "swiglu") {
        const d = await make(11, { w2 });
        const wd = await d.getWeights();
        expect(sameBits(wd.w2!, w2) && sameBits(wd.w1!, wa.w1!)).toBe(true);
        d.dispose();
      }
      for (const layer of [a, b, c]) layer.dispose();
    },
  );

  it("errors: expert weights missing without init; a bad init", async () => {
    await expectMoEError(() => createMoE({ ...base, expert: "relu" }), "MISSING_WEIGHT");
    await expectMoEError(() => createMoE({ ...base, expert: "relu", weights: {} }), "MISSING_WEIGHT");
    await expectMoEError(() => createMoE({ ...base, expert: "relu", init: { seed: -1 } }), "INVALID_CONFIG");
    await expectMoEError(() => createMoE({ ...base, expert: "relu", init: 3 as unknown as { seed: number } }), "INVALID_CONFIG");
  });
});

describe("step: the optimizers update the packed weights in place", () => {
  it.each(SHAPES.map((s) => [label(s), s] as const))("%s: sgd is w − lr·g exactly, and J goes down", async (_label, shape) => {
    const { layer, dy, objective } = await setup(shape, 21);
    const before = await objective();
    const grads = await layer.backward(dy);
    const w0 = await layer.getWeights();
    const lr = 1e-3;
    await layer.step({ lr, optimizer: "sgd" });
    const w1 = await layer.getWeights();
    const lr32 = Math.fround(lr);
    for (const name of Object.keys(w0) as Array<keyof MoEWeights>) {
      const expected = w0[name]!.map((w, i) => w - Math.fround(lr32 * grads[name]![i]));
      expect(sameBits(w1[name]!, expected), name).toBe(true);
    }
    expect(await objective()).toBeLessThan(before);
    layer.dispose();
  });

  it.each(SHAPES.map((s) => [label(s), s] as const))("%s: adam matches a float64 Adam over 3 steps, and J goes down", async (_label, shape) => {
    const { layer, dy, objective } = await setup(shape, 31);
    const opts = { lr: 1e-3, optimizer: "adam", beta1: 0.8, beta2: 0.99, eps: 1e-6 } as const;
    const reference = new Map<keyof MoEWeights, { w: Float64Array; m: Float64Array; v: Float64Array }>();
    const start = await objective();
    for (let t = 1; t <= 3; t++) {
      if (t > 1) await objective();
      const grads = await layer.backward(dy);
      if (t === 1) {
        for (const [name, w] of Object.entries(await layer.getWeights()) as Array<[keyof MoEWeights, Float32Array]>) {
          reference.set(name, { w: Float64Array.from(w), m: new Float64Array(w.length), v: new Float64Array(w.length) });
        }
      }
      for (const [name, r] of reference) {
        const g = grads[name]!;
        for (let i = 0; i < g.length; i++) {
          r.m[i] = opts.beta1 * r.m[i] + (1 - opts.beta1) * g[i];
          r.v[i] = opts.beta2 * r.v[i] + (1 - opts.beta2) * g[i] * g[i];
          const mHat = r.m[i] / (1 - opts.beta1 ** t);
          const vHat = r.v[i] / (1 - opts.beta2 ** t);
          r.w[i] -= (opts.lr * mHat) / (Math.sqrt(vHat) + opts.eps);
        }
      }
      await layer.step(opts);
    }
    const w = await layer.getWeights();
    for (const [name, r] of reference) {
      let worst = 0;
      for (let i = 0; i < r.w.length; i++) worst = Math.max(worst, Math.abs(w[name]![i] - r.w[i]));
      // each step moves a weight by at most ~lr; float32 rounding of weights ~0.5 leaves ~3e-8
      expect(worst, name).toBeLessThan(1e-6);
    }
    expect(await objective()).toBeLessThan(start);
    layer.dispose();
  });

  it.each(SHAPES.map((s) => [label(s), s] as const))(
    "%s: after steps, a layer rebuilt from getWeights computes the same bits (padding stayed zero)",
    async (_label, shape) => {
      const { layer, dy, objective, x, noise } = await setup(shape, 41);
      for (let t = 0; t < 4; t++) {
        await objective();
        await layer.backward(dy, { weights: false });
        await layer.step({ lr: 0.05, optimizer: t % 2 ? "sgd" : "adam" });
      }
      const rebuilt = await createMoE(configOf(shape, await layer.getWeights()));
      for (const options of [{}, { train: true, noise }]) {
        const [a, b] = [await layer.forward(x, options), await rebuilt.forward(x, options)];
        expect(sameBits(a.y, b.y) && sameBits(a.topkIndices, b.topkIndices) && sameBits(a.topkGates, b.topkGates)).toBe(true);
      }
      layer.dispose();
      rebuilt.dispose();
    },
  );

  it("errors: NO_GRADIENTS before a backward; INVALID_CONFIG for bad options; DISPOSED", async () => {
    const { layer, dy, objective } = await setup(SHAPES[0], 51);
    await expectMoEError(() => layer.step({ lr: 0.1 }), "NO_GRADIENTS");
    await objective();
    await layer.backward(dy);
    const before = await layer.getWeights();
    for (const bad of [
      { lr: 0 },
      { lr: -1 },
      { lr: Number.NaN },
      { lr: "0.1" },
      {},
      { lr: 0.1, optimizer: "rmsprop" },
      { lr: 0.1, optimizer: "adam", beta1: 1 },
      { lr: 0.1, optimizer: "adam", beta2: -0.1 },
      { lr: 0.1, optimizer: "adam", eps: 0 },
      null,
    ]) {
      await expectMoEError(() => layer.step(bad as never), "INVALID_CONFIG");
    }
    expect(await layer.getWeights()).toEqual(before);
    layer.dispose();
    await expectMoEError(() => layer.step({ lr: 0.1 }), "DISPOSED");
  });
});

describe("train-demo, short: the balancing losses decide whether usage collapses", () => {
  it("without the losses usage concentrates on few experts; with 0.1 / 0.1 it is balanced; both learn the task", async () => {
    const short = { steps: 300, heldOut: 512 };
    const untrained = await trainOnce({ ...short, steps: 0, wImportance: 0, wLoad: 0 });
    const [without, withLosses] = await trainDemo(short);
    for (const r of [without, withLosses]) expect(r.taskLoss).toBeLessThan(0.2 * untrained.taskLoss);
    expect(without.cvImportance).toBeGreaterThan(1);
    expect(without.maxOverMeanLoad).toBeGreaterThan(3);
    expect(withLosses.cvImportance).toBeLessThan(0.3);
    expect(withLosses.cvLoad).toBeLessThan(0.3);
    expect(withLosses.maxOverMeanLoad).toBeLessThan(1.5);
    expect(without.cvImportance).toBeGreaterThan(4 * withLosses.cvImportance);
    expect(without.expertsUsed).toBeLessThan(withLosses.expertsUsed);
  });
});
