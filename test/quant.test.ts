// Quantized expert weights (dtype f16, bf16, int8, int4): accuracy on every golden vector against the
// float64 reference, routing identical to the f32 layer's, the kernels against the same layer in f32
// on the dequantized weights getWeights() returns, every GEMM tile path, the simd and relaxed builds,
// 1 and 2 threads, the typed errors (bad dtype, f16 overflow, backward and step), and the GPU's WGSL
// dequantization against the CPU kernels (grouped GEMM and the resident path).
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMoE, MoEError, type ForwardResult, type MoEConfig, type MoEWeights } from "edge-moe";
import { configOf, listCases, loadCase, randomWeights, relErr, Rng, sameBits, type GoldenCase, type LayerShape } from "./helpers.ts";
import { referenceForward, refLayer, roundActivations16 } from "./reference.ts";
import { gpuSuite, newDevice, probeGpu } from "./gpu_support.ts";

type QuantDtype = "f16" | "bf16" | "int8" | "int4";
const DTYPES: readonly QuantDtype[] = ["f16", "bf16", "int8", "int4"];
/** Bound on the relative RMS error of y against the float64 reference, per dtype. */
const RMS_BOUND: Record<QuantDtype, number> = { f16: 1e-3, bf16: 8e-3, int8: 2e-2, int4: 2e-1 };
/** The dtypes whose kernels take integer sums over 16-bit activations (assembly/quant-a16.ts). */
const INTEGER = new Set<QuantDtype>(["int8", "int4"]);

