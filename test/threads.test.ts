// The threaded builds (threads > 1: shared memory, a worker pool, src/cpu/threads.ts): every
// output has the same bits as the single-threaded build of the same SIMD kind, for every golden
// case and for random layers of many sizes and batch sizes, whatever the thread count; the
// backward pass works after a threaded forward; the threads option is validated.
import { beforeAll, describe, expect, it } from "vitest";
import { bestWasmBuild, createMoE, MoEError, type ForwardResult, type MoEConfig } from "edge-moe";
import { configOf, listCases, loadCase, randomWeights, relErr, Rng, sameBits, TOL, type LayerShape } from "./helpers.ts";

const relaxedHere = bestWasmBuild() === "relaxed";
/** The SIMD kinds this host runs: relaxed only where it validates (Node 20 needs a flag). */
const KINDS = relaxedHere ? (["simd", "relaxed"] as const) : (["simd"] as const);

function expectSame(got: ForwardResult, want: ForwardResult, what: string): void {
  for (const key of ["y", "topkIndices", "topkGates", "importance", "load"] as const) {
    const a = got[key],
      b = want[key];
    if (b === undefined) continue;
    expect(a, `${what}: ${key}`).toBeDefined();
    expect(sameBits(a!, b), `${what}: ${key} differs`).toBe(true);
  }
  expect(Object.is(got.lossImportance, want.lossImportance), `${what}: lossImportance`).toBe(true);
  expect(Object.is(got.lossLoad, want.lossLoad), `${what}: lossLoad`).toBe(true);
}

describe("threaded builds: the same bits as the single-threaded build, every golden case", () => {
  if (!relaxedHere) {
    it("relaxed-threads is checked where relaxed SIMD validates (not in this host: Node 20 without --experimental-wasm-relaxed-simd)", () => {
      expect(bestWasmBuild()).toBe("simd");
    });
  }
  for (const kind of KINDS) {
    for (const threads of [2, 3]) {
      it(`${kind}-threads with ${threads} threads`, async () => {
        for (const info of listCases()) {
          const golden = loadCase(info);
          const single = await createMoE({ ...golden.config, wasmBuild: kind });
          const threaded = await createMoE({ ...golden.config, wasmBuild: `${kind}-threads`, threads });
          try {
            const trainOptions = { train: true, noise: golden.noise };
            const want = single.forwardSync(golden.x, trainOptions);
            const got = threaded.forwardSync(golden.x, trainOptions);
            expectSame(got, want, `${info.name} train`);
            expect(relErr(got.y, golden.f32("y")), `${info.name}: y against the vectors`).toBeLessThanOrEqual(TOL);
            expectSame(threaded.forwardSync(golden.x), single.forwardSync(golden.x), `${info.name} eval`);
          } finally {
            single.dispose();
            threaded.dispose();
          }
        }
      });
    }
  }
});

describe("threaded builds: random layers, odd sizes, batches from 1 to hundreds", () => {
  const rng = new Rng(20260611);
  const shapes: LayerShape[] = [
    { d: 7, h: 5, n: 3, k: 2, expert: "relu", noisy: true },
    { d: 33, h: 65, n: 17, k: 3, expert: "gelu", noisy: true },
    { d: 64, h: 200, n: 5, k: 1, expert: "swiglu", noisy: false },
    { d: 130, h: 24, n: 64, k: 4, expert: "relu", noisy: false },
    { d: 40, h: 48, n: 2, k: 2, expert: "swiglu", noisy: true },
  ];
  for (const shape of shapes) {
    it(`${shape.expert} d=${shape.d} h=${shape.h} n=${shape.n} k=${shape.k}`, async () => {
      const config = configOf(shape, randomWeights(rng, shape));
      const single = await createMoE({ ...config, wasmBuild: "simd" });
      const threaded = await Promise.all([2, 4].map((threads) => createMoE({ ...config, wasmBuild: "simd-threads", threads })));
      try {
        for (const batch of [1, 2, 3, 5, 8, 31, 64, 300, 4]) {
          const x = rng.normals(batch * shape.d);
          const want = single.forwardSync(x, { train: true, seed: batch });
          for (const layer of threaded) expectSame(layer.forwardSync(x, { train: true, seed: batch }), want, `B=${batch}`);
        }
      } finally {
        single.dispose();
        for (const layer of threaded) layer.dispose();
      }
    });
  }
});

describe("threaded builds: backward after a threaded forward", () => {
  it("gives the same gradients as the single-threaded build", async () => {
    const rng = new Rng(7);
    const shape: LayerShape = { d: 24, h: 40, n: 6, k: 2, expert: "swiglu", noisy: true };
    const config = configOf(shape, randomWeights(rng, shape));
    const single = await createMoE({ ...config, wasmBuild: "simd" });
    const threaded = await createMoE({ ...config, wasmBuild: "simd-threads", threads: 2 });
    try {
      const x = rng.normals(37 * shape.d);
      const dy = rng.normals(37 * shape.d);
      await single.forward(x, { train: true, seed: 3 });
      await threaded.forward(x, { train: true, seed: 3 });
      const want = await single.backward(dy);
      const got = await threaded.backward(dy);
      const gradients = Object.entries(want) as Array<[keyof typeof want, Float32Array]>;
      expect(gradients.length).toBeGreaterThan(1);
      for (const [name, grad] of gradients) expect(sameBits(got[name]!, grad), `gradient ${name}`).toBe(true);
    } finally {
      single.dispose();
      threaded.dispose();
    }
  });
});

describe("the threads option", () => {
  const shape: LayerShape = { d: 8, h: 8, n: 4, k: 2, expert: "relu", noisy: false };
  let config: MoEConfig;
  beforeAll(() => {
    config = configOf(shape, randomWeights(new Rng(1), shape));
  });
  const codeOf = async (extra: Partial<MoEConfig>) => {
    try {
      (await createMoE({ ...config, ...extra } as MoEConfig)).dispose();
      return "ok";
    } catch (error) {
      return error instanceof MoEError ? error.code : String(error);
    }
  };

  it('rejects a thread count that is not an integer in [1, 256] or "auto"', async () => {
    for (const threads of [0, -1, 1.5, 257, "two"]) {
      expect(await codeOf({ threads: threads as never }), String(threads)).toBe("INVALID_CONFIG");
    }
  });
  it("rejects a single-threaded wasmBuild with threads > 1, naming the threaded one", async () => {
    await expect(createMoE({ ...config, wasmBuild: "simd", threads: 2 })).rejects.toThrow(/simd-threads/);
  });
  it('runs a threaded build with threads: 1 (no workers), and threads: "auto" with any build', async () => {
    expect(await codeOf({ wasmBuild: "simd-threads", threads: 1 })).toBe("ok");
    expect(await codeOf({ threads: "auto" })).toBe("ok");
    expect(await codeOf({ threads: "auto", wasmBuild: "simd" })).toBe("ok"); // a single-threaded build: 1 thread
  });
  it("fails every call after dispose() ended the workers", async () => {
    const layer = await createMoE({ ...config, wasmBuild: "simd-threads", threads: 2 });
    layer.dispose();
    await expect(layer.forward(new Float32Array(8))).rejects.toMatchObject({ code: "DISPOSED" });
  });
});
