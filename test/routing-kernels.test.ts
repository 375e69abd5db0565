// The routing kernels of assembly/routing.ts (topkSoftmaxAll, topkSigmoidGrouped), called on the
// built simd wasm directly, against a float64 JavaScript reference: random logits, and logits
// drawn from a few integers so that scores, group scores and masked zeros tie (lower index first).
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Rng } from "./helpers.ts";

interface Kernels {
  memory: WebAssembly.Memory;
  heapBase(): number;
  topkSoftmaxAll(
    logits: number,
    b: number,
    n: number,
    k: number,
    renormalize: number,
    scale: number,
    topkIdx: number,
    topkGates: number,
    scratch: number,
  ): void;
  topkSigmoidGrouped(
    logits: number,
    b: number,
    n: number,
    k: number,
    bias: number,
    nGroup: number,
    topkGroup: number,
    renormalize: number,
    eps: number,
    scale: number,
    topkIdx: number,
    topkGates: number,
    scratch: number,
  ): void;
}

const wasm = readFileSync(new URL("../dist/edge-moe.simd.wasm", import.meta.url));

function instance() {
  const k = new WebAssembly.Instance(new WebAssembly.Module(wasm), {}).exports as unknown as Kernels;
  let at = (k.heapBase() + 15) & ~15;
  const alloc = (count: number) => {
    const p = at;
    at += (count * 4 + 15) & ~15;
    if (at > k.memory.buffer.byteLength) k.memory.grow(Math.ceil((at - k.memory.buffer.byteLength) / 65536));
    return p;
  };
  return { k, alloc };
}

/** Descending order, equal values by lower index. */
const order = (v: ArrayLike<number>) => Array.from({ length: v.length }, (_, i) => i).sort((a, b) => (v[b] > v[a] ? 1 : v[b] < v[a] ? -1 : a - b));

function refSoftmaxAll(logits: Float32Array, b: number, n: number, k: number, renorm: boolean, scale: number) {
  const idx: number[] = [],
    gates: number[] = [];
  for (let r = 0; r < b; r++) {
    const row = Array.from(logits.subarray(r * n, (r + 1) * n));
    const m = Math.max(...row);
    const e = row.map((v) => Math.exp(v - m));
    const total = e.reduce((a, c) => a + c, 0);
    const chosen = order(row).slice(0, k);
    const kept = chosen.reduce((a, i) => a + e[i], 0);
    for (const i of chosen) {
      idx.push(i);
      gates.push((e[i] / (renorm ? kept : total)) * scale);
    }
  }
  return { idx, gates };
}

function refSigmoidGrouped(
  logits: Float32Array,
  b: number,
  n: number,
  k: number,
  bias: Float32Array | undefined,
  nGroup: number,
  topkGroup: number,
  renorm: boolean,
  eps: number,
  scale: number,
) {
  const f = Math.fround;
  const idx: number[] = [],
    gates: number[] = [];
  const size = n / nGroup;
  for (let r = 0; r < b; r++) {
    // the selection is discrete: its inputs are the float32 values the kernel compares
    const scores = Array.from(logits.subarray(r * n, (r + 1) * n), (v) => f(1 / (1 + Math.exp(-v))));
    let choice = scores.map((s, i) => (bias ? f(s + bias[i]) : s));
    if (nGroup > 1) {
      const groupScores = Array.from({ length: nGroup }, (_, g) => {
        const top2 = order(choice.slice(g * size, (g + 1) * size)).slice(0, 2);
        return f(choice[g * size + top2[0]] + choice[g * size + top2[1]]);
      });
      const kept = new Set(order(groupScores).slice(0, topkGroup));
      choice = choice.map((v, i) => (kept.has(Math.floor(i / size)) ? v : 0));
    }
    const chosen = order(choice).slice(0, k);
    const sum = chosen.reduce((a, i) => a + scores[i], 0) + eps;
    for (const i of chosen) {
      idx.push(i);
      gates.push((renorm ? scores[i] / sum : scores[i]) * scale);
    }
  }
  return { idx, gates };
}

function logitsOf(rng: Rng, count: number, ties: boolean): Float32Array {
  return ties ? Float32Array.from({ length: count }, () => Math.floor(rng.uniform() * 4) - 2) : Float32Array.from(rng.normals(count), (v) => 2 * v);
}

const closeTo = (got: Float32Array, want: number[]) => {
  const err = want.reduce((m, w, i) => Math.max(m, Math.abs(got[i] - w) / Math.max(1, Math.abs(w))), 0);
  expect(err).toBeLessThan(2e-6);
};

