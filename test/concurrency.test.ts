// Overlapping calls: a program fires many calls at one layer without awaiting each (forwards in
// training and eval mode, with seeds, given noise, the layer's own noise stream and out buffers;
// backward and step interleaved; calls that must fail), then awaits them all. Every result, and
// every error code, must equal bit for bit what the same calls give when run one after another in
// the same order on a fresh, identical layer: on 1 and 2 threads, on the GPU (software adapter),
// with CPU and GPU calls interleaved, and on a layer in a worker (Node worker_threads).
import { Worker } from "node:worker_threads";
import { describe, expect, it } from "vitest";
import { createMoE, createMoEWorker, type MoEConfig, type MoELayer } from "edge-moe";
import { configOf, randomWeights, Rng, type LayerShape } from "./helpers.ts";
import { newDevice, probeGpu } from "./gpu_support.ts";

const probe = await probeGpu();
const SHAPE: LayerShape = { d: 24, h: 40, n: 6, k: 2, expert: "gelu", noisy: true };
const BASE: MoEConfig = { ...configOf(SHAPE, randomWeights(new Rng(77), SHAPE)), seed: 11 };

type Outcome = { error: string } | { value: unknown };
type Call = (layer: MoELayer) => Promise<unknown>;

/** A mixed program of calls; `backend` is each forward's options.backend (undefined: the layer's own). */
function program(backends: Array<"cpu" | "gpu" | undefined>, rounds = 6): Call[] {
  const rng = new Rng(5);
  const { d, n } = SHAPE;
  const calls: Call[] = [];
  const backendAt = (i: number) => backends[i % backends.length];
  let f = 0;
  const rng4 = rng.normals(4 * d);
  const forward = (batch: number, options: Record<string, unknown>) => {
    const x = rng.normals(batch * d);
    const backend = backendAt(f++);
    calls.push((layer) => layer.forward(x, { ...options, ...(backend ? { backend } : {}) }));
    return batch;
  };
  // every input is drawn here, once: the two runs must see the same arrays
  const dyOf = (batch: number) => rng.normals(batch * d).map((v) => v * 0.01);
  for (let round = 0; round < rounds; round++) {
    const dy1 = dyOf(forward(5 + round, { train: true, seed: 100 + round }));
    calls.push((layer) => layer.backward(dy1));
    calls.push((layer) => layer.step({ lr: 1e-2, optimizer: round % 2 ? "adam" : "sgd" }));
    const dy2 = dyOf(forward(9, { train: true, noise: rng.normals(9 * n) }));
    forward(3, {}); // eval: uses up the training state of the forward before
    calls.push((layer) => layer.backward(dy2)); // NO_FORWARD_STATE
    const dy3 = dyOf(forward(17, { train: true })); // the layer's own noise stream
    calls.push((layer) => layer.backward(dy3, { weights: false }));
    calls.push((layer) => layer.step({ lr: 5e-3 }));
    calls.push((layer) => layer.forward(rng4, { train: true, out: { y: new Float32Array(4 * d) } }));
    calls.push((layer) => layer.forward(new Float32Array(7))); // INPUT_SHAPE
    forward(64 + round, {});
    calls.push((layer) => layer.getWeights());
  }
  return calls;
}

async function settle(promise: Promise<unknown>): Promise<Outcome> {
  try {
    return { value: await promise };
  } catch (error) {
    return { error: (error as { code?: string }).code ?? String(error) };
  }
}

/** Results as plain data, every float by its bits. */
function bitsOf(value: unknown): unknown {
  if (value instanceof Float32Array || value instanceof Int32Array) return Array.from(new Int32Array(value.buffer, value.byteOffset, value.length));
  if (typeof value === "number") return Object.is(value, -0) ? "-0" : Number.isNaN(value) ? "NaN" : value;
  if (value && typeof value === "object")
    return Object.fromEntries(
      Object.entries(value)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => [k, bitsOf(v)]),
    );
  return value;
}
const canon = (o: Outcome) => ("error" in o ? o : { value: bitsOf(o.value) });

async function compare(make: () => Promise<MoELayer>, calls: Call[]): Promise<{ errors: number; gpuCalls: number }> {
  const one = await make();
  const sequential: Outcome[] = [];
  for (const call of calls) sequential.push(await settle(call(one)));
  one.dispose();
  const two = await make();
  const overlapping = await Promise.all(calls.map((call) => settle(call(two))));
  two.dispose();
  const differ: string[] = [];
  for (let i = 0; i < calls.length; i++) {
    const a = JSON.stringify(canon(overlapping[i])),
      b = JSON.stringify(canon(sequential[i]));
    if (a !== b) differ.push(`call ${i}: overlapping ${a.slice(0, 80)}… one after another ${b.slice(0, 80)}…`);
  }
  expect(differ, `${differ.length} of ${calls.length} calls differ`).toEqual([]);
  return {
    errors: sequential.filter((o) => "error" in o).length,
    gpuCalls: sequential.filter((o) => "value" in o && (o.value as { backend?: string })?.backend === "gpu").length,
  };
}

describe("overlapping calls give the bits of the same calls one after another", () => {
  for (const threads of [1, 2]) {
    it(`CPU, ${threads} thread(s)`, async () => {
      const { errors } = await compare(() => createMoE({ ...BASE, threads, wasmBuild: threads > 1 ? "simd-threads" : "simd" }), program([undefined]));
      expect(errors).toBe(12); // per round: one NO_FORWARD_STATE, one INPUT_SHAPE
    });
  }

  it("a layer in a worker (Node worker_threads)", async () => {
    const worker = new Worker(new URL("../dist/worker.js", import.meta.url));
    try {
      const { errors } = await compare(() => createMoEWorker(worker, { ...BASE, wasmBuild: "simd" }), program([undefined]));
      expect(errors).toBe(12);
    } finally {
      await worker.terminate();
    }
  });

  describe("the GPU path (software adapter)", () => {
    if (!probe.adapter) {
      it("has a WebGPU adapter (required where CI is set)", () => {
        console.log(`no WebGPU adapter: ${probe.reason}`);
        expect(process.env.CI ?? "", `no WebGPU adapter: ${probe.reason}`).toBe("");
      });
      return;
    }
    it("GPU calls only", async () => {
      const gpu = await newDevice();
      const { gpuCalls } = await compare(() => createMoE({ ...BASE, backend: "gpu", gpu }), program(["gpu"], 3));
      expect(gpuCalls).toBeGreaterThan(15);
      gpu.destroy();
    });

    it("GPU and CPU calls interleaved", async () => {
      const gpu = await newDevice();
      const { gpuCalls } = await compare(() => createMoE({ ...BASE, backend: "gpu", gpu }), program(["gpu", "cpu", "cpu", "gpu", "cpu"], 3));
      expect(gpuCalls).toBeGreaterThan(5);
      gpu.destroy();
    });
  });
});
