// node scripts/make-family-fixtures.mjs — writes test/fixtures/families/<family>/: a small random
// checkpoint in each family's real tensor layout (config.json + safetensors; qwen2_moe sharded
// with model.safetensors.index.json; F16/BF16 tensors in some), and golden.safetensors: x [B, d]
// (F32), and the float64 reference (test/reference-families.ts) on the stored values: y [B, d]
// (F64), topk_indices [B, k] (I32), topk_gates [B, k] (F64); metadata "layer". Deterministic:
// the same script writes the same bytes.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { build } from "esbuild";

const root = new URL("..", import.meta.url).pathname;
const outDir = `${root}test/fixtures/families`;

// The writer and the reference are TypeScript: bundle them for this script.
const bundled = await build({
  stdin: {
    contents: `export { writeSafetensors, readSafetensors } from "./src/safetensors.ts"; export { referenceFamilyForward } from "./test/reference-families.ts";`,
    resolveDir: root,
    loader: "ts",
  },
  bundle: true,
  format: "esm",
  platform: "neutral",
  write: false,
});
const { writeSafetensors, readSafetensors, referenceFamilyForward } = await import(
  `data:text/javascript;base64,${Buffer.from(bundled.outputFiles[0].text).toString("base64")}`
);

function rng(seed) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return (count, scale = 1) => Float32Array.from({ length: count }, () => scale * Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next()));
}

const B = 6;
const families = [];

const linear = (normals, out, inp, dtype = "F32", scale = 1 / Math.sqrt(inp)) => ({ dtype, shape: [out, inp], data: normals(out * inp, scale) });
const glu = (t, normals, p, names, d, h, dtype) => {
  t.set(`${p}.${names[0]}.weight`, linear(normals, h, d, dtype));
  t.set(`${p}.${names[1]}.weight`, linear(normals, h, d, dtype));
  t.set(`${p}.${names[2]}.weight`, linear(normals, d, h, dtype));
};

// mixtral: two sparse layers, F32, plus an F64 tensor elsewhere in the file (must not get in the way)
families.push(() => {
  const config = {
    model_type: "mixtral",
    architectures: ["MixtralForCausalLM"],
    hidden_size: 16,
    intermediate_size: 12,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    num_hidden_layers: 2,
    hidden_act: "silu",
    torch_dtype: "float32",
  };
  const normals = rng(101);
  const t = new Map();
  t.set("model.layers.0.self_attn.rotary_emb.inv_freq", { dtype: "F64", shape: [2], data: new Uint8Array(new Float64Array([1, 0.5]).buffer) });
  for (const l of [0, 1]) {
    const p = `model.layers.${l}.block_sparse_moe`;
    t.set(`${p}.gate.weight`, linear(normals, 4, 16, "F32", 0.6));
    for (let j = 0; j < 4; j++) glu(t, normals, `${p}.experts.${j}`, ["w1", "w3", "w2"], 16, 12, "F32");
  }
  return { config, shards: [["model.safetensors", t]], layer: 1, seed: 1 };
});

// qwen2_moe: layer 0 dense (mlp_only_layers), layer 1 sparse with the gated shared expert; two
// shards + index; the experts of layer 1 in BF16
families.push(() => {
  const config = {
    model_type: "qwen2_moe",
    hidden_size: 16,
    moe_intermediate_size: 8,
    shared_expert_intermediate_size: 24,
    intermediate_size: 32,
    num_experts: 6,
    num_experts_per_tok: 2,
    norm_topk_prob: false,
    decoder_sparse_step: 1,
    mlp_only_layers: [0],
    num_hidden_layers: 2,
    hidden_act: "silu",
  };
  const normals = rng(202);
  const a = new Map(),
    b = new Map();
  glu(a, normals, "model.layers.0.mlp", ["gate_proj", "up_proj", "down_proj"], 16, 32, "F32");
  const p = "model.layers.1.mlp";
  a.set(`${p}.gate.weight`, linear(normals, 6, 16, "F32", 0.6));
  for (let j = 0; j < 6; j++) glu(j < 3 ? a : b, normals, `${p}.experts.${j}`, ["gate_proj", "up_proj", "down_proj"], 16, 8, "BF16");
  glu(b, normals, `${p}.shared_expert`, ["gate_proj", "up_proj", "down_proj"], 16, 24, "F32");
  b.set(`${p}.shared_expert_gate.weight`, linear(normals, 1, 16, "F32"));
  return {
    config,
    shards: [
      ["model-00001-of-00002.safetensors", a],
      ["model-00002-of-00002.safetensors", b],
    ],
    layer: 1,
    seed: 2,
  };
});

