// The suite's entry in Node, Deno and Bun (started by bench/run.mjs, one process per runtime):
//   <runtime> bench/entry.mjs '<json options>'
// options: { out, builds, peer, plainJs, gpu, shapes?, experts?, batches?, roundMs?, rounds? }
// Writes the runtime's report (JSON) to options.out.
import { readFile, writeFile } from "node:fs/promises";
import { createMoE } from "../dist/index.js";
import { Bench } from "../node_modules/tinybench/dist/index.js";
import { runSuite } from "./suite.mjs";

const g = globalThis;
const argv = g.Deno ? g.Deno.args : g.process.argv.slice(2);
const options = JSON.parse(argv[0]);
const runtime = g.Deno ? "deno" : g.Bun ? "bun" : "node";
const version = g.Deno ? g.Deno.version.deno : g.Bun ? g.Bun.version : g.process.versions.node;
const here = new URL(".", import.meta.url);

async function compileProbe(name) {
  try {
    return await WebAssembly.compile(await readFile(new URL(`../build/bench/${name}.wasm`, here)));
  } catch {
    return undefined; // e.g. relaxed SIMD missing in this runtime
  }
}

let tf;
if (options.peer) {
  // TF.js's wasm backend, one thread (it disables threads in Node: tfjs#3830).
  tf = await import("@tensorflow/tfjs-core");
  await import("@tensorflow/tfjs-backend-wasm");
  await tf.setBackend("wasm");
  await tf.ready();
}

const report = await runSuite({
  ...options,
  runtime,
  version,
  createMoE,
  Bench,
  probes: { simd: await compileProbe("machine-simd"), relaxed: await compileProbe("machine-relaxed") },
  tf,
  tfThreads: 1,
  log: (line) => console.log(line),
});
if (tf) report.notes.push("TF.js runs one thread here: its wasm backend disables its threaded build in Node (tfjs#3830)");
await writeFile(options.out, JSON.stringify(report, null, 1));
console.log(`${runtime}: wrote ${options.out}`);
// workers of disposed layers are gone; anything else left (TF.js) must not keep the process alive
g.process?.exit?.(0);
g.Deno?.exit?.(0);
