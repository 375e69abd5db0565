// Diagnostic (memory-bound rows): what one forward costs on cold caches beyond its weight
// stream. For each case: the layer as benchmarked, and the same layer with 8-wide experts (its
// weights ~1/h of the real ones: what is left is the call's fixed cost). Each sample flushes the
// caches as the suite does (a 64 MiB read), then times one cold call and right after it one warm
// call of the same input. Also prints the bytes of the call's weights and the rate they imply, and
// the cold time of the engine alone: the layer's CPU engine (internal: layer.engine) running the
// gating and the expert pass without the API around them (checks, outputs), a bound on what any
// JavaScript around the kernels could reach, and of its gating alone (x in and checked, the gating
// GEMM, top-k, the plan): the work done before the first expert weight can be read.
//   node --no-liftoff bench/diagnostics/cold-call.mjs [--cases=relu-256,relu-512] [--batch=1] [--samples=60] [--build=simd]
//        [--threads=2 (with --build=simd-threads or relaxed-threads)]
// Needs `npm run build` (dist/) and the machine probes (build/bench/machine-simd.wasm: bench/run.mjs --probes-only).
import { readFileSync } from "node:fs";
import { createMoE } from "../../dist/index.js";
import { EXPERTS, SHAPES, expertBytes, makeInput, makeWeights } from "../cases.mjs";

const root = new URL("../../", import.meta.url).pathname;
const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const [k, v] = a.replace(/^--/, "").split("=");
    return [k, v ?? true];
  }),
);
const SAMPLES = Number(args.samples ?? 60);
const BATCH = Number(args.batch ?? 1);
const BUILD = String(args.build ?? "simd");
const THREADS = Number(args.threads ?? 1);
const cases = String(args.cases ?? "relu-256,relu-512,relu-1024")
  .split(",")
  .map((name) => {
    const [expert, d] = name.split("-");
    const shape = SHAPES.find((s) => s.d === Number(d));
    if (!shape || !EXPERTS.includes(expert)) throw new Error(`unknown case ${name} (relu-512, swiglu-256, …)`);
    return { name, expert, shape };
  });

// the suite's cache flush (bench/suite.mjs makeEvictor)
const probe = new WebAssembly.Instance(new WebAssembly.Module(readFileSync(`${root}build/bench/machine-simd.wasm`)), {}).exports;
const FLUSH = 64 * 2 ** 20;
const base = (probe.heapBase() + 63) & ~63;
probe.memory.grow(Math.ceil((base + FLUSH - probe.memory.buffer.byteLength) / 65536));
probe.fillBytes(base, FLUSH);
const flush = () => probe.readBytes(base, FLUSH);

const quantiles = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return [0.1, 0.5, 0.9].map((q) => s[Math.floor(q * s.length)] * 1000);
};
const us = (q) => q.map((v) => v.toFixed(0)).join(" / ");

console.log(`B = ${BATCH}, ${BUILD} ${THREADS}T, ${SAMPLES} samples; µs per call, 10th / 50th / 90th percentile`);
console.log(
  "| case | h | weights read | cold | warm | cold − warm | weight rate cold (median) | engine alone, cold | its gating alone, cold | timer alone, cold |",
);
console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const { name, expert, shape } of cases) {
  for (const h of [8, shape.h]) {
    const s = { ...shape, h };
    const layer = await createMoE({
      dModel: s.d,
      dHidden: h,
      numExperts: s.n,
      k: s.k,
      expert,
      weights: makeWeights(s, expert),
      wasmBuild: BUILD,
      threads: THREADS,
    });
    const x = makeInput(BATCH, s.d);
    const out = { y: new Float32Array(BATCH * s.d), topkIndices: new Int32Array(BATCH * s.k) };
    const touched = new Set(layer.forwardSync(x).topkIndices).size;
    for (let i = 0; i < 20; i++) layer.forwardSync(x, { out });
    const engine = layer.engine;
    const seed = { key: 1, stream: 0 };
    const cold = [],
      warm = [],
      bare = [],
      gating = [],
      timer = [];
    const time = (into, fn) => {
      const t0 = performance.now();
      fn();
      into.push(performance.now() - t0);
    };
    const forward = () => layer.forwardSync(x, { out });
    const gate = () => engine.gate(x, BATCH, false, undefined, seed);
    for (let r = 0; r < SAMPLES; r++) {
      flush();
      time(cold, forward);
      time(warm, forward); // right after the cold call
      flush();
      time(bare, () => {
        gate();
        engine.runExperts(BATCH);
      });
      flush();
      time(gating, gate);
      flush();
      time(timer, () => {});
    }
    layer.dispose();
    const bytes = touched * expertBytes(s, expert) + 4 * s.d * s.n;
    const c = quantiles(cold),
      w = quantiles(warm);
    console.log(
      `| ${name} | ${h} | ${(bytes / 2 ** 20).toFixed(2)} MiB | ${us(c)} | ${us(w)} | ${(c[1] - w[1]).toFixed(0)} | ${(bytes / c[1] / 1e3).toFixed(1)} GB/s | ${us(quantiles(bare))} | ${us(quantiles(gating))} | ${us(quantiles(timer))} |`,
    );
  }
}
