// Where a call's experts run: the router chooses by the plan's size (B·k against the crossover)
// and the call's or layer's backend, runs GPU calls one at a time, and keeps the calibration. It
// runs nothing itself: the layer hands the plan to the back end it returns.
import type { LayerSpec } from "./config.ts";
import { fail } from "./errors.ts";
import type { GpuExperts } from "./gpu/experts.ts";
import type { BackendChoice, Calibration, GpuStatus } from "./types.ts";

const BACKENDS: readonly BackendChoice[] = ["cpu", "gpu", "auto"];

/**
 * Expert work (floating-point operations) above which a hardware GPU is assumed to beat the wasm
 * SIMD kernels: ~1.5 ms of CPU time at ~20 GFLOP/s, against the GPU's fixed cost per call (upload,
 * submit, readback: a few hundred µs to a millisecond). A guess until calibrate() measures.
 */
const GPU_BREAK_EVEN_FLOPS = 3e7;

/**
 * The crossover before calibration: the B·k at which the experts' work reaches the break-even
 * above. A software adapter (a CPU implementation of WebGPU) never beats the wasm kernels: Infinity.
 */
export function defaultCrossover(spec: Pick<LayerSpec, "dModel" | "dHidden" | "expert">, software: boolean): number {
  if (software) return Infinity;
  const flopsPerPair = 2 * spec.dModel * spec.dHidden * (spec.expert === "swiglu" ? 3 : 2);
  return Math.max(1, Math.ceil(GPU_BREAK_EVEN_FLOPS / flopsPerPair));
}

export class Router {
  /** The GPU experts, when the layer has a GPU (gpu.failure says once it can no longer be used). */
  readonly gpu: GpuExperts | undefined;
  /** B·k at or above which "auto" runs the experts on the GPU. */
  crossover: number;
  /** Why the layer has no GPU. */
  private readonly reason: string | undefined;
  private readonly spec: LayerSpec;
  /** GPU calls run one at a time: they share the upload and readback buffers. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(spec: LayerSpec, gpu: GpuExperts | undefined, crossover: number | undefined, reason: string | undefined) {
    this.spec = spec;
    this.gpu = gpu;
    this.crossover = crossover ?? (gpu ? defaultCrossover(spec, gpu.software) : Infinity);
    this.reason = reason;
  }

  /**
   * Checks a call's backend option before anything runs (a bad one changes nothing); `cpuOnly`
   * (forwardSync) checks only that it is a backend's name.
   */
  check(requested: BackendChoice | undefined, batch: number, cpuOnly: boolean): void {
    const choice = requested ?? this.spec.backend;
    if (!BACKENDS.includes(choice)) fail("INVALID_CONFIG", `options.backend must be "cpu", "gpu" or "auto", got ${JSON.stringify(choice)}`);
    if (choice !== "gpu" || cpuOnly) return;
    if (!this.gpu) {
      fail("NO_GPU", `backend "gpu" needs a GPU, and this layer has none (${this.reason ?? "none was found"}); create it with backend "gpu" or "auto"`);
    }
    if (!this.gpu.failure && !this.gpu.fits(batch)) {
      fail("INPUT_SHAPE", `B·dModel = ${batch * this.spec.dModel} floats is more than this GPU reads back in one buffer; split the batch or use backend "cpu"`);
    }
  }

  /** The GPU experts for a plan of `batch` rows, or undefined for the CPU. */
  choose(requested: BackendChoice | undefined, batch: number): GpuExperts | undefined {
    const choice = requested ?? this.spec.backend;
    const gpu = this.gpu;
    if (choice === "cpu" || !gpu || gpu.failure || !gpu.fits(batch)) return undefined;
    return choice === "gpu" || batch * this.spec.k >= this.crossover ? gpu : undefined;
  }

  /** Runs GPU calls one after another. */
  serial<T>(call: () => Promise<T>): Promise<T> {
    const run = this.tail.then(call, call);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** The GPU experts, for what is not a routing decision (weights after a training step, calibration). */
  get gpuExperts(): GpuExperts | undefined {
    return this.gpu && !this.gpu.failure ? this.gpu : undefined;
  }

  /**
   * Sets the crossover from timings of both back ends (the smallest measured B·k from which the
   * GPU is faster at every larger size measured).
   */
  calibrated(samples: Calibration["samples"]): number {
    let crossover = Infinity;
    for (let i = samples.length - 1; i >= 0 && samples[i].gpuMs < samples[i].cpuMs; i--) crossover = samples[i].pairs;
    this.crossover = crossover;
    return crossover;
  }

  get status(): GpuStatus {
    const reason = this.gpu ? this.gpu.failure : this.reason;
    return {
      adapter: this.gpu?.description,
      software: this.gpu?.software ?? false,
      crossover: this.crossover,
      available: this.gpuExperts !== undefined,
      ...(reason !== undefined && { reason }),
    };
  }

  /** Releases the GPU experts' buffers (the device stays: it is shared, or the caller's). */
  dispose(): void {
    this.gpu?.dispose();
  }
}
