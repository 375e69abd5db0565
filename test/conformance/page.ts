// Conformance entry for a browser page (test/runtimes.test.ts serves it to headless Chromium):
// the suite on the page, then inside edge-moe/worker, then on the GPU where the browser has an
// adapter. Leaves { page, worker, gpu } report texts (or { error }) in `window.__conformance`.
import { createMoE, createMoEWorker, MoEError, type MoEConfig } from "edge-moe";
import { Report, runConformance, runLoaderChecks } from "./suite.ts";
import { buildSelectionChecks, hostVariants } from "./host.ts";

const TINY: MoEConfig = {
  dModel: 1,
  dHidden: 1,
  numExperts: 2,
  k: 1,
  expert: "relu",
  noisyGating: false,
  weights: { wGate: new Float32Array(2), w1: new Float32Array(2), b1: new Float32Array(2), w2: new Float32Array(2), b2: new Float32Array(2) },
};

async function pageSuite(): Promise<string> {
  const report = new Report();
  report.lines.push(`# chromium page: ${navigator.userAgent}`);
  await buildSelectionChecks(report);
  await runConformance(createMoE, hostVariants(), report);
  // the fixture from the page's own server, which answers Range requests under /fixtures/range/
  const base = `${location.origin}/fixtures`;
  await runLoaderChecks(report, {
    urls: { range: `${base}/range/deepseek_v3/model.safetensors`, whole: `${base}/whole/deepseek_v3/model.safetensors` },
    config: { wasmBuild: "simd" },
  });
  return report.text;
}

async function workerSuite(): Promise<string> {
  const report = new Report();
  report.lines.push("# chromium, layers inside edge-moe/worker");
  await report.check("worker: a worker that does not load gives WORKER_ERROR", async () => {
    const broken = new Worker(new URL("/no-such-worker.js", location.href), { type: "module" });
    try {
      await createMoEWorker(broken, TINY);
    } catch (error) {
      if (error instanceof MoEError && error.code === "WORKER_ERROR") return;
      throw error;
    } finally {
      broken.terminate();
    }
    throw new Error("createMoEWorker resolved on a worker that failed to load");
  });
  const worker = new Worker(import.meta.resolve("edge-moe/worker"), { type: "module" });
  try {
    await runConformance((config) => createMoEWorker(worker, config), hostVariants(), report);
  } finally {
    worker.terminate();
  }
  // loadMoE inside a worker of ours: its checks join this report
  const loader = new Worker(new URL("/loader-worker.mjs", location.href), { type: "module" });
  try {
    const result = await new Promise<{ lines: string[]; passed: number; failed: number; hashes: Record<string, string> }>((resolve, reject) => {
      loader.onmessage = (event) => resolve(event.data);
      loader.onerror = (event) => reject(new Error(`the loader worker failed: ${event.message}`));
      loader.postMessage("run");
    });
    report.lines.push(...result.lines.map((line) => line.replace(/^(ok {3}|FAIL )/, "$1worker ")));
    report.passed += result.passed;
    report.failed += result.failed;
    Object.assign(report.hashes, result.hashes);
  } finally {
    loader.terminate();
  }
  return report.text;
}

/**
 * Where the browser offers a WebGPU adapter (Chromium's SwiftShader does), the suite with backend
 * "gpu": tolerances and reproducibility; no hash (the GPU's bits differ from the CPU's). Returns
 * the report, or a line starting "skip:" saying why it could not run; test/runtimes.test.ts
 * accepts only "no WebGPU adapter", and not under CI.
 */
async function gpuSuite(): Promise<string> {
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  const adapter = await gpu?.requestAdapter();
  if (!adapter) return "skip: no WebGPU adapter";
  try {
    (await createMoE({ ...TINY, backend: "gpu" })).dispose();
  } catch (error) {
    return `skip: backend "gpu" failed on a tiny layer: ${error instanceof MoEError ? `${error.code} ` : ""}${(error as Error)?.message ?? error}`;
  }
  const report = new Report();
  report.lines.push(`# chromium GPU: ${adapter.info?.vendor ?? ""} ${adapter.info?.architecture ?? ""}`);
  await runConformance(createMoE, [{ name: "gpu", config: { backend: "gpu" }, hash: false }], report);
  return report.text;
}

const w = window as unknown as { __conformance?: Record<string, string> };
try {
  w.__conformance = { page: await pageSuite(), worker: await workerSuite(), gpu: await gpuSuite() };
} catch (error) {
  w.__conformance = { error: String((error as Error)?.stack ?? error) };
}
