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
import { makeInput, makeWeights } from "../bench/cases.mjs";
import { caseModel, interleaveSwiglu, moeModel } from "../bench/onnx-moe.mjs";
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
