// f16 expert weights on devices with `shader-f16`: the grouped GEMM's f16 variant
// (shaders/f16_native.wgsl, the weights read as f16 values) against the integer unpacking
// (shaders/f16_bits.wgsl, the fallback). Both widen the same halves exactly and accumulate in f32,
// so y agrees to f32 rounding (1e-6 of max|y|).
// In Node (Dawn): which variant a device compiles, by its features; where the adapter offers
// shader-f16 (hardware GPUs; not SwiftShader), both variants on the same layers. In Deno
// (test/deno/gpu_f16.ts, run as a child process), whose lavapipe adapter offers shader-f16: both
// variants on several shapes, subnormal halves, the resident path and the shared device.
// No adapter: FAILS under CI=true, reported as skipped with the reason elsewhere.
import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMoE } from "edge-moe";
import { configOf, isCI, type LayerShape, randomWeights, relErr, Rng, sameBits } from "./helpers.ts";
import { gpuSuite, newDevice, probeGpu, DENO, runDenoGpuScript } from "./gpu_support.ts";

const probe = await probeGpu();
const offersF16 = probe.adapter?.features.has("shader-f16") === true;

/** Records the labels of the shader modules compiled on a device. */
function recordModules(device: GPUDevice): string[] {
  const labels: string[] = [];
  const create = device.createShaderModule.bind(device);
  device.createShaderModule = (descriptor: GPUShaderModuleDescriptor) => {
    labels.push(descriptor.label ?? "");
    return create(descriptor);
  };
  return labels;
}

const shapes: LayerShape[] = [
  { d: 24, h: 40, n: 4, k: 2, expert: "relu", noisy: false },
  { d: 70, h: 37, n: 5, k: 2, expert: "swiglu", noisy: false },
  { d: 33, h: 100, n: 3, k: 1, expert: "gelu", noisy: true },
];

gpuSuite("f16 weights: the shader-f16 variant and the fallback (Node, Dawn)", probe, () => {
  let plain: GPUDevice;
  let plainModules: string[];
  let withF16: GPUDevice | undefined;
  let f16Modules: string[] = [];
  beforeAll(async () => {
    plain = await newDevice();
    plainModules = recordModules(plain);
    if (offersF16) {
      const adapter = probe.adapter!;
      withF16 = await adapter.requestDevice({
        requiredFeatures: ["shader-f16" as GPUFeatureName],
        requiredLimits: { maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize, maxBufferSize: adapter.limits.maxBufferSize },
      });
      f16Modules = recordModules(withF16);
    }
    console.log(
      `shader-f16: the Dawn test adapter ${offersF16 ? "offers it" : "does not offer it: only the fallback runs here (the Deno suite below tests both)"}`,
    );
  });
  afterAll(() => {
    plain?.destroy();
    withF16?.destroy();
  });

  it("a device without shader-f16 compiles the fallback, and its y is the CPU kernels' within 1e-4", async () => {
    const shape = shapes[0];
    const rng = new Rng(16);
    const layer = await createMoE({ ...configOf(shape, randomWeights(rng, shape)), dtype: "f16", backend: "gpu", gpu: plain });
    try {
      const x = rng.normals(7 * shape.d);
      const got = await layer.forward(x);
      expect(got.backend).toBe("gpu");
      expect(relErr(got.y as Float32Array, layer.forwardSync(x).y)).toBeLessThanOrEqual(1e-4);
    } finally {
      layer.dispose();
    }
    expect(plainModules).toContain("edge-moe grouped_gemm");
    expect(plainModules).not.toContain("edge-moe grouped_gemm_f16");
  });

  if (!offersF16) return;

  for (const shape of shapes) {
    it(`${shape.expert} d ${shape.d} h ${shape.h}: the f16 variant's y equals the fallback's within 1e-6, same top-k`, async () => {
      const rng = new Rng(1600 + shape.d);
      const config = configOf(shape, randomWeights(rng, shape));
      const x = rng.normals(19 * shape.d);
      const run = async (device: GPUDevice) => {
        const layer = await createMoE({ ...config, dtype: "f16", backend: "gpu", gpu: device });
        try {
          return await layer.forward(x);
        } finally {
          layer.dispose();
        }
      };
      const f16 = await run(withF16!);
      const fallback = await run(plain);
      expect(f16Modules).toContain("edge-moe grouped_gemm_f16");
      expect(f16Modules).not.toContain("edge-moe grouped_gemm");
      expect(f16.backend).toBe("gpu");
      expect(sameBits(f16.topkIndices, fallback.topkIndices)).toBe(true);
      expect(relErr(f16.y as Float32Array, fallback.y as Float32Array)).toBeLessThanOrEqual(1e-6);
    });
  }
});

