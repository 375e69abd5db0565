// The subgroup variants of the resident path's top-k and statistics passes
// (shaders/gating_topk_subgroup.wgsl, and the statistics and losses with workgroup_sum_subgroup.wgsl),
// used when the device has the `subgroups` feature, against the plain passes (the fallback) and
// the CPU: the same top-k exactly (ties included), the statistics within float rounding.
// Which variant runs is read from the shader modules the layer compiles on its device.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMoE, type MoEConfig } from "edge-moe";
import { configOf, listCases, loadCase, randomWeights, relErr, Rng, TOL, type LayerShape } from "./helpers.ts";
import { gpuSuite, newDevice, probeGpu } from "./gpu_support.ts";

const probe = await probeGpu();
const cases = listCases();
const offersSubgroups = probe.adapter?.features.has("subgroups") === true;

const MAP_READ = 0x1;
const COPY_SRC = 0x4;
const COPY_DST = 0x8;
const STORAGE = 0x80;

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

interface Run {
  idx: Int32Array;
  gates: Float32Array;
  y: Float32Array;
  importance: Float32Array;
  load: Float32Array;
  lossImportance: number;
  lossLoad: number;
}

/** One resident training forward (given noise) on a device, read back. */
async function residentRun(device: GPUDevice, config: MoEConfig, xs: Float32Array, noise: Float32Array | undefined): Promise<Run> {
  const layer = await createMoE({ ...config, backend: "gpu", gpu: device });
  const x = upload(device, xs);
  try {
    const batch = xs.length / config.dModel;
    const got = await layer.forward(x, { train: true, noise });
    const run: Run = {
      idx: new Int32Array(await readBack(device, got.topkIndices as GPUBuffer, 4 * batch * config.k)),
      gates: new Float32Array(await readBack(device, got.topkGates as GPUBuffer, 4 * batch * config.k)),
      y: new Float32Array(await readBack(device, got.y as GPUBuffer, 4 * batch * config.dModel)),
      importance: got.importance!,
      load: got.load!,
      lossImportance: got.lossImportance!,
      lossLoad: got.lossLoad!,
    };
    for (const b of [got.y, got.topkIndices, got.topkGates]) (b as GPUBuffer).destroy();
    return run;
  } finally {
    x.destroy();
    layer.dispose();
  }
}

const closeLoss = (a: number, b: number) => Math.abs(a - b) <= 1e-5 * Math.max(1e-3, Math.abs(b));

