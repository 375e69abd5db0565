// Child-process checks of a threaded layer's worker pool (src/cpu/threads.ts), in Node, Deno or Bun:
//   undisposed     a layer used once and never disposed: the program must end by itself
//   global-worker  globalThis.Worker replaced by Node's worker_threads.Worker (as onnxruntime-web
//                  does): threads: 2 still works and gives the bits of threads: 1
//   gc             (node --expose-gc) layers collected without dispose() end their worker threads
// Prints "ok <mode>" on success; any failure throws (non-zero exit).
import { createMoE } from "../../dist/index.js";

const mode = (globalThis.Deno ? Deno.args : process.argv.slice(2))[0];
const config = { dModel: 8, dHidden: 16, numExperts: 4, k: 2, expert: "relu", init: { seed: 1 } };
const x = Float32Array.from({ length: 256 * 8 }, (_, i) => Math.sin(i));
const fail = (message) => {
  throw new Error(message);
};

if (mode === "undisposed") {
  const layer = await createMoE({ ...config, threads: 2 });
  const { y } = await layer.forward(x, { train: true, seed: 3 });
  if (!Number.isFinite(y[0])) fail("bad y");
  console.log("ok undisposed"); // and no dispose(): the runtime must exit on its own
} else if (mode === "global-worker") {
  globalThis.Worker = (await import("node:worker_threads")).Worker;
  const threaded = await createMoE({ ...config, threads: 2, wasmBuild: "simd-threads" });
  const single = await createMoE({ ...config, wasmBuild: "simd" });
  const a = await threaded.forward(x),
    b = await single.forward(x);
  if (!a.y.every((v, i) => Object.is(v, b.y[i]))) fail("threads: 2 differs from threads: 1");
  threaded.dispose();
  single.dispose();
  console.log("ok global-worker");
} else if (mode === "gc") {
  const { readFileSync } = await import("node:fs");
  const osThreads = () => Number(/Threads:\s+(\d+)/.exec(readFileSync("/proc/self/status", "utf8"))[1]);
  const settle = async (until, rounds = 100) => {
    for (let i = 0; i < rounds; i++) {
      globalThis.gc();
      await new Promise((resolve) => setTimeout(resolve, 50));
      if (until()) return true;
    }
    return false;
  };
  // one layer made and disposed first, so that whatever the runtime starts once is in the baseline
  (await createMoE({ ...config, threads: 2 })).dispose();
  await settle(() => false, 4);
  const base = osThreads();
  const kept = await createMoE({ ...config, threads: 3 });
  const want = (await kept.forward(x)).y;
  // made in a function of their own (an async frame that ends keeps no last layer alive), and held
  // here until the peak is read
  const dropped = new Set();
  await (async () => {
    for (let i = 0; i < 3; i++) {
      const layer = await createMoE({ ...config, threads: 3 });
      await layer.forward(x);
      dropped.add(layer);
    }
  })();
  const peak = osThreads();
  dropped.clear(); // never disposed: only the collector can end their threads
  if (peak < base + 2 + 6) fail(`expected 8 more threads while the layers live, ${base} → ${peak}`);
  if (!(await settle(() => osThreads() <= base + 2))) fail(`the collected layers' threads did not end: ${base} → ${peak} → ${osThreads()}`);
  const again = (await kept.forward(x)).y;
  if (!again.every((v, i) => Object.is(v, want[i]))) fail("the layer still referenced changed");
  kept.dispose();
  console.log(`ok gc (threads ${base} → ${peak} → ${osThreads()})`);
} else {
  fail(`unknown mode ${mode}`);
}
