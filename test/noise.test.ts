// The gating noise: caller-given, seeded (Philox4x32-10 + Box–Muller), or the layer's own stream;
// training mode only. The package has no public hook that returns the noise, so the normals are
// read back through public outputs of a "probe" layer (see recoverNoise).
import { describe, expect, it } from "vitest";
import { createMoE, type ForwardResult, type MoELayer } from "edge-moe";
import { configOf, randomWeights, relErr, Rng, sameBits, type LayerShape } from "./helpers.ts";
import { normalCdf, normalQuantile, referenceGating, refLayer } from "./reference.ts";

function expectIdentical(a: ForwardResult, b: ForwardResult): void {
  expect(sameBits(a.y, b.y), "y").toBe(true);
  expect(sameBits(a.topkIndices, b.topkIndices), "topkIndices").toBe(true);
  expect(sameBits(a.topkGates, b.topkGates), "topkGates").toBe(true);
  expect(a.importance === undefined).toBe(b.importance === undefined);
  if (a.importance && b.importance) {
    expect(sameBits(a.importance, b.importance), "importance").toBe(true);
    expect(sameBits(a.load!, b.load!), "load").toBe(true);
    expect(Object.is(a.lossImportance, b.lossImportance), "lossImportance").toBe(true);
    expect(Object.is(a.lossLoad, b.lossLoad), "lossLoad").toBe(true);
  }
}

const differ = (a: Float32Array | Int32Array, b: Float32Array | Int32Array) => !sameBits(a, b);

const shape: LayerShape = { expert: "gelu", d: 12, h: 10, n: 6, k: 2, noisy: true };
async function randomLayer(seed = 11, layerSeed?: number): Promise<{ layer: MoELayer; x: Float32Array; rng: Rng }> {
  const rng = new Rng(seed);
  const layer = await createMoE({ ...configOf(shape, randomWeights(rng, shape)), seed: layerSeed });
  return { layer, x: rng.normals(16 * shape.d), rng };
}

// ---- the probe ---------------------------------------------------------------------------------
// d = 1, x = [1], W_g = 0, W_noise = 0: clean = 0, std = softplus(0) + ε = s for every expert, and
// H = s·z with z the noise of the row. With k = n − 1 and B = 1 (training mode, prob load):
//   gates give every H difference within the top k: H_i − H_j = log(g_i / g_j);
//   load[i] for i in the top k is Φ((0 − H_min)/s)   (threshold: the (k+1)-th H, the smallest);
//   load[m] for the excluded m is Φ((0 − H_kth)/s)   (threshold: the k-th largest H).
// So z_min = −Φ⁻¹(load[top]) and z_kth = −Φ⁻¹(load[m]), and the gates place the others.
const PROBE_N = 32;
const PROBE_EPS = 0.01;
const PROBE_S = Math.log(2) + PROBE_EPS;

function probeConfig(layerSeed?: number) {
  const n = PROBE_N;
  return {
    dModel: 1,
    dHidden: 1,
    numExperts: n,
    k: n - 1,
    expert: "relu" as const,
    noisyGating: true,
    noiseEpsilon: PROBE_EPS,
    seed: layerSeed,
    weights: {
      wGate: new Float32Array(n),
      wNoise: new Float32Array(n),
      w1: new Float32Array(n),
      b1: new Float32Array(n),
      w2: new Float32Array(n),
      b2: new Float32Array(n),
    },
  };
}

/** The n normals a probe layer's training call used, read back from its gates and load. */
function recoverNoise(out: ForwardResult): Float64Array {
  const n = PROBE_N;
  const k = n - 1;
  const idx = Array.from(out.topkIndices);
  const excluded = [...Array(n).keys()].find((i) => !idx.includes(i))!;
  const z = new Float64Array(n);
  z[excluded] = -normalQuantile(out.load![idx[0]]);
  const zKth = -normalQuantile(out.load![excluded]);
  for (let j = 0; j < k; j++) z[idx[j]] = zKth + Math.log(out.topkGates[j] / out.topkGates[k - 1]) / PROBE_S;
  return z;
}

