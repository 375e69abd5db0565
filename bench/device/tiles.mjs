// A sweep of the grouped GEMM's tile shape on a real GPU (bench/device/run.sh TILES=1): for each
// variant, a copy of dist/ with other TILE_M / THREAD_M / TILE_K / widest TILE_N constants
// (src/gpu/experts.ts), then the GPU forward's median ms at large batches and its y against the CPU.
//   node bench/device/tiles.mjs <out.json>
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { makeInput, makeWeights } from "../cases.mjs";

const root = new URL("../../", import.meta.url);
const VARIANTS = [
  { TILE_M: 32, THREAD_M: 4, TILE_K: 16, N: 64 }, // the shipped shape
  { TILE_M: 64, THREAD_M: 8, TILE_K: 16, N: 64 },
  { TILE_M: 64, THREAD_M: 4, TILE_K: 16, N: 64 },
  { TILE_M: 32, THREAD_M: 2, TILE_K: 16, N: 64 },
  { TILE_M: 64, THREAD_M: 8, TILE_K: 8, N: 128 },
  { TILE_M: 32, THREAD_M: 4, TILE_K: 8, N: 128 },
  { TILE_M: 16, THREAD_M: 2, TILE_K: 16, N: 64 },
];
const CASES = [
  { shape: { d: 512, h: 2048, n: 8, k: 2 }, expert: "relu", batches: [512, 4096] },
  { shape: { d: 1024, h: 1024, n: 64, k: 4 }, expert: "swiglu", batches: [512, 4096] },
  { shape: { d: 256, h: 512, n: 16, k: 2 }, expert: "relu", batches: [4096] },
];

const source = readFileSync(new URL("dist/index.js", root), "utf8");
const results = [];
for (const [i, v] of VARIANTS.entries()) {
  const dir = new URL(`build/tiles-${i}/`, root);
  cpSync(new URL("dist/", root), dir, { recursive: true });
  const patched = source
    .replace(/var TILE_M = \d+;/, `var TILE_M = ${v.TILE_M};`)
    .replace(/var THREAD_M = \d+;/, `var THREAD_M = ${v.THREAD_M};`)
    .replace(/var TILE_K = \d+;/, `var TILE_K = ${v.TILE_K};`)
    .replace(/width <= 32 \? 32 : 64;/, v.N === 128 ? "width <= 32 ? 32 : width <= 64 ? 64 : 128;" : "width <= 32 ? 32 : 64;");
  writeFileSync(new URL("index.js", dir), patched);
  const { createMoE } = await import(new URL("index.js", dir).href);
  for (const c of CASES) {
    const { d, h, n, k } = c.shape;
    const weights = makeWeights(c.shape, c.expert);
    let layer;
    try {
      layer = await createMoE({ dModel: d, dHidden: h, numExperts: n, k, expert: c.expert, weights, backend: "gpu" });
      for (const batch of c.batches) {
        const x = makeInput(batch, d);
        const first = await layer.forward(x);
        const cpu = layer.forwardSync(x);
        let diff = 0,
          ref = 0;
        for (let j = 0; j < cpu.y.length; j++) {
          diff = Math.max(diff, Math.abs(first.y[j] - cpu.y[j]));
          ref = Math.max(ref, Math.abs(cpu.y[j]));
        }
        const times = [];
        for (let r = 0; r < 9; r++) {
          const t0 = performance.now();
          await layer.forward(x);
          times.push(performance.now() - t0);
        }
        times.sort((a, b) => a - b);
        const flops = 2 * batch * d * n + batch * k * (c.expert === "swiglu" ? 6 : 4) * d * h;
        const row = {
          variant: v,
          case: `${c.expert} d${d} h${h} n${n} k${k}`,
          batch,
          ms: times[4],
          tflops: flops / times[4] / 1e9,
          relErr: diff / ref,
          backend: first.backend,
        };
        results.push(row);
        console.log(JSON.stringify(row));
      }
    } catch (error) {
      results.push({ variant: v, case: c.expert, error: String(error?.message ?? error) });
      console.log(`variant ${JSON.stringify(v)}: ${error?.message ?? error}`);
    } finally {
      layer?.dispose();
    }
    writeFileSync(process.argv[2] ?? "tiles.json", JSON.stringify(results, null, 1));
  }
}
process.exit(0);
