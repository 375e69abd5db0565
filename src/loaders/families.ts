// Model families: from a Hugging Face config.json (parsed) and a layer, which tensors make up that
// layer's mixture-of-experts block, how its router scores and weights experts, and the conversion
// of the checkpoint's tensors into edge-moe's layout. Each family follows Hugging Face
// transformers' modeling code; the file and function are named at each family (docs/loading.md
// has the same table).
//
// Layouts: Hugging Face stores nn.Linear weights as [out, in] (y = x · Wᵀ); edge-moe takes
// [in, out], expert index first: wGate [d, n]; swiglu wGateProj [n, d, h], wUp [n, d, h],
// wDown [n, h, d]; relu w1 [n, d, h], b1 [n, h], w2 [n, h, d], b2 [n, d] (the families here
// have no expert biases: zeros).
import type { SafetensorsTensor } from "../safetensors.ts";
import { loadError } from "./errors.ts";

export type Family = "mixtral" | "qwen2_moe" | "qwen3_moe" | "olmoe" | "deepseek_v3" | "switch_transformers";
export const FAMILIES: readonly Family[] = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "switch_transformers"];

export interface Routing {
  /** What the router's logits become: softmax over all n experts, or an element-wise sigmoid. */
  score: "softmax" | "sigmoid";
  /** Divide the k selected weights by their sum (+ renormEpsilon). */
  renormalize: boolean;
  /** Added to the denominator of the renormalisation (deepseek_v3: 1e-20; others: 0). */
  renormEpsilon: number;
  /** Multiplies the weights after renormalisation (deepseek_v3: routed_scaling_factor). */
  scale: number;
  /** Added to the scores for the choice of experts only, never to the weights (deepseek_v3). */
  choiceBias?: Float32Array;
  /**
   * Group-limited choice (deepseek_v3): experts in nGroup equal groups; a group's score is the sum
   * of its two best biased scores; the experts of all but the best topkGroup groups get score 0
   * (not −∞: masked_fill(…, 0.0), as the modeling code) before the top-k.
   */
  groups?: { nGroup: number; topkGroup: number };
}

export type TensorRole = "router" | "choiceBias" | "gate" | "up" | "down" | "sharedGate" | "sharedUp" | "sharedDown" | "sharedExpertGate";

export interface PlannedTensor {
  name: string;
  role: TensorRole;
  /** Expert index, for expert tensors. */
  expert?: number;
  /** The shape the checkpoint must hold ([out, in] for weights). */
  shape: number[];
  /** [out, in] → [in, out] (every weight matrix; not the choice bias). */
  transpose: boolean;
}

export interface FamilyDescription {
  family: Family;
  /** The MoE block's module path (tensor names start with it). */
  prefix: string;
  /** The decoder layer (switch_transformers: block) index, when known. */
  layer: number | undefined;
  dModel: number;
  dHidden: number;
  numExperts: number;
  k: number;
  expert: "swiglu" | "relu";
  routing: Routing;
  /** A shared expert every row goes through (a SwiGLU MLP of width dHidden); gated: × sigmoid(x · w). */
  shared?: { dHidden: number; gated: boolean };
  tensors: PlannedTensor[];
  /** Names of the layer's dense MLP: present in the checkpoint means the layer is dense. */
  denseProbe: string[];
  /** What the conversion does not reproduce (e.g. switch_transformers' expert capacity). */
  notes: string[];
}

