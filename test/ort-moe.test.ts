// ONNX Runtime's com.microsoft::MoE (onnxruntime-node, CPU) against the float64 family references
// (test/reference-families.ts) on the mixtral, olmoe and switch_transformers fixtures: a second,
// independent implementation of softmax → top-k → (renormalise) routing and of SiLU-gated and
// ReLU experts. The ONNX graph is written here by a minimal protobuf writer (ModelProto with one
// MoE node; weights as initializers in the operator's [experts, out, in] layout; SwiGLU with
// swiglu_fusion = 1: gate and up rows interleaved, gate first).
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import { readSafetensors } from "../src/safetensors.ts";
import { Rng } from "./helpers.ts";
import { referenceFamilyForward, type RefTensor } from "./reference-families.ts";

// ---- protobuf (proto3 wire format) -------------------------------------------------------------

class Pb {
  private parts: number[] = [];
  private varint(v: bigint | number): void {
    let x = BigInt.asUintN(64, BigInt(v));
    do {
      const byte = Number(x & 0x7fn);
      x >>= 7n;
      this.parts.push(x ? byte | 0x80 : byte);
    } while (x);
  }
  private key(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }
  int(field: number, v: number | bigint): this {
    this.key(field, 0);
    this.varint(v);
    return this;
  }
  float(field: number, v: number): this {
    this.key(field, 5);
    const b = new Uint8Array(new Float32Array([v]).buffer);
    this.parts.push(...b);
    return this;
  }
  bytes(field: number, v: Uint8Array): this {
    this.key(field, 2);
    this.varint(v.length);
    for (const b of v) this.parts.push(b);
    return this;
  }
  string(field: number, v: string): this {
    return this.bytes(field, new TextEncoder().encode(v));
  }
  message(field: number, m: Pb): this {
    return this.bytes(field, m.done());
  }
  done(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

const FLOAT = 1;
const tensorProto = (name: string, dims: number[], data: Float32Array) => {
  const t = new Pb();
  for (const d of dims) t.int(1, d);
  return t.int(2, FLOAT).string(8, name).bytes(9, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
};
const valueInfo = (name: string, dims: number[]) => {
  const shape = new Pb();
  for (const d of dims) shape.message(1, new Pb().int(1, d));
  return new Pb().string(1, name).message(2, new Pb().message(1, new Pb().int(1, FLOAT).message(2, shape)));
};
type Attr = ["int", number] | ["float", number] | ["string", string];
const attribute = (name: string, [kind, v]: Attr) => {
  const a = new Pb().string(1, name);
  if (kind === "int") return a.int(3, v).int(20, 2);
  if (kind === "float") return a.float(2, v).int(20, 1);
  return a.bytes(4, new TextEncoder().encode(v)).int(20, 3);
};

/** One com.microsoft::MoE node: inputs x [B, d], router logits [B, n]; weights as initializers. */
function moeModel(b: number, d: number, n: number, fc1: Float32Array, fc1Out: number, fc2: Float32Array, h: number, attrs: Record<string, Attr>): Uint8Array {
  const node = new Pb().string(1, "input").string(1, "router_logits").string(1, "fc1").string(1, "").string(1, "fc2").string(2, "output").string(3, "moe").string(4, "MoE").string(7, "com.microsoft");
  for (const [name, value] of Object.entries(attrs)) node.message(5, attribute(name, value));
  const graph = new Pb()
    .message(1, node)
    .string(2, "moe")
    .message(5, tensorProto("fc1", [n, fc1Out, d], fc1))
    .message(5, tensorProto("fc2", [n, d, h], fc2))
    .message(11, valueInfo("input", [b, d]))
    .message(11, valueInfo("router_logits", [b, n]))
    .message(12, valueInfo("output", [b, d]));
  return new Pb()
    .int(1, 8) // ir_version
    .string(2, "edge-moe tests")
    .message(7, graph)
    .message(8, new Pb().string(1, "").int(2, 17))
    .message(8, new Pb().string(1, "com.microsoft").int(2, 1))
    .done();
}

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
  { family: "mixtral", prefix: (l: number) => `model.layers.${l}.block_sparse_moe`, router: "gate.weight", names: ["w1", "w3", "w2"], relu: false, normalize: 1 },
  { family: "olmoe", prefix: (l: number) => `model.layers.${l}.mlp`, router: "gate.weight", names: ["gate_proj", "up_proj", "down_proj"], relu: false, normalize: 0 },
  { family: "switch_transformers", prefix: (l: number) => `encoder.block.${l}.layer.1.mlp`, router: "router.classifier.weight", names: ["wi", "", "wo"], relu: true, normalize: 0 },
] as const;

describe("onnxruntime-node com.microsoft::MoE vs the float64 family references", () => {
  it.each(cases.map((c) => [c.family, c] as const))("%s", async (_f, c) => {
    const { config, tensors, layer } = loadFixture(c.family);
    const p = c.prefix(layer);
    const d: number = config.hidden_size ?? config.d_model;
    const router = tensors.get(`${p}.${c.router}`)!;
    const n = router.shape[0];
    const k: number = c.family === "switch_transformers" ? 1 : config.num_experts_per_tok;
    const expert = (j: number, w: string) => tensors.get(c.family === "switch_transformers" ? `${p}.experts.expert_${j}.${w}.weight` : `${p}.experts.${j}.${w}.weight`)!;
    const h = expert(0, c.names[0]).shape[0];
    const fc1Out = c.relu ? h : 2 * h;
    const fc1 = new Float32Array(n * fc1Out * d);
    const fc2 = new Float32Array(n * d * h);
    for (let j = 0; j < n; j++) {
      const first = expert(j, c.names[0]).data;
      if (c.relu) fc1.set(first as Float32Array, j * h * d);
      else {
        const up = expert(j, c.names[1]).data;
        for (let r = 0; r < h; r++) {
          for (let i = 0; i < d; i++) {
            fc1[j * fc1Out * d + 2 * r * d + i] = first[r * d + i];
            fc1[j * fc1Out * d + (2 * r + 1) * d + i] = up[r * d + i];
          }
        }
      }
      fc2.set(expert(j, c.names[2]).data as Float32Array, j * d * h);
    }
    const attrs: Record<string, Attr> = { k: ["int", k], normalize_routing_weights: ["int", c.normalize], activation_type: ["string", c.relu ? "relu" : "swiglu"] };
    // plain SiLU gating: silu(gate) · up (the operator's SwiGLU is gate · σ(α·gate) · (up + β), clamped at swiglu_limit)
    if (!c.relu) Object.assign(attrs, { swiglu_fusion: ["int", 1], activation_alpha: ["float", 1], activation_beta: ["float", 0], swiglu_limit: ["float", 3e38] });

    const B = 32;
    const rng = new Rng(31 + d);
    const x = Float32Array.from(rng.normals(B * d));
    const logits = new Float32Array(B * n);
    for (let r = 0; r < B; r++) for (let e = 0; e < n; e++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += x[r * d + i] * router.data[e * d + i];
      logits[r * n + e] = s;
    }
    const session = await ort.InferenceSession.create(moeModel(B, d, n, fc1, fc1Out, fc2, h, attrs), { executionProviders: ["cpu"] });
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
