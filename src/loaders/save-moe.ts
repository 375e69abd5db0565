// saveMoE: a layer's weights as a checkpoint of its model family — a config.json (parsed) and a
// model.safetensors with the family's tensor names in Hugging Face's [out, in] layout — that
// loadMoE reads back to the same weights, bit for bit. The tensors to write come from the same
// plan the loader reads (describeFamily on the written config), so the two cannot drift apart.
import { MoEError } from "../errors.ts";
import { writeSafetensors, type SafetensorsInput } from "../safetensors.ts";
import type { MoELocalLayer, MoEWeights, RoutingOptions } from "../types.ts";
import { describeFamily, FAMILIES, type Family, type FamilyDescription, type Routing } from "./families.ts";

export interface SaveMoEOptions {
  /** The family whose layout to write. Default: the family the layer was loaded from (loadMoE). */
  family?: Family;
  /**
   * The layer's router as given to createMoE (routing option). Default: the loaded layer's, or the
   * family's own rule for a layer made by createMoE.
   */
  routing?: RoutingOptions;
  /** The decoder layer (switch_transformers: encoder block) index the tensors are named for. Default: the loaded layer's, or 0. */
  layer?: number;
}

export interface SavedMoE {
  /** config.json, parsed (JSON.stringify it to write the file). */
  config: Record<string, unknown>;
  /** "model.safetensors" → its bytes (F32 tensors, [out, in]). */
  files: { "model.safetensors": Uint8Array };
}

function invalid(message: string): never {
  throw new MoEError("INVALID_CONFIG", `saveMoE: ${message}`);
}

/** The family's config.json for these sizes (only the keys describeFamily reads, plus model_type). */
function familyConfig(
  family: Family,
  d: number,
  h: number,
  n: number,
  k: number,
  routing: Routing,
  shared: { dHidden: number; gated: boolean } | undefined,
  layer: number,
): Record<string, unknown> {
  const layers = layer + 1;
  switch (family) {
    case "mixtral":
      return {
        model_type: family,
        hidden_size: d,
        intermediate_size: h,
        num_local_experts: n,
        num_experts_per_tok: k,
        hidden_act: "silu",
        num_hidden_layers: layers,
      };
    case "qwen2_moe":
    case "qwen3_moe":
      return {
        model_type: family,
        hidden_size: d,
        moe_intermediate_size: h,
        num_experts: n,
        num_experts_per_tok: k,
        norm_topk_prob: routing.renormalize,
        decoder_sparse_step: 1,
        mlp_only_layers: [],
        hidden_act: "silu",
        num_hidden_layers: layers,
        ...(family === "qwen2_moe" && {
          shared_expert_intermediate_size:
            shared?.dHidden ?? invalid("qwen2_moe has a gated shared expert; this layer has none (create it with shared: { dHidden, gated: true })"),
        }),
      };
    case "olmoe":
      return {
        model_type: family,
        hidden_size: d,
        intermediate_size: h,
        num_experts: n,
        num_experts_per_tok: k,
        norm_topk_prob: routing.renormalize,
        hidden_act: "silu",
        num_hidden_layers: layers,
      };
    case "deepseek_v3": {
      let nShared = 0;
      if (shared) {
        if (shared.dHidden % h !== 0)
          invalid(`deepseek_v3's shared experts are n_shared_experts × moe_intermediate_size (${h}) wide; this layer's shared expert is ${shared.dHidden}`);
        nShared = shared.dHidden / h;
      }
      return {
        model_type: family,
        hidden_size: d,
        moe_intermediate_size: h,
        n_routed_experts: n,
        num_experts_per_tok: k,
        n_group: routing.groups?.nGroup ?? 1,
        topk_group: routing.groups?.topkGroup ?? 1,
        n_shared_experts: nShared,
        first_k_dense_replace: 0,
        norm_topk_prob: routing.renormalize,
        routed_scaling_factor: routing.scale,
        hidden_act: "silu",
        num_hidden_layers: layers,
      };
    }
    case "switch_transformers":
      return { model_type: family, d_model: d, d_ff: h, num_experts: n, dense_act_fn: "relu", encoder_sparse_step: 1, num_layers: layers };
  }
}

/** RoutingOptions (createMoE's) in the loader's form. */
function routingOf(options: RoutingOptions): Routing {
  return {
    score: options.score === "sigmoid" ? "sigmoid" : "softmax",
    renormalize: options.renormalize ?? false,
    renormEpsilon: options.renormEpsilon ?? 0,
    scale: options.scale ?? 1,
    ...(options.choiceBias && { choiceBias: options.choiceBias }),
    ...(options.groups && { groups: options.groups }),
  };
}

const describeRouting = (r: Routing) =>
  `score ${r.score}, renormalize ${r.renormalize}${r.score === "sigmoid" ? `, renormEpsilon ${r.renormEpsilon}` : ""}, scale ${r.scale}, groups ${r.groups ? `${r.groups.nGroup}/${r.groups.topkGroup}` : "none"}`;

/** [rows, cols] → [cols, rows]. */
function transpose(src: Float32Array, offset: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[offset + r * cols + c];
  return out;
}