/** ‖cand − ref‖₂ / ‖ref‖₂ (NaN or a length mismatch: Infinity). */
function relRms(cand: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (cand.length !== ref.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (cand[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  const r = den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
  return Number.isNaN(r) ? Infinity : r;
}

async function expectCode(promise: Promise<unknown> | (() => unknown), code: string): Promise<void> {
  let error: unknown;
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (e) {
    error = e;
  }
  expect(error, `expected ${code}`).toBeInstanceOf(MoEError);
  expect((error as MoEError).code).toBe(code);
}

// ---- golden vectors ------------------------------------------------------------------------------

interface GoldenRun {
  golden: GoldenCase;
  f32: ForwardResult;
  refY: Float64Array;
  f32Rms: number;
  quant: Map<QuantDtype, ForwardResult>;
}
const cases = listCases();
const runs = new Map<string, GoldenRun>();
/** Measured relative RMS errors per dtype (printed at the end for docs/numerics.md). */
const measured = new Map<string, number[]>();

beforeAll(async () => {
  for (const info of cases) {
    const golden = loadCase(info);
    const forward = async (config: MoEConfig): Promise<ForwardResult> => {
      const layer = await createMoE(config);
      try {
        return await layer.forward(golden.x, { train: true, noise: golden.noise });
      } finally {
        layer.dispose();
      }
    };
    const f32 = await forward(golden.config);
    const quant = new Map<QuantDtype, ForwardResult>();
    for (const dtype of DTYPES) quant.set(dtype, await forward({ ...golden.config, dtype }));
    const refY = referenceForward(refLayer(golden.config), golden.x, { train: true, noise: golden.noise }).y;
    runs.set(info.name, { golden, f32, refY, f32Rms: relRms(f32.y, refY), quant });
  }
}, 120_000);

afterAll(() => {
  const lines = [...measured].map(([dtype, errors]) => {
    const sorted = [...errors].sort((a, b) => a - b);
    return `${dtype.padEnd(5)} max ${sorted[sorted.length - 1].toExponential(2)}  median ${sorted[Math.floor(sorted.length / 2)].toExponential(2)}  (${sorted.length} cases)`;
  });
  if (lines.length > 0) console.log(`relative RMS error of y against the float64 reference, golden vectors:\n${lines.join("\n")}`);
});

const run = (name: string): GoldenRun => {
  const r = runs.get(name);
  if (!r) throw new Error(`case ${name} did not run`);
  return r;
};

describe("golden vectors: y within the dtype's bound of the float64 reference, routing exactly the f32 layer's", () => {
  it("the f32 layer itself is within 1e-5 (the yardstick is sound)", () => {
    for (const name of cases.map((c) => c.name)) expect(run(name).f32Rms, name).toBeLessThan(1e-5);
  });
  for (const dtype of DTYPES) {
    it.each(cases.map((c) => c.name))(`${dtype} %s`, (name) => {
      const { f32, refY, quant } = run(name);
      const q = quant.get(dtype)!;
      const err = relRms(q.y, refY);
      measured.set(dtype, [...(measured.get(dtype) ?? []), err]);
      expect(err, `relative RMS error of y (${dtype})`).toBeLessThanOrEqual(RMS_BOUND[dtype]);
      expect(sameBits(q.topkIndices, f32.topkIndices), "topkIndices").toBe(true);
      expect(sameBits(q.topkGates, f32.topkGates), "topkGates").toBe(true);
      expect(sameBits(q.importance!, f32.importance!), "importance").toBe(true);
      expect(sameBits(q.load!, f32.load!), "load").toBe(true);
      expect(Object.is(q.lossImportance, f32.lossImportance), "lossImportance").toBe(true);
      expect(Object.is(q.lossLoad, f32.lossLoad), "lossLoad").toBe(true);
    });
  }
});

// ---- the kernels against the dequantized weights ---------------------------------------------------

/**
 * Shapes that reach every tile path: M = 1 (int4: 1 × 16 over pairs of panels and a last single
 * panel; the others: 1 × 32 over groups of four, then 1 × 8), M ≥ 2 (4 × 8 tiles and 3-, 2-, 1-row
 * tails), K not a multiple of 8 or 32 (int4's partial octets and blocks), several int4 blocks,
 * swiglu's interleaved panels, and widths that leave padded columns. k = n: every expert gets
 * every row, so M = B.
 */
const SHAPES: LayerShape[] = [
  { d: 37, h: 45, n: 2, k: 2, expert: "relu", noisy: false },
  { d: 70, h: 24, n: 2, k: 2, expert: "gelu", noisy: false },
  { d: 16, h: 40, n: 3, k: 3, expert: "swiglu", noisy: false },
  { d: 9, h: 100, n: 1, k: 1, expert: "relu", noisy: false },
];
const BATCHES = [1, 2, 3, 4, 5, 6, 7, 9];

describe("kernels: a quantized layer computes with exactly the weights getWeights() returns", () => {
  const rng = new Rng(2718);
  for (const shape of SHAPES) {
    for (const dtype of DTYPES) {
      it(`${dtype}, ${shape.expert} d ${shape.d} h ${shape.h}: y against the f32 layer on the dequantized weights, and against float64`, async () => {
        const weights = randomWeights(rng, shape);
        const config = configOf(shape, weights);
        const layer = await createMoE({ ...config, dtype, wasmBuild: "simd" });
        const dequantized = await layer.getWeights();
        // gating weights and biases come back exactly; expert matrices within the dtype's step
        expect(sameBits(dequantized.wGate!, weights.wGate!)).toBe(true);
        if (shape.expert !== "swiglu") {
          expect(sameBits(dequantized.b1!, weights.b1!)).toBe(true);
          expect(sameBits(dequantized.b2!, weights.b2!)).toBe(true);
        }
        for (const name of shape.expert === "swiglu" ? (["wGateProj", "wUp", "wDown"] as const) : (["w1", "w2"] as const)) {
          const err = relErr(dequantized[name]!, weights[name]!);
          expect(err, `${name} dequantized`).toBeGreaterThan(0);
          expect(err, `${name} dequantized`).toBeLessThanOrEqual({ f16: 1e-3, bf16: 8e-3, int8: 1e-2, int4: 1.5e-1 }[dtype]);
        }
        const plain = await createMoE({ ...config, weights: dequantized, wasmBuild: "simd" });
        const ref = refLayer({ ...config, weights: dequantized });
        try {
          for (const batch of BATCHES) {
            const x = rng.normals(batch * shape.d);
            const got = layer.forwardSync(x);
            const want = plain.forwardSync(x);
            // f16, bf16: w = the dequantized value in every madd, in the f32 kernels' order: the
            // same bits. int8, int4: integer sums over activations rounded to 16 bits a row, which
            // moves y by ~3e-5 of max|y|; against float64 that rounds them by the same rule, only
            // the activations' own f32 rounding remains (it can move a rounded activation by one step).
            if (INTEGER.has(dtype)) {
              expect(relErr(got.y, want.y), `B=${batch}`).toBeLessThanOrEqual(1e-4);
              const rounded = referenceForward(ref, x, { roundActivations: roundActivations16 }).y;
              expect(relErr(got.y, rounded), `B=${batch}: float64 on the dequantized weights, activations rounded`).toBeLessThanOrEqual(2e-5);
            } else {
              expect(sameBits(got.y, want.y), `B=${batch}: same bits as f32 on the dequantized weights`).toBe(true);
            }
            expect(relErr(got.y, referenceForward(ref, x).y), `B=${batch}: float64 on the dequantized weights`).toBeLessThanOrEqual(1e-4);
          }
        } finally {
          layer.dispose();
          plain.dispose();
        }
      });
    }
  }
});

/**
 * The relaxed build on Node 20 needs --experimental-wasm-relaxed-simd: run in a child process with
 * the flag, it reports per dtype the relaxed layer's y against the simd one's and whether their
 * routing agrees.
 */
function relaxedAgainstSimd(shape: LayerShape, dtypes: readonly QuantDtype[]): Record<string, { err: number; routing: boolean }> {
  const script = `
    const { createMoE } = await import(${JSON.stringify(new URL("../dist/index.js", import.meta.url).href)});
    const { shape, dtypes } = ${JSON.stringify({ shape, dtypes })};
    let s = 12345;
    const r = () => { s = (Math.imul(s, 1103515245) + 12345) >>> 0; return s / 2 ** 32 - 0.5; };
    const arr = (n, scale) => Float32Array.from({ length: n }, () => r() * scale);
    const { d, h, n, k } = shape;
    const weights = { wGate: arr(d * n, 1), wNoise: arr(d * n, 0.5), w1: arr(n * d * h, 0.5), b1: arr(n * h, 0.1), w2: arr(n * h * d, 0.3), b2: arr(n * d, 0.1) };
    const x = arr(11 * d, 2);
    const out = {};
    for (const dtype of dtypes) {
      const config = { dModel: d, dHidden: h, numExperts: n, k, expert: shape.expert, noisyGating: shape.noisy, weights, dtype };
      const simd = await createMoE({ ...config, wasmBuild: "simd" });
      const relaxed = await createMoE({ ...config, wasmBuild: "relaxed" });
      let err = 0, routing = true;
      for (const batch of [1, 2, 11]) {
        const rows = x.subarray(0, batch * d);
        const a = simd.forwardSync(rows), b = relaxed.forwardSync(rows);
        let diff = 0, top = 0;
        for (let i = 0; i < a.y.length; i++) { diff = Math.max(diff, Math.abs(a.y[i] - b.y[i])); top = Math.max(top, Math.abs(a.y[i])); }
        err = Math.max(err, Number.isNaN(diff) ? Infinity : diff / top);
        routing &&= a.topkIndices.every((v, i) => v === b.topkIndices[i]);
      }
      out[dtype] = { err, routing };
    }
    console.log(JSON.stringify(out));
  `;
  const stdout = execFileSync(process.execPath, ["--experimental-wasm-relaxed-simd", "--input-type=module", "-e", script], { encoding: "utf8" });
  return JSON.parse(stdout.trim().split("\n").pop()!) as Record<string, { err: number; routing: boolean }>;
}

describe("degenerate weights", () => {
  for (const dtype of DTYPES) {
    it(`${dtype}: zero matrices and columns stay exactly zero; tiny and large weights give finite y, as the dequantized f32 layer`, async () => {
      const shape: LayerShape = { d: 20, h: 12, n: 2, k: 2, expert: "relu", noisy: false };
      const rng = new Rng(99);
      const weights = randomWeights(rng, shape);
      const { d, h } = shape;
      weights.w1!.fill(0, 0, d * h); // expert 0's up-projection: all zero
      for (let r = 0; r < h; r++) weights.w2![r * d + 3] = 0; // expert 0's output column 3
      for (let i = d * h; i < 2 * d * h; i += 7) weights.w1![i] = 1e-30; // expert 1: some tiny
      weights.w2![h * d + 5] = 3e4; // expert 1: one large
      const layer = await createMoE({ ...configOf(shape, weights), dtype, wasmBuild: "simd" });
      const dequantized = await layer.getWeights();
      const plain = await createMoE({ ...configOf(shape, dequantized), wasmBuild: "simd" });
      try {
        expect(dequantized.w1!.subarray(0, d * h).every((v) => v === 0)).toBe(true);
        for (let r = 0; r < h; r++) expect(dequantized.w2![r * d + 3]).toBe(0);
        const x = rng.normals(5 * d);
        const got = layer.forwardSync(x);
        const want = plain.forwardSync(x);
        expect(got.y.every(Number.isFinite)).toBe(true);
        if (INTEGER.has(dtype)) expect(relErr(got.y, want.y)).toBeLessThanOrEqual(1e-4);
        else expect(sameBits(got.y, want.y)).toBe(true);
      } finally {
        layer.dispose();
        plain.dispose();
      }
    });
  }
});

describe("builds and threads", () => {
  const shape: LayerShape = { d: 40, h: 72, n: 4, k: 2, expert: "gelu", noisy: true };
  for (const dtype of DTYPES) {
    it(`${dtype}: simd 1 thread = simd-threads 2 threads bit for bit`, async () => {
      const rng = new Rng(31);
      const config = configOf(shape, randomWeights(rng, shape));
      const x = rng.normals(11 * shape.d);
      const simd = await createMoE({ ...config, dtype, wasmBuild: "simd" });
      const threaded = await createMoE({ ...config, dtype, wasmBuild: "simd-threads", threads: 2 });
      try {
        for (const batch of [1, 2, 11]) {
          const rows = x.subarray(0, batch * shape.d);
          const a = simd.forwardSync(rows, { train: true, seed: 5 });
          const b = threaded.forwardSync(rows, { train: true, seed: 5 });
          expect(sameBits(a.y, b.y), `B=${batch}: y`).toBe(true);
          expect(sameBits(a.topkIndices, b.topkIndices), `B=${batch}: topkIndices`).toBe(true);
          const c = await threaded.forward(rows, { train: true, seed: 5 });
          expect(sameBits(a.y, c.y), `B=${batch}: y of the async forward`).toBe(true);
        }
      } finally {
        simd.dispose();
        threaded.dispose();
      }
    });
  }

  it("the relaxed build (fused multiply-add) is within 1e-5 of the simd build, same routing, every dtype", () => {
    const results = relaxedAgainstSimd({ d: 40, h: 72, n: 4, k: 2, expert: "relu", noisy: false }, DTYPES);
    for (const dtype of DTYPES) {
      expect(results[dtype].routing, dtype).toBe(true);
      expect(results[dtype].err, dtype).toBeLessThanOrEqual(1e-5);
    }
  });

  it('dtype "f32" given explicitly is the default, bit for bit', async () => {
    const rng = new Rng(77);
    const config = configOf(shape, randomWeights(rng, shape));
    const x = rng.normals(5 * shape.d);
    const a = await createMoE(config);
    const b = await createMoE({ ...config, dtype: "f32" });
    try {
      expect(sameBits(a.forwardSync(x).y, b.forwardSync(x).y)).toBe(true);
    } finally {
      a.dispose();
      b.dispose();
    }
  });
});

describe("errors", () => {
  const shape: LayerShape = { d: 8, h: 16, n: 2, k: 1, expert: "relu", noisy: true };
  const config = (): MoEConfig => configOf(shape, randomWeights(new Rng(3), shape));

  it("an unknown dtype is INVALID_CONFIG", async () => {
    await expectCode(createMoE({ ...config(), dtype: "fp8" as never }), "INVALID_CONFIG");
    await expectCode(createMoE({ ...config(), dtype: "INT8" as never }), "INVALID_CONFIG");
  });

  it("an expert weight beyond ±65504 is INVALID_CONFIG for f16 and fine for bf16", async () => {
    const c = config();
    const w2 = c.weights!.w2!.slice();
    w2[5] = 70000;
    const weights: MoEWeights = { ...c.weights, w2 };
    await expectCode(createMoE({ ...c, weights, dtype: "f16" }), "INVALID_CONFIG");
    const layer = await createMoE({ ...c, weights, dtype: "bf16" });
    expect((await layer.getWeights()).w2![5]).toBe(70144); // bf16's nearest
    layer.dispose();
  });

  for (const dtype of DTYPES) {
    it(`${dtype}: backward and step are UNSUPPORTED; training-mode forward still gives the losses`, async () => {
      const layer = await createMoE({ ...config(), dtype });
      try {
        const x = new Rng(9).normals(3 * shape.d);
        const out = await layer.forward(x, { train: true });
        expect(Number.isFinite(out.lossImportance)).toBe(true);
        await expectCode(layer.backward(new Float32Array(3 * shape.d)), "UNSUPPORTED");
        await expectCode(layer.step({ lr: 0.1 } as never), "UNSUPPORTED");
      } finally {
        layer.dispose();
      }
    });
  }
});

// ---- the GPU path ----------------------------------------------------------------------------------
// A quantized layer uploads its packed weights and the grouped GEMM dequantizes them in WGSL
// (shaders/grouped_gemm.wgsl): the same quantized values and scales as the CPU kernels, so both back
// ends agree to float32 rounding.
const probe = await probeGpu();
const MAP_READ = 0x1;
const COPY_SRC = 0x4;
const COPY_DST = 0x8;
const STORAGE = 0x80;

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

gpuSuite("GPU: the grouped GEMM dequantizes f16, bf16, int8 and int4 slabs in WGSL", probe, () => {
  let device: GPUDevice;
  beforeAll(async () => {
    device = await newDevice();
  });
  afterAll(() => device?.destroy());

  // odd widths (padding of rows, columns, int4 blocks), more than one int4 block, swiglu's two halves
  const shapes: LayerShape[] = [
    { d: 24, h: 40, n: 4, k: 2, expert: "relu", noisy: false },
    { d: 70, h: 37, n: 5, k: 2, expert: "swiglu", noisy: false },
    { d: 33, h: 100, n: 3, k: 1, expert: "gelu", noisy: true },
  ];
  for (const shape of shapes) {
    it(`${shape.expert} d ${shape.d} h ${shape.h}: backend "gpu" agrees with the layer's own CPU kernels within 1e-4 of max|y|, every dtype, same routing`, async () => {
      for (const dtype of DTYPES) {
        const rng = new Rng(404 + shape.d);
        const config = configOf(shape, randomWeights(rng, shape));
        const layer = await createMoE({ ...config, dtype, backend: "gpu", gpu: device });
        try {
          const x = rng.normals(19 * shape.d);
          const got = await layer.forward(x);
          const want = layer.forwardSync(x);
          expect(got.backend, dtype).toBe("gpu");
          expect(sameBits(got.topkIndices, want.topkIndices), dtype).toBe(true);
          expect(relErr(got.y, want.y), dtype).toBeLessThanOrEqual(1e-4);
        } finally {
          layer.dispose();
        }
      }
    });
  }

  it("f16 subnormal weights (below 6.1e-5) are dequantized exactly: the GPU's y matches the CPU's", async () => {
    const shape: LayerShape = { d: 16, h: 16, n: 2, k: 1, expert: "relu", noisy: false };
    const rng = new Rng(9);
    const weights = randomWeights(rng, shape);
    for (const name of ["w1", "w2"] as const) weights[name] = weights[name]!.map((v) => v * 1e-4);
    const layer = await createMoE({ ...configOf(shape, weights), dtype: "f16", backend: "gpu", gpu: device });
    try {
      const x = rng.normals(8 * shape.d, 1e4);
      const got = await layer.forward(x);
      const want = layer.forwardSync(x);
      expect(got.backend).toBe("gpu");
      expect(relErr(got.y, want.y)).toBeLessThanOrEqual(1e-4);
    } finally {
      layer.dispose();
    }
  });

  it("the resident path (GPUBuffer x) runs a quantized layer's experts from the same slabs: y as the CPU's", async () => {
    const shape: LayerShape = { d: 40, h: 24, n: 6, k: 2, expert: "swiglu", noisy: true };
    for (const dtype of ["int4", "int8", "bf16"] as const) {
      const rng = new Rng(77);
      const layer = await createMoE({ ...configOf(shape, randomWeights(rng, shape)), dtype, backend: "gpu", gpu: device });
      try {
        const batch = 9;
        const x = rng.normals(batch * shape.d);
        const xBuffer = device.createBuffer({ size: x.byteLength, usage: STORAGE | COPY_DST | COPY_SRC });
        device.queue.writeBuffer(xBuffer, 0, x);
        const got = await layer.forward(xBuffer);
        const y = await readF32(device, got.y as GPUBuffer, batch * shape.d);
        const want = layer.forwardSync(x);
        expect(relErr(y, want.y), dtype).toBeLessThanOrEqual(1e-4);
        for (const b of [xBuffer, got.y, got.topkIndices, got.topkGates] as GPUBuffer[]) b.destroy();
      } finally {
        layer.dispose();
      }
    }
  });
});