// ---- Deno (wgpu on lavapipe: offers shader-f16) -------------------------------------------------

interface DenoF16Report {
  noAdapter?: string;
  adapter?: string;
  offered?: boolean;
  cases?: Array<{ name: string; ok: boolean; variants: boolean; topkSame: boolean; f16VsFallback: number; f16VsCpu: number; error?: string }>;
  resident?: { ok: boolean; f16VsFallback: number; error?: string };
  shared?: { ok: boolean; compiledF16: boolean; yVsCpu: number; error?: string };
}

const runDeno = () => runDenoGpuScript<DenoF16Report>("test/deno/gpu_f16.ts");

describe("f16 weights: the shader-f16 variant and the fallback (Deno, built-in WebGPU)", () => {
  if (!existsSync(DENO)) {
    if (isCI()) {
      it("has the deno runtime (required under CI)", () => {
        throw new Error("the deno package is not installed (npm ci)");
      });
    } else {
      it.skip("skipped: the deno package is not installed (npm ci)", () => undefined);
    }
    return;
  }
  const { report, output, status } = runDeno();
  if (report?.noAdapter !== undefined) {
    if (isCI()) {
      it("has a WebGPU adapter (required under CI)", () => {
        throw new Error(`Deno found no WebGPU adapter: ${report.noAdapter}`);
      });
    } else {
      it.skip(`skipped: Deno found no WebGPU adapter (${report.noAdapter})`, () => undefined);
    }
    return;
  }

  it("the Deno script ran and exited 0", () => {
    expect(report, output.slice(-4000)).toBeDefined();
    expect(status, output.slice(-4000)).toBe(0);
    console.log(`Deno f16 suite ran on: ${report!.adapter} (shader-f16 ${report!.offered ? "offered: both variants" : "not offered: the fallback only"})`);
  });

  it("the shared device asks for shader-f16 where the adapter offers it, and compiles the f16 variant then", () => {
    expect(report?.shared?.error).toBeUndefined();
    expect(report?.shared?.compiledF16).toBe(report?.offered);
    expect(report?.shared?.yVsCpu).toBeLessThanOrEqual(1e-4);
    expect(report?.shared?.ok).toBe(true);
  });

  if (!report?.offered) return;

  for (const c of report.cases ?? []) {
    it(`${c.name}: the f16 variant's y equals the fallback's within 1e-6 (and the CPU's within 1e-4), same top-k`, () => {
      expect(c.error).toBeUndefined();
      expect(c.variants).toBe(true);
      expect(c.topkSame).toBe(true);
      expect(c.f16VsFallback).toBeLessThanOrEqual(1e-6);
      expect(c.f16VsCpu).toBeLessThanOrEqual(1e-4);
      expect(c.ok).toBe(true);
    });
  }

  it("the resident path (GPUBuffer x) with the f16 variant: y equals the fallback's within 1e-6", () => {
    expect(report.cases?.length).toBe(5);
    expect(report.resident?.error).toBeUndefined();
    expect(report.resident?.f16VsFallback).toBeLessThanOrEqual(1e-6);
    expect(report.resident?.ok).toBe(true);
  });
});