/** The block's weights in edge-moe's layout (a createMoE `weights` object) plus what createMoE does not take. */
export interface ConvertedLayer {
  description: FamilyDescription;
  /** For createMoE: dModel, dHidden, numExperts, k, expert, noisyGating false, weights. */
  config: {
    dModel: number;
    dHidden: number;
    numExperts: number;
    k: number;
    expert: "swiglu" | "relu";
    noisyGating: false;
    weights: {
      wGate: Float32Array;
      wGateProj?: Float32Array;
      wUp?: Float32Array;
      wDown?: Float32Array;
      w1?: Float32Array;
      b1?: Float32Array;
      w2?: Float32Array;
      b2?: Float32Array;
    };
  };
  routing: Routing;
  /** Shared expert in [in, out]: wGateProj [d, hs], wUp [d, hs], wDown [hs, d]; gate [d] when gated. */
  shared?: { dHidden: number; wGateProj: Float32Array; wUp: Float32Array; wDown: Float32Array; gate?: Float32Array };
}

type Config = Record<string, unknown>;

function configError(message: string): never {
  throw loadError("INVALID_CONFIG", `config.json: ${message}`);
}

function int(config: Config, key: string, fallback?: number, min = 1): number {
  const v = config[key] ?? fallback;
  if (v === undefined) configError(`${key} is missing (${String(config.model_type)} needs it)`);
  if (!Number.isSafeInteger(v) || (v as number) < min) configError(`${key} must be an integer ≥ ${min}, got ${JSON.stringify(v)}`);
  return v as number;
}

function bool(config: Config, key: string, fallback: boolean): boolean {
  const v = config[key] ?? fallback;
  if (typeof v !== "boolean") configError(`${key} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function num(config: Config, key: string, fallback: number): number {
  const v = config[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v)) configError(`${key} must be a finite number, got ${JSON.stringify(v)}`);
  return v;
}

function silu(config: Config, key = "hidden_act"): void {
  const act = config[key] ?? "silu";
  if (act !== "silu" && act !== "swish") {
    configError(`${key} is ${JSON.stringify(act)}; edge-moe's swiglu experts apply SiLU (silu/swish), so this model cannot be loaded`);
  }
}

function dense(family: Family, layer: number, why: string): never {
  throw loadError("DENSE_LAYER", `${family} layer ${layer} is a dense MLP, not a mixture of experts (${why}); pick a sparse layer`);
}

/** The MoE block's module path from a layer index or a given prefix; and the layer index when it can be read. */
function place(layer: number | string, numbered: (i: number) => string, suffix: string, pattern: RegExp): { prefix: string; layer: number | undefined } {
  if (typeof layer === "number") {
    if (!Number.isSafeInteger(layer) || layer < 0) throw loadError("INVALID_CONFIG", `layer must be a layer index ≥ 0 or a tensor-name prefix, got ${layer}`);
    return { prefix: numbered(layer), layer };
  }
  if (typeof layer !== "string" || layer === "")
    throw loadError("INVALID_CONFIG", `layer must be a layer index ≥ 0 or a tensor-name prefix, got ${JSON.stringify(layer)}`);
  const trimmed = layer.replace(/\.+$/, "");
  const prefix = trimmed.endsWith(`.${suffix}`) || trimmed === suffix ? trimmed : `${trimmed}.${suffix}`;
  const m = pattern.exec(prefix);
  return { prefix, layer: m ? Number(m[1]) : undefined };
}

const swigluExperts = (
  p: string,
  n: number,
  d: number,
  h: number,
  names: [string, string, string],
  expertPath = (j: number) => `${p}.experts.${j}`,
): PlannedTensor[] => {
  const out: PlannedTensor[] = [];
  for (let j = 0; j < n; j++) {
    const e = expertPath(j);
    out.push(
      { name: `${e}.${names[0]}.weight`, role: "gate", expert: j, shape: [h, d], transpose: true },
      { name: `${e}.${names[1]}.weight`, role: "up", expert: j, shape: [h, d], transpose: true },
      { name: `${e}.${names[2]}.weight`, role: "down", expert: j, shape: [d, h], transpose: true },
    );
  }
  return out;
};

