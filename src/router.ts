// Where a call's experts run. Gating and the plan always run on the CPU; the experts run on the
// GPU when the layer has one (backend "gpu", or "auto" with B·k at or above the crossover) and on
// the CPU otherwise. A GPU that is lost or fails hands the call to the CPU, and every later call
// too, with one warning.
import type { LayerSpec } from "./config.ts";
import type { CpuEngine } from "./cpu/engine.ts";
import { fail } from "./errors.ts";
import { givenGpuDevice, sharedGpuDevice } from "./gpu/device.ts";
import { GpuExperts } from "./gpu/experts.ts";
import type { BackendChoice, CalibrateOptions, Calibration, ForwardResult, GpuStatus, MoEConfig, MoEWarning, MoEWeights } from "./types.ts";

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

/** Sets up the layer's router: acquires a device and uploads the weights when the backend may use a GPU. */
export async function createRouter(spec: LayerSpec, weights: Map<keyof MoEWeights, Float32Array>, config: MoEConfig): Promise<Router> {
  const router = new Router(spec, config.onWarning, config.crossover);
  if (spec.backend === "cpu") {
    router.noGpuReason = 'the layer was created with backend "cpu"';
    return router;
  }
  let gpu;
  if (config.gpu !== undefined) {
    gpu = givenGpuDevice(config.gpu);
    if (!gpu) fail("INVALID_CONFIG", "gpu must be a GPUDevice (from adapter.requestDevice())");
  } else {
    const got = await sharedGpuDevice();
    if ("reason" in got) {
      if (spec.backend === "gpu") fail("NO_GPU", `backend "gpu" needs WebGPU: ${got.reason}; or use backend "auto" (GPU when present) or "cpu"`);
      router.noGpuReason = got.reason;
      return router;
    }
    gpu = got;
  }
  try {
    router.attach(await GpuExperts.create(gpu, spec, weights), config.crossover);
  } catch (error) {
    if (spec.backend === "gpu") throw error;
    router.noGpuReason = (error as Error).message;
    router.warn({ code: "GPU_ERROR", message: `the GPU experts could not be set up (${(error as Error).message}); this layer runs on the CPU`, cause: error });
  }
  return router;
}

export class Router {
  private gpu: GpuExperts | undefined;
  /** B·k at or above which "auto" runs the experts on the GPU. */
  crossover = Infinity;
  noGpuReason: string | undefined;
  private readonly spec: LayerSpec;
  private readonly onWarning: ((warning: MoEWarning) => void) | undefined;
  /** GPU calls run one at a time: they share the upload and readback buffers. */
  private tail: Promise<unknown> = Promise.resolve();
  private warnedFailure = false;
  private disposed = false;

  constructor(spec: LayerSpec, onWarning: MoEConfig["onWarning"], crossover: number | undefined) {
    this.spec = spec;
    this.onWarning = onWarning;
    if (crossover !== undefined) this.crossover = crossover;
  }

  attach(gpu: GpuExperts, crossover: number | undefined): void {
    this.gpu = gpu;
    this.crossover = crossover ?? defaultCrossover(this.spec, gpu.software);
    gpu.onLost = (reason) => this.warnFailure("GPU_LOST", `${reason}; a call in flight and every later one run their experts on the CPU`);
  }

  /** Emits a warning to the caller's onWarning, or to the console when there is none. */
  warn(warning: MoEWarning): void {
    if (this.onWarning) {
      try {
        this.onWarning(warning);
      } catch {
        // a throwing listener must not break the call that warned
      }
    } else {
      console.warn(`edge-moe: ${warning.message}`);
    }
  }

  private warnFailure(code: MoEWarning["code"], message: string, cause?: unknown): void {
    if (this.warnedFailure || this.disposed) return;
    this.warnedFailure = true;
    this.warn({ code, message, cause });
  }

  /**
   * The GPU experts for this call, or undefined for the CPU. `x` is not validated yet: a bad x
   * goes to the CPU path, whose validation reports it.
   */
  pick(x: unknown, requested: BackendChoice | undefined): GpuExperts | undefined {
    const choice = requested ?? this.spec.backend;
    if (!BACKENDS.includes(choice)) fail("INVALID_CONFIG", `options.backend must be "cpu", "gpu" or "auto", got ${JSON.stringify(choice)}`);
    if (choice === "cpu") return undefined;
    const gpu = this.gpu;
    if (!gpu) {
      if (choice === "gpu") fail("NO_GPU", `backend "gpu" needs a GPU, and this layer has none (${this.noGpuReason ?? "none was found"}); create it with backend "gpu" or "auto"`);
      return undefined;
    }
    if (gpu.failure) return undefined; // lost or failed: the CPU, as the warning said
    const { dModel: d, k } = this.spec;
    if (!(x instanceof Float32Array) || x.length === 0 || x.length % d !== 0) return undefined;
    const batch = x.length / d;
    if (!gpu.fits(batch)) {
      if (choice === "gpu") fail("INPUT_SHAPE", `B·dModel = ${batch * d} floats is more than this GPU reads back in one buffer; split the batch or use backend "cpu"`);
      return undefined;
    }
    return choice === "gpu" || batch * k >= this.crossover ? gpu : undefined;
  }

