// The GEMM's code paths (assembly/gemm.ts, gemmPanels) against the float64 reference: one, two
// and three rows over groups of 4 or 2 panels plus the panels left over; four-row tiles with a
// 3-, 2- or 1-row tail; and row blocks (M above ~1 MiB of A: K = 2048 splits at 128 rows, K =
// 4096 at 64). k = n, so every expert gets every row (M = B) and no top-k choice is ambiguous.
import { describe, expect, it } from "vitest";
import { createMoE } from "edge-moe";
import { configOf, randomWeights, relErr, Rng, TOL, type LayerShape } from "./helpers.ts";
import { referenceForward, refLayer } from "./reference.ts";

const cases: Array<{ what: string; shape: LayerShape; batches: number[] }> = [
  { what: "M = 1, 2, 3 over 5 panels (groups of 4 or 2, then the rest); M = 4..7 (tails)", shape: { d: 20, h: 40, n: 2, k: 2, expert: "relu", noisy: false }, batches: [1, 2, 3, 4, 5, 6, 7] },
  { what: "M = 1, 2, 3 over 2·(1 + 8) panels (swiglu's interleaved gate and up panels)", shape: { d: 16, h: 72, n: 3, k: 3, expert: "swiglu", noisy: false }, batches: [1, 2, 3] },
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