const sharedMlp = (p: string, d: number, hs: number): PlannedTensor[] => [
  { name: `${p}.gate_proj.weight`, role: "sharedGate", shape: [hs, d], transpose: true },
  { name: `${p}.up_proj.weight`, role: "sharedUp", shape: [hs, d], transpose: true },
  { name: `${p}.down_proj.weight`, role: "sharedDown", shape: [d, hs], transpose: true },
];

/**
 * Which tensors make up the MoE block of `layer` and how it routes, from config.json alone.
 * `layer`: decoder layer index (switch_transformers: encoder block index), or the block's module
 * path / its layer's prefix ("model.layers.3", "decoder.block.1").
 */
export function describeFamily(configJson: unknown, layer: number | string): FamilyDescription {
  if (typeof configJson !== "object" || configJson === null || Array.isArray(configJson)) {
    throw loadError("INVALID_CONFIG", "config must be the model's config.json, parsed (an object)");
  }
  const config = configJson as Config;
  const family = config.model_type;
  const softmax = (renormalize: boolean): Routing => ({ score: "softmax", renormalize, renormEpsilon: 0, scale: 1 });

  switch (family) {
    case "mixtral": {
      // transformers/models/mixtral/modeling_mixtral.py, MixtralSparseMoeBlock.forward (router:
      // softmax over all experts in float32, top-k, divided by the top-k sum) and MixtralBlockSparseTop2MLP
      // (w2(act(w1 x) · w3 x)). Every decoder layer is sparse.
      silu(config);
      const d = int(config, "hidden_size"),
        h = int(config, "intermediate_size");
      const n = int(config, "num_local_experts"),
        k = int(config, "num_experts_per_tok");
      const { prefix: p, layer: i } = place(layer, (l) => `model.layers.${l}.block_sparse_moe`, "block_sparse_moe", /layers\.(\d+)\./);
      return finish({
        family,
        prefix: p,
        layer: i,
        dModel: d,
        dHidden: h,
        numExperts: n,
        k,
        expert: "swiglu",
        routing: softmax(true),
        tensors: [{ name: `${p}.gate.weight`, role: "router", shape: [n, d], transpose: true }, ...swigluExperts(p, n, d, h, ["w1", "w3", "w2"])],
        denseProbe: [],
        notes: [],
      });
    }
    case "qwen2_moe":
    case "qwen3_moe":
    case "olmoe": {
      // qwen2_moe: transformers/models/qwen2_moe/modeling_qwen2_moe.py, Qwen2MoeSparseMoeBlock.forward
      //   (softmax over all experts, top-k, divided by the top-k sum only when norm_topk_prob; plus
      //   shared_expert(x) · sigmoid(shared_expert_gate(x))); Qwen2MoeDecoderLayer.__init__ picks the
      //   sparse block when layer_idx ∉ mlp_only_layers and num_experts > 0 and
      //   (layer_idx + 1) % decoder_sparse_step == 0.
      // qwen3_moe: modeling_qwen3_moe.py, Qwen3MoeSparseMoeBlock.forward: the same without the
      //   shared expert; the same sparse-layer rule in Qwen3MoeDecoderLayer.__init__.
      // olmoe: modeling_olmoe.py, OlmoeSparseMoeBlock.forward: softmax, top-k, norm_topk_prob
      //   (default false); every layer sparse; experts of width intermediate_size.
      silu(config);
      const d = int(config, "hidden_size");
      const h = family === "olmoe" ? int(config, "intermediate_size") : int(config, "moe_intermediate_size");
      const n = int(config, "num_experts", undefined, 0),
        k = int(config, "num_experts_per_tok");
      const { prefix: p, layer: i } = place(layer, (l) => `model.layers.${l}.mlp`, "mlp", /layers\.(\d+)\./);
      if (family !== "olmoe" && i !== undefined) {
        const only = config.mlp_only_layers ?? [];
        if (!Array.isArray(only)) configError("mlp_only_layers must be a list of layer indices");
        const step = int(config, "decoder_sparse_step", 1);
        if (only.includes(i)) dense(family, i, "it is in mlp_only_layers");
        if (n === 0) dense(family, i, "num_experts is 0");
        if ((i + 1) % step !== 0) dense(family, i, `(layer + 1) % decoder_sparse_step = ${(i + 1) % step}, not 0`);
      }
      if (n === 0) configError("num_experts must be ≥ 1");
      const tensors: PlannedTensor[] = [
        { name: `${p}.gate.weight`, role: "router", shape: [n, d], transpose: true },
        ...swigluExperts(p, n, d, h, ["gate_proj", "up_proj", "down_proj"]),
      ];
      let shared: FamilyDescription["shared"];
      if (family === "qwen2_moe") {
        const hs = int(config, "shared_expert_intermediate_size");
        shared = { dHidden: hs, gated: true };
        tensors.push(...sharedMlp(`${p}.shared_expert`, d, hs), {
          name: `${p}.shared_expert_gate.weight`,
          role: "sharedExpertGate",
          shape: [1, d],
          transpose: false,
        });
      }
      return finish({
        family,
        prefix: p,
        layer: i,
        dModel: d,
        dHidden: h,
        numExperts: n,
        k,
        expert: "swiglu",
        routing: softmax(bool(config, "norm_topk_prob", false)),
        shared,
        tensors,
        denseProbe: [`${p}.gate_proj.weight`],
        notes: [],
      });
    }
    case "deepseek_v3": {
      // transformers/models/deepseek_v3/modeling_deepseek_v3.py: DeepseekV3TopkRouter.forward and
      // .get_topk_indices (sigmoid scores; e_score_correction_bias added for the choice only; group
      // score = sum of the top-2 biased scores per group; the best topk_group groups kept, the
      // rest masked to 0.0; top-k; weights gathered from the unbiased scores; norm_topk_prob:
      // divided by sum + 1e-20; × routed_scaling_factor), DeepseekV3MoE.__init__/forward (shared
      // experts: one MLP of width moe_intermediate_size · n_shared_experts, added ungated),
      // DeepseekV3DecoderLayer.__init__ (layers < first_k_dense_replace are dense).
      silu(config);
      const d = int(config, "hidden_size"),
        h = int(config, "moe_intermediate_size");
      const n = int(config, "n_routed_experts"),
        k = int(config, "num_experts_per_tok");
      const nGroup = int(config, "n_group", 1),
        topkGroup = int(config, "topk_group", 1);
      const nShared = int(config, "n_shared_experts", 0, 0);
      const firstDense = int(config, "first_k_dense_replace", 0, 0);
      if (n % nGroup !== 0) configError(`n_routed_experts (${n}) must be a multiple of n_group (${nGroup})`);
      if (n / nGroup < 2) configError(`each of the n_group = ${nGroup} groups needs ≥ 2 experts (its score sums its top 2); n_routed_experts is ${n}`);
      if (topkGroup > nGroup) configError(`topk_group (${topkGroup}) must be ≤ n_group (${nGroup})`);
      if (k > topkGroup * (n / nGroup)) configError(`num_experts_per_tok (${k}) exceeds the ${topkGroup * (n / nGroup)} experts of the topk_group kept groups`);
      const { prefix: p, layer: i } = place(layer, (l) => `model.layers.${l}.mlp`, "mlp", /layers\.(\d+)\./);
      if (i !== undefined && i < firstDense) dense(family, i, `layers below first_k_dense_replace = ${firstDense} are dense`);
      const tensors: PlannedTensor[] = [
        { name: `${p}.gate.weight`, role: "router", shape: [n, d], transpose: true },
        { name: `${p}.gate.e_score_correction_bias`, role: "choiceBias", shape: [n], transpose: false },
        ...swigluExperts(p, n, d, h, ["gate_proj", "up_proj", "down_proj"]),
      ];
      let shared: FamilyDescription["shared"];
      if (nShared > 0) {
        shared = { dHidden: h * nShared, gated: false };
        tensors.push(...sharedMlp(`${p}.shared_experts`, d, h * nShared));
      }
      return finish({
        family,
        prefix: p,
        layer: i,
        dModel: d,
        dHidden: h,
        numExperts: n,
        k,
        expert: "swiglu",
        routing: {
          score: "sigmoid",
          renormalize: bool(config, "norm_topk_prob", true),
          renormEpsilon: 1e-20,
          scale: num(config, "routed_scaling_factor", 1),
          groups: { nGroup, topkGroup },
        },
        shared,
        tensors,
        denseProbe: [`${p}.gate_proj.weight`],
        notes: [],
      });
    }
    case "switch_transformers": {
      // transformers/models/switch_transformers/modeling_switch_transformers.py:
      // SwitchTransformersTop1Router._compute_router_probabilities/forward (softmax over all
      // experts in float32, argmax), SwitchTransformersSparseMLP.forward (output = the router's
      // max probability × expert(x)), SwitchTransformersDenseActDense (wo(act(wi x)), no biases),
      // SwitchTransformersStack.__init__ (block i is sparse when i % sparse_step == 1 or
      // sparse_step == 1). Encoder blocks by default; "decoder.block.N" for the decoder.
      const act = config.dense_act_fn ?? "relu";
      if (act !== "relu") configError(`dense_act_fn is ${JSON.stringify(act)}; edge-moe loads switch_transformers experts with relu`);
      const d = int(config, "d_model"),
        h = int(config, "d_ff"),
        n = int(config, "num_experts");
      const decoder = typeof layer === "string" && layer.startsWith("decoder.");
      const { prefix: p, layer: i } = place(layer, (l) => `encoder.block.${l}.layer.1.mlp`, decoder ? "layer.2.mlp" : "layer.1.mlp", /block\.(\d+)\./);
      const step = decoder ? int(config, "decoder_sparse_step", 1, 0) : int(config, "encoder_sparse_step", 1, 0);
      if (i !== undefined && !(step > 0 && (i % step === 1 || step === 1))) {
        dense(family, i, step > 0 ? `block ${i} % ${decoder ? "decoder" : "encoder"}_sparse_step ${step} is not 1` : "the sparse step is 0");
      }
      const tensors: PlannedTensor[] = [{ name: `${p}.router.classifier.weight`, role: "router", shape: [n, d], transpose: true }];
      for (let j = 0; j < n; j++) {
        tensors.push(
          { name: `${p}.experts.expert_${j}.wi.weight`, role: "up", expert: j, shape: [h, d], transpose: true },
          { name: `${p}.experts.expert_${j}.wo.weight`, role: "down", expert: j, shape: [d, h], transpose: true },
        );
      }
      return finish({
        family,
        prefix: p,
        layer: i,
        dModel: d,
        dHidden: h,
        numExperts: n,
        k: 1,
        expert: "relu",
        routing: softmax(false),
        tensors,
        denseProbe: [`${p}.wi.weight`],
        notes: [
          `expert_capacity (${String(config.expert_capacity ?? "unset")}) is ignored: every token goes to its expert (no token dropping), as at inference with enough capacity`,
        ],
      });
    }
    default:
      throw loadError("UNKNOWN_MODEL_TYPE", `config.model_type is ${JSON.stringify(family)}; edge-moe loads ${FAMILIES.join(", ")}`);
  }
}

