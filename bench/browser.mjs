// The suite's entry in the browser page (bench/browser.html). Options come in the URL's hash;
// the report goes to window.benchResult, and window.benchDone tells bench/run.mjs it is there.
import { createMoE } from "../dist/browser.js";
import { Bench } from "../node_modules/tinybench/dist/index.js";
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
    log: (line) => console.log(line),
  });
}

main().then(
  (result) => { window.benchResult = result; },
  (error) => { window.benchResult = { error: String(error?.stack ?? error) }; },
).finally(() => { window.benchDone = true; });