const PROBE_X = new Float32Array([1]);

describe("the probe reads back the noise of a training call", () => {
  it("recovers caller-given noise to 1e-4", async () => {
    const probe = await createMoE(probeConfig());
    const rng = new Rng(5);
    for (let trial = 0; trial < 20; trial++) {
      const noise = rng.normals(PROBE_N);
      const z = recoverNoise(await probe.forward(PROBE_X, { train: true, noise }));
      expect(relErr(z, noise)).toBeLessThan(1e-4);
    }
    probe.dispose();
  });
});

describe("seeded noise: same seed, same output, bit for bit", () => {
  it("the same call twice, with other calls in between, gives identical outputs", async () => {
    const { layer, x, rng } = await randomLayer();
    const first = await layer.forward(x, { train: true, seed: 7 });
    await layer.forward(x, { train: true });
    await layer.forward(x, { train: true, seed: 8 });
    await layer.forward(rng.normals(3 * shape.d), { train: true, seed: 7 });
    expectIdentical(await layer.forward(x, { train: true, seed: 7 }), first);
    layer.dispose();
  });

  it("two layers with the same weights give identical outputs for the same seed", async () => {
    const a = await randomLayer(11);
    const b = await randomLayer(11, 12345);
    for (const seed of [0, 1, 2 ** 31, 2 ** 32 + 3, Number.MAX_SAFE_INTEGER]) {
      expectIdentical(await a.layer.forward(a.x, { train: true, seed }), await b.layer.forward(b.x, { train: true, seed }));
    }
    a.layer.dispose();
    b.layer.dispose();
  });

  it("another seed gives another output (including seeds that differ only above bit 32)", async () => {
    const { layer, x } = await randomLayer();
    const seeds = [0, 1, 2, 42, 2 ** 32, 2 ** 33, 2 ** 52 + 1];
    const results = [];
    for (const seed of seeds) results.push(await layer.forward(x, { train: true, seed }));
    for (let i = 0; i < seeds.length; i++) {
      for (let j = i + 1; j < seeds.length; j++) {
        const [a, b] = [results[i], results[j]];
        expect(differ(a.topkGates, b.topkGates), `seeds ${seeds[i]} and ${seeds[j]}`).toBe(true);
        expect(differ(a.y, b.y)).toBe(true);
        expect(differ(a.load!, b.load!)).toBe(true);
      }
    }
    layer.dispose();
  });

  it("different layers (other weights, d, experts) with the same seed get the same noise", async () => {
    // The noise of a seed depends only on the seed and its position [row, expert], not on the layer:
    // read it back with the probe, then give it explicitly to a quite different layer.
    const probe = await createMoE(probeConfig());
    const other: LayerShape = { expert: "swiglu", d: 19, h: 7, n: PROBE_N, k: 3, noisy: true, noiseEpsilon: 0.05 };
    const rng = new Rng(3);
    const config = configOf(other, randomWeights(rng, other));
    const layer = await createMoE(config);
    let compared = 0;
    for (const seed of [1, 99, 2 ** 40]) {
      const z = Float32Array.from(recoverNoise(await probe.forward(PROBE_X, { train: true, seed })));
      const x = rng.normals(other.d);
      const gating = referenceGating(refLayer(config), x, { train: true, noise: z });
      if (gating.topGap[0] < 1e-3) continue; // the read-back noise is exact to ~1e-5 only
      const seeded = await layer.forward(x, { train: true, seed });
      const given = await layer.forward(x, { train: true, noise: z });
      expect(Array.from(seeded.topkIndices)).toEqual(Array.from(given.topkIndices));
      expect(relErr(seeded.y, given.y)).toBeLessThan(1e-3);
      expect(relErr(seeded.load!, given.load!)).toBeLessThan(1e-3);
      compared++;
    }
    expect(compared).toBeGreaterThanOrEqual(2);
    probe.dispose();
    layer.dispose();
  });

  it("normal number i of a seed is the same whatever the batch: row 0 of B rows equals a 1-row call", async () => {
    const { layer, x } = await randomLayer();
    const whole = await layer.forward(x, { train: true, seed: 31 });
    const first = await layer.forward(x.subarray(0, shape.d), { train: true, seed: 31 });
    expect(Array.from(first.topkIndices)).toEqual(Array.from(whole.topkIndices.subarray(0, shape.k)));
    expect(relErr(first.topkGates, whole.topkGates.subarray(0, shape.k))).toBeLessThan(1e-6);
    expect(relErr(first.y, whole.y.subarray(0, shape.d))).toBeLessThan(1e-6);
    layer.dispose();
  });
});

