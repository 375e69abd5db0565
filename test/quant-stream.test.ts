// Expert tensors given per expert (weights.wUp = (e) => slice): the same layer, bit for bit, as the
// whole tensors; each slice asked for once, in expert order; packing through a staging block of
// columns (matrices larger than the block); the typed errors; and bench/mixtral-size.mjs (int4 and
// int8: y against the quantization rule, memory against the quantized bytes) in a child process.
import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { createMoE, MoEError, type MoEWeights } from "edge-moe";
import { configOf, randomWeights, Rng, sameBits, type LayerShape } from "./helpers.ts";

type Tensor = "w1" | "b1" | "w2" | "b2" | "wGateProj" | "wUp" | "wDown";
/** createMoE's weights (MoEWeightsInput: expert tensors may be functions of the expert). */
type WeightsInput = NonNullable<Parameters<typeof createMoE>[0]["weights"]>;

async function expectCode(promise: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  let error: unknown;
  try {
    await promise;
  } catch (e) {
    error = e;
  }
  expect(error, `expected ${code}`).toBeInstanceOf(MoEError);
  expect((error as MoEError).code).toBe(code);
  if (message) expect((error as MoEError).message).toMatch(message);
}

/** The expert tensors of `weights` as functions of the expert, recording the calls. */
function perExpert(weights: MoEWeights, n: number, calls: Array<[string, number]>): WeightsInput {
  const out: Record<string, unknown> = { ...weights };
  for (const name of ["w1", "b1", "w2", "b2", "wGateProj", "wUp", "wDown"] as Tensor[]) {
    const whole = weights[name];
    if (!whole) continue;
    const size = whole.length / n;
    out[name] = (e: number) => {
      calls.push([name, e]);
      return whole.slice(e * size, (e + 1) * size);
    };
  }
  return out as WeightsInput;
}

const x = (rng: Rng, rows: number, d: number) => rng.normals(rows * d, 1);