// qwen3_moe: decoder_sparse_step 2 (layer 0 dense, layer 1 sparse), norm_topk_prob, F16 experts
families.push(() => {
  const config = {
    model_type: "qwen3_moe",
    hidden_size: 16,
    moe_intermediate_size: 8,
    intermediate_size: 32,
    num_experts: 8,
    num_experts_per_tok: 3,
    norm_topk_prob: true,
    decoder_sparse_step: 2,
    mlp_only_layers: [],
    num_hidden_layers: 2,
    hidden_act: "silu",
  };
  const normals = rng(303);
  const t = new Map();
  glu(t, normals, "model.layers.0.mlp", ["gate_proj", "up_proj", "down_proj"], 16, 32, "F32");
  const p = "model.layers.1.mlp";
  t.set(`${p}.gate.weight`, linear(normals, 8, 16, "F16", 0.6));
  for (let j = 0; j < 8; j++) glu(t, normals, `${p}.experts.${j}`, ["gate_proj", "up_proj", "down_proj"], 16, 8, "F16");
  return { config, shards: [["model.safetensors", t]], layer: 1, seed: 3 };
});

// olmoe: every layer sparse, norm_topk_prob false (its default: left out of the config)
families.push(() => {
  const config = {
    model_type: "olmoe",
    hidden_size: 16,
    intermediate_size: 8,
    num_experts: 8,
    num_experts_per_tok: 2,
    num_hidden_layers: 1,
    hidden_act: "silu",
  };
  const normals = rng(404);
  const t = new Map();
  const p = "model.layers.0.mlp";
  t.set(`${p}.gate.weight`, linear(normals, 8, 16, "F32", 0.6));
  for (let j = 0; j < 8; j++) glu(t, normals, `${p}.experts.${j}`, ["gate_proj", "up_proj", "down_proj"], 16, 8, "F32");
  return { config, shards: [["model.safetensors", t]], layer: 0, seed: 4 };
});

// deepseek_v3: layer 0 dense (first_k_dense_replace 1), layer 1: 8 experts in 4 groups, 2 groups
// kept, top-3, two shared experts; a correction bias with negative entries, so that the experts
// of dropped groups (masked to 0.0, not −∞) can outrank kept ones, as in the modeling code
families.push(() => {
  const config = {
    model_type: "deepseek_v3",
    hidden_size: 16,
    intermediate_size: 32,
    moe_intermediate_size: 6,
    n_routed_experts: 8,
    num_experts_per_tok: 3,
    n_group: 4,
    topk_group: 2,
    n_shared_experts: 2,
    first_k_dense_replace: 1,
    routed_scaling_factor: 2.5,
    norm_topk_prob: true,
    num_hidden_layers: 2,
    hidden_act: "silu",
    scoring_func: "sigmoid",
    topk_method: "noaux_tc",
  };
  const normals = rng(505);
  const t = new Map();
  glu(t, normals, "model.layers.0.mlp", ["gate_proj", "up_proj", "down_proj"], 16, 32, "BF16");
  const p = "model.layers.1.mlp";
  t.set(`${p}.gate.weight`, linear(normals, 8, 16, "F32", 0.8));
  t.set(`${p}.gate.e_score_correction_bias`, { dtype: "F32", shape: [8], data: Float32Array.from([0.1, -0.6, 0.05, -0.9, 0.2, -0.3, -1.2, 0.0]) });
  for (let j = 0; j < 8; j++) glu(t, normals, `${p}.experts.${j}`, ["gate_proj", "up_proj", "down_proj"], 16, 6, "F32");
  glu(t, normals, `${p}.shared_experts`, ["gate_proj", "up_proj", "down_proj"], 16, 12, "F32");
  return { config, shards: [["model.safetensors", t]], layer: 1, seed: 5 };
});

