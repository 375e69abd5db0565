// The config.json of the deepseek_v3 family fixture (test/fixtures/families/deepseek_v3/), as an
// object: the conformance bundle carries no JSON files. test/loaders-conformance.test.ts checks it
// against the file.
export const DEEPSEEK_V3_CONFIG: Readonly<Record<string, unknown>> = {
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
