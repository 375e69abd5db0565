// Float64 forward of each family's MoE block, straight from Hugging Face transformers' modeling
// rules, on the checkpoint's own tensor names and [out, in] layout (independent of
// src/loaders/families.ts: it reads config.json and the names itself).
//   mixtral              modeling_mixtral.py      MixtralSparseMoeBlock.forward
//   qwen2_moe            modeling_qwen2_moe.py    Qwen2MoeSparseMoeBlock.forward
//   qwen3_moe            modeling_qwen3_moe.py    Qwen3MoeSparseMoeBlock.forward
//   olmoe                modeling_olmoe.py        OlmoeSparseMoeBlock.forward
//   deepseek_v3          modeling_deepseek_v3.py  DeepseekV3TopkRouter.forward/get_topk_indices, DeepseekV3MoE
//   switch_transformers  modeling_switch_transformers.py  SwitchTransformersTop1Router, SwitchTransformersSparseMLP
// Top-k order: descending selection score, equal scores by lower expert index.

export interface RefTensor {
  shape: number[];
  data: ArrayLike<number>;
}

export interface RefOutput {
  /** [B, d] */
  y: Float64Array;
  /** [B, k], descending selection score */
  topkIndices: Int32Array;
  /** [B, k], the factor each routed expert's output is multiplied by */
  topkGates: Float64Array;
}

// biome-ignore lint/suspicious/noExplicitAny: a parsed config.json
type Cfg = Record<string, any>;

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));
const silu = (v: number) => v * sigmoid(v);
const relu = (v: number) => (v > 0 ? v : 0);

/** x [d] · Wᵀ with W [out, in] → [out] */
function linear(w: RefTensor, x: ArrayLike<number>, xOff: number): Float64Array {
  const [out, inp] = w.shape;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = 0;
    for (let i = 0; i < inp; i++) s += w.data[o * inp + i] * x[xOff + i];
    y[o] = s;
  }
  return y;
}

function gluMlp(get: (n: string) => RefTensor, p: string, names: [string, string, string], x: ArrayLike<number>, xOff: number): Float64Array {
  const g = linear(get(`${p}.${names[0]}.weight`), x, xOff);
  const u = linear(get(`${p}.${names[1]}.weight`), x, xOff);
  const a = g.map((v, i) => silu(v) * u[i]);
  return linear(get(`${p}.${names[2]}.weight`), a, 0);
}

/** Indices of the k largest values, descending, equal values by lower index. */
export function topkOrder(values: ArrayLike<number>, k: number): number[] {
  return Array.from({ length: values.length }, (_, i) => i)
    .sort((a, b) => (values[b] > values[a] ? 1 : values[b] < values[a] ? -1 : a - b))
    .slice(0, k);
}

function softmax(v: Float64Array): Float64Array {
  let m = -Infinity;
  for (const x of v) m = Math.max(m, x);
  const e = v.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

/** The MoE block of `layer` (a decoder layer index; switch_transformers: encoder block index). */
export function referenceFamilyForward(config: Cfg, tensors: Map<string, RefTensor>, layer: number, x: ArrayLike<number>, batch: number): RefOutput {
  const get = (name: string): RefTensor => {
    const t = tensors.get(name);
    if (!t) throw new Error(`reference: no tensor ${name}`);
    return t;
  };
  const family = config.model_type as string;
  let d: number, k: number;
  let p: string;
  switch (family) {
    case "mixtral":
      d = config.hidden_size;
      k = config.num_experts_per_tok;
      p = `model.layers.${layer}.block_sparse_moe`;
      break;
    case "switch_transformers":
      d = config.d_model;
      k = 1;
      p = `encoder.block.${layer}.layer.1.mlp`;
      break;
    default:
      d = config.hidden_size;
      k = config.num_experts_per_tok;
      p = `model.layers.${layer}.mlp`;
  }
  const y = new Float64Array(batch * d);
  const topkIndices = new Int32Array(batch * k);
  const topkGates = new Float64Array(batch * k);

  for (let r = 0; r < batch; r++) {
    const off = r * d;
    let chosen: number[];
    let weights: number[];
    const out = new Float64Array(d);
    if (family === "deepseek_v3") {
      const n = config.n_routed_experts;
      const scores = linear(get(`${p}.gate.weight`), x, off).map(sigmoid);
      const bias = get(`${p}.gate.e_score_correction_bias`).data;
      const choice = scores.map((s, i) => s + bias[i]);
      const nGroup = config.n_group,
        size = n / nGroup;
      const groupScores = Array.from({ length: nGroup }, (_, g) => {
        const member = topkOrder(choice.slice(g * size, (g + 1) * size), 2);
        return member.reduce((a, i) => a + choice[g * size + i], 0);
      });
      const kept = new Set(topkOrder(groupScores, config.topk_group));
      const masked = choice.map((v, i) => (kept.has(Math.floor(i / size)) ? v : 0.0)); // masked_fill(~mask, 0.0)
      chosen = topkOrder(masked, k);
      weights = chosen.map((i) => scores[i]);
      if (config.norm_topk_prob ?? true) {
        const s = weights.reduce((a, b) => a + b, 0) + 1e-20;
        weights = weights.map((w) => w / s);
      }
      weights = weights.map((w) => w * (config.routed_scaling_factor ?? 1));
    } else if (family === "switch_transformers") {
      const probs = softmax(linear(get(`${p}.router.classifier.weight`), x, off));
      chosen = topkOrder(probs, 1);
      weights = [probs[chosen[0]]];
    } else {
      const probs = softmax(linear(get(`${p}.gate.weight`), x, off));
      chosen = topkOrder(probs, k);
      weights = chosen.map((i) => probs[i]);
      const renorm = family === "mixtral" ? true : (config.norm_topk_prob ?? false);
      if (renorm) {
        const s = weights.reduce((a, b) => a + b, 0);
        weights = weights.map((w) => w / s);
      }
    }
    chosen.forEach((e, s) => {
      let eo: Float64Array;
      if (family === "mixtral") eo = gluMlp(get, `${p}.experts.${e}`, ["w1", "w3", "w2"], x, off);
      else if (family === "switch_transformers") {
        const hidden = linear(get(`${p}.experts.expert_${e}.wi.weight`), x, off).map(relu);
        eo = linear(get(`${p}.experts.expert_${e}.wo.weight`), hidden, 0);
      } else eo = gluMlp(get, `${p}.experts.${e}`, ["gate_proj", "up_proj", "down_proj"], x, off);
      for (let i = 0; i < d; i++) out[i] += weights[s] * eo[i];
      topkIndices[r * k + s] = e;
      topkGates[r * k + s] = weights[s];
    });
    if (family === "qwen2_moe") {
      const so = gluMlp(get, `${p}.shared_expert`, ["gate_proj", "up_proj", "down_proj"], x, off);
      const g = sigmoid(linear(get(`${p}.shared_expert_gate.weight`), x, off)[0]);
      for (let i = 0; i < d; i++) out[i] += g * so[i];
    }
    if (family === "deepseek_v3" && (config.n_shared_experts ?? 0) > 0) {
      const so = gluMlp(get, `${p}.shared_experts`, ["gate_proj", "up_proj", "down_proj"], x, off);
      for (let i = 0; i < d; i++) out[i] += so[i];
    }
    y.set(out, off);
  }
  return { y, topkIndices, topkGates };
}
