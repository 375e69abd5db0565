// The resident path in Node (Dawn): layer.forward with a GPUBuffer x runs gating, plan and experts
// on the GPU and returns GPUBuffers. Every golden vector through it (top-k exact, y within 1e-4 of
// max|y|), the training statistics against the CPU layer's, the seeded normals against a
// reference of the CPU's generator (≤ 1e-6), validation errors, and device loss (GPU_LOST). Then
// the golden vectors and device loss again in Deno's built-in WebGPU (test/deno/gpu_resident.ts, a
// child process, on lavapipe where there is no GPU).
import { existsSync, readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMoE, type MoELocalLayer, type MoEWarning } from "edge-moe";
import { configOf, listCases, loadCase, randomWeights, relErr, Rng, TOL, type GoldenCase, type LayerShape } from "./helpers.ts";
import { gpuSuite, newDevice, probeGpu, DENO, runDenoGpuScript } from "./gpu_support.ts";

const probe = await probeGpu();
const cases = listCases();

// GPUBufferUsage / GPUMapMode bits (Dawn installs no globals).
const MAP_READ = 0x1;
const COPY_SRC = 0x4;
const COPY_DST = 0x8;
const UNIFORM = 0x40;
const STORAGE = 0x80;

function upload(device: GPUDevice, data: Float32Array, usage = STORAGE | COPY_DST | COPY_SRC): GPUBuffer {
  const buffer = device.createBuffer({ size: Math.max(4, data.byteLength), usage });
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
const readF32 = async (device: GPUDevice, buffer: GPUBuffer, length: number) => new Float32Array(await readBack(device, buffer, 4 * length));
const readI32 = async (device: GPUDevice, buffer: GPUBuffer, length: number) => new Int32Array(await readBack(device, buffer, 4 * length));

async function rejection(promise: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await promise;
  } catch (error) {
    return error as { code?: string; message: string };
  }
  throw new Error("expected the call to reject");
}

// ---- a reference of the CPU's noise generator (assembly/rng.ts), in f64 ------------------------

function philox(c: [number, number, number, number], k0: number, k1: number): [number, number, number, number] {
  let [c0, c1, c2, c3] = c;
  for (let round = 0; round < 10; round++) {
    const p0 = 0xd2511f53n * BigInt(c0);
    const p1 = 0xcd9e8d57n * BigInt(c2);
    const n0 = (Number(p1 >> 32n) ^ c1 ^ k0) >>> 0;
    const n1 = Number(p1 & 0xffffffffn);
    const n2 = (Number(p0 >> 32n) ^ c3 ^ k1) >>> 0;
    const n3 = Number(p0 & 0xffffffffn);
    [c0, c1, c2, c3] = [n0, n1, n2, n3];
    k0 = (k0 + 0x9e3779b9) >>> 0;
    k1 = (k1 + 0xbb67ae85) >>> 0;
  }
  return [c0, c1, c2, c3];
}

function referenceNormals(count: number, stream: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  const unit = (u: number) => (u + 0.5) * 2 ** -32;
  for (let i = 0; i < count; i += 4) {
    const [u0, u1, u2, u3] = philox([i / 4, stream, 0, 0], seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0);
    const r0 = Math.sqrt(-2 * Math.log(unit(u0)));
    const t0 = 2 * Math.PI * unit(u1);
    const r1 = Math.sqrt(-2 * Math.log(unit(u2)));
    const t1 = 2 * Math.PI * unit(u3);
    const z = [r0 * Math.cos(t0), r0 * Math.sin(t0), r1 * Math.cos(t1), r1 * Math.sin(t1)];
    for (let j = 0; j < 4 && i + j < count; j++) out[i + j] = z[j];
  }
  return out;
}