describe("seeded noise is standard normal", () => {
  // Bounds at about 5 standard errors: a correct generator fails them with probability < 1e-6,
  // a generator off in mean by 0.1, in scale by 10%, or correlated, fails them.
  function moments(z: ArrayLike<number>) {
    let mean = 0;
    for (let i = 0; i < z.length; i++) mean += z[i];
    mean /= z.length;
    let variance = 0;
    let lag1 = 0;
    for (let i = 0; i < z.length; i++) {
      variance += (z[i] - mean) ** 2;
      if (i > 0) lag1 += (z[i] - mean) * (z[i - 1] - mean);
    }
    return { mean, variance: variance / z.length, lag1: lag1 / variance };
  }
  /** Kolmogorov–Smirnov distance between the sample and N(0, scale²). */
  function ksDistance(z: ArrayLike<number>, scale: number): number {
    const sorted = Array.from(z).sort((a, b) => a - b);
    let worst = 0;
    for (let i = 0; i < sorted.length; i++) {
      const cdf = normalCdf(sorted[i] / scale);
      worst = Math.max(worst, Math.abs(cdf - i / sorted.length), Math.abs(cdf - (i + 1) / sorted.length));
    }
    return worst;
  }

  it("the first normals of 100 seeds: mean 0, variance 1, uncorrelated, normal in shape", async () => {
    const probe = await createMoE(probeConfig());
    const z: number[] = [];
    for (let seed = 1; seed <= 100; seed++) z.push(...recoverNoise(await probe.forward(PROBE_X, { train: true, seed })));
    probe.dispose();
    const N = z.length;
    const { mean, variance, lag1 } = moments(z);
    expect(Math.abs(mean)).toBeLessThan(5 / Math.sqrt(N));
    expect(Math.abs(variance - 1)).toBeLessThan(5 * Math.sqrt(2 / N));
    expect(Math.abs(lag1)).toBeLessThan(5 / Math.sqrt(N));
    expect(ksDistance(z, 1)).toBeLessThan(2.3 / Math.sqrt(N)); // KS at α ≈ 1e-4
    expect(Math.min(...z)).toBeLessThan(-2.5); // both tails are reached
    expect(Math.max(...z)).toBeGreaterThan(2.5);
  });

  it("4000 normals of one call (2000 rows): z₀ − z₁ of each row is N(0, 2)", async () => {
    // n = k = 2, clean = 0: the two gates give H₀ − H₁ = s·(z₀ − z₁) for every row.
    const rows = 2000;
    const layer = await createMoE({
      ...probeConfig(),
      numExperts: 2,
      k: 2,
      weights: {
        wGate: new Float32Array(2),
        wNoise: new Float32Array(2),
        w1: new Float32Array(2),
        b1: new Float32Array(2),
        w2: new Float32Array(2),
        b2: new Float32Array(2),
      },
    });
    const out = await layer.forward(new Float32Array(rows).fill(1), { train: true, seed: 2024 });
    layer.dispose();
    const diffs = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      const sign = out.topkIndices[2 * r] === 0 ? 1 : -1;
      diffs[r] = (sign * Math.log(out.topkGates[2 * r] / out.topkGates[2 * r + 1])) / PROBE_S;
    }
    const { mean, variance, lag1 } = moments(diffs);
    expect(Math.abs(mean)).toBeLessThan(5 * Math.sqrt(2 / rows));
    expect(Math.abs(variance - 2)).toBeLessThan(5 * 2 * Math.sqrt(2 / rows));
    expect(Math.abs(lag1)).toBeLessThan(5 / Math.sqrt(rows));
    expect(ksDistance(diffs, Math.SQRT2)).toBeLessThan(2.3 / Math.sqrt(rows));
  });
});

