// edge-moe: the sparsely-gated Mixture-of-Experts layer (Shazeer et al., 2017) for edge runtimes.
export { createMoE } from "./layer.ts";
export { MoEError } from "./errors.ts";
export type { MoEErrorCode } from "./errors.ts";
export type {
  BackendChoice,
  BackendName,
  BackwardOptions,
  Gradients,
  StepOptions,
  ExpertKind,
  ForwardOptions,
  ForwardResult,
  MoEConfig,
  MoELayer,
  MoELocalLayer,
  MoEWarning,
  GpuStatus,
  GPUDeviceLike,
  CalibrateOptions,
  Calibration,
  MoEWeights,
  WasmBuild,
} from "./types.ts";
export { readSafetensors } from "./safetensors.ts";
export { createMoEWorker } from "./worker-client.ts";
export type { MoEWorkerLike } from "./worker-client.ts";
export { bestWasmBuild } from "./cpu/wasm.ts";
export type { SafetensorsDType, SafetensorsFile, SafetensorsTensor } from "./safetensors.ts";