  /** Runs GPU calls one after another. */
  serial<T>(call: () => T | Promise<T>): Promise<T> {
    const run = this.tail.then(call, call);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /**
   * The experts of the call whose gating is in the engine's scratch, on the GPU; y goes into
   * result.y. When the GPU fails, the call completes on the CPU, the GPU is switched off for
   * later calls, and the caller is warned.
   */
  async runExperts(gpu: GpuExperts, engine: CpuEngine, batch: number, result: ForwardResult): Promise<ForwardResult> {
    try {
      await gpu.run(engine, batch, result.y);
      result.backend = "gpu";
    } catch (error) {
      const lost = gpu.failure !== undefined;
      const message = lost ? gpu.failure! : `a GPU call failed (${(error as Error).message})`;
      gpu.failure ??= message;
      this.warnFailure(lost ? "GPU_LOST" : "GPU_ERROR", `${message}; this call and later ones run their experts on the CPU`, error);
      gpu.cpuFallback(engine, batch, result.topkIndices, result.topkGates, result.y);
      result.backend = "cpu";
    }
    return result;
  }

  /**
   * Times the CPU and GPU experts for a few batch sizes (eval-mode forward calls on pseudo-random
   * rows, the median of `repeats` after one warm-up each) and sets the crossover to the smallest
   * measured B·k from which the GPU is faster at every larger size measured.
   */
  async calibrate(forward: (x: Float32Array, backend: "cpu" | "gpu") => Promise<ForwardResult>, options: CalibrateOptions = {}): Promise<Calibration> {
    const { dModel: d, k } = this.spec;
    const batchSizes = options.batchSizes ?? [1, 4, 16, 64, 256];
    const repeats = options.repeats ?? 3;
    if (!Array.isArray(batchSizes) || batchSizes.length === 0 || !batchSizes.every((b) => Number.isInteger(b) && b > 0)) {
      fail("INVALID_CONFIG", "calibrate: batchSizes must be a non-empty array of positive integers");
    }
    if (!Number.isInteger(repeats) || repeats < 1) fail("INVALID_CONFIG", "calibrate: repeats must be a positive integer");
    const gpu = this.gpu;
    if (!gpu || gpu.failure) return { crossover: this.crossover, samples: [], software: gpu?.software ?? false };

    const sizes = [...new Set(batchSizes)].filter((b) => gpu.fits(b)).sort((a, b) => a - b);
    const x = new Float32Array(sizes[sizes.length - 1] * d);
    let state = 0x2545f491; // xorshift32: values in [-1, 1), the same every time
    for (let i = 0; i < x.length; i++) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      x[i] = (state >>> 0) / 2 ** 31 - 1;
    }
    const now = () => performance.now();
    const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
    const samples: Calibration["samples"] = [];
    for (const batch of sizes) {
      const rows = x.subarray(0, batch * d);
      const cpu: number[] = [];
      const gpuMs: number[] = [];
      for (let r = 0; r <= repeats; r++) {
        // interleaved, so that drift of the host's speed hits both alike; r = 0 warms up
        let t = now();
        await forward(rows, "cpu");
        if (r > 0) cpu.push(now() - t);
        t = now();
        const out = await forward(rows, "gpu");
        if (out.backend !== "gpu") return { crossover: this.crossover, samples, software: gpu.software };
        if (r > 0) gpuMs.push(now() - t);
      }
      samples.push({ batch, pairs: batch * k, cpuMs: median(cpu), gpuMs: median(gpuMs) });
    }
    let crossover = Infinity;
    for (let i = samples.length - 1; i >= 0 && samples[i].gpuMs < samples[i].cpuMs; i--) crossover = samples[i].pairs;
    this.crossover = crossover;
    return { crossover, samples, software: gpu.software };
  }

  /** Training changed the weights (layer.step): the GPU's resident copy is rewritten. */
  weightsChanged(read: () => MoEWeights): void {
    const gpu = this.gpu;
    if (!gpu || gpu.failure) return;
    const weights = read();
    gpu.writeWeights(new Map(Object.entries(weights) as Array<[keyof MoEWeights, Float32Array]>));
  }

  get status(): GpuStatus {
    const gpu = this.gpu;
    const reason = gpu ? gpu.failure : this.noGpuReason;
    return {
      adapter: gpu?.description,
      software: gpu?.software ?? false,
      crossover: this.crossover,
      available: gpu !== undefined && gpu.failure === undefined,
      ...(reason !== undefined && { reason }),
    };
  }

  dispose(): void {
    this.disposed = true;
    this.gpu?.dispose();
  }
}