describe("precedence: given noise overrides seed; eval mode and clean gating use no noise", () => {
  it("given noise overrides seed", async () => {
    const { layer, x, rng } = await randomLayer();
    const noise = rng.normals((x.length / shape.d) * shape.n);
    const withBoth = await layer.forward(x, { train: true, noise, seed: 5 });
    expectIdentical(withBoth, await layer.forward(x, { train: true, noise }));
    expect(differ(withBoth.topkGates, (await layer.forward(x, { train: true, seed: 5 })).topkGates)).toBe(true);
    layer.dispose();
  });

  it("eval mode ignores noise and seed: identical to a plain eval call, and different from training", async () => {
    const { layer, x, rng } = await randomLayer();
    const plain = await layer.forward(x);
    const noise = rng.normals((x.length / shape.d) * shape.n);
    expectIdentical(await layer.forward(x, { train: false, noise }), plain);
    expectIdentical(await layer.forward(x, { train: false, seed: 3 }), plain);
    expectIdentical(await layer.forward(x, { noise, seed: 3 }), plain);
    expect(differ((await layer.forward(x, { train: true, noise })).topkGates, plain.topkGates)).toBe(true);
    layer.dispose();
  });

  it("noisyGating: false ignores noise and seed in training mode", async () => {
    const clean: LayerShape = { ...shape, noisy: false };
    const rng = new Rng(8);
    const layer = await createMoE(configOf(clean, randomWeights(rng, clean)));
    const x = rng.normals(9 * clean.d);
    const plain = await layer.forward(x, { train: true });
    expectIdentical(await layer.forward(x, { train: true, seed: 4 }), plain);
    expectIdentical(await layer.forward(x, { train: true, noise: rng.normals(9 * clean.n) }), plain);
    expect(sameBits((await layer.forward(x)).y, plain.y)).toBe(true);
    layer.dispose();
  });
});

describe("the layer's own stream (training calls with neither noise nor seed)", () => {
  it("changes from call to call", async () => {
    const { layer, x } = await randomLayer();
    const seen: ForwardResult[] = [];
    for (let call = 0; call < 4; call++) seen.push(await layer.forward(x, { train: true }));
    for (let i = 0; i < seen.length; i++) {
      for (let j = i + 1; j < seen.length; j++) expect(differ(seen[i].topkGates, seen[j].topkGates), `calls ${i} and ${j}`).toBe(true);
    }
    layer.dispose();
  });

  it("is a reproducible sequence keyed by the layer's seed, unaffected by seeded or eval calls", async () => {
    const a = await randomLayer(11, 77);
    const b = await randomLayer(11, 77);
    const c = await randomLayer(11, 78);
    const a1 = await a.layer.forward(a.x, { train: true });
    await a.layer.forward(a.x, { train: true, seed: 1 }); // seeded and eval calls do not advance the stream
    await a.layer.forward(a.x);
    const a2 = await a.layer.forward(a.x, { train: true });
    expectIdentical(a1, await b.layer.forward(b.x, { train: true }));
    expectIdentical(a2, await b.layer.forward(b.x, { train: true }));
    expect(differ(a1.topkGates, (await c.layer.forward(c.x, { train: true })).topkGates)).toBe(true);
    for (const l of [a, b, c]) l.layer.dispose();
  });
});
