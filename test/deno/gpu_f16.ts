// The grouped GEMM's shader-f16 variant (shaders/f16_native.wgsl) in Deno's built-in WebGPU, whose
// lavapipe adapter offers `shader-f16`: f16 layers on a device with the feature against the same
// layers on a device without it (the integer unpacking of shaders/f16_bits.wgsl). Both dequantize
// the same halves exactly and accumulate in f32, so y agrees to f32 rounding. Run by
// test/gpu_f16.test.ts:
//   deno run -A --import-map=test/deno/import_map.json test/deno/gpu_f16.ts
// Prints one JSON line: { adapter, offered, cases, resident, shared } or { noAdapter: reason };
// exits 1 when a check fails.
import { createMoE, type MoEConfig } from "edge-moe";
import { configOf, type LayerShape, randomWeights, relErr, Rng, sameBits } from "../helpers.ts";

declare const Deno: { exit(code: number): never }; // the global of the Deno runtime

const STORAGE = 0x80;
const COPY_SRC = 0x4;
const COPY_DST = 0x8;
const MAP_READ = 0x1;
/** f16 weights, the same halves on both paths: only the arithmetic of the conversion differs. */
const AGREE = 1e-6;

const adapter = await navigator.gpu?.requestAdapter();
if (!adapter) {
  console.log(JSON.stringify({ noAdapter: navigator.gpu ? "requestAdapter() returned null" : "no navigator.gpu" }));
  Deno.exit(0);
}
const offered = adapter.features.has("shader-f16");

// The labels of the shader modules each device compiles (the shared device's included).
const modules = new Map<GPUDevice, string[]>();
const createModule = GPUDevice.prototype.createShaderModule;
GPUDevice.prototype.createShaderModule = function (this: GPUDevice, descriptor: GPUShaderModuleDescriptor) {
  const labels = modules.get(this) ?? [];
  labels.push(descriptor.label ?? "");
  modules.set(this, labels);
  return createModule.call(this, descriptor);
};
const compiledAnywhere = (label: string) => [...modules.values()].some((labels) => labels.includes(label));

async function newDevice(f16: boolean): Promise<GPUDevice> {
  const a = (await navigator.gpu.requestAdapter())!;
  return a.requestDevice({
    requiredFeatures: f16 ? ["shader-f16" as GPUFeatureName] : [],
    requiredLimits: { maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize, maxBufferSize: a.limits.maxBufferSize },
  });
}