describe("expert tensors given per expert", () => {
  for (const [expert, dtype] of [
    ["relu", "int8"],
    ["swiglu", "int4"],
    ["gelu", "f32"],
    ["swiglu", "bf16"],
  ] as const) {
    it(`${expert}, ${dtype}: the same y, routing and getWeights() as the whole tensors, each slice asked for once in order`, async () => {
      const shape: LayerShape = { d: 24, h: 40, n: 5, k: 2, expert, noisy: false };
      const rng = new Rng(31);
      const weights = randomWeights(rng, shape);
      const input = x(rng, 7, shape.d);
      const whole = await createMoE({ ...configOf(shape, weights), dtype });
      const calls: Array<[string, number]> = [];
      const streamed = await createMoE({ ...configOf(shape, weights), weights: perExpert(weights, shape.n, calls), dtype });
      const a = await whole.forward(input);
      const b = await streamed.forward(input);
      expect(sameBits(a.y, b.y)).toBe(true);
      expect(sameBits(a.topkIndices, b.topkIndices)).toBe(true);
      const wa = await whole.getWeights();
      const wb = await streamed.getWeights();
      for (const name of Object.keys(wa) as Array<keyof MoEWeights>) expect(sameBits(wa[name]!, wb[name]!), name).toBe(true);
      // expert by expert, each of its tensors once
      const names = expert === "swiglu" ? ["wGateProj", "wUp", "wDown"] : ["w1", "w2", "b1", "b2"];
      expect(calls).toEqual(Array.from({ length: shape.n }, (_, e) => names.map((name) => [name, e])).flat());
      whole.dispose();
      streamed.dispose();
    });
  }

  it("a matrix larger than the staging block (2^20 floats) is packed block by block: f32 weights come back exactly", async () => {
    // w1 [64, 17000] per expert: 1.09 M floats, columns in blocks of 2048 (the last one 616 wide)
    const shape: LayerShape = { d: 64, h: 17000, n: 2, k: 1, expert: "relu", noisy: false };
    const weights = randomWeights(new Rng(5), shape);
    const layer = await createMoE({ ...configOf(shape, weights), weights: perExpert(weights, shape.n, []) });
    const back = await layer.getWeights();
    for (const name of ["w1", "w2", "b1", "b2"] as const) expect(sameBits(back[name]!, weights[name]!), name).toBe(true);
    layer.dispose();
  });

  it("a non-finite weight in a later block names its index in the whole tensor", async () => {
    const shape: LayerShape = { d: 64, h: 17000, n: 2, k: 1, expert: "relu", noisy: false };
    const weights = randomWeights(new Rng(6), shape);
    const at = 64 * 17000 + 50 * 17000 + 16900; // expert 1, row 50, column 16900 (the last block)
    weights.w1![at] = Number.NaN;
    await expectCode(
      createMoE({ ...configOf(shape, weights), weights: perExpert(weights, shape.n, []), dtype: "int4" }),
      "NON_FINITE_WEIGHT",
      new RegExp(`weights\\.w1\\[${at}\\] is NaN`),
    );
    await expectCode(createMoE({ ...configOf(shape, weights), dtype: "int4" }), "NON_FINITE_WEIGHT", new RegExp(`weights\\.w1\\[${at}\\] is NaN`));
  });

  it("a slice of the wrong length or type is WEIGHT_SHAPE, naming the expert", async () => {
    const shape: LayerShape = { d: 8, h: 16, n: 3, k: 1, expert: "swiglu", noisy: false };
    const weights = randomWeights(new Rng(7), shape);
    const given = perExpert(weights, shape.n, []);
    await expectCode(
      createMoE({ ...configOf(shape, weights), weights: { ...given, wUp: (e: number) => new Float32Array(e === 2 ? 5 : 128) } }),
      "WEIGHT_SHAPE",
      /weights\.wUp\(2\) must return a Float32Array of 128 floats/,
    );
    await expectCode(
      createMoE({ ...configOf(shape, weights), weights: { ...given, wDown: (() => [1, 2]) as unknown as (e: number) => Float32Array } }),
      "WEIGHT_SHAPE",
      /weights\.wDown\(0\)/,
    );
  });

  it("a function for a gating tensor is WEIGHT_SHAPE; with a shared expert it is INVALID_CONFIG", async () => {
    const shape: LayerShape = { d: 8, h: 16, n: 3, k: 1, expert: "swiglu", noisy: false };
    const weights = randomWeights(new Rng(8), shape);
    const given = perExpert(weights, shape.n, []);
    await expectCode(
      createMoE({ ...configOf(shape, weights), weights: { ...given, wGate: (() => weights.wGate) as unknown as Float32Array } }),
      "WEIGHT_SHAPE",
      /weights\.wGate must be a Float32Array/,
    );
    await expectCode(
      createMoE({
        ...configOf(shape, weights),
        weights: { ...given, sharedGateProj: new Float32Array(8 * 16), sharedUp: new Float32Array(8 * 16), sharedDown: new Float32Array(16 * 8) },
        shared: { dHidden: 16 },
      }),
      "INVALID_CONFIG",
      /shared expert/,
    );
  });
});

// bench/mixtral-size.mjs at the full size takes ~4 CPU-minutes per dtype (docs/numerics.md has its
// numbers); here it runs the same checks at a sixteenth of the weights (d 1024, f 3584).
describe("bench/mixtral-size.mjs: a layer built per expert, 8 experts, top-2, swiglu (d 1024, f 3584)", () => {
  for (const dtype of ["int4", "int8"]) {
    it(`${dtype}: y matches the quantization rule's float64 reference within 1e-4 of max|y|; wasm memory ≤ 1.15 × the quantized expert bytes + gating + arena`, () => {
      // A child process with a small JavaScript heap: the f32 layer never exists whole.
      const out = execFileSync(process.execPath, ["--max-old-space-size=256", "bench/mixtral-size.mjs", `--dtype=${dtype}`, "--d=1024", "--h=3584"], {
        encoding: "utf8",
        maxBuffer: 1 << 20,
      });
      const report = JSON.parse(out.trim().split("\n").at(-1)!);
      expect(report.relativeError).toBeLessThanOrEqual(1e-4);
      expect(report.memoryBytes).toBeLessThanOrEqual(1.15 * report.quantizedBytes + report.gatingBytes + report.arenaBytes);
      expect(report.ok).toBe(true);
    }, 300_000);
  }
});
