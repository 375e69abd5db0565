// ONNX Runtime's com.microsoft::MoE (onnxruntime-node, CPU) against the float64 family references
// (test/reference-families.ts) on the mixtral, olmoe and switch_transformers fixtures: a second,
// independent implementation of softmax → top-k → (renormalise) routing and of SiLU-gated and
// ReLU experts. The ONNX graph comes from bench/onnx-moe.mjs, the benchmark's ORT peer's writer
// (one MoE node; weights as initializers in the operator's [experts, out, in] layout; SwiGLU with
// swiglu_fusion = 1: gate and up rows interleaved, gate first); the router logits are an input.
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import { createMoE } from "edge-moe";
import { QUANT_BOUND, expertBytes, expertBytesOf, forwardBytesOf, makeInput, makeWeights, relativeRms } from "../bench/cases.mjs";
import { caseModel, interleaveSwiglu, moeModel, qcaseModel } from "../bench/onnx-moe.mjs";
import { relativeError } from "../bench/peer-ort.mjs";
import { readSafetensors } from "../src/safetensors.ts";
import { Rng } from "./helpers.ts";
import { referenceFamilyForward, type RefTensor } from "./reference-families.ts";

// ---- the check -----------------------------------------------------------------------------------

type Ort = typeof import("onnxruntime-node");
const ort = createRequire(import.meta.url)("onnxruntime-node") as Ort;

const fixtures = new URL("./fixtures/families/", import.meta.url).pathname;

function loadFixture(family: string) {
  const dir = `${fixtures}${family}/`;
  const config = JSON.parse(readFileSync(`${dir}config.json`, "utf8"));
  const tensors = new Map<string, RefTensor>();
  for (const file of readdirSync(dir).filter((f) => f.startsWith("model") && f.endsWith(".safetensors"))) {
    const st = readSafetensors(readFileSync(`${dir}${file}`));
    for (const name of Object.keys(st.tensors)) tensors.set(name, st.tensors[name]);
  }
  const layer = Number(readSafetensors(readFileSync(`${dir}golden.safetensors`)).metadata.layer);
  return { config, tensors, layer };
}

const cases = [
  {
    family: "mixtral",
    prefix: (l: number) => `model.layers.${l}.block_sparse_moe`,
    router: "gate.weight",
    names: ["w1", "w3", "w2"],
    relu: false,
    normalize: 1,
  },
  {
    family: "olmoe",
    prefix: (l: number) => `model.layers.${l}.mlp`,
    router: "gate.weight",
    names: ["gate_proj", "up_proj", "down_proj"],
    relu: false,
    normalize: 0,
  },
  {
    family: "switch_transformers",
    prefix: (l: number) => `encoder.block.${l}.layer.1.mlp`,
    router: "router.classifier.weight",
    names: ["wi", "", "wo"],
    relu: true,
    normalize: 0,
  },
] as const;

describe("onnxruntime-node com.microsoft::MoE vs the float64 family references", () => {
  it.each(cases.map((c) => [c.family, c] as const))("%s", async (_f, c) => {
    const { config, tensors, layer } = loadFixture(c.family);
    const p = c.prefix(layer);
    const d: number = config.hidden_size ?? config.d_model;
    const router = tensors.get(`${p}.${c.router}`)!;
    const n = router.shape[0];
    const k: number = c.family === "switch_transformers" ? 1 : config.num_experts_per_tok;
    const expert = (j: number, w: string) =>
      tensors.get(c.family === "switch_transformers" ? `${p}.experts.expert_${j}.${w}.weight` : `${p}.experts.${j}.${w}.weight`)!;
    const h = expert(0, c.names[0]).shape[0];
    const fc2 = new Float32Array(n * d * h);
    for (let j = 0; j < n; j++) fc2.set(expert(j, c.names[2]).data as Float32Array, j * d * h);
    let fc1: Float32Array;
    if (c.relu) {
      fc1 = new Float32Array(n * h * d);
      for (let j = 0; j < n; j++) fc1.set(expert(j, c.names[0]).data as Float32Array, j * h * d);
    } else {
      const gate = new Float32Array(n * h * d);
      const up = new Float32Array(n * h * d);
      for (let j = 0; j < n; j++) {
        gate.set(expert(j, c.names[0]).data as Float32Array, j * h * d);
        up.set(expert(j, c.names[1]).data as Float32Array, j * h * d);
      }
      fc1 = interleaveSwiglu(gate, up, n, h, d);
    }

    const B = 32;
    const rng = new Rng(31 + d);
    const x = Float32Array.from(rng.normals(B * d));
    const logits = new Float32Array(B * n);
    for (let r = 0; r < B; r++)
      for (let e = 0; e < n; e++) {
        let s = 0;
        for (let i = 0; i < d; i++) s += x[r * d + i] * router.data[e * d + i];
        logits[r * n + e] = s;
      }
    const session = await ort.InferenceSession.create(
      moeModel({ batch: B, d, h, n, k, activation: c.relu ? "relu" : "swiglu", fc1, fc2, normalize: c.normalize }),
      { executionProviders: ["cpu"] },
    );
    const result = await session.run({ input: new ort.Tensor("float32", x, [B, d]), router_logits: new ort.Tensor("float32", logits, [B, n]) });
    const got = result.output.data as Float32Array;
    await session.release();

    const want = referenceFamilyForward(config, tensors, layer, x, B).y;
    const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const err = want.reduce((m, v, i) => Math.max(m, Math.abs(v - got[i])), 0);
    expect(scale).toBeGreaterThan(0);
    expect(err / scale, `max |ORT − reference| / max |y|`).toBeLessThan(1e-4);
  });
});