async function readF32(device: GPUDevice, buffer: GPUBuffer, length: number): Promise<Float32Array> {
  const staging = device.createBuffer({ size: 4 * length, usage: MAP_READ | COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, staging, 0, 4 * length);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(MAP_READ);
  const copy = new Float32Array(staging.getMappedRange().slice(0));
  staging.destroy();
  return copy;
}

interface CaseReport {
  name: string;
  ok: boolean;
  /** The f16 device compiled the f16 variant, the plain device the fallback only. */
  variants: boolean;
  topkSame: boolean;
  /** relErr of y: f16 variant vs fallback, and vs the layer's CPU kernels. */
  f16VsFallback: number;
  f16VsCpu: number;
  error?: string;
}

const cases: CaseReport[] = [];
let resident: { ok: boolean; f16VsFallback: number; error?: string } = { ok: false, f16VsFallback: Infinity };
let shared = { ok: false, compiledF16: false, yVsCpu: Infinity, error: undefined as string | undefined };

if (offered) {
  const withF16 = await newDevice(true);
  const plain = await newDevice(false);
  const forwardOn = async (device: GPUDevice, config: MoEConfig, x: Float32Array) => {
    const layer = await createMoE({ ...config, dtype: "f16", backend: "gpu", gpu: device });
    try {
      return { gpu: await layer.forward(x), cpu: layer.forwardSync(x) };
    } finally {
      layer.dispose();
    }
  };
  // odd widths (padded rows and columns), swiglu's two halves, several tiles of columns; and
  // subnormal halves (weights below 6.1e-5), which both paths must widen exactly
  const shapes: Array<{ name: string; shape: LayerShape; scale?: number }> = [
    { name: "relu d24 h40 n4 k2", shape: { d: 24, h: 40, n: 4, k: 2, expert: "relu", noisy: false } },
    { name: "swiglu d70 h37 n5 k2", shape: { d: 70, h: 37, n: 5, k: 2, expert: "swiglu", noisy: false } },
    { name: "gelu d33 h100 n3 k1", shape: { d: 33, h: 100, n: 3, k: 1, expert: "gelu", noisy: true } },
    { name: "relu d128 h256 n8 k2", shape: { d: 128, h: 256, n: 8, k: 2, expert: "relu", noisy: false } },
    { name: "relu d16 h16 n2 k1, subnormal weights", shape: { d: 16, h: 16, n: 2, k: 1, expert: "relu", noisy: false }, scale: 1e-4 },
  ];
  for (const { name, shape, scale } of shapes) {
    const report: CaseReport = { name, ok: false, variants: false, topkSame: false, f16VsFallback: Infinity, f16VsCpu: Infinity };
    try {
      const rng = new Rng(1600 + shape.d);
      const weights = randomWeights(rng, shape);
      if (scale) for (const w of ["w1", "w2"] as const) weights[w] = weights[w]!.map((v) => v * scale);
      const x = rng.normals(19 * shape.d, scale ? 1 / scale : 1);
      const config = configOf(shape, weights);
      const f16 = await forwardOn(withF16, config, x);
      const fallback = await forwardOn(plain, config, x);
      const f16Labels = modules.get(withF16) ?? [];
      const plainLabels = modules.get(plain) ?? [];
      report.variants =
        f16Labels.includes("edge-moe grouped_gemm_f16") &&
        !f16Labels.includes("edge-moe grouped_gemm") &&
        plainLabels.includes("edge-moe grouped_gemm") &&
        !plainLabels.includes("edge-moe grouped_gemm_f16");
      report.topkSame = f16.gpu.backend === "gpu" && fallback.gpu.backend === "gpu" && sameBits(f16.gpu.topkIndices, fallback.gpu.topkIndices);
      report.f16VsFallback = relErr(f16.gpu.y as Float32Array, fallback.gpu.y as Float32Array);
      report.f16VsCpu = relErr(f16.gpu.y as Float32Array, f16.cpu.y);
      report.ok = report.variants && report.topkSame && report.f16VsFallback <= AGREE && report.f16VsCpu <= 1e-4;
    } catch (error) {
      report.error = String((error as Error)?.stack ?? error);
    }
    cases.push(report);
  }

  // The resident path (GPUBuffer x) binds the same weight buffers, and the f16 view with them.
  try {
    const shape: LayerShape = { d: 40, h: 24, n: 6, k: 2, expert: "swiglu", noisy: true };
    const rng = new Rng(77);
    const config = configOf(shape, randomWeights(rng, shape));
    const batch = 9;
    const x = rng.normals(batch * shape.d);
    const ys: Float32Array[] = [];
    for (const device of [withF16, plain]) {
      const layer = await createMoE({ ...config, dtype: "f16", backend: "gpu", gpu: device });
      const xBuffer = device.createBuffer({ size: x.byteLength, usage: STORAGE | COPY_DST | COPY_SRC });
      device.queue.writeBuffer(xBuffer, 0, x);
      const got = await layer.forward(xBuffer);
      ys.push(await readF32(device, got.y as GPUBuffer, batch * shape.d));
      for (const b of [xBuffer, got.y, got.topkIndices, got.topkGates] as GPUBuffer[]) b.destroy();
      layer.dispose();
    }
    const f16VsFallback = relErr(ys[0], ys[1]);
    resident = { ok: f16VsFallback <= AGREE, f16VsFallback };
  } catch (error) {
    resident = { ok: false, f16VsFallback: Infinity, error: String((error as Error)?.stack ?? error) };
  }
  withF16.destroy();
  plain.destroy();
}

// The package's shared device asks for shader-f16 where the adapter offers it.
try {
  const shape: LayerShape = { d: 24, h: 40, n: 4, k: 2, expert: "relu", noisy: false };
  const rng = new Rng(3);
  const layer = await createMoE({ ...configOf(shape, randomWeights(rng, shape)), dtype: "f16", backend: "gpu" });
  const x = rng.normals(5 * shape.d);
  const got = await layer.forward(x);
  shared.yVsCpu = relErr(got.y as Float32Array, layer.forwardSync(x).y);
  layer.dispose();
  shared.compiledF16 = compiledAnywhere("edge-moe grouped_gemm_f16");
  shared.ok = got.backend === "gpu" && shared.compiledF16 === offered && shared.yVsCpu <= 1e-4;
} catch (error) {
  shared = { ...shared, error: String((error as Error)?.stack ?? error) };
}

console.log(JSON.stringify({ adapter: adapter.info?.description || adapter.info?.vendor || "", offered, cases, resident, shared }));
Deno.exit((!offered || (cases.every((c) => c.ok) && resident.ok)) && shared.ok ? 0 : 1);
