// Training on the worker pool (assembly/backward-threads.ts): backward and the optimizer steps of a
// layer with 2, 3 or 4 threads give the bits of the same layer on 1 thread — every gradient, dx, and
// the weights after several Adam and SGD steps — for relu, gelu and swiglu, noisy and clean
// gating, batches from 1 to hundreds, odd sizes, and experts no row chose.
import { describe, expect, it } from "vitest";
import { bestWasmBuild, createMoE, type Gradients, type MoELocalLayer, type MoEWeights } from "edge-moe";
import { configOf, randomWeights, relErr, Rng, sameBits, type LayerShape } from "./helpers.ts";
import { CTL_JOB, CTL_RUN, JOB_BACKWARD, JOB_STEP } from "../src/abi.ts";

const relaxedHere = bestWasmBuild() === "relaxed";

const SHAPES: LayerShape[] = [
  { expert: "relu", noisy: true, d: 13, h: 37, n: 5, k: 2 },
  { expert: "gelu", noisy: false, d: 7, h: 21, n: 6, k: 3 },
  { expert: "swiglu", noisy: true, d: 31, h: 19, n: 7, k: 4 },
  // many experts, k = 1: most get no rows at small batches (exact zeros from every thread)
  { expert: "gelu", noisy: true, d: 40, h: 24, n: 33, k: 1 },
  // k = n: no load-estimator gradient; one expert's rows span every chunk
  { expert: "relu", noisy: false, d: 20, h: 9, n: 3, k: 3 },
  // large enough (≥ 2^14 weights) for the step to run on the pool too
  { expert: "swiglu", noisy: false, d: 64, h: 200, n: 5, k: 2 },
  { expert: "relu", noisy: true, d: 96, h: 130, n: 6, k: 2 },
];
const BATCHES = [1, 3, 8, 17, 64, 2, 129];
const label = (s: LayerShape) => `${s.expert}, ${s.noisy ? "noisy" : "clean"}, d=${s.d} h=${s.h} n=${s.n} k=${s.k}`;

function expectSameGradients(got: Gradients, want: Gradients, what: string): void {
  const names = Object.keys(want) as Array<keyof Gradients>;
  expect(Object.keys(got).sort(), what).toEqual(names.slice().sort());
  for (const name of names) expect(sameBits(got[name]!, want[name]!), `${what}: ${name} differs`).toBe(true);
}

async function expectSameWeights(got: MoELocalLayer, want: MoELocalLayer, what: string): Promise<void> {
  const [a, b] = [await got.getWeights(), await want.getWeights()];
  for (const name of Object.keys(b) as Array<keyof MoEWeights>) {
    expect(sameBits(a[name]!, b[name]!), `${what}: weights ${name} differ`).toBe(true);
  }
}

/**
 * Trains every layer (built from one config) on the same batches: forward, backward (all gradients
 * returned, or only dx), step (Adam and SGD in turn); every result must have the bits of layers[0].
 */
async function trainAlike(layers: MoELocalLayer[], shape: LayerShape, rng: Rng, batches: number[]): Promise<void> {
  for (const [i, batch] of batches.entries()) {
    const x = rng.normals(batch * shape.d);
    const dy = rng.normals(batch * shape.d);
    const what = `B=${batch}`;
    const results = [];
    for (const layer of layers) {
      const y = layer.forwardSync(x, { train: true, seed: 1000 + i });
      results.push({ y, grads: await layer.backward(dy, { weights: i % 3 !== 2 }) });
    }
    const want = results[0];
    for (const got of results.slice(1)) {
      expect(sameBits(got.y.y, want.y.y), `${what}: y`).toBe(true);
      expectSameGradients(got.grads, want.grads, what);
    }
    const options = i % 2 === 0 ? { lr: 1e-2, optimizer: "adam" as const, beta1: 0.85, beta2: 0.995, eps: 1e-7 } : { lr: 3e-2, optimizer: "sgd" as const };
    for (const layer of layers) await layer.step(options);
    for (const layer of layers.slice(1)) await expectSameWeights(layer, layers[0], `${what}, after ${options.optimizer}`);
  }
}

describe("backward and step on the pool: the bits of one thread (simd-threads, threads 1, 2, 3, 4)", () => {
  const rng = new Rng(20261206);
  for (const shape of SHAPES) {
    it(label(shape), async () => {
      const config = configOf(shape, randomWeights(rng, shape));
      const layers = await Promise.all([1, 2, 3, 4].map((threads) => createMoE({ ...config, wasmBuild: "simd-threads", threads })));
      try {
        await trainAlike(layers, shape, rng, BATCHES);
      } finally {
        for (const layer of layers) layer.dispose();
      }
    });
  }
});