/**
 * Writes the layer's current weights (getWeights) as a checkpoint of its family: loadMoE({ config,
 * files, layer }) gives a layer with the same weights and router. A layer from loadMoE knows its
 * family; one from createMoE needs options.family (and options.routing when it has a router).
 */
export async function saveMoE(layer: MoELocalLayer & { readonly description?: FamilyDescription }, options: SaveMoEOptions = {}): Promise<SavedMoE> {
  if (typeof options !== "object" || options === null) invalid("options must be an object { family, routing, layer }");
  const loaded = layer.description;
  const family = options.family ?? loaded?.family ?? invalid(`options.family is needed for a layer made by createMoE (one of ${FAMILIES.join(", ")})`);
  if (!FAMILIES.includes(family)) invalid(`options.family must be one of ${FAMILIES.join(", ")}, got ${JSON.stringify(family)}`);
  const index = options.layer ?? loaded?.layer ?? 0;
  if (!Number.isSafeInteger(index) || index < 0) invalid(`options.layer must be a layer index ≥ 0, got ${String(index)}`);
  const { dModel: d, dHidden: h, numExperts: n, k, expert, noisyGating } = layer.config;
  if (noisyGating) invalid("a layer with noisy gating has no family layout (the checkpoints' routers are not noisy): create it with noisyGating: false");
  const weights: MoEWeights = await layer.getWeights();
  const shared = weights.sharedGateProj ? { dHidden: weights.sharedGateProj.length / d, gated: weights.sharedGate !== undefined } : undefined;
  const routing = options.routing
    ? routingOf(options.routing)
    : loaded && loaded.family === family
      ? loaded.routing
      : describeFamily(familyConfig(family, d, h, n, k, { score: "softmax", renormalize: false, renormEpsilon: 0, scale: 1 }, shared, 0), 0).routing;

  // The family's plan for these sizes, and a check that it describes this layer.
  const config = familyConfig(family, d, h, n, k, routing, shared, index);
  const plan = describeFamily(config, index);
  if (plan.expert !== expert) invalid(`${family} experts are ${plan.expert}; this layer's are ${expert}`);
  if (plan.k !== k) invalid(`${family} routes every row to ${plan.k} expert(s); this layer has k = ${k}`);
  const famGroups = plan.routing.groups && (plan.routing.groups.nGroup > 1 || plan.routing.groups.topkGroup > 1) ? plan.routing.groups : undefined;
  const same =
    plan.routing.score === routing.score &&
    plan.routing.renormalize === routing.renormalize &&
    plan.routing.scale === routing.scale &&
    (routing.score !== "sigmoid" || plan.routing.renormEpsilon === routing.renormEpsilon) &&
    (famGroups?.nGroup ?? 1) === (routing.groups?.nGroup ?? 1) &&
    (famGroups?.topkGroup ?? 1) === (routing.groups?.topkGroup ?? 1);
  if (!same)
    invalid(
      `${family} routes with ${describeRouting(plan.routing)}; this layer's router has ${describeRouting(routing)} (pass the layer's routing as options.routing, or pick its family)`,
    );
  if (routing.choiceBias && family !== "deepseek_v3") invalid(`${family} has no choice bias; this layer's router has one`);
  if ((plan.shared === undefined) !== (shared === undefined) || (plan.shared && plan.shared.gated !== shared!.gated)) {
    const what = (s: { gated: boolean } | undefined) => (s ? `a ${s.gated ? "gated" : "ungated"} shared expert` : "no shared expert");
    invalid(`${family} has ${what(plan.shared)}; this layer has ${what(shared)}`);
  }
  if (expert === "relu" && (weights.b1!.some((v) => v !== 0) || weights.b2!.some((v) => v !== 0))) {
    invalid(
      `${family} experts have no biases; this layer's b1 or b2 is not zero (backward and step train them, so a trained relu layer does not fit this layout)`,
    );
  }

  const hs = shared?.dHidden ?? 0;
  const tensors = new Map<string, SafetensorsInput>();
  for (const p of plan.tensors) {
    const j = p.expert ?? 0;
    let data: Float32Array;
    switch (p.role) {
      case "router":
        data = transpose(weights.wGate!, 0, d, n);
        break;
      case "choiceBias":
        data = routing.choiceBias ? Float32Array.from(routing.choiceBias) : new Float32Array(n);
        break;
      case "gate":
        data = transpose(weights.wGateProj!, j * d * h, d, h);
        break;
      case "up":
        data = transpose(expert === "swiglu" ? weights.wUp! : weights.w1!, j * d * h, d, h);
        break;
      case "down":
        data = transpose(expert === "swiglu" ? weights.wDown! : weights.w2!, j * h * d, h, d);
        break;
      case "sharedGate":
        data = transpose(weights.sharedGateProj!, 0, d, hs);
        break;
      case "sharedUp":
        data = transpose(weights.sharedUp!, 0, d, hs);
        break;
      case "sharedDown":
        data = transpose(weights.sharedDown!, 0, hs, d);
        break;
      case "sharedExpertGate":
        data = Float32Array.from(weights.sharedGate!);
        break;
    }
    tensors.set(p.name, { dtype: "F32", shape: p.shape, data });
  }
  return { config, files: { "model.safetensors": writeSafetensors(tensors, { format: "pt" }) } };
}