function finish(description: FamilyDescription): FamilyDescription {
  if (description.k > description.numExperts) {
    throw loadError("INVALID_CONFIG", `config.json: num_experts_per_tok (${description.k}) exceeds the ${description.numExperts} experts`);
  }
  return description;
}

/** Checks a tensor the checkpoint holds against the plan (WEIGHT_SHAPE names it and both shapes). */
export function checkShape(planned: PlannedTensor, shape: number[]): void {
  if (shape.length !== planned.shape.length || shape.some((s, i) => s !== planned.shape[i])) {
    throw loadError(
      "WEIGHT_SHAPE",
      `tensor ${planned.name} has shape [${shape}]; the config gives [${planned.shape}] (${planned.role}${planned.expert === undefined ? "" : ` of expert ${planned.expert}`})`,
    );
  }
}

/** [rows, cols] → [cols, rows] into out at offset. */
function transposeInto(src: Float32Array, rows: number, cols: number, out: Float32Array, offset: number): void {
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    for (let c = 0; c < cols; c++) out[offset + c * rows + r] = src[row + c];
  }
}

/**
 * Converts the planned tensors (read from the checkpoint, F16/BF16 already widened) into
 * edge-moe's layout. Every tensor is checked for presence, dtype and shape first.
 */
export function convertLayer(description: FamilyDescription, tensors: Map<string, SafetensorsTensor>): ConvertedLayer {
  const { dModel: d, dHidden: h, numExperts: n, expert } = description;
  for (const planned of description.tensors) {
    const t = tensors.get(planned.name);
    if (!t)
      throw loadError(
        "MISSING_WEIGHT",
        `tensor ${planned.name} (${planned.role}${planned.expert === undefined ? "" : ` of expert ${planned.expert}`}) is not in the checkpoint`,
      );
    if (!(t.data instanceof Float32Array))
      throw loadError("WEIGHT_SHAPE", `tensor ${planned.name} has dtype ${t.dtype}; a floating-point weight (F32, F16, BF16) is needed`);
    checkShape(planned, t.shape);
  }
  const get = (p: PlannedTensor) => tensors.get(p.name)!.data as Float32Array;
  const weights: ConvertedLayer["config"]["weights"] = { wGate: new Float32Array(d * n) };
  const up = new Float32Array(n * d * h),
    gate = expert === "swiglu" ? new Float32Array(n * d * h) : undefined,
    down = new Float32Array(n * h * d);
  let routing = description.routing;
  const shared = description.shared
    ? {
        dHidden: description.shared.dHidden,
        wGateProj: new Float32Array(d * description.shared.dHidden),
        wUp: new Float32Array(d * description.shared.dHidden),
        wDown: new Float32Array(description.shared.dHidden * d),
        gate: description.shared.gated ? new Float32Array(d) : undefined,
      }
    : undefined;
  const hs = shared?.dHidden ?? 0;
  for (const p of description.tensors) {
    const src = get(p);
    const j = p.expert ?? 0;
    switch (p.role) {
      case "router":
        transposeInto(src, n, d, weights.wGate, 0);
        break;
      case "choiceBias":
        routing = { ...routing, choiceBias: new Float32Array(src) };
        break;
      case "gate":
        transposeInto(src, h, d, gate!, j * d * h);
        break;
      case "up":
        transposeInto(src, h, d, up, j * d * h);
        break;
      case "down":
        transposeInto(src, d, h, down, j * h * d);
        break;
      case "sharedGate":
        transposeInto(src, hs, d, shared!.wGateProj, 0);
        break;
      case "sharedUp":
        transposeInto(src, hs, d, shared!.wUp, 0);
        break;
      case "sharedDown":
        transposeInto(src, d, hs, shared!.wDown, 0);
        break;
      case "sharedExpertGate":
        shared!.gate!.set(src);
        break;
    }
  }
  if (expert === "swiglu") Object.assign(weights, { wGateProj: gate, wUp: up, wDown: down });
  else Object.assign(weights, { w1: up, b1: new Float32Array(n * h), w2: down, b2: new Float32Array(n * d) });
  if (shared && !shared.gate) delete shared.gate;
  return {
    description: { ...description, routing },
    config: { dModel: d, dHidden: h, numExperts: n, k: description.k, expert, noisyGating: false, weights },
    routing,
    shared,
  };
}
