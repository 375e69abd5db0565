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
  MoELocalLayerMethods,
  Disposable,
  MoEWarning,
  GpuStatus,
  GPUDeviceLike,
  GPUBufferLike,
  CalibrateOptions,
  Calibration,
  MoEWeights,
  RoutingOptions,
  MoEConfigInput,
  MoEWeightsInput,
  ExpertSlices,
  ExpertTensorName,
  WeightDtype,
  ResidentForwardOptions,
  ResidentForwardResult,
  WasmBuild,
} from "./types.ts";
export { readSafetensors, writeSafetensors, parseSafetensorsHeader, parseSafetensorsIndex } from "./safetensors.ts";
export { loadMoE } from "./loaders/load-moe.ts";
export type { LoadMoEOptions, LoadedMoE } from "./loaders/load-moe.ts";
export { loadMoELayer, describeFamily, FAMILIES } from "./loaders/index.ts";
export { saveMoE } from "./loaders/save-moe.ts";
export type { SaveMoEOptions, SavedMoE } from "./loaders/save-moe.ts";
export type { ConvertedLayer, FamilyDescription, Family, Routing, FileValue, LoadProgress, LoadLayerOptions } from "./loaders/index.ts";
export { createMoEWorker } from "./worker-client.ts";
export type { MoEWorkerLike, MoEWorkerLayer, MoEWorkerOptions, MoEWorkerCallOptions } from "./worker-client.ts";
export { bestWasmBuild } from "./cpu/wasm.ts";
export type {
  SafetensorsDType,
  SafetensorsFile,
  SafetensorsTensor,
  SafetensorsRawTensor,
  SafetensorsHeader,
  SafetensorsEntry,
  SafetensorsInput,
  SafetensorsIndex,
} from "./safetensors.ts";