describe("backward and step do run on the pool", () => {
  // The bits above would also match if a threaded layer never used its pool: this reads the pool's
  // control block (an internal of the layer) to see the jobs run, and their run counters advance.
  it("a 2-thread layer's backward is JOB_BACKWARD, its large steps JOB_STEP", async () => {
    const rng = new Rng(11);
    const shape = SHAPES[5];
    const layer = await createMoE({ ...configOf(shape, randomWeights(rng, shape)), wasmBuild: "simd-threads", threads: 2 });
    const control = (layer as unknown as { engine: { pool?: { control: Int32Array } } }).engine.pool?.control;
    try {
      expect(control).toBeInstanceOf(Int32Array);
      for (let run = 0; run < 2; run++) {
        layer.forwardSync(rng.normals(8 * shape.d), { train: true });
        await layer.backward(rng.normals(8 * shape.d), { weights: false });
        expect([control![CTL_JOB], control![CTL_RUN]]).toEqual([JOB_BACKWARD, run]);
        await layer.step({ lr: 1e-3, optimizer: "adam" });
        expect([control![CTL_JOB], control![CTL_RUN]]).toEqual([JOB_STEP, run]);
      }
    } finally {
      layer.dispose();
    }
  });
});

describe("backward on the pool against the single-threaded SIMD build", () => {
  it("the threaded layer's gradients equal those of wasmBuild simd (same kernels, one thread)", async () => {
    const rng = new Rng(77);
    const shape = SHAPES[2];
    const config = configOf(shape, randomWeights(rng, shape));
    const single = await createMoE({ ...config, wasmBuild: "simd" });
    const threaded = await createMoE({ ...config, wasmBuild: "simd-threads", threads: 2 });
    try {
      await trainAlike([single, threaded], shape, rng, [5, 64]);
    } finally {
      single.dispose();
      threaded.dispose();
    }
  });

  it("the pool's gradients are the gradients: dx and wGate against central differences of J", async () => {
    const rng = new Rng(5);
    const shape: LayerShape = { expert: "relu", noisy: false, d: 9, h: 16, n: 4, k: 2, wImportance: 0, wLoad: 0 };
    const config = configOf(shape, randomWeights(rng, shape));
    const layer = await createMoE({ ...config, wasmBuild: "simd-threads", threads: 2 });
    try {
      const batch = 6;
      const x = rng.normals(batch * shape.d);
      const dy = rng.normals(batch * shape.d);
      const j = (xs: Float32Array) => layer.forwardSync(xs, { train: true }).y.reduce((s, v, i) => s + v * dy[i], 0);
      j(x);
      const grads = await layer.backward(dy);
      // a direction along dx: J(x + εu) − J(x − εu) ≈ 2ε⟨dx, u⟩ (routing does not change for small ε)
      const eps = 1e-3;
      const plus = x.map((v, i) => v + eps * grads.x[i]);
      const minus = x.map((v, i) => v - eps * grads.x[i]);
      const fd = (j(plus) - j(minus)) / (2 * eps);
      const dot = grads.x.reduce((s, v) => s + v * v, 0);
      expect(relErr(fd, dot)).toBeLessThan(1e-2);
      expect(grads.wGate!.some((v) => v !== 0)).toBe(true);
    } finally {
      layer.dispose();
    }
  });
});

describe("relaxed-threads: threads 1 and 2 give the same bits", () => {
  if (!relaxedHere) {
    it("relaxed-threads is checked where relaxed SIMD validates (not in this host: Node 20 without --experimental-wasm-relaxed-simd)", () => {
      expect(bestWasmBuild()).toBe("simd");
    });
  }
  if (relaxedHere) {
    for (const shape of [SHAPES[0], SHAPES[1], SHAPES[5]]) {
      it(label(shape), async () => {
        const rng = new Rng(shape.d);
        const config = configOf(shape, randomWeights(rng, shape));
        const layers = await Promise.all([1, 2].map((threads) => createMoE({ ...config, wasmBuild: "relaxed-threads", threads })));
        try {
          await trainAlike(layers, shape, rng, [1, 8, 33, 64]);
        } finally {
          for (const layer of layers) layer.dispose();
        }
      });
    }
  }
});
