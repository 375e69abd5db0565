// The GPU expert path's behaviour in Node (Dawn): the router on both sides of the crossover, a
// caller's device, device loss (that call and later ones complete on the CPU, with one warning),
// buffers reused across 1,000 calls, adapter limits (weights split across bindings, batches in row
// chunks), calibration, training on a GPU layer, concurrent calls; and, without an adapter,
// backend "gpu" → NO_GPU and "auto" → CPU.
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMoE, MoEError, type MoEConfig, type MoELocalLayer, type MoEWarning } from "edge-moe";
import { configOf, randomWeights, relErr, Rng, TOL, type LayerShape } from "./helpers.ts";
import { gpuSuite, newDevice, probeGpu } from "./gpu_support.ts";

const probe = await probeGpu();

const SHAPE: LayerShape = { d: 16, h: 32, n: 4, k: 2, expert: "relu", noisy: true };

function layerConfig(shape: LayerShape, seed: number, extra: Partial<MoEConfig> = {}): MoEConfig {
  return { ...configOf(shape, randomWeights(new Rng(seed), shape)), ...extra };
}

async function expectCode(promise: Promise<unknown> | (() => unknown), code: string): Promise<MoEError> {
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (error) {
    expect(error).toBeInstanceOf(MoEError);
    expect((error as MoEError).code).toBe(code);
    return error as MoEError;
  }
  throw new Error(`expected MoEError ${code}, nothing was thrown`);
}

/**
 * A stand-in for a GPU object (a GPUDevice, its queue) that forwards everything to `target`
 * (methods bound to it) and overrides some members: how the tests count buffers, shrink limits
 * and lose a device mid-call.
 */