/** normal(i) of shaders/gating_noise.wgsl for i < count, through an entry point added for the test. */
async function shaderNormals(device: GPUDevice, count: number, stream: number, seed: number): Promise<Float32Array> {
  const code = `${readFileSync(new URL("../shaders/gating_noise.wgsl", import.meta.url), "utf8")}
@compute @workgroup_size(64)
fn normals(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < params.batch * params.n) {
    h[g.x] = normal(g.x);
  }
}`;
  const pipeline = device.createComputePipeline({ layout: "auto", compute: { module: device.createShaderModule({ code }), entryPoint: "normals" } });
  const out = device.createBuffer({ size: 4 * count, usage: STORAGE | COPY_SRC });
  const params = new Uint32Array([count, 1, 1, 1, seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0, stream, 0, 0, 0, 0, 0]);
  const uniform = upload(device, new Float32Array(params.buffer), UNIFORM | COPY_DST);
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 3, resource: { buffer: out } },
      { binding: 5, resource: { buffer: uniform } },
    ],
  });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(Math.ceil(count / 64));
  pass.end();
  device.queue.submit([encoder.finish()]);
  return readF32(device, out, count);
}

gpuSuite("the resident path: GPUBuffer in, GPUBuffers out (Node, Dawn)", probe, () => {
  let device: GPUDevice;
  beforeAll(async () => {
    device = await newDevice();
  });
  afterAll(() => device?.destroy());

  describe("golden vectors", () => {
    it("has the 19 public cases", () => {
      expect(cases.length).toBe(19);
    });

    for (const info of cases) {
      it(`${info.name}: top-k exact, y ≤ 1e-4 of the reference; statistics as the CPU's; eval as the CPU's`, async () => {
        const golden: GoldenCase = loadCase(info);
        const layer: MoELocalLayer = await createMoE({ ...golden.config, backend: "gpu", gpu: device });
        const { dModel: d, k, numExperts: n } = golden.config;
        const batch = golden.x.length / d;
        const x = upload(device, golden.x);
        try {
          const options = { train: true, noise: golden.noise };
          const got = await layer.forward(x, options);
          expect(got.backend).toBe("gpu");
          expect(got.batch).toBe(batch);
          const y = await readF32(device, got.y as GPUBuffer, batch * d);
          const idx = await readI32(device, got.topkIndices as GPUBuffer, batch * k);
          const gates = await readF32(device, got.topkGates as GPUBuffer, batch * k);
          expect(Array.from(idx)).toEqual(Array.from(golden.tensor("topk_indices")));
          expect(relErr(gates, golden.f32("topk_gates"))).toBeLessThanOrEqual(TOL);
          expect(relErr(y, golden.f32("y"))).toBeLessThanOrEqual(TOL);
          const cpu = layer.forwardSync(golden.x, options);
          expect(got.importance!.length).toBe(n);
          expect(relErr(got.importance!, cpu.importance!)).toBeLessThanOrEqual(1e-5);
          expect(relErr(got.load!, cpu.load!)).toBeLessThanOrEqual(1e-5);
          expect(Math.abs(got.lossImportance! - cpu.lossImportance!)).toBeLessThanOrEqual(1e-5 * Math.max(1e-3, Math.abs(cpu.lossImportance!)));
          expect(Math.abs(got.lossLoad! - cpu.lossLoad!)).toBeLessThanOrEqual(1e-5 * Math.max(1e-3, Math.abs(cpu.lossLoad!)));

          // eval mode, into the caller's buffers
          const out = {
            y: device.createBuffer({ size: 4 * batch * d, usage: COPY_DST | COPY_SRC }),
            topkIndices: device.createBuffer({ size: 4 * batch * k, usage: COPY_DST | COPY_SRC }),
            topkGates: device.createBuffer({ size: 4 * batch * k, usage: COPY_DST | COPY_SRC }),
          };
          const evalGot = await layer.forward(x, { out });
          expect(evalGot.y).toBe(out.y);
          expect(evalGot.topkIndices).toBe(out.topkIndices);
          expect(evalGot.importance).toBeUndefined();
          const evalCpu = layer.forwardSync(golden.x);
          expect(Array.from(await readI32(device, out.topkIndices, batch * k))).toEqual(Array.from(evalCpu.topkIndices));
          expect(relErr(await readF32(device, out.topkGates, batch * k), evalCpu.topkGates)).toBeLessThanOrEqual(TOL);
          expect(relErr(await readF32(device, out.y, batch * d), evalCpu.y)).toBeLessThanOrEqual(TOL);
          for (const b of [got.y, got.topkIndices, got.topkGates, ...Object.values(out)]) (b as GPUBuffer).destroy();
        } finally {
          x.destroy();
          layer.dispose();
        }
      }, 300_000);
    }
  });

  describe("seeded noise: the CPU's normals", () => {
    it("normal(i) of the shader equals the CPU generator's within 1e-6 (2^18 normals, three keys)", async () => {
      const count = 2 ** 18;
      for (const [stream, seed] of [
        [0, 0],
        [1, 12345],
        [7, 2 ** 40 + 99],
      ]) {
        const got = await shaderNormals(device, count, stream, seed);
        const want = referenceNormals(count, stream, seed);
        let worst = 0;
        for (let i = 0; i < count; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
        console.log(`resident noise, stream ${stream}, seed ${seed}: max |GPU − CPU generator| = ${worst.toExponential(2)}`);
        expect(worst).toBeLessThanOrEqual(1e-6);
        // the tails are there: values beyond 4 σ were compared
        expect(want.some((v) => Math.abs(v) > 4)).toBe(true);
      }
    });

    const shape: LayerShape = { d: 24, h: 16, n: 12, k: 3, expert: "gelu", noisy: true };
    it("a seeded training forward: top-k, gates, statistics and losses as the CPU layer's", async () => {
      const rng = new Rng(41);
      const config = configOf(shape, randomWeights(rng, shape));
      const layer = await createMoE({ ...config, backend: "gpu", gpu: device });
      const xs = rng.normals(40 * shape.d);
      const x = upload(device, xs);
      for (const seed of [3, 2 ** 33 + 5]) {
        const got = await layer.forward(x, { train: true, seed });
        const want = layer.forwardSync(xs, { train: true, seed });
        expect(Array.from(await readI32(device, got.topkIndices as GPUBuffer, 40 * shape.k))).toEqual(Array.from(want.topkIndices));
        expect(relErr(await readF32(device, got.topkGates as GPUBuffer, 40 * shape.k), want.topkGates)).toBeLessThanOrEqual(TOL);
        expect(relErr(await readF32(device, got.y as GPUBuffer, 40 * shape.d), want.y)).toBeLessThanOrEqual(TOL);
        expect(relErr(got.importance!, want.importance!)).toBeLessThanOrEqual(1e-5);
        expect(relErr(got.load!, want.load!)).toBeLessThanOrEqual(1e-5);
        expect(got.lossImportance!).toBeCloseTo(want.lossImportance!, 5);
        expect(got.lossLoad!).toBeCloseTo(want.lossLoad!, 5);
      }
      x.destroy();
      layer.dispose();
    });

    it("the layer's own stream: a resident training call draws the noise the CPU path's first call draws", async () => {
      const rng = new Rng(42);
      const config = configOf(shape, randomWeights(rng, shape));
      const gpuLayer = await createMoE({ ...config, backend: "gpu", gpu: device, seed: 77 });
      const cpuLayer = await createMoE({ ...config, seed: 77 });
      const xs = rng.normals(33 * shape.d);
      const x = upload(device, xs);
      for (let call = 0; call < 2; call++) {
        const got = await gpuLayer.forward(x, { train: true });
        const want = cpuLayer.forwardSync(xs, { train: true });
        expect(Array.from(await readI32(device, got.topkIndices as GPUBuffer, 33 * shape.k))).toEqual(Array.from(want.topkIndices));
        expect(relErr(got.load!, want.load!)).toBeLessThanOrEqual(1e-5);
      }
      x.destroy();
      gpuLayer.dispose();
      cpuLayer.dispose();
    });
  });

  describe("calls in flight and batches that grow and shrink", () => {
    it("B = 1, 70, 3, 130, 9 submitted together (no await between): each as the CPU layer's; options.batch takes the first rows", async () => {
      const shape: LayerShape = { d: 20, h: 24, n: 9, k: 2, expert: "relu", noisy: true };
      const rng = new Rng(31);
      const layer = await createMoE({ ...configOf(shape, randomWeights(rng, shape)), backend: "gpu", gpu: device });
      const batches = [1, 70, 3, 130, 9];
      const inputs = batches.map((b) => rng.normals(b * shape.d));
      const buffers = inputs.map((xs) => upload(device, xs));
      const calls = buffers.map((x, i) => layer.forward(x, { train: i % 2 === 1, seed: 11 + i }));
      const results = await Promise.all(calls);
      for (let i = 0; i < batches.length; i++) {
        const want = layer.forwardSync(inputs[i], { train: i % 2 === 1, seed: 11 + i });
        const got = results[i];
        expect(got.batch).toBe(batches[i]);
        expect(Array.from(await readI32(device, got.topkIndices as GPUBuffer, batches[i] * shape.k))).toEqual(Array.from(want.topkIndices));
        expect(relErr(await readF32(device, got.y as GPUBuffer, batches[i] * shape.d), want.y)).toBeLessThanOrEqual(TOL);
        if (i % 2 === 1) expect(relErr(got.load!, want.load!)).toBeLessThanOrEqual(1e-5);
        else expect(got.load).toBeUndefined();
      }
      // the first 50 rows of the 130-row buffer
      const first = await layer.forward(buffers[3], { batch: 50 });
      const want = layer.forwardSync(inputs[3].subarray(0, 50 * shape.d));
      expect(relErr(await readF32(device, first.y as GPUBuffer, 50 * shape.d), want.y)).toBeLessThanOrEqual(TOL);
      expect(Array.from(await readI32(device, first.topkIndices as GPUBuffer, 50 * shape.k))).toEqual(Array.from(want.topkIndices));
      for (const b of buffers) b.destroy();
      layer.dispose();
    });
  });

  describe("validation: typed errors before anything runs", () => {
    const shape: LayerShape = { d: 8, h: 8, n: 4, k: 2, expert: "relu", noisy: true };
    let layer: MoELocalLayer;
    beforeAll(async () => {
      layer = await createMoE({ ...configOf(shape, randomWeights(new Rng(5), shape)), backend: "gpu", gpu: device });
    });
    afterAll(() => layer.dispose());

    it("x: STORAGE usage, a whole number of rows, batch within x, unmapped", async () => {
      const noStorage = device.createBuffer({ size: 4 * 8 * 3, usage: COPY_DST });
      expect(await rejection(layer.forward(noStorage))).toMatchObject({ code: "INPUT_SHAPE", message: expect.stringMatching(/STORAGE/) });
      const ragged = device.createBuffer({ size: 4 * 12, usage: STORAGE });
      expect(await rejection(layer.forward(ragged))).toMatchObject({ code: "INPUT_SHAPE", message: expect.stringMatching(/multiple of 4·dModel/) });
      const rows3 = device.createBuffer({ size: 4 * 8 * 3, usage: STORAGE | COPY_DST });
      expect(await rejection(layer.forward(rows3, { batch: 4 }))).toMatchObject({ code: "INPUT_SHAPE" });
      expect(await rejection(layer.forward(rows3, { batch: 1.5 }))).toMatchObject({ code: "INPUT_SHAPE" });
      // options.batch takes the first rows of a larger buffer
      const two = await layer.forward(ragged, { batch: 1 });
      expect(two.batch).toBe(1);
      const mapped = device.createBuffer({ size: 4 * 8, usage: STORAGE, mappedAtCreation: true });
      expect(await rejection(layer.forward(mapped))).toMatchObject({ code: "INPUT_SHAPE", message: expect.stringMatching(/unmap/) });
      for (const b of [noStorage, ragged, rows3, mapped]) b.destroy();
    });

    it("out buffers: COPY_DST, large enough; noise shape; backend; a layer without GPU", async () => {
      const x = upload(device, new Rng(6).normals(3 * 8));
      const small = device.createBuffer({ size: 4 * 8 * 2, usage: COPY_DST });
      expect(await rejection(layer.forward(x, { out: { y: small } }))).toMatchObject({ code: "OUTPUT_SHAPE" });
      const noCopy = device.createBuffer({ size: 4 * 8 * 3, usage: STORAGE });
      expect(await rejection(layer.forward(x, { out: { y: noCopy } }))).toMatchObject({ code: "OUTPUT_SHAPE", message: expect.stringMatching(/COPY_DST/) });
      expect(await rejection(layer.forward(x, { out: { topkGates: new Float32Array(6) as unknown as GPUBuffer } }))).toMatchObject({ code: "OUTPUT_SHAPE" });
      expect(await rejection(layer.forward(x, { train: true, noise: new Float32Array(5) }))).toMatchObject({ code: "NOISE_SHAPE" });
      expect(await rejection(layer.forward(x, { backend: "cpu" }))).toMatchObject({ code: "INVALID_CONFIG" });
      expect(await rejection(layer.forward(x, { seed: -1 }))).toMatchObject({ code: "INVALID_CONFIG" });
      const cpuLayer = await createMoE(configOf(shape, randomWeights(new Rng(5), shape)));
      expect(await rejection(cpuLayer.forward(x))).toMatchObject({ code: "NO_GPU" });
      cpuLayer.dispose();
      for (const b of [x, small, noCopy]) b.destroy();
    });

    it("non-finite x: NON_FINITE_INPUT", async () => {
      const values = new Rng(7).normals(2 * 8);
      values[9] = NaN;
      const x = upload(device, values);
      expect(await rejection(layer.forward(x))).toMatchObject({ code: "NON_FINITE_INPUT" });
      x.destroy();
    });
  });

  describe("device loss: GPU_LOST, and a new layer on a new device", () => {
    const shape: LayerShape = { d: 16, h: 12, n: 6, k: 2, expert: "swiglu", noisy: true };
    const config = configOf(shape, randomWeights(new Rng(8), shape));
    const xs = new Rng(9).normals(10 * shape.d);

    it("the device destroyed right after forward() was called: the call and later ones reject with GPU_LOST", async () => {
      const lossDevice = await newDevice();
      const warnings: MoEWarning[] = [];
      const layer = await createMoE({ ...config, backend: "gpu", gpu: lossDevice, onWarning: (w) => warnings.push(w) });
      const x = upload(lossDevice, xs);
      const first = await layer.forward(x); // warm: the resident pipelines exist
      expect(first.backend).toBe("gpu");
      const pending = layer.forward(x, { train: true, seed: 1 });
      lossDevice.destroy();
      expect(await rejection(pending)).toMatchObject({ code: "GPU_LOST", message: expect.stringMatching(/new device/) });
      expect(await rejection(layer.forward(x))).toMatchObject({ code: "GPU_LOST" });
      // the Float32Array path goes on, on the CPU
      const cpu = await layer.forward(xs);
      expect(cpu.backend).toBe("cpu");

      // a layer on a new device, from the old layer's weights, gives the same results
      const next = await newDevice();
      const again = await createMoE({ ...config, backend: "gpu", gpu: next, weights: await layer.getWeights() });
      const x2 = upload(next, xs);
      const got = await again.forward(x2);
      expect(relErr(await readF32(next, got.y as GPUBuffer, 10 * shape.d), cpu.y)).toBeLessThanOrEqual(TOL);
      expect(Array.from(await readI32(next, got.topkIndices as GPUBuffer, 10 * shape.k))).toEqual(Array.from(cpu.topkIndices));
      again.dispose();
      layer.dispose();
      next.destroy();
    });

    it("a device lost between calls: GPU_LOST at the next call", async () => {
      const lossDevice = await newDevice();
      const layer = await createMoE({ ...config, backend: "gpu", gpu: lossDevice, onWarning: () => undefined });
      const x = upload(lossDevice, xs);
      await layer.forward(x);
      lossDevice.destroy();
      await lossDevice.lost;
      expect(await rejection(layer.forward(x))).toMatchObject({ code: "GPU_LOST" });
      layer.dispose();
    });
  });
});

// ---- Deno (wgpu), as test/gpu_deno.test.ts runs its script ------------------------------------

interface DenoResidentReport {
  noAdapter?: string;
  adapter?: string;
  /** Whether the Deno device had the subgroups feature (the subgroup variants ran). */
  subgroups?: boolean;
  cases?: Array<{
    name: string;
    ok: boolean;
    topkExact: boolean;
    evalTopkExact: boolean;
    seededExact: boolean;
    gatesErr: number;
    yErr: number;
    evalErr: number;
    importanceErr: number;
    loadErr: number;
    error?: string;
  }>;
  loss?: { ok: boolean; code: string; laterCode: string; error?: string };
}

const runDeno = () => runDenoGpuScript<DenoResidentReport>("test/deno/gpu_resident.ts");

describe("the resident path in Deno (built-in WebGPU)", () => {
  if (!existsSync(DENO)) {
    it.skip("skipped: the deno package is not installed (npm ci)", () => undefined);
    return;
  }
  const { report, output, status } = runDeno();
  if (report?.noAdapter !== undefined) {
    if (process.env.CI) {
      it("has a WebGPU adapter (required under CI)", () => {
        throw new Error(`Deno found no WebGPU adapter: ${report.noAdapter}`);
      });
    } else {
      it.skip(`skipped: Deno found no WebGPU adapter (${report.noAdapter})`, () => undefined);
    }
    return;
  }

  it("the Deno script ran every case and exited 0", () => {
    expect(report, output.slice(-4000)).toBeDefined();
    expect(report!.cases!.length).toBe(19);
    expect(status, output.slice(-4000)).toBe(0);
    expect(typeof report!.subgroups).toBe("boolean");
    console.log(`Deno resident path ran on: ${report!.adapter} (${report!.subgroups ? "subgroup variants" : "no subgroups: the plain passes"})`);
  });

  it("a device destroyed right after forward() was called: GPU_LOST, and at the next call", () => {
    expect(report?.loss?.error).toBeUndefined();
    expect(report?.loss?.code).toBe("GPU_LOST");
    expect(report?.loss?.laterCode).toBe("GPU_LOST");
  });

  for (const c of report?.cases ?? []) {
    it(`${c.name}: top-k exact (given and seeded noise, eval), y ≤ 1e-4, statistics ≤ 1e-5 of the CPU's`, () => {
      expect(c.error).toBeUndefined();
      expect(c.topkExact).toBe(true);
      expect(c.evalTopkExact).toBe(true);
      expect(c.seededExact).toBe(true);
      expect(c.gatesErr).toBeLessThanOrEqual(TOL);
      expect(c.yErr).toBeLessThanOrEqual(TOL);
      expect(c.evalErr).toBeLessThanOrEqual(TOL);
      expect(c.importanceErr).toBeLessThanOrEqual(1e-5);
      expect(c.loadErr).toBeLessThanOrEqual(1e-5);
      expect(c.ok).toBe(true);
    });
  }
});
