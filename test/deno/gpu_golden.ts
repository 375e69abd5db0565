// Every golden vector through the GPU expert path in Deno, with Deno's built-in WebGPU
// (navigator.gpu; on a machine without a GPU, Mesa's lavapipe serves it). Same checks and
// tolerances as test/gpu_golden.test.ts (Node, Dawn). Run by test/gpu_deno.test.ts:
//   deno run -A --import-map=test/deno/import_map.json test/deno/gpu_golden.ts
// Then a caller's device (createMoE({ gpu: device })) that is destroyed while a call is in flight:
// that call must complete on the CPU with one warning.
// Prints one JSON line: { adapter, cases: [{ name, ok, yErr, cpuErr, ... }], loss } or
// { noAdapter: reason }; exits 1 when a check fails.
import { createMoE } from "edge-moe";
import { listCases, loadCase, relErr, TOL } from "../helpers.ts";

declare const Deno: { exit(code: number): never }; // the global of the Deno runtime

const adapter = await navigator.gpu?.requestAdapter();
if (!adapter) {
  console.log(JSON.stringify({ noAdapter: navigator.gpu ? "requestAdapter() returned null" : "no navigator.gpu" }));
  Deno.exit(0);
}

interface CaseReport {
  name: string;
  ok: boolean;
  backend: string;
  topkExact: boolean;
  gatesErr: number;
  yErr: number;
  cpuErr: number;
  evalErr: number;
  error?: string;
}

const cases: CaseReport[] = [];
let adapterName = "";
for (const info of listCases()) {
  const golden = loadCase(info);
  const report: CaseReport = {
    name: info.name,
    ok: false,
    backend: "",
    topkExact: false,
    gatesErr: Infinity,
    yErr: Infinity,
    cpuErr: Infinity,
    evalErr: Infinity,
  };
  try {
    const layer = await createMoE({ ...golden.config, backend: "gpu" });
    adapterName = layer.gpuStatus.adapter ?? "";
    const options = { train: true, noise: golden.noise };
    const gpu = await layer.forward(golden.x, options);
    const cpu = layer.forwardSync(golden.x, options);
    const gpuEval = await layer.forward(golden.x);
    const cpuEval = layer.forwardSync(golden.x);
    layer.dispose();
    const refIdx = golden.tensor("topk_indices");
    report.backend = gpu.backend === "gpu" && gpuEval.backend === "gpu" ? "gpu" : "cpu";
    report.topkExact = gpu.topkIndices.length === refIdx.length && gpu.topkIndices.every((v, i) => v === refIdx[i]);
    report.gatesErr = relErr(gpu.topkGates, golden.f32("topk_gates"));
    report.yErr = relErr(gpu.y, golden.f32("y"));
    report.cpuErr = relErr(gpu.y, cpu.y);
    report.evalErr = relErr(gpuEval.y, cpuEval.y);
    report.ok = report.backend === "gpu" && report.topkExact && report.gatesErr <= TOL && report.yErr <= TOL && report.cpuErr <= TOL && report.evalErr <= TOL;
  } catch (error) {
    report.error = String((error as Error)?.stack ?? error);
  }
  cases.push(report);
}
// Device loss with a caller's device: destroyed right after forward() is called.
const loss = {
  ok: false,
  injectedBackend: "",
  lostBackend: "",
  laterBackend: "",
  yErr: Infinity,
  warnings: [] as string[],
  error: undefined as string | undefined,
};
try {
  const golden = loadCase(listCases()[0]);
  const device = await (await navigator.gpu.requestAdapter())!.requestDevice();
  const layer = await createMoE({ ...golden.config, backend: "gpu", gpu: device, onWarning: (w) => loss.warnings.push(w.code) });
  loss.injectedBackend = (await layer.forward(golden.x)).backend;
  const pending = layer.forward(golden.x, { train: true, noise: golden.noise });
  device.destroy();
  const lost = await pending;
  loss.lostBackend = lost.backend;
  loss.yErr = relErr(lost.y, golden.f32("y"));
  loss.laterBackend = (await layer.forward(golden.x)).backend;
  layer.dispose();
  loss.ok = loss.injectedBackend === "gpu" && loss.lostBackend === "cpu" && loss.laterBackend === "cpu" && loss.yErr <= TOL && loss.warnings.length === 1;
} catch (error) {
  loss.error = String((error as Error)?.stack ?? error);
}
console.log(JSON.stringify({ adapter: adapterName, cases, loss }));
Deno.exit(cases.every((c) => c.ok) && loss.ok ? 0 : 1);
