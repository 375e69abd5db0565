// Every golden vector through the resident path (GPUBuffer in, GPUBuffers out) in Deno, with Deno's
// built-in WebGPU (navigator.gpu; on a machine without a GPU, Mesa's lavapipe serves it). Same checks
// and tolerances as test/gpu_resident.test.ts (Node, Dawn). Run by that test file:
//   deno run -A --import-map=test/deno/import_map.json test/deno/gpu_resident.ts
// Then device loss: a device destroyed right after a resident forward() was called must fail that
// call with GPU_LOST.
// The device has the `subgroups` feature where the adapter offers it (the resident path's subgroup
// variants run then; lavapipe does not offer it).
// Prints one JSON line: { adapter, subgroups, cases: [...], loss } or { noAdapter: reason }; exits 1 when a check fails.
import { createMoE } from "edge-moe";
import { listCases, loadCase, relErr, TOL } from "../helpers.ts";

declare const Deno: { exit(code: number): never }; // the global of the Deno runtime

const STORAGE = 0x80;
const COPY_SRC = 0x4;
const COPY_DST = 0x8;
const MAP_READ = 0x1;

const adapter = await navigator.gpu?.requestAdapter();
if (!adapter) {
  console.log(JSON.stringify({ noAdapter: navigator.gpu ? "requestAdapter() returned null" : "no navigator.gpu" }));
  Deno.exit(0);
}

async function newDevice(): Promise<GPUDevice> {
  const a = (await navigator.gpu.requestAdapter())!;
  // subgroups where the adapter offers them: the resident path then runs its subgroup variants
  const requiredFeatures: GPUFeatureName[] = a.features.has("subgroups") ? ["subgroups" as GPUFeatureName] : [];
  return a.requestDevice({
    requiredFeatures,
    requiredLimits: { maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize, maxBufferSize: a.limits.maxBufferSize },
  });
}

function upload(device: GPUDevice, data: Float32Array): GPUBuffer {
  const buffer = device.createBuffer({ size: Math.max(4, data.byteLength), usage: STORAGE | COPY_DST | COPY_SRC });
  device.queue.writeBuffer(buffer, 0, data);
  return buffer;
}

async function readBack(device: GPUDevice, buffer: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
  const staging = device.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, staging, 0, bytes);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(1);
  const copy = staging.getMappedRange().slice(0);
  staging.destroy();
  return copy;
}

interface CaseReport {
  name: string;
  ok: boolean;
  topkExact: boolean;
  gatesErr: number;
  yErr: number;
  importanceErr: number;
  loadErr: number;
  evalTopkExact: boolean;
  evalErr: number;
  /** Seeded noise on the GPU: top-k equal to the CPU path's with the same seed, load within 1e-5. */
  seededExact: boolean;
  error?: string;
}

const device = await newDevice();
let adapterName = "";
const cases: CaseReport[] = [];
for (const info of listCases()) {
  const golden = loadCase(info);
  const report: CaseReport = {
    name: info.name,
    ok: false,
    topkExact: false,
    gatesErr: Infinity,
    yErr: Infinity,
    importanceErr: Infinity,
    loadErr: Infinity,
    evalTopkExact: false,
    evalErr: Infinity,
    seededExact: false,
  };
  try {
    const layer = await createMoE({ ...golden.config, backend: "gpu", gpu: device });
    adapterName = layer.gpuStatus.adapter ?? "";
    const { dModel: d, k } = golden.config;
    const batch = golden.x.length / d;
    const x = upload(device, golden.x);
    const options = { train: true, noise: golden.noise };
    const got = await layer.forward(x, options);
    const cpu = layer.forwardSync(golden.x, options);
    const idx = new Int32Array(await readBack(device, got.topkIndices as GPUBuffer, 4 * batch * k));
    const refIdx = golden.tensor("topk_indices");
    report.topkExact = idx.length === refIdx.length && idx.every((v, i) => v === refIdx[i]);
    report.gatesErr = relErr(new Float32Array(await readBack(device, got.topkGates as GPUBuffer, 4 * batch * k)), golden.f32("topk_gates"));
    report.yErr = relErr(new Float32Array(await readBack(device, got.y as GPUBuffer, 4 * batch * d)), golden.f32("y"));
    report.importanceErr = relErr(got.importance!, cpu.importance!);
    report.loadErr = relErr(got.load!, cpu.load!);
    const evalGot = await layer.forward(x);
    const evalCpu = layer.forwardSync(golden.x);
    const evalIdx = new Int32Array(await readBack(device, evalGot.topkIndices as GPUBuffer, 4 * batch * k));
    report.evalTopkExact = evalIdx.every((v, i) => v === evalCpu.topkIndices[i]);
    report.evalErr = relErr(new Float32Array(await readBack(device, evalGot.y as GPUBuffer, 4 * batch * d)), evalCpu.y);
    const seeded = await layer.forward(x, { train: true, seed: 5 });
    const seededCpu = layer.forwardSync(golden.x, { train: true, seed: 5 });
    const seededIdx = new Int32Array(await readBack(device, seeded.topkIndices as GPUBuffer, 4 * batch * k));
    report.seededExact = seededIdx.every((v, i) => v === seededCpu.topkIndices[i]) && relErr(seeded.load!, seededCpu.load!) <= 1e-5;
    for (const b of [seeded.y, seeded.topkIndices, seeded.topkGates]) (b as GPUBuffer).destroy();
    for (const b of [x, got.y, got.topkIndices, got.topkGates, evalGot.y, evalGot.topkIndices, evalGot.topkGates]) (b as GPUBuffer).destroy();
    layer.dispose();
    report.ok =
      report.topkExact &&
      report.evalTopkExact &&
      report.gatesErr <= TOL &&
      report.yErr <= TOL &&
      report.evalErr <= TOL &&
      report.importanceErr <= 1e-5 &&
      report.loadErr <= 1e-5 &&
      report.seededExact;
  } catch (error) {
    report.error = String((error as Error)?.stack ?? error);
  }
  cases.push(report);
}

// Device loss: destroyed right after a resident forward() was called.
const loss = { ok: false, code: "", laterCode: "", error: undefined as string | undefined };
try {
  const golden = loadCase(listCases()[0]);
  const lossDevice = await newDevice();
  const layer = await createMoE({ ...golden.config, backend: "gpu", gpu: lossDevice, onWarning: () => undefined });
  const x = upload(lossDevice, golden.x);
  await layer.forward(x);
  const pending = layer.forward(x, { train: true, noise: golden.noise });
  lossDevice.destroy();
  const codeOf = async (p: Promise<unknown>) => {
    try {
      await p;
      return "resolved";
    } catch (error) {
      return String((error as { code?: string }).code);
    }
  };
  loss.code = await codeOf(pending);
  loss.laterCode = await codeOf(layer.forward(x));
  layer.dispose();
  loss.ok = loss.code === "GPU_LOST" && loss.laterCode === "GPU_LOST";
} catch (error) {
  loss.error = String((error as Error)?.stack ?? error);
}
console.log(JSON.stringify({ adapter: adapterName, subgroups: device.features.has("subgroups"), cases, loss }));
Deno.exit(cases.every((c) => c.ok) && loss.ok ? 0 : 1);