gpuSuite("the resident path's subgroup variants (Node, Dawn)", probe, () => {
  let plain: GPUDevice;
  let plainModules: string[];
  let withSubgroups: GPUDevice | undefined;
  let subgroupModules: string[] = [];
  beforeAll(async () => {
    plain = await newDevice();
    plainModules = recordModules(plain);
    if (offersSubgroups) {
      const adapter = probe.adapter!;
      withSubgroups = await adapter.requestDevice({
        requiredFeatures: ["subgroups" as GPUFeatureName],
        requiredLimits: { maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize, maxBufferSize: adapter.limits.maxBufferSize },
      });
      subgroupModules = recordModules(withSubgroups);
    }
    console.log(
      `subgroups: the test adapter ${offersSubgroups ? `offers them (subgroup size ${probe.adapter!.info.subgroupMinSize}–${probe.adapter!.info.subgroupMaxSize})` : "does not offer them: only the fallback is tested"}`,
    );
  });
  afterAll(() => {
    plain?.destroy();
    withSubgroups?.destroy();
  });

  it("a device without the feature runs the plain passes", async () => {
    const shape: LayerShape = { d: 8, h: 8, n: 6, k: 2, expert: "relu", noisy: true };
    const rng = new Rng(5);
    const run = await residentRun(plain, configOf(shape, randomWeights(rng, shape)), rng.normals(3 * shape.d), rng.normals(3 * shape.n));
    expect(run.idx.length).toBe(6);
    expect(plainModules).toContain("edge-moe gating_topk");
    expect(plainModules).toContain("edge-moe gating_stats");
    expect(plainModules).toContain("edge-moe gating_losses");
    expect(plainModules.some((l) => l.includes("subgroup"))).toBe(false);
  });

  if (!offersSubgroups) return;

  it("a device with the feature runs the subgroup passes", async () => {
    const shape: LayerShape = { d: 8, h: 8, n: 6, k: 2, expert: "relu", noisy: true };
    const rng = new Rng(5);
    await residentRun(withSubgroups!, configOf(shape, randomWeights(rng, shape)), rng.normals(3 * shape.d), rng.normals(3 * shape.n));
    expect(subgroupModules).toContain("edge-moe gating_topk_subgroup");
    expect(subgroupModules).toContain("edge-moe gating_stats_subgroup");
    expect(subgroupModules).toContain("edge-moe gating_losses_subgroup");
    expect(subgroupModules).not.toContain("edge-moe gating_topk");
  });

  describe("every golden vector: the subgroup passes as the plain ones and the reference", () => {
    for (const info of cases) {
      it(`${info.name}: top-k exact, gates and y ≤ 1e-4, statistics ≤ 1e-5 of the fallback's`, async () => {
        const golden = loadCase(info);
        const sub = await residentRun(withSubgroups!, golden.config, golden.x, golden.noise);
        const fallback = await residentRun(plain, golden.config, golden.x, golden.noise);
        expect(Array.from(sub.idx)).toEqual(Array.from(golden.tensor("topk_indices")));
        expect(Array.from(sub.idx)).toEqual(Array.from(fallback.idx));
        expect(relErr(sub.gates, golden.f32("topk_gates"))).toBeLessThanOrEqual(TOL);
        expect(relErr(sub.y, golden.f32("y"))).toBeLessThanOrEqual(TOL);
        expect(relErr(sub.importance, fallback.importance)).toBeLessThanOrEqual(1e-5);
        expect(relErr(sub.load, fallback.load)).toBeLessThanOrEqual(1e-5);
        expect(closeLoss(sub.lossImportance, fallback.lossImportance)).toBe(true);
        expect(closeLoss(sub.lossLoad, fallback.lossLoad)).toBe(true);
      }, 300_000);
    }
  });

  // Zero gating weights make H = z·std with one std for every expert: H orders as the given noise,
  // which here is mostly exact ties (a few values), so only the tie rule decides the top-k.
  const tieShapes: Array<{ shape: LayerShape; batch: number }> = [
    { shape: { d: 8, h: 8, n: 3, k: 2, expert: "relu", noisy: true }, batch: 37 },
    { shape: { d: 8, h: 8, n: 67, k: 5, expert: "relu", noisy: true }, batch: 53 },
    { shape: { d: 12, h: 8, n: 130, k: 129, expert: "gelu", noisy: true }, batch: 17 },
    { shape: { d: 8, h: 8, n: 40, k: 40, expert: "relu", noisy: true }, batch: 9 },
  ];
  for (const { shape, batch } of tieShapes) {
    it(`ties: n = ${shape.n}, k = ${shape.k}, B = ${batch}: the CPU's top-k (lower index first on equal H), exactly`, async () => {
      const rng = new Rng(shape.n * 1000 + shape.k);
      const weights = randomWeights(rng, shape);
      weights.wGate!.fill(0);
      weights.wNoise!.fill(0);
      const config = configOf(shape, weights);
      const xs = rng.normals(batch * shape.d);
      const noise = Float32Array.from({ length: batch * shape.n }, () => rng.pick([-1, 0, 0.5, 2]));
      const sub = await residentRun(withSubgroups!, config, xs, noise);
      const fallback = await residentRun(plain, config, xs, noise);
      const cpuLayer = await createMoE(config);
      const cpu = cpuLayer.forwardSync(xs, { train: true, noise });
      cpuLayer.dispose();
      expect(Array.from(sub.idx)).toEqual(Array.from(cpu.topkIndices));
      expect(Array.from(fallback.idx)).toEqual(Array.from(cpu.topkIndices));
      expect(relErr(sub.gates, cpu.topkGates)).toBeLessThanOrEqual(TOL);
      expect(relErr(sub.load, fallback.load)).toBeLessThanOrEqual(1e-5);
      expect(relErr(sub.importance, cpu.importance!)).toBeLessThanOrEqual(1e-5);
    }, 300_000);
  }
});
