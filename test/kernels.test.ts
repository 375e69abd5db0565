// The GEMM's code paths (assembly/gemm.ts, gemmPanels) against the float64 reference: one, two
// and three rows over groups of 4 or 2 panels plus the panels left over; four-row tiles with a
// 3-, 2- or 1-row tail; and row blocks (M above ~1 MiB of A: K = 2048 splits at 128 rows, K =
// 4096 at 64). k = n, so every expert gets every row (M = B) and no top-k choice is ambiguous.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { createMoE } from "edge-moe";
import { configOf, randomWeights, relErr, Rng, TOL, type LayerShape } from "./helpers.ts";
import { referenceForward, refLayer } from "./reference.ts";

const cases: Array<{ what: string; shape: LayerShape; batches: number[] }> = [
  {
    what: "M = 1, 2, 3 over 5 panels (groups of 4 or 2, then the rest); M = 4..7 (tails)",
    shape: { d: 20, h: 40, n: 2, k: 2, expert: "relu", noisy: false },
    batches: [1, 2, 3, 4, 5, 6, 7],
  },
  {
    what: "M = 1, 2, 3 over 2·(1 + 8) panels (swiglu's interleaved gate and up panels)",
    shape: { d: 16, h: 72, n: 3, k: 3, expert: "swiglu", noisy: false },
    batches: [1, 2, 3],
  },
  { what: "down-projection K = 2048: rows in blocks of 128", shape: { d: 12, h: 2048, n: 2, k: 2, expert: "gelu", noisy: false }, batches: [129, 300] },
  { what: "up-projection K = 4096: rows in blocks of 64", shape: { d: 4096, h: 16, n: 1, k: 1, expert: "relu", noisy: false }, batches: [65, 150] },
];

describe("GEMM paths against the float64 reference", () => {
  const rng = new Rng(5150);
  for (const { what, shape, batches } of cases) {
    it(what, async () => {
      const config = configOf(shape, randomWeights(rng, shape));
      const ref = refLayer(config);
      for (const wasmBuild of ["simd", "simd-threads"] as const) {
        const layer = await createMoE({ ...config, wasmBuild, threads: wasmBuild === "simd" ? 1 : 2 });
        try {
          for (const batch of batches) {
            const x = rng.normals(batch * shape.d);
            const got = layer.forwardSync(x);
            const want = referenceForward(ref, x, { train: false });
            expect(relErr(got.y, want.y), `${wasmBuild} B=${batch}: y`).toBeLessThanOrEqual(TOL);
            expect(Array.from(got.topkIndices), `${wasmBuild} B=${batch}: topkIndices`).toEqual(Array.from(want.topkIndices));
          }
        } finally {
          layer.dispose();
        }
      }
    });
  }
});

// Every tile of gemmPanels (4 × 8, the 4 × 8 that stores 3 rows (3-row tails), the 1- and 2-row
// tails of M ≥ 4 as 1 × 32 and 2 × 16 over groups of panels and 1 × 8, 2 × 8 on the panels left
// over; for M ≤ 3: 1 × 32, 2 × 16 and M = 3's 1 × 32 + 2 × 2 × 16 over groups of panels, and the
// panels left over; row blocks) against a float32 scalar
// reference, bit for bit: the simd build computes each element as acc = fl(acc + fl(a·b)) in k
// order from the bias, which Math.fround reproduces exactly (f32 sums and products rounded from
// float64 are correctly rounded). Also checks that nothing is stored outside the M × 8P block of C
// (the rows a tile computes but does not store, the row stride's slack).
describe("gemmPanels tiles against a float32 scalar reference (bits, simd build)", () => {
  const wasm = readFileSync(new URL("../dist/edge-moe.simd.wasm", import.meta.url));
  const rng = new Rng(6006);
  const SENTINEL = 0x7fc0_dead; // a NaN payload no arithmetic produces
  // [K, kPad, N, Ms]: every M mod 4 on both sides of 4, odd and even panel counts, a partial last
  // panel, kPad > K; K = 4096 splits rows into blocks of 64 (remainders 1, 2, 3 in the last block)
  const shapes: Array<[number, number, number, number[]]> = [
    [37, 37, 56, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]],
    [16, 19, 43, [1, 2, 3, 5, 6, 7]],
    [9, 9, 8, [1, 2, 3, 5, 6, 7]],
    [4096, 4096, 24, [65, 67, 130]],
  ];
  for (const [K, kPad, N, Ms] of shapes) {
    for (const withBias of [true, false]) {
      it(`K = ${K} (kPad ${kPad}), N = ${N}, M = ${Ms.join(", ")}, ${withBias ? "bias" : "no bias"}`, () => {
        const k = new WebAssembly.Instance(new WebAssembly.Module(wasm), {}).exports as unknown as {
          memory: WebAssembly.Memory;
          heapBase(): number;
          packPanelsB(src: number, k: number, n: number, ldSrc: number, dst: number, kPad: number, panelStep: number): void;
          gemmPanels(a: number, lda: number, m: number, k: number, bp: number, panels: number, kPad: number, c: number, ldc: number, bias: number): void;
        };
        const panels = Math.ceil(N / 8),
          np = panels * 8,
          ldc = np + 4,
          lda = K + 1;
        const maxM = Math.max(...Ms),
          cRows = maxM + 4;
        let at = (k.heapBase() + 15) & ~15;
        const alloc = (floats: number) => {
          const p = at;
          at += (floats * 4 + 15) & ~15;
          return p;
        };
        const src = alloc(K * N),
          bp = alloc(panels * kPad * 8),
          a = alloc(maxM * lda),
          bias = alloc(np),
          c = alloc(cRows * ldc);
        k.memory.grow(Math.max(0, Math.ceil((at - k.memory.buffer.byteLength) / 65536)));
        const f32 = new Float32Array(k.memory.buffer),
          u32 = new Uint32Array(k.memory.buffer);
        const bMat = Float32Array.from(rng.normals(K * N));
        const aMat = Float32Array.from(rng.normals(maxM * lda));
        const biasV = Float32Array.from(rng.normals(np));
        f32.set(bMat, src >> 2);
        f32.set(aMat, a >> 2);
        f32.set(biasV, bias >> 2);
        k.packPanelsB(src, K, N, N, bp, kPad, 1);
        for (const M of Ms) {
          u32.fill(SENTINEL, c >> 2, (c >> 2) + cRows * ldc);
          k.gemmPanels(a, lda, M, K, bp, panels, kPad, c, ldc, withBias ? bias : 0);
          const got = new Uint32Array(k.memory.buffer, c, cRows * ldc);
          const want = new Float32Array(1);
          const wantBits = new Uint32Array(want.buffer);
          let mismatches = 0,
            first = "";
          for (let r = 0; r < cRows; r++) {
            for (let j = 0; j < ldc; j++) {
              let expected: number;
              if (r >= M || j >= np) expected = SENTINEL;
              else {
                let acc = withBias ? biasV[j] : 0;
                if (j < N) for (let kk = 0; kk < K; kk++) acc = Math.fround(acc + Math.fround(aMat[r * lda + kk] * bMat[kk * N + j]));
                want[0] = acc;
                expected = wantBits[0];
              }
              if (got[r * ldc + j] !== expected && mismatches++ === 0) first = `C[${r}, ${j}]: ${got[r * ldc + j].toString(16)} ≠ ${expected.toString(16)}`;
            }
          }
          expect(mismatches, `M = ${M}: ${first}`).toBe(0);
        }
      });
    }
  }
});