// The benchmark's ORT peer builds its graph from edge-moe's weight layout (bench/onnx-moe.mjs
// caseModel: x → MatMul(W_gate) → MoE, experts transposed to [out, in], biases for relu): its y
// must be edge-moe's, or the timings compare different computations.
describe("bench/onnx-moe.mjs caseModel on onnxruntime-node vs edge-moe", () => {
  const shape = { d: 48, h: 40, n: 6, k: 2 };
  it.each(["relu", "swiglu"] as const)("%s", async (expert) => {
    const weights = makeWeights(shape, expert) as unknown as Record<string, Float32Array>;
    const session = await ort.InferenceSession.create(caseModel(shape, expert, weights), { executionProviders: ["cpu"] });
    const layer = await createMoE({ dModel: shape.d, dHidden: shape.h, numExperts: shape.n, k: shape.k, expert, weights: makeWeights(shape, expert) });
    try {
      for (const B of [1, 9]) {
        const x = makeInput(B, shape.d);
        const got = (await session.run({ input: new ort.Tensor("float32", x, [B, shape.d]) })).output.data as Float32Array;
        const want = layer.forwardSync(x).y;
        expect(got.length).toBe(want.length);
        expect(relativeError(got, want), `B=${B}: max |ORT − edge-moe| / max |y|`).toBeLessThan(1e-4);
      }
    } finally {
      layer.dispose();
      await session.release();
    }
  });

  it("turns gelu down (ORT's gelu is the tanh approximation)", () => {
    expect(() => caseModel(shape, "gelu" as "relu", {})).toThrow(/gelu/);
  });
});

// The benchmark's quantized peer (bench/onnx-moe.mjs qcaseModel: com.microsoft::QMoE, 8 bits with
// one scale per output row, 4 bits with block_size 32) on the case weights: 8 bits quantizes as
// edge-moe's int8 does (max|w|/127 per output column), so the two agree to rounding; both stay
// within the suite's bounds of edge-moe's f32 y.
describe("bench/onnx-moe.mjs qcaseModel (QMoE) on onnxruntime-node vs edge-moe int8/int4", () => {
  const shape = { d: 64, h: 96, n: 6, k: 2 };
  it.each(["relu", "swiglu"] as const)("%s", async (expert) => {
    const weights = makeWeights(shape, expert) as unknown as Record<string, Float32Array>;
    const config = { dModel: shape.d, dHidden: shape.h, numExperts: shape.n, k: shape.k, expert };
    const f32 = await createMoE({ ...config, weights: makeWeights(shape, expert) });
    const int8 = await createMoE({ ...config, weights: makeWeights(shape, expert), dtype: "int8" });
    try {
      for (const [bits, dtype] of [
        [8, "int8"],
        [4, "int4"],
      ] as const) {
        const session = await ort.InferenceSession.create(qcaseModel(shape, expert, weights, bits), { executionProviders: ["cpu"] });
        try {
          for (const B of [1, 9]) {
            const x = makeInput(B, shape.d);
            const got = (await session.run({ input: new ort.Tensor("float32", x, [B, shape.d]) })).output.data as Float32Array;
            const ref = f32.forwardSync(x).y;
            expect(got.length).toBe(ref.length);
            const err = relativeRms(got, ref);
            expect(err, `${dtype} B=${B}: relative RMS against f32`).toBeLessThanOrEqual(QUANT_BOUND[dtype]);
            expect(err, `${dtype} B=${B}: quantization changes y`).toBeGreaterThan(1e-5);
            if (bits === 8) expect(relativeError(got, int8.forwardSync(x).y), `B=${B}: QMoE-8 vs edge-moe int8`).toBeLessThan(1e-4);
          }
        } finally {
          await session.release();
        }
      }
    } finally {
      f32.dispose();
      int8.dispose();
    }
  });

  it("counts the bytes of the quantized panels", () => {
    const { d, h } = shape;
    expect(expertBytesOf(shape, "relu")).toBe(expertBytes(shape, "relu"));
    expect(expertBytesOf(shape, "relu", "int8")).toBe(d * h + 4 * h + h * d + 4 * d + 4 * (d + h));
    expect(expertBytesOf(shape, "relu", "w8a8")).toBe(d * h + 8 * h + h * d + 8 * d + 4 * (d + h));
    // int4: half a byte a weight, a 4-byte scale per column and block of 32 rows (h = 96: 3 blocks)
    expect(expertBytesOf(shape, "swiglu", "int4")).toBe(2 * ((d * h) / 2 + 4 * h * 2) + (h * d) / 2 + 4 * d * 3);
    expect(forwardBytesOf(shape, "swiglu", 3, "int4")).toBe(3 * expertBytesOf(shape, "swiglu", "int4") + 4 * d * shape.n);
  });
});