function wrap<T extends object>(target: T, overrides: Record<string, unknown>): T {
  return new Proxy(target, {
    get(target, property) {
      if (typeof property === "string" && property in overrides) return overrides[property];
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

describe("no WebGPU adapter (a child Node process whose Vulkan loader finds no driver)", () => {
  it('backend "gpu" fails with NO_GPU, backend "auto" runs on the CPU', () => {
    const dist = fileURLToPath(new URL("../dist/index.js", import.meta.url));
    const script = `
      import { createMoE } from ${JSON.stringify(dist)};
      const d = 4, n = 2, h = 4;
      const f = (len) => Float32Array.from({ length: len }, (_, i) => Math.sin(i + 1) / 4);
      const weights = { wGate: f(d * n), wNoise: f(d * n), w1: f(n * d * h), b1: f(n * h), w2: f(n * h * d), b2: f(n * d) };
      const config = { dModel: d, dHidden: h, numExperts: n, k: 1, expert: "relu", weights };
      const report = {};
      try { await createMoE({ ...config, backend: "gpu" }); report.gpu = "created"; } catch (e) { report.gpu = e.code; report.message = e.message; }
      const auto = await createMoE({ ...config, backend: "auto" });
      const out = await auto.forward(f(3 * d));
      report.autoBackend = out.backend;
      report.autoStatus = auto.gpuStatus;
      const forced = await auto.forward(f(d), { backend: "gpu" }).catch((e) => e.code);
      report.forcedCode = forced;
      console.log(JSON.stringify(report));
      process.exit(0);
    `;
    const stdout = execFileSync(process.execPath, ["--input-type=module", "-e", script], {
      env: { ...process.env, VK_ICD_FILENAMES: "/nonexistent/no_driver_icd.json", CI: "" },
      encoding: "utf8",
      timeout: 120_000,
    });
    const report = JSON.parse(stdout.trim().split("\n").pop()!);
    expect(report.gpu).toBe("NO_GPU");
    expect(report.message).toMatch(/no WebGPU adapter/);
    expect(report.autoBackend).toBe("cpu");
    expect(report.autoStatus.available).toBe(false);
    expect(report.autoStatus.reason).toMatch(/adapter/);
    expect(report.forcedCode).toBe("NO_GPU");
  });
});

describe("configuration of the GPU options", () => {
  it("rejects a bad crossover, gpu or onWarning with INVALID_CONFIG", async () => {
    const base = layerConfig(SHAPE, 1);
    for (const crossover of [0, -1, Number.NaN, "8"]) {
      await expectCode(createMoE({ ...base, crossover: crossover as number }), "INVALID_CONFIG");
    }
    for (const gpu of [5, "device", null]) {
      await expectCode(createMoE({ ...base, backend: "gpu", gpu: gpu as unknown as GPUDevice }), "INVALID_CONFIG");
    }
    await expectCode(createMoE({ ...base, backend: "gpu", gpu: {} as GPUDevice }), "INVALID_CONFIG");
    await expectCode(createMoE({ ...base, onWarning: "log" as unknown as () => void }), "INVALID_CONFIG");
  });

  it('a CPU layer: options.backend "gpu" fails with NO_GPU, a bad options.backend with INVALID_CONFIG', async () => {
    const layer = await createMoE(layerConfig(SHAPE, 1));
    const x = new Rng(2).normals(2 * SHAPE.d);
    await expectCode(layer.forward(x, { backend: "gpu" }), "NO_GPU");
    await expectCode(layer.forward(x, { backend: "tpu" as "gpu" }), "INVALID_CONFIG");
    expect((await layer.forward(x)).backend).toBe("cpu");
    expect(layer.gpuStatus.available).toBe(false);
    const calibration = await layer.calibrate();
    expect(calibration.samples).toEqual([]);
    layer.dispose();
  });
});

gpuSuite("the GPU path (Node, Dawn)", probe, () => {
  const rng = new Rng(20260801);

  describe("router: backend auto picks the GPU at B·k ≥ crossover", () => {
    let layer: MoELocalLayer;
    let cpu: MoELocalLayer;
    beforeAll(async () => {
      const config = layerConfig(SHAPE, 3);
      layer = await createMoE({ ...config, backend: "auto", crossover: 8 });
      cpu = await createMoE(config);
    });
    afterAll(() => {
      layer.dispose();
      cpu.dispose();
    });

    it("B·k = 6 < 8 → cpu; B·k = 8 and 10 → gpu; the outputs agree with the CPU layer", async () => {
      expect(layer.gpuStatus.crossover).toBe(8);
      for (const [batch, backend] of [
        [3, "cpu"],
        [4, "gpu"],
        [5, "gpu"],
        [1, "cpu"],
        [64, "gpu"],
      ] as const) {
        const x = rng.normals(batch * SHAPE.d);
        const got = await layer.forward(x);
        expect(got.backend, `B = ${batch}`).toBe(backend);
        const want = cpu.forwardSync(x);
        expect(Array.from(got.topkIndices)).toEqual(Array.from(want.topkIndices));
        expect(relErr(got.y, want.y)).toBeLessThanOrEqual(TOL);
      }
    });

    it("options.backend overrides the router per call; forwardSync is always the CPU", async () => {
      const big = rng.normals(16 * SHAPE.d);
      const small = rng.normals(1 * SHAPE.d);
      expect((await layer.forward(big, { backend: "cpu" })).backend).toBe("cpu");
      expect((await layer.forward(small, { backend: "gpu" })).backend).toBe("gpu");
      expect((await layer.forward(small, { backend: "auto" })).backend).toBe("cpu");
      expect(layer.forwardSync(big).backend).toBe("cpu");
    });

    it("before calibration the crossover is an estimate from the expert size (Infinity on a software adapter)", async () => {
      const auto = await createMoE({ ...layerConfig(SHAPE, 3), backend: "auto" });
      const status = auto.gpuStatus;
      expect(status.available).toBe(true);
      expect(status.adapter).toBeTruthy();
      const flopsPerPair = 2 * SHAPE.d * SHAPE.h * 2;
      expect(status.crossover).toBe(status.software ? Infinity : Math.ceil(3e7 / flopsPerPair));
      const out = await auto.forward(rng.normals(8 * SHAPE.d));
      expect(out.backend).toBe(8 * SHAPE.k >= status.crossover ? "gpu" : "cpu");
      auto.dispose();
    });
  });

  describe("calibrate() times both paths and sets the crossover", () => {
    it("measures each batch size on both back ends; the crossover follows the rule", async () => {
      const layer = await createMoE({ ...layerConfig(SHAPE, 4), backend: "auto", crossover: 3 });
      const result = await layer.calibrate({ batchSizes: [8, 2], repeats: 1 });
      expect(result.samples.map((s) => s.batch)).toEqual([2, 8]);
      for (const s of result.samples) {
        expect(s.pairs).toBe(s.batch * SHAPE.k);
        expect(s.cpuMs).toBeGreaterThan(0);
        expect(s.gpuMs).toBeGreaterThan(0);
      }
      // the smallest measured B·k from which the GPU is faster at every larger size, else Infinity
      let expected = Infinity;
      for (let i = result.samples.length - 1; i >= 0 && result.samples[i].gpuMs < result.samples[i].cpuMs; i--) expected = result.samples[i].pairs;
      expect(result.crossover).toBe(expected);
      expect(layer.gpuStatus.crossover).toBe(expected);
      expect(result.software).toBe(layer.gpuStatus.software);
      await expectCode(layer.calibrate({ batchSizes: [0] }), "INVALID_CONFIG");
      await expectCode(layer.calibrate({ repeats: 0 }), "INVALID_CONFIG");
      layer.dispose();
    });
  });

  describe("a threaded CPU build (shared wasm memory) under the GPU path", () => {
    it("uploads the plan from shared memory: the GPU runs, no warning, y agrees with the CPU", async () => {
      const warnings: MoEWarning[] = [];
      const layer = await createMoE({ ...layerConfig(SHAPE, 9), backend: "gpu", threads: 2, onWarning: (w) => warnings.push(w) });
      try {
        for (const batch of [1, 7, 33]) {
          const x = rng.normals(batch * SHAPE.d);
          const got = await layer.forward(x);
          expect(got.backend).toBe("gpu");
          expect(relErr(got.y, layer.forwardSync(x).y)).toBeLessThanOrEqual(TOL);
        }
        expect(warnings).toEqual([]);
        expect(layer.gpuStatus.available).toBe(true);
      } finally {
        layer.dispose();
      }
    });
  });

  describe("gpu: a caller's device", () => {
    it("runs on the given device, and dispose() leaves the device to its owner", async () => {
      const device = await newDevice();
      const config = layerConfig(SHAPE, 5);
      const first = await createMoE({ ...config, backend: "gpu", gpu: device });
      const x = rng.normals(6 * SHAPE.d);
      const got = await first.forward(x);
      expect(got.backend).toBe("gpu");
      expect(relErr(got.y, first.forwardSync(x).y)).toBeLessThanOrEqual(TOL);
      first.dispose();
      // the device is still alive: a second layer uses it
      const second = await createMoE({ ...config, backend: "gpu", gpu: device });
      const again = await second.forward(x);
      expect(again.backend).toBe("gpu");
      expect(relErr(again.y, got.y)).toBeLessThanOrEqual(TOL);
      second.dispose();
      device.destroy();
    });
  });

  describe("device loss: the call completes on the CPU, later calls use the CPU, one warning", () => {
    const config = layerConfig(SHAPE, 6);
    let reference: MoELocalLayer;
    beforeAll(async () => {
      reference = await createMoE(config);
    });
    afterAll(() => reference.dispose());

    async function lossScenario(lose: (device: GPUDevice) => GPUDevice, destroyAfterCall: boolean) {
      const device = await newDevice();
      const warnings: MoEWarning[] = [];
      const layer = await createMoE({ ...config, backend: "gpu", gpu: lose(device), onWarning: (w) => warnings.push(w) });
      const x = rng.normals(12 * SHAPE.d);
      const options = { train: true, seed: 99 };
      const pending = layer.forward(x, options);
      if (destroyAfterCall) device.destroy();
      const got = await pending;
      const want = reference.forwardSync(x, options);
      expect(got.backend).toBe("cpu");
      expect(Array.from(got.topkIndices)).toEqual(Array.from(want.topkIndices));
      expect(Array.from(got.y)).toEqual(Array.from(want.y));
      expect(got.lossLoad).toBe(want.lossLoad);
      expect(warnings.length).toBe(1);
      expect(["GPU_LOST", "GPU_ERROR"]).toContain(warnings[0].code);
      expect(warnings[0].message).toMatch(/CPU/);
      // later calls: the CPU, no new warning
      for (let i = 0; i < 3; i++) {
        const later = await layer.forward(x, { backend: "gpu" });
        expect(later.backend).toBe("cpu");
        expect(Array.from(later.y)).toEqual(Array.from(reference.forwardSync(x).y));
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(warnings.length).toBe(1);
      expect(layer.gpuStatus.available).toBe(false);
      expect(layer.gpuStatus.reason).toBeTruthy();
      layer.dispose();
    }

    it("device.destroy() right after forward() was called", async () => {
      await lossScenario((device) => device, true);
    });

    it("device.destroy() after the call's work was submitted, before its readback", async () => {
      await lossScenario((device) => {
        const queue = device.queue;
        const submitThenDestroy = wrap(queue, {
          submit: (buffers: GPUCommandBuffer[]) => {
            queue.submit(buffers);
            device.destroy();
          },
        });
        return wrap(device, { queue: submitThenDestroy });
      }, false);
    });

    it("a device lost between calls: the next call runs on the CPU, one warning", async () => {
      const device = await newDevice();
      const warnings: MoEWarning[] = [];
      const layer = await createMoE({ ...config, backend: "gpu", gpu: device, onWarning: (w) => warnings.push(w) });
      const x = rng.normals(4 * SHAPE.d);
      expect((await layer.forward(x)).backend).toBe("gpu");
      device.destroy();
      await device.lost;
      const got = await layer.forward(x);
      expect(got.backend).toBe("cpu");
      expect(Array.from(got.y)).toEqual(Array.from(reference.forwardSync(x).y));
      expect(warnings.map((w) => w.code)).toEqual(["GPU_LOST"]);
      layer.dispose();
    });
  });

  describe("buffers are reused: no GPU allocation over 1,000 calls", () => {
    it("after one call at the largest batch, 1,000 calls of B = 1…64 create no buffer", async () => {
      const device = await newDevice();
      let created = 0;
      let createdBytes = 0;
      const counting = wrap(device, {
        createBuffer: (descriptor: GPUBufferDescriptor) => {
          created++;
          createdBytes += descriptor.size;
          return device.createBuffer(descriptor);
        },
      });
      const config = layerConfig(SHAPE, 7);
      const layer = await createMoE({ ...config, backend: "gpu", gpu: counting });
      const x = rng.normals(64 * SHAPE.d);
      await layer.forward(x);
      const afterWarmUp = { created, createdBytes };
      expect(afterWarmUp.created).toBeGreaterThan(0);
      for (let call = 0; call < 1000; call++) {
        const batch = 1 + ((call * 37) % 64);
        const rows = x.subarray(0, batch * SHAPE.d);
        const got = await layer.forward(rows);
        expect(got.backend).toBe("gpu");
        if (call % 100 === 0) expect(relErr(got.y, layer.forwardSync(rows).y)).toBeLessThanOrEqual(TOL);
      }
      expect({ created, createdBytes }).toEqual(afterWarmUp);
      layer.dispose();
      device.destroy();
    }, 600_000);
  });

  describe("adapter limits: weights split across bindings, large batches in row chunks", () => {
    // A device that reports a tiny maxStorageBufferBindingSize; every binding made on it is checked.
    const LIMIT = 8700;
    for (const expert of ["relu", "swiglu"] as const) {
      it(`${expert}, d = 8, h = 128, n = 5: every binding ≤ ${LIMIT} bytes, y as on the CPU`, async () => {
        const device = await newDevice();
        const limits = {
          maxStorageBufferBindingSize: LIMIT,
          maxBufferSize: device.limits.maxBufferSize,
          minStorageBufferOffsetAlignment: device.limits.minStorageBufferOffsetAlignment,
        };
        let biggestBinding = 0;
        let weightBuffers = 0;
        const small = wrap(device, {
          limits,
          createBuffer: (descriptor: GPUBufferDescriptor) => {
            if (descriptor.label === "edge-moe weights") weightBuffers++;
            return device.createBuffer(descriptor);
          },
          createBindGroup: (descriptor: GPUBindGroupDescriptor) => {
            for (const entry of descriptor.entries) {
              const binding = entry.resource as GPUBufferBinding;
              const size = binding.size ?? binding.buffer.size - (binding.offset ?? 0);
              const isStorage = (binding.buffer.usage & 0x80) !== 0;
              if (isStorage) biggestBinding = Math.max(biggestBinding, size);
            }
            return device.createBindGroup(descriptor);
          },
        });
        const shape: LayerShape = { d: 8, h: 128, n: 5, k: 2, expert, noisy: false };
        const config = layerConfig(shape, 8);
        const layer = await createMoE({ ...config, backend: "gpu", gpu: small });
        const x = rng.normals(40 * shape.d);
        const got = await layer.forward(x, { train: true });
        const want = layer.forwardSync(x, { train: true });
        expect(got.backend).toBe("gpu");
        expect(Array.from(got.topkIndices)).toEqual(Array.from(want.topkIndices));
        expect(relErr(got.y, want.y)).toBeLessThanOrEqual(TOL);
        expect(biggestBinding).toBeGreaterThan(0);
        expect(biggestBinding).toBeLessThanOrEqual(LIMIT);
        expect(weightBuffers).toBeGreaterThan(2 * shape.n - 1); // more than one buffer per projection
        layer.dispose();
        device.destroy();
      });
    }

    it('limits too small for one weight column block: "gpu" fails with GPU_ERROR, "auto" warns and runs on the CPU', async () => {
      const device = await newDevice();
      const tiny = wrap(device, {
        limits: { maxStorageBufferBindingSize: 1024, maxBufferSize: 1024, minStorageBufferOffsetAlignment: 256 },
      });
      const config = layerConfig(SHAPE, 11);
      const error = await expectCode(createMoE({ ...config, backend: "gpu", gpu: tiny }), "GPU_ERROR");
      expect(error.message).toMatch(/maxStorageBufferBindingSize/);
      const warnings: MoEWarning[] = [];
      const layer = await createMoE({ ...config, backend: "auto", gpu: tiny, crossover: 1, onWarning: (w) => warnings.push(w) });
      expect(warnings.map((w) => w.code)).toEqual(["GPU_ERROR"]);
      expect(layer.gpuStatus.available).toBe(false);
      const x = rng.normals(4 * SHAPE.d);
      expect((await layer.forward(x)).backend).toBe("cpu");
      await expectCode(layer.forward(x, { backend: "gpu" }), "NO_GPU");
      layer.dispose();
      device.destroy();
    });
  });

  describe("training on a GPU layer", () => {
    it("backward after a GPU forward gives the CPU layer's gradients; step() updates the GPU's weights", async () => {
      const config = layerConfig(SHAPE, 9);
      const gpuLayer = await createMoE({ ...config, backend: "gpu" });
      const cpuLayer = await createMoE(config);
      const x = rng.normals(24 * SHAPE.d);
      const dy = rng.normals(24 * SHAPE.d);
      const before = await gpuLayer.forward(x);
      const onGpu = await gpuLayer.forward(x, { train: true, seed: 5 });
      await cpuLayer.forward(x, { train: true, seed: 5 });
      expect(onGpu.backend).toBe("gpu");
      const gGpu = await gpuLayer.backward(dy);
      const gCpu = await cpuLayer.backward(dy);
      expect(relErr(gGpu.x, gCpu.x)).toBeLessThanOrEqual(1e-6);
      expect(relErr(gGpu.w1!, gCpu.w1!)).toBeLessThanOrEqual(1e-6);
      await gpuLayer.step({ lr: 0.5 });
      await cpuLayer.step({ lr: 0.5 });
      const after = await gpuLayer.forward(x);
      expect(after.backend).toBe("gpu");
      expect(relErr(after.y, cpuLayer.forwardSync(x).y)).toBeLessThanOrEqual(TOL);
      expect(relErr(after.y, before.y)).toBeGreaterThan(1e-3); // the step did change the layer
      gpuLayer.dispose();
      cpuLayer.dispose();
    });
  });

  describe("calls in flight together", () => {
    it("concurrent forward() calls on one GPU layer each get their own result; out buffers are filled", async () => {
      const layer = await createMoE({ ...layerConfig(SHAPE, 10), backend: "gpu" });
      const inputs = [3, 17, 1, 40, 8, 64].map((b) => rng.normals(b * SHAPE.d));
      const results = await Promise.all(inputs.map((x) => layer.forward(x)));
      inputs.forEach((x, i) => {
        expect(results[i].backend).toBe("gpu");
        expect(relErr(results[i].y, layer.forwardSync(x).y)).toBeLessThanOrEqual(TOL);
      });
      const y = new Float32Array(inputs[1].length);
      const withOut = await layer.forward(inputs[1], { out: { y } });
      expect(withOut.y).toBe(y);
      expect(relErr(y, results[1].y)).toBeLessThanOrEqual(TOL);
      layer.dispose();
      await expectCode(layer.forward(inputs[0]), "DISPOSED");
    });

    it('backend "auto" with 2 threads: CPU and GPU calls interleaved in flight give the bits of the same calls one after another', async () => {
      const config = { ...layerConfig(SHAPE, 11), backend: "auto" as const, crossover: 16, wasmBuild: "simd-threads" as const, threads: 2 };
      const together = await createMoE(config);
      const inTurn = await createMoE(config);
      // B·k from 2 to 80 on both sides of the crossover; training calls draw the layer's own noise
      // stream (its order is the order of the calls), seeded ones and eval ones in between.
      const calls = [1, 12, 3, 40, 2, 9, 7, 33, 1, 20, 5, 16].map((batch, i) => ({
        x: rng.normals(batch * SHAPE.d),
        options: i % 3 === 0 ? { train: true } : i % 3 === 1 ? { train: true, seed: 100 + i } : {},
      }));
      const results = await Promise.all(calls.map(({ x, options }) => together.forward(x, options)));
      const backends = new Set(results.map((r) => r.backend));
      expect(backends, "both back ends ran").toEqual(new Set(["cpu", "gpu"]));
      for (const [i, { x, options }] of calls.entries()) {
        const want = await inTurn.forward(x, options);
        const got = results[i];
        expect(got.backend, `call ${i}`).toBe(want.backend);
        expect(Array.from(got.topkIndices), `call ${i}`).toEqual(Array.from(want.topkIndices));
        expect(Array.from(got.topkGates), `call ${i}`).toEqual(Array.from(want.topkGates));
        expect(Array.from(got.y), `call ${i}`).toEqual(Array.from(want.y));
        expect(got.lossImportance, `call ${i}`).toBe(want.lossImportance);
        expect(got.lossLoad, `call ${i}`).toBe(want.lossLoad);
      }
      together.dispose();
      inTurn.dispose();
    });
  });
});
