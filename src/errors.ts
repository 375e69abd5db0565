/**
 * Every failure the package reports is an `MoEError` with a stable `code`.
 * The message says what was wrong and what to do about it.
 */
export type MoEErrorCode =
  /** dModel, dHidden, numExperts or k is not a positive integer; k > numExperts; bad option value. */
  | "INVALID_CONFIG"
  /** `expert` is not "relu" | "gelu" | "swiglu". */
  | "UNKNOWN_EXPERT"
  /** A weight the expert kind needs was not given. */
  | "MISSING_WEIGHT"
  /** A weight is not a Float32Array of the expected length. */
  | "WEIGHT_SHAPE"
  /** A weight holds NaN or ±Infinity (checked once, at creation). */
  | "NON_FINITE_WEIGHT"
  /** x is empty, not a Float32Array, or its length is not a multiple of dModel. */
  | "INPUT_SHAPE"
  /** x holds NaN or ±Infinity. */
  | "NON_FINITE_INPUT"
  /** The caller's noise matrix has the wrong length or type, or holds NaN/Inf. */
  | "NOISE_SHAPE"
  /** A caller-provided output buffer has the wrong type or length. */
  | "OUTPUT_SHAPE"
  /** The layer was disposed. */
  | "DISPOSED"
  /** The bytes are not a valid safetensors file. */
  | "BAD_SAFETENSORS"
  /** The WebAssembly module could not be loaded or instantiated. */
  | "WASM_LOAD"
  /** A layer's worker (edge-moe/worker) failed to start, crashed, or could not take a message. */
  | "WORKER_ERROR"
  /** backend "gpu" was asked for and no WebGPU adapter/device is available. */
  | "NO_GPU"
  /**
   * backend "gpu": the GPU experts could not be set up (pipelines, buffers, the adapter's limits).
   * A GPU failure during a call is no error: that call completes on the CPU, with a warning.
   */
  | "GPU_ERROR"
  /**
   * The GPU device was lost during, or before, a forward whose x is a GPUBuffer (the resident
   * path). The CPU cannot finish such a call: its input lived on the lost device. Make a layer on
   * a new device: createMoE({ ...config, gpu: newDevice, weights: await layer.getWeights() }).
   */
  | "GPU_LOST"
  /** backward() was called without a preceding training-mode forward(). */
  | "NO_FORWARD_STATE"
  /** The upstream gradient dy has the wrong length or type. */
  | "GRAD_SHAPE"
  /** step() was called before any backward(): there are no gradients to apply. */
  | "NO_GRADIENTS"
  /** The layer cannot do this: backward or step on a layer with quantized expert weights. */
  | "UNSUPPORTED"
  /** loadMoE: the caller's AbortSignal fired. */
  | "ABORTED"
  /** loadMoE: a file could not be read (HTTP status, network or file-system error, a value of an unsupported type). */
  | "SOURCE_ERROR"
  /** loadMoE: a file the checkpoint needs (a shard the index names, a *.safetensors) is not in `files`. */
  | "MISSING_FILE"
  /** loadMoE: config.model_type is not one of the supported families. */
  | "UNKNOWN_MODEL_TYPE"
  /** loadMoE: the requested layer is a dense MLP in this model, not a mixture of experts. */
  | "DENSE_LAYER";

export class MoEError extends Error {
  readonly code: MoEErrorCode;
  constructor(code: MoEErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "MoEError";
    this.code = code;
  }
}

export function fail(code: MoEErrorCode, message: string): never {
  throw new MoEError(code, message);
}