describe("topkSoftmaxAll: softmax over all n, top-k, optional renormalisation and scale", () => {
  const rng = new Rng(4242);
  const shapes: Array<[number, number]> = [
    [1, 1],
    [4, 1],
    [4, 2],
    [8, 2],
    [8, 8],
    [60, 4],
    [64, 6],
    [256, 8],
  ];
  for (const [n, k] of shapes) {
    for (const ties of [false, true]) {
      it(`n = ${n}, k = ${k}${ties ? ", tied logits" : ""}`, () => {
        const { k: w, alloc } = instance();
        const b = 9;
        const logits = logitsOf(rng, b * n, ties);
        const pL = alloc(b * n),
          pI = alloc(b * k),
          pG = alloc(b * k),
          pS = alloc(2 * k);
        new Float32Array(w.memory.buffer).set(logits, pL >> 2);
        for (const [renorm, scale] of [
          [0, 1],
          [1, 1],
          [0, 2.5],
          [1, 0.5],
        ] as const) {
          w.topkSoftmaxAll(pL, b, n, k, renorm, scale, pI, pG, pS);
          const want = refSoftmaxAll(logits, b, n, k, renorm === 1, scale);
          expect(Array.from(new Int32Array(w.memory.buffer, pI, b * k)), `renorm ${renorm}`).toEqual(want.idx);
          closeTo(new Float32Array(w.memory.buffer, pG, b * k), want.gates);
        }
      });
    }
  }
});

describe("topkSigmoidGrouped: sigmoid, choice bias, group-limited top-k, weights from unbiased scores", () => {
  const rng = new Rng(777);
  // [n, nGroup, topkGroup, k]
  const shapes: Array<[number, number, number, number]> = [
    [8, 4, 2, 3],
    [8, 4, 2, 4],
    [16, 4, 1, 4],
    [6, 1, 1, 2],
    [8, 2, 2, 8],
    [64, 8, 3, 6],
    [256, 8, 4, 8],
    [10, 5, 5, 1],
  ];
  for (const [n, nGroup, topkGroup, k] of shapes) {
    for (const ties of [false, true]) {
      it(`n = ${n}, ${nGroup} groups keep ${topkGroup}, k = ${k}${ties ? ", tied logits" : ""}`, () => {
        const { k: w, alloc } = instance();
        const b = 9;
        const logits = logitsOf(rng, b * n, ties);
        // negative biases make biased choices < 0, so a dropped group's 0.0 can outrank them
        const bias = ties ? Float32Array.from({ length: n }, (_, i) => (i % 3 === 0 ? -1 : 0)) : Float32Array.from(rng.normals(n), (v) => 0.7 * v);
        const cap = Math.max(k, topkGroup, 2);
        const pL = alloc(b * n),
          pB = alloc(n),
          pI = alloc(b * k),
          pG = alloc(b * k),
          pS = alloc(2 * n + nGroup + 2 * cap);
        const f32 = new Float32Array(w.memory.buffer);
        f32.set(logits, pL >> 2);
        f32.set(bias, pB >> 2);
        for (const [useBias, renorm, eps, scale] of [
          [1, 1, 1e-20, 2.5],
          [1, 0, 0, 1],
          [0, 1, 0, 1],
          [0, 0, 0, 16],
        ] as const) {
          w.topkSigmoidGrouped(pL, b, n, k, useBias ? pB : 0, nGroup, topkGroup, renorm, eps, scale, pI, pG, pS);
          const want = refSigmoidGrouped(logits, b, n, k, useBias ? bias : undefined, nGroup, topkGroup, renorm === 1, Math.fround(eps), scale);
          expect(Array.from(new Int32Array(w.memory.buffer, pI, b * k)), `bias ${useBias} renorm ${renorm}`).toEqual(want.idx);
          closeTo(new Float32Array(w.memory.buffer, pG, b * k), want.gates);
        }
      });
    }
  }

  it("a dropped group's expert (masked to 0.0) outranks kept experts whose biased scores are negative", () => {
    const { k: w, alloc } = instance();
    // 4 experts in 2 groups; group 0 is kept (scores + 0 bias), group 1's biased scores are ≈ −0.5,
    // group 0's expert 1 has a biased score ≈ −0.3: the masked 0.0 of experts 2 and 3 beat it.
    const logits = Float32Array.from([3, 0, 0, 0]);
    const bias = Float32Array.from([0, -0.8, -1, -1]);
    const pL = alloc(4),
      pB = alloc(4),
      pI = alloc(3),
      pG = alloc(3),
      pS = alloc(64);
    new Float32Array(w.memory.buffer).set(logits, pL >> 2);
    new Float32Array(w.memory.buffer).set(bias, pB >> 2);
    w.topkSigmoidGrouped(pL, 1, 4, 3, pB, 2, 1, 0, 0, 1, pI, pG, pS);
    expect(Array.from(new Int32Array(w.memory.buffer, pI, 3))).toEqual([0, 2, 3]);
    closeTo(new Float32Array(w.memory.buffer, pG, 3), [1 / (1 + Math.exp(-3)), 0.5, 0.5]);
  });
});
