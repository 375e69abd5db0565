// Soak test: many calls on one layer, and many create/dispose cycles, watching the process's memory.
//
//   node --expose-gc scripts/soak.mjs [--calls 100000] [--cycles 1000] [--threads 1,2] [--every 10000]
//                                     [--heap-mb 16] [--rss-mb 96]
//
// Per thread count: `calls` calls on one layer (forwards in eval and training mode, with seeds, given
// noise and the layer's own stream, batch sizes 1 to 16; every third training forward followed by
// backward and an SGD or Adam step), then `cycles` create → forward → dispose cycles. Every `every`
// calls (and every cycles/10 cycles) it runs global.gc() and prints process.memoryUsage() as one
// JSON line. It exits 1 when, over the second half of a phase (from its middle report to its last),
// heapUsed + external grew by more than --heap-mb MiB or rss by more than --rss-mb MiB: at the
// defaults, a leak of more than about 340 bytes per call or 33 KiB per layer fails.
import { createMoE } from "../dist/index.js";

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? args[at + 1] : fallback;
};
const CALLS = Number(option("calls", 100_000));
const CYCLES = Number(option("cycles", 1_000));
const THREADS = String(option("threads", "1,2")).split(",").map(Number);
const EVERY = Number(option("every", Math.min(10_000, Math.max(1, Math.floor(CALLS / 5)))));
const HEAP_MB = Number(option("heap-mb", 16));
const RSS_MB = Number(option("rss-mb", 96));
if (typeof globalThis.gc !== "function") {
  console.error("run with node --expose-gc scripts/soak.mjs");
  process.exit(2);
}

const MiB = 2 ** 20;
const config = { dModel: 32, dHidden: 48, numExperts: 8, k: 2, expert: "gelu", init: { seed: 3 }, seed: 9 };
const { dModel: d, numExperts: n } = config;
let state = 12345;
const random = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5;
const inputs = Array.from({ length: 16 }, (_, i) => Float32Array.from({ length: (i + 1) * d }, random));
const noises = Array.from({ length: 16 }, (_, i) => Float32Array.from({ length: (i + 1) * n }, () => 2 * random()));

function measure() {
  globalThis.gc();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed + m.external, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
}

const failures = [];
function phase(name) {
  const reports = [];
  return {
    report(extra) {
      const m = measure();
      reports.push(m);
      console.log(
        JSON.stringify({
          phase: name,
          ...extra,
          rssMiB: +(m.rss / MiB).toFixed(1),
          heapPlusExternalMiB: +(m.heap / MiB).toFixed(1),
          heapUsedMiB: +(m.heapUsed / MiB).toFixed(1),
          externalMiB: +(m.external / MiB).toFixed(1),
          arrayBuffersMiB: +(m.arrayBuffers / MiB).toFixed(1),
        }),
      );
    },
    check() {
      if (reports.length < 2) return;
      // From the middle report to the last: the first half is the warm-up (V8 releases the
      // backing stores of collected wasm memories in steps, then holds steady); a leak goes on.
      const first = reports[(reports.length - 1) >> 1],
        last = reports[reports.length - 1];
      const heapGrowth = (last.heap - first.heap) / MiB,
        rssGrowth = (last.rss - first.rss) / MiB;
      const ok = heapGrowth <= HEAP_MB && rssGrowth <= RSS_MB;
      console.log(
        JSON.stringify({
          phase: name,
          heapGrowthMiB: +heapGrowth.toFixed(2),
          rssGrowthMiB: +rssGrowth.toFixed(2),
          boundHeapMiB: HEAP_MB,
          boundRssMiB: RSS_MB,
          ok,
        }),
      );
      if (!ok) failures.push(`${name}: heap+external grew ${heapGrowth.toFixed(2)} MiB, rss ${rssGrowth.toFixed(2)} MiB`);
    },
  };
}

/** One call of the mix; returns a number from its result so nothing is optimized away. */
async function oneCall(layer, i) {
  const b = (i * 7) % 16;
  const x = inputs[b];
  switch (i % 6) {
    case 0:
      return (await layer.forward(x)).y[0];
    case 1:
      return (await layer.forward(x, { train: true, seed: i })).lossLoad;
    case 2:
      return (await layer.forward(x, { train: true, noise: noises[b] })).y[0];
    case 3: {
      const { y } = await layer.forward(x, { train: true });
      const dy = y.map((v) => v * 1e-3);
      const grads = await layer.backward(dy, { weights: (i & 1) === 0 });
      await layer.step({ lr: 1e-3, optimizer: i % 4 === 3 ? "adam" : "sgd" });
      return grads.x[0];
    }
    case 4:
      return (await layer.forward(x, { out: { y: new Float32Array(x.length) } })).y[0];
    default:
      return layer.forwardSync(x, { train: true, seed: 7 }).topkIndices[0];
  }
}

let sink = 0;
const started = performance.now();
for (const threads of THREADS) {
  const build = threads > 1 ? { threads, wasmBuild: "simd-threads" } : { wasmBuild: "simd" };
  const layer = await createMoE({ ...config, ...build });
  const calls = phase(`calls, ${threads} thread(s)`);
  const warmUp = Math.min(EVERY, 1_000);
  for (let i = 0; i < warmUp; i++) sink += await oneCall(layer, i);
  calls.report({ calls: 0 });
  for (let i = 1; i <= CALLS; i++) {
    sink += await oneCall(layer, i);
    if (i % EVERY === 0 || i === CALLS) calls.report({ calls: i });
  }
  layer.dispose();
  calls.check();

  const cycles = phase(`create/dispose, ${threads} thread(s)`);
  const every = Math.max(1, Math.floor(CYCLES / 10));
  const cycle = async () => {
    const l = await createMoE({ ...config, ...build });
    sink += (await l.forward(inputs[3])).y[0];
    l.dispose();
  };
  // warm-up: as many cycles as between two reports (V8's caches and the allocator settle first)
  for (let c = 0; c < every; c++) await cycle();
  cycles.report({ cycles: 0 });
  for (let c = 1; c <= CYCLES; c++) {
    await cycle();
    if (c % every === 0 || c === CYCLES) cycles.report({ cycles: c });
  }
  cycles.check();
}
console.log(JSON.stringify({ done: true, seconds: +((performance.now() - started) / 1000).toFixed(1), finite: Number.isFinite(sink), failures }));
process.exit(failures.length === 0 && Number.isFinite(sink) ? 0 : 1);
