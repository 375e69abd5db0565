// The routing plan (src/plan.ts): the JavaScript counting sort that a slice of a plan uses gives
// the same plan as the kernels' buildPlan (assembly/experts.ts), and a slice of rows is the plan
// of those rows alone.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { planOf } from "../src/plan.ts";
import { Rng } from "./helpers.ts";

interface PlanKernels {
  memory: WebAssembly.Memory;
  heapBase(): number;
  buildPlan(topkIdx: number, b: number, k: number, n: number, expertOffsets: number, pairOf: number, posOf: number): void;
}

const wasm = readFileSync(new URL("../dist/edge-moe.simd.wasm", import.meta.url));
const { instance } = await WebAssembly.instantiate(wasm, { env: { abort: () => undefined } });
const K = instance.exports as unknown as PlanKernels;

/** Distinct experts per row, as the top-k gives them. */
function randomTopk(rng: Rng, batch: number, k: number, n: number): Int32Array {
  const idx = new Int32Array(batch * k);
  for (let r = 0; r < batch; r++) {
    const experts = Array.from({ length: n }, (_, e) => e);
    for (let s = 0; s < k; s++) {
      const pick = s + Math.floor(rng.uniform() * (n - s));
      [experts[s], experts[pick]] = [experts[pick], experts[s]];
      idx[r * k + s] = experts[s];
    }
  }
  return idx;
}

function kernelPlan(topk: Int32Array, batch: number, k: number, n: number) {
  const base = (K.heapBase() + 63) & ~63;
  const pairs = batch * k;
  const need = base + 4 * (2 * pairs + n + 1) + 1024;
  if (need > K.memory.buffer.byteLength) K.memory.grow(Math.ceil((need - K.memory.buffer.byteLength) / 65536));
  const at = { topk: base, offsets: base + 4 * pairs, pairOf: base + 4 * (pairs + n + 1), posOf: base + 4 * (2 * pairs + n + 1) };
  new Int32Array(K.memory.buffer, at.topk, pairs).set(topk);
  K.buildPlan(at.topk, batch, k, n, at.offsets, at.pairOf, at.posOf);
  const view = (ptr: number, len: number) => Array.from(new Int32Array(K.memory.buffer, ptr, len));
  return { expertOffsets: view(at.offsets, n + 1), pairOf: view(at.pairOf, pairs), posOf: view(at.posOf, pairs) };
}

describe("the routing plan", () => {
  const rng = new Rng(777);
  for (const [batch, k, n] of [
    [1, 1, 1],
    [5, 2, 8],
    [37, 4, 7],
    [64, 3, 3],
    [200, 1, 16],
  ]) {
    it(`B = ${batch}, k = ${k}, n = ${n}: planOf equals the kernels' buildPlan; pairOf and posOf are inverse`, () => {
      const topk = randomTopk(rng, batch, k, n);
      const x = rng.normals(batch * 3);
      const plan = planOf(x, topk, new Float32Array(batch * k), k, n);
      const want = kernelPlan(topk, batch, k, n);
      expect(Array.from(plan.expertOffsets)).toEqual(want.expertOffsets);
      expect(Array.from(plan.pairOf)).toEqual(want.pairOf);
      expect(Array.from(plan.posOf)).toEqual(want.posOf);
      for (let q = 0; q < batch * k; q++) expect(plan.pairOf[plan.posOf[q]]).toBe(q);
      expect(plan.dModel).toBe(3);
      expect(Object.isFrozen(plan)).toBe(true);
    });
  }

  it("a slice of rows is the plan of those rows alone, over the same x and gates", () => {
    const [batch, k, n] = [50, 2, 6];
    const topk = randomTopk(rng, batch, k, n);
    const gates = rng.normals(batch * k);
    const x = rng.normals(batch * 4);
    const plan = planOf(x, topk, gates, k, n);
    const slice = plan.slice(20, 13);
    expect(slice.batch).toBe(13);
    expect(Array.from(slice.x)).toEqual(Array.from(x.subarray(80, 132)));
    expect(Array.from(slice.topkGates)).toEqual(Array.from(gates.subarray(40, 66)));
    const want = kernelPlan(topk.subarray(40, 66), 13, k, n);
    expect(Array.from(slice.expertOffsets)).toEqual(want.expertOffsets);
    expect(Array.from(slice.pairOf)).toEqual(want.pairOf);
    expect(() => plan.slice(45, 10)).toThrow(RangeError);
  });
});
