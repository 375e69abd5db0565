// The suite's entry in the browser page (bench/browser.html). Options come in the URL's hash;
// the report goes to window.benchResult, and window.benchDone tells bench/run.mjs it is there.
import { createMoE } from "../dist/browser.js";
import { Bench } from "../node_modules/tinybench/dist/index.js";
import { ORT_EXPERTS, createOrtPeer, startOrtWeb } from "./peer-ort.mjs";
import { runSuite } from "./suite.mjs";

async function compileProbe(name) {
  try {
    return await WebAssembly.compileStreaming(fetch(`../build/bench/${name}.wasm`));
  } catch {
    return undefined;
  }
}

async function main() {
  const options = JSON.parse(decodeURIComponent(location.hash.slice(1)));
  let tf;
  let tfThreads = 1;
  if (options.peer) {
    tf = globalThis.tf;
    tf.wasm.setWasmPaths(new URL("../node_modules/@tensorflow/tfjs-backend-wasm/dist/", location.href).href);
    tf.wasm.setThreadsCount(options.tfThreads ?? 1);
    await tf.setBackend("wasm");
    await tf.ready();
    tfThreads = tf.wasm.getThreadsCount();
    if ((options.tfThreads ?? 1) > 1 && tfThreads < 2) return { peerThreads: tfThreads };
  }
  // onnxruntime-web, one copy of the module per thread count (a distinct URL): its wasm's thread count is fixed at its start
  const peers = [];
  for (const threads of options.ortWeb ?? []) {
    const ort = await startOrtWeb(() => import(`../node_modules/onnxruntime-web/dist/ort.wasm.min.mjs?threads=${threads}`), threads);
    peers.push({
      name: `ort-web ${threads}T`,
      experts: ORT_EXPERTS,
      create: (shape, expert, weights) => createOrtPeer(ort, shape, expert, weights, { ep: "wasm", threads }),
    });
  }
  const version = /Chrome\/([\d.]+)/.exec(navigator.userAgent)?.[1] ?? navigator.userAgent;
  return runSuite({
    ...options,
    runtime: "chromium",
    version,
    createMoE,
    Bench,
    probes: { simd: await compileProbe("machine-simd"), relaxed: await compileProbe("machine-relaxed") },
    tf,
    tfThreads,
    peers,
    log: (line) => console.log(line),
  });
}

main()
  .then(
    (result) => {
      window.benchResult = result;
    },
    (error) => {
      window.benchResult = { error: String(error?.stack ?? error) };
    },
  )
  .finally(() => {
    window.benchDone = true;
  });