// switch_transformers: encoder_sparse_step 2 (block 0 dense, block 1 sparse), relu experts
families.push(() => {
  const config = {
    model_type: "switch_transformers",
    d_model: 16,
    d_ff: 12,
    num_experts: 4,
    expert_capacity: 64,
    encoder_sparse_step: 2,
    decoder_sparse_step: 2,
    num_layers: 2,
    num_decoder_layers: 2,
    dense_act_fn: "relu",
    router_dtype: "float32",
  };
  const normals = rng(606);
  const t = new Map();
  t.set("encoder.block.0.layer.1.DenseReluDense.wi.weight", linear(normals, 12, 16));
  t.set("encoder.block.0.layer.1.DenseReluDense.wo.weight", linear(normals, 16, 12));
  const p = "encoder.block.1.layer.1.mlp";
  t.set(`${p}.router.classifier.weight`, linear(normals, 4, 16, "F32", 0.6));
  for (let j = 0; j < 4; j++) {
    t.set(`${p}.experts.expert_${j}.wi.weight`, linear(normals, 12, 16, "BF16"));
    t.set(`${p}.experts.expert_${j}.wo.weight`, linear(normals, 16, 12, "BF16"));
  }
  return { config, shards: [["model.safetensors", t]], layer: 1, seed: 6 };
});

rmSync(outDir, { recursive: true, force: true });
for (const make of families) {
  const { config, shards, layer, seed } = make();
  const dir = `${outDir}/${config.model_type}`;
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}/config.json`, `${JSON.stringify(config, null, 2)}\n`);
  // The reference reads what is stored (F16/BF16 rounded), read back from the written bytes.
  const stored = new Map();
  const weightMap = {};
  let totalSize = 0;
  for (const [file, tensors] of shards) {
    const bytes = writeSafetensors(tensors, { format: "pt" });
    writeFileSync(`${dir}/${file}`, bytes);
    const read = readSafetensors(bytes);
    for (const name of Object.keys(read.tensors)) {
      stored.set(name, read.tensors[name]);
      weightMap[name] = file;
      totalSize += read.tensors[name].data.length * (read.tensors[name].dtype === "F32" ? 4 : 2);
    }
    for (const name of Object.keys(read.others)) weightMap[name] = file;
  }
  if (shards.length > 1) {
    writeFileSync(`${dir}/model.safetensors.index.json`, `${JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2)}\n`);
  }
  const d = config.hidden_size ?? config.d_model;
  const x = rng(9000 + seed)(B * d);
  const ref = referenceFamilyForward(config, stored, layer, x, B);
  const k = ref.topkIndices.length / B;
  writeFileSync(
    `${dir}/golden.safetensors`,
    writeSafetensors(
      new Map([
        ["x", { dtype: "F32", shape: [B, d], data: x }],
        ["y", { dtype: "F64", shape: [B, d], data: new Uint8Array(ref.y.buffer) }],
        ["topk_indices", { dtype: "I32", shape: [B, k], data: ref.topkIndices }],
        ["topk_gates", { dtype: "F64", shape: [B, k], data: new Uint8Array(ref.topkGates.buffer) }],
      ]),
      { layer: String(layer) },
    ),
  );
  console.log(`${dir.slice(root.length)}: layer ${layer}, ${shards.map(([f]) => f).join(" + ")}`);
}
