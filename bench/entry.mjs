// The suite's entry in Node, Deno and Bun (started by bench/run.mjs, one process per runtime):
//   <runtime> bench/entry.mjs '<json options>'
// options: { out, builds, peer, ortWeb, ortNode, plainJs, gpu, dtypes?, quantBuilds?, shapes?, experts?, batches?, roundMs?, rounds? }
//   ortWeb: thread counts of onnxruntime-web (wasm) to run, e.g. [1, 2]; ortNode: of onnxruntime-node (Node only)
//   dtypes: quantized dtypes (int8, int4, w8a8) of the builds named in quantBuilds; with int8 or int4,
//   in Node and Bun, the ORT configurations also run com.microsoft::QMoE at 8 or 4 bits ("qmoe8 web 1T", …)
// Writes the runtime's report (JSON) to options.out.
import { readFile, writeFile } from "node:fs/promises";
import { createMoE } from "../dist/index.js";
import { Bench } from "../node_modules/tinybench/dist/index.js";
import { ORT_EXPERTS, createOrtPeer, startOrtWeb } from "./peer-ort.mjs";
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

// ---- ONNX Runtime peers ----------------------------------------------------------------------------
const peers = [];
const notes = [];
const workers = [];
// ORT's QMoE at the bits of the quantized dtypes asked for (W8A8 is compared with the 8-bit one)
const qbits = [
  ["int8", 8],
  ["int4", 4],
].filter(([dt]) => options.dtypes?.includes(dt));
for (const threads of options.ortWeb ?? []) {
  const name = `ort-web ${threads}T`;
  if (runtime === "node" || runtime === "bun") {
    // one worker per thread count (bench/ort-web-node.mjs says why)
    try {
      const { startOrtWebWorker } = await import("./ort-web-node.mjs");
      const worker = startOrtWebWorker(threads);
      workers.push(worker);
      const ping = await worker.ping();
      peers.push({ name, experts: ORT_EXPERTS, create: (shape, expert) => worker.peer(shape, expert) });
      for (const [dtype, bits] of qbits) {
        peers.push({ name: `qmoe${bits} web ${threads}T`, dtype, experts: ORT_EXPERTS, create: (shape, expert) => worker.peer(shape, expert, bits) });
      }
      notes.push(
        `${name} runs onnxruntime-web in a worker thread of its own; a call's round trip to it (an empty message each way) takes ${ping.toFixed(3)} ms, included in its times`,
      );
    } catch (error) {
      notes.push(`${name} did not start: ${error?.message ?? error}`);
    }
  } else {
    // each thread count gets its own copy of the module (a distinct URL), as the wasm's thread count is fixed at its start;
    // Deno: the browser build (it bundles onnxruntime-common, so copies do not collide; its wasm comes by fetch(file:))
    try {
      const ort = await startOrtWeb(() => import(`../node_modules/onnxruntime-web/dist/ort.wasm.min.mjs?threads=${threads}`), threads);
      peers.push({ name, experts: ORT_EXPERTS, create: (shape, expert, weights) => createOrtPeer(ort, shape, expert, weights, { ep: "wasm", threads }) });
    } catch (error) {
      notes.push(`${name} did not start: ${error?.message ?? error}`);
    }
  }
}
if (runtime === "node" && options.ortNode?.length) {
  const { createRequire } = await import("node:module");
  const ortNode = createRequire(import.meta.url)("onnxruntime-node");
  for (const threads of options.ortNode) {
    peers.push({
      name: `ort-node ${threads}T`,
      experts: ORT_EXPERTS,
      create: (shape, expert, weights) => createOrtPeer(ortNode, shape, expert, weights, { ep: "cpu", threads }),
    });
    for (const [dtype, bits] of qbits) {
      peers.push({
        name: `qmoe${bits} node ${threads}T`,
        dtype,
        experts: ORT_EXPERTS,
        create: (shape, expert, weights) => createOrtPeer(ortNode, shape, expert, weights, { ep: "cpu", threads, bits }),
      });
    }
  }
  notes.push("onnxruntime-node: native CPU execution provider, intra-op threads as named, one inter-op thread, session.intra_op.allow_spinning = 0");
}

/** The OS's load: /proc/loadavg's runnable count where readable, else the 1-minute average. */
async function makeLoadReader() {
  const parse = (text) => {
    const [load1, , , now] = text.split(" ");
    return { running: Number(now.split("/")[0]), load1: Number(load1) };
  };
  if (g.Deno) {
    try {
      g.Deno.readTextFileSync("/proc/loadavg");
      return () => parse(g.Deno.readTextFileSync("/proc/loadavg"));
    } catch {
      return undefined;
    }
  }
  const { readFileSync } = await import("node:fs");
  const os = await import("node:os");
  try {
    readFileSync("/proc/loadavg", "utf8");
    return () => parse(readFileSync("/proc/loadavg", "utf8"));
  } catch {
    return () => ({ load1: os.loadavg()[0], cores: os.cpus().length });
  }
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
  peers,
  load: await makeLoadReader(),
  log: (line) => console.log(line),
});
if (tf) report.notes.push("TF.js runs one thread here: its wasm backend disables its threaded build in Node (tfjs#3830)");
report.notes.push(...notes);
for (const w of workers) await w.terminate();
await writeFile(options.out, JSON.stringify(report, null, 1));
console.log(`${runtime}: wrote ${options.out}`);
// workers of disposed layers are gone; anything else left (TF.js) must not keep the process alive
g.process?.exit?.(0);
g.Deno?.exit?.(0);
