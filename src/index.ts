// edge-moe: the sparsely-gated Mixture-of-Experts layer (Shazeer et al., 2017) for edge runtimes.
export { createMoE } from "./layer.ts";
export { MoEError } from "./errors.ts";
export type { MoEErrorCode } from "./errors.ts";
export type {
  BackendChoice,
  BackendName,
  ExpertKind,
  ForwardOptions,
  ForwardResult,
  MoEConfig,
  MoELayer,
  MoEWeights,
} from "./types.ts";
export { readSafetensors } from "./safetensors.ts";
export type { SafetensorsDType, SafetensorsFile, SafetensorsTensor } from "./safetensors.ts";
