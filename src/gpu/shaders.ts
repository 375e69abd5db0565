// The WGSL passes of the GPU expert path: templates filled with a layer's constants, compiled
// once per device and template values (the cache key), and shared by every layer of that shape.
import groupedGemmTemplate from "../../shaders/grouped_gemm.wgsl";
import f16Bits from "../../shaders/f16_bits.wgsl";
import f16Native from "../../shaders/f16_native.wgsl";
import combineTemplate from "../../shaders/combine.wgsl";
import gatingGemmTemplate from "../../shaders/gating_gemm.wgsl";
import gatingNoiseTemplate from "../../shaders/gating_noise.wgsl";
import gatingTopkTemplate from "../../shaders/gating_topk.wgsl";
import gatingStatsTemplate from "../../shaders/gating_stats.wgsl";
import gatingLossesTemplate from "../../shaders/gating_losses.wgsl";
import gatingTopkSubgroupTemplate from "../../shaders/gating_topk_subgroup.wgsl";
import topkCandidates from "../../shaders/topk_candidates.wgsl";
import workgroupSum from "../../shaders/workgroup_sum.wgsl";
import workgroupSumSubgroup from "../../shaders/workgroup_sum_subgroup.wgsl";
import planScanTemplate from "../../shaders/plan_scan.wgsl";
import planScatterTemplate from "../../shaders/plan_scatter.wgsl";
import padRowsTemplate from "../../shaders/pad_rows.wgsl";

export type TemplateValues = Record<string, number | boolean>;

const TEMPLATES = {
  // f16 weights through f16Weights(): integer unpacking, or f16 reads on devices with the
  // `shader-f16` feature (that module goes first: `enable` must lead a module)
  grouped_gemm: `${groupedGemmTemplate}\n${f16Bits}`,
  grouped_gemm_f16: `${f16Native}\n${groupedGemmTemplate}`,
  combine: combineTemplate,
  // the resident path (src/gpu/resident.ts): gating, statistics and plan on the GPU
  gating_gemm: gatingGemmTemplate,
  gating_noise: gatingNoiseTemplate,
  // both top-k passes scan a row's H with candidates() (after the module: `enable` must lead it)
  gating_topk: `${gatingTopkTemplate}\n${topkCandidates}`,
  // the statistics and losses reduce through total(): a tree sum, or subgroup sums where the
  // device has the `subgroups` feature (its module goes first: `enable` must lead a module)
  gating_stats: `${gatingStatsTemplate}\n${workgroupSum}`,
  gating_losses: `${gatingLossesTemplate}\n${workgroupSum}`,
  gating_stats_subgroup: `${workgroupSumSubgroup}\n${gatingStatsTemplate}`,
  gating_losses_subgroup: `${workgroupSumSubgroup}\n${gatingLossesTemplate}`,
  gating_topk_subgroup: `${gatingTopkSubgroupTemplate}\n${topkCandidates}`,
  plan_scan: planScanTemplate,
  plan_scatter: planScatterTemplate,
  pad_rows: padRowsTemplate,
} as const;
export type ShaderName = keyof typeof TEMPLATES;

/**
 * Replaces every {{NAME}} of a template by its value (a non-negative integer or a boolean).
 * A placeholder without a value, or a value without a placeholder, is a programming error.
 */
export function fillTemplate(template: string, values: TemplateValues): string {
  const used = new Set<string>();
  const source = template.replace(/\{\{(\w+)\}\}/g, (_, name: string) => {
    const value = values[name];
    if (typeof value === "boolean") {
      used.add(name);
      return String(value);
    }
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value >= 2 ** 32) {
      throw new Error(`shader template value ${name} must be a u32 or a boolean, got ${String(value)}`);
    }
    used.add(name);
    return String(value);
  });
  for (const name of Object.keys(values)) {
    if (!used.has(name)) throw new Error(`shader template has no placeholder {{${name}}}`);
  }
  return source;
}

const pipelineCache = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

/** The compute pipeline of a template with these values on this device, compiled at most once. */
export function pipelineFor(device: GPUDevice, name: ShaderName, values: TemplateValues): Promise<GPUComputePipeline> {
  let cache = pipelineCache.get(device);
  if (!cache) {
    cache = new Map();
    pipelineCache.set(device, cache);
  }
  const key = `${name}:${JSON.stringify(values)}`;
  let pipeline = cache.get(key);
  if (!pipeline) {
    const code = fillTemplate(TEMPLATES[name], values);
    const module = device.createShaderModule({ label: `edge-moe ${name}`, code });
    pipeline = device.createComputePipelineAsync({
      label: `edge-moe ${key}`,
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    pipeline.catch(() => cache.delete(key));
    cache.set(key, pipeline);
  }
  return pipeline;
}

/**
 * The pipelines of an optional shader variant (one that needs a device feature: subgroups,
 * shader-f16), compiled in their own validation error scope, so that a compiler that rejects the
 * variant does not fail the caller's scope: `build(true)` when `wanted` and it compiles, else
 * `build(false)`. Returns the pipelines and whether the variant is in use.
 */
export async function optionalVariant<T>(device: GPUDevice, wanted: boolean, build: (variant: boolean) => Promise<T>): Promise<[T, boolean]> {
  if (wanted) {
    device.pushErrorScope("validation");
    const passes = build(true);
    const [error, ready] = await Promise.all([
      device.popErrorScope(),
      passes.then(
        (p) => p,
        () => undefined,
      ),
    ]);
    if (!error && ready) return [ready, true];
  }
  return [await build(false), false];
}
