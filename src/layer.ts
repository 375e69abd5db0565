// The layer: validation at the door, gating on the CPU into a plan, the experts on the back end the
// router chooses (src/plan.ts: one plan, two back ends), training on the CPU.
import { checkSeed, hasExpertSlices, validateConfig, validateWeights, type LayerSpec } from "./config.ts";
import { fail } from "./errors.ts";
import { CpuEngine, CpuExperts, type Arena } from "./cpu/engine.ts";
import { instantiateKernels } from "./cpu/wasm.ts";
import { resolveThreads } from "./cpu/threads.ts";
import { completeWeights } from "./train/init.ts";
import { stepOptionsOf, Trainer } from "./train/trainer.ts";
import { unpackTensors } from "./train/tensors.ts";
import { Router } from "./router.ts";
import { withSharedSlices } from "./routing.ts";
import { checkBackwardOptions, checkCalibrateOptions, checkForwardOptions, checkResidentOptions, checkStepOptions } from "./options.ts";
import { openGpuExperts, packedExpertsOf, type GpuExperts } from "./gpu/experts.ts";
import type { Plan } from "./plan.ts";
import { disposeResident, forwardResident, invalidateResidentGating } from "./gpu/resident.ts";
import { isGpuBuffer, type GPUBufferLike } from "./gpu/types.ts";
import type {
  BackwardOptions,
  CalibrateOptions,
  Calibration,
  ForwardOptions,
  ForwardResult,
  GpuStatus,
  Gradients,
  MoEConfig,
  MoEConfigInput,
  MoELayer,
  MoELocalLayer,
  MoELocalLayerMethods,
  MoEWarning,
  MoEWeights,
  ResidentForwardOptions,
  ResidentForwardResult,
  StepOptions,
} from "./types.ts";

/** Creates a layer: validates the configuration, loads the kernels, copies and packs the weights. */
export async function createMoE(config: MoEConfigInput): Promise<MoELocalLayer> {
  const spec = validateConfig(config);
  const weights = validateWeights(spec, config.weights);
  const threads = await resolveThreads(spec.threads, config.wasmBuild, config.wasm !== undefined);
  const kernels = await instantiateKernels(config.wasm, config.wasmBuild, threads);
  const engine = new CpuEngine(kernels, spec);
  const given = completeWeights(engine, weights, spec.initSeed);
  // a shared expert runs as extra experts that every row routes to (src/routing.ts)
  const expand = (w: Map<keyof MoEWeights, Float32Array>) => (spec.shared ? withSharedSlices(w, spec.shared, spec.dModel, spec.dHidden, spec.numExperts) : w);
  let complete = expand(given);
  engine.loadWeights(complete);
  // Quantized weights go to a GPU as the engine packed them (the shaders dequantize), f32 weights
  // given per expert as the engine holds them (the whole arrays never existed).
  if (spec.dtype === "f32" && hasExpertSlices(given) && spec.backend !== "cpu")
    complete = expand(new Map(Object.entries(unpackTensors(engine, 0)) as Array<[keyof MoEWeights, Float32Array]>));
  // backend "gpu" / "auto": a device, and the weights uploaded to it
  let gpu: GpuExperts | undefined;
  let reason: string | undefined = 'the layer was created with backend "cpu"';
  let setupError: unknown;
  if (spec.backend !== "cpu") {
    const expertSpec = { ...spec, numExperts: engine.packed.experts, k: engine.packed.slots };
    const opened = await openGpuExperts(expertSpec, spec.dtype === "f32" ? complete : packedExpertsOf(engine), config.gpu);
    if ("experts" in opened) gpu = opened.experts;
    else ({ reason, error: setupError } = opened);
  }
  if (threads > 1) {
    try {
      await engine.startThreads(threads);
    } catch (error) {
      gpu?.dispose();
      throw error;
    }
  }
  const layer = new Layer(spec, engine, new Router(spec, gpu, config.crossover, gpu ? undefined : reason), config.onWarning);
  if (setupError !== undefined) {
    layer.warn({ code: "GPU_ERROR", message: `the GPU experts could not be set up (${reason}); this layer runs on the CPU`, cause: setupError });
  }
  return layer;
}

const isFloat32 = (value: unknown): value is Float32Array => value instanceof Float32Array;

/** One forward after gating: the plan, its arena (held until the experts are done), the outputs. */
interface Call {
  plan: Plan;
  arena: Arena;
  y: Float32Array;
  result: ForwardResult;
  gpu: GpuExperts | undefined;
}

/** The last training forward, kept for backward: its arena holds the gating state and activations. */
interface TrainingState {
  arena: Arena;
  batch: number;
  /** The CPU expert pass ran in the arena (a GPU forward leaves no activations there). */
  expertsInArena: boolean;
}

class Layer implements MoELocalLayerMethods {
  readonly config: MoELayer["config"];
  private engine: CpuEngine | undefined;
  private readonly cpu: CpuExperts;
  private readonly router: Router;
  private readonly onWarning: ((warning: MoEWarning) => void) | undefined;
  private warnedFailure = false;
  /** The layer's own noise stream: training calls without noise or seed take the next one. */
  private streamCalls = 0;
  private state: TrainingState | undefined;
  /** Gradient and optimizer memory, made at the first backward. */
  private trainer: Trainer | undefined;

  constructor(spec: LayerSpec, engine: CpuEngine, router: Router, onWarning: MoEConfig["onWarning"]) {
    this.engine = engine;
    this.cpu = new CpuExperts(engine);
    this.router = router;
    this.onWarning = onWarning;
    const { dModel, dHidden, numExperts, k, expert, noisyGating, noiseEpsilon, wImportance, wLoad } = spec;
    this.config = Object.freeze({ dModel, dHidden, numExperts, k, expert, noisyGating, noiseEpsilon, wImportance, wLoad });
    const gpu = router.gpuExperts;
    if (gpu) gpu.onLost = (reason) => this.warnFailure("GPU_LOST", `${reason}; a call in flight and every later one run their experts on the CPU`);
  }

  private live(): CpuEngine {
    if (!this.engine) fail("DISPOSED", "this layer was disposed; create a new one with createMoE");
    return this.engine;
  }

  forward(x: GPUBufferLike, options?: ResidentForwardOptions): Promise<ResidentForwardResult>;
  forward(x: Float32Array, options?: ForwardOptions): Promise<ForwardResult>;
  forward(x: Float32Array | GPUBufferLike, options: ForwardOptions | ResidentForwardOptions = {}): Promise<ForwardResult | ResidentForwardResult> {
    if (isGpuBuffer(x)) return this.inOrder(() => this.forwardResident(x, options as ResidentForwardOptions));
    return this.inOrder(() => {
      const call = this.begin(x, options as ForwardOptions, false);
      return call.gpu ? this.finishOnGpu(call, call.gpu) : this.finishOnCpu(call);
    });
  }

  /**
   * Runs a call in the order the caller made it. A layer with a GPU queues its calls: a GPU
   * call's experts run after the calls made before it and before those made after it, and step()
   * never changes weights under a queued call, so overlapping calls give the bits of the same
   * calls one after another. Without a GPU every call runs at once (synchronously).
   */
  private inOrder<T>(call: () => T | Promise<T>): Promise<T> {
    if (this.router.gpu) return this.router.serial(async () => call());
    try {
      return Promise.resolve(call());
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private async finishOnGpu(call: Call, gpu: GpuExperts): Promise<ForwardResult> {
    try {
      await gpu.run(call.plan, call.y);
      call.result.backend = "gpu";
    } catch (error) {
      // The GPU is switched off for later calls, the caller warned, and this call's plan runs on the CPU.
      const lost = gpu.failure !== undefined;
      const message = gpu.failure ?? `a GPU call failed (${(error as Error).message})`;
      gpu.failure ??= message;
      this.warnFailure(lost ? "GPU_LOST" : "GPU_ERROR", `${message}; this call and later ones run their experts on the CPU`, error);
      return this.finishOnCpu(call);
    }
    this.engine?.release(call.arena);
    return call.result;
  }

  /**
   * A forward whose x is a GPUBuffer: gating, plan and experts on the GPU, outputs as GPUBuffers
   * (src/gpu/resident.ts). It leaves no state for backward.
   */
  private forwardResident(x: GPUBufferLike, options: ResidentForwardOptions): Promise<ResidentForwardResult> {
    const engine = this.live();
    checkResidentOptions(options);
    if (engine.spec.routing.score !== "topk-softmax" || engine.spec.shared) {
      fail(
        "UNSUPPORTED",
        "a GPUBuffer x runs the paper's top-k softmax gating on the GPU; this layer's router or shared expert runs only with a Float32Array x",
      );
    }
    return forwardResident(
      {
        spec: engine.spec,
        experts: this.router.gpuExperts,
        status: this.router.status,
        gatingWeights: () => unpackTensors(engine, 0),
        nextStream: () => ++this.streamCalls >>> 0,
        dropState: () => this.dropState(),
      },
      x,
      options,
    );
  }

  /** The CPU path, synchronously, whatever the backend. */
  forwardSync(x: Float32Array, options: ForwardOptions = {}): ForwardResult {
    return this.finishOnCpu(this.begin(x, options, true));
  }

  private finishOnCpu(call: Call): ForwardResult {
    try {
      this.cpu.run(call.plan, call.y);
      if (this.state?.arena === call.arena) this.state.expertsInArena = true;
      call.result.backend = "cpu";
      return call.result;
    } finally {
      this.engine?.release(call.arena);
    }
  }

  /**
   * Validates a call, then runs its gating into a plan. Everything that can reject the call is
   * checked before the gating commits: a rejected call changes nothing.
   */
  private begin(x: Float32Array, options: ForwardOptions, cpuOnly: boolean): Call {
    const engine = this.live();
    checkForwardOptions(options);
    const { dModel: d, numExperts: n, k, noisyGating } = this.config;
    if (!isFloat32(x)) fail("INPUT_SHAPE", `x must be a Float32Array [B·${d}], got ${Object.prototype.toString.call(x)}`);
    if (x.length === 0 || x.length % d !== 0) {
      fail("INPUT_SHAPE", `x.length (${x.length}) must be a positive multiple of dModel (${d}): x is [B, ${d}] row-major`);
    }
    const batch = x.length / d;
    const train = options.train ?? false;
    if (typeof train !== "boolean") fail("INVALID_CONFIG", "options.train must be a boolean");
    this.router.check(options.backend, batch, cpuOnly);

    // noise and seed are checked whenever given (a malformed one is a bug even where unused);
    // they are used only in training mode with noisy gating.
    const givenNoise = options.noise;
    if (givenNoise !== undefined) {
      if (!isFloat32(givenNoise) || givenNoise.length !== batch * n) {
        fail(
          "NOISE_SHAPE",
          `noise must be a Float32Array of B·n = ${batch}·${n} = ${batch * n} standard normals, got ${isFloat32(givenNoise) ? `length ${givenNoise.length}` : Object.prototype.toString.call(givenNoise)}`,
        );
      }
      for (let i = 0; i < givenNoise.length; i++) {
        if (!Number.isFinite(givenNoise[i])) fail("NOISE_SHAPE", `noise[${i}] is ${givenNoise[i]}; noise must be finite`);
      }
    }
    const givenSeed = options.seed === undefined ? undefined : checkSeed("options.seed", options.seed);
    const noisy = train && noisyGating;
    const ownStream = noisy && givenNoise === undefined && givenSeed === undefined;
    const seed = { key: givenSeed ?? engine.spec.seed, stream: ownStream ? (this.streamCalls + 1) >>> 0 : 0 };
    const out = options.out ?? {};
    checkOut("y", out.y, Float32Array, batch * d);
    checkOut("topkIndices", out.topkIndices, Int32Array, batch * k);
    checkOut("topkGates", out.topkGates, Float32Array, batch * k);

    const { plan, arena } = engine.gate(x, batch, train, noisy ? givenNoise : undefined, seed);
    // committed: the call is this one's from here
    if (ownStream) this.streamCalls++;
    this.dropState();
    const result: ForwardResult = {
      y: out.y ?? new Float32Array(batch * d),
      topkIndices: engine.readRows(engine.i32(arena.at("topkIdx"), plan.batch * plan.k), batch, k, plan.k, out.topkIndices ?? new Int32Array(batch * k)),
      topkGates: engine.readRows(engine.f32(arena.at("topkGates"), plan.batch * plan.k), batch, k, plan.k, out.topkGates ?? new Float32Array(batch * k)),
      backend: "cpu",
    };
    if (train) {
      const losses = engine.f64(arena.at("losses"), 2);
      result.importance = engine.readF32(arena.at("importance"), n);
      result.load = engine.readF32(arena.at("load"), n);
      result.lossImportance = losses[0];
      result.lossLoad = losses[1];
      arena.holds++;
      this.state = { arena, batch, expertsInArena: false };
    }
    return { plan, arena, y: result.y, result, gpu: cpuOnly ? undefined : this.router.choose(options.backend, batch) };
  }

  /** Forgets the last training forward (a later forward, a backward or a step used it up). */
  private dropState(): void {
    if (this.state) this.engine?.release(this.state.arena);
    this.state = undefined;
  }

  backward(dy: Float32Array, options: BackwardOptions = {}): Promise<Gradients> {
    return this.inOrder(() => this.backwardNow(dy, options));
  }

  private backwardNow(dy: Float32Array, options: BackwardOptions): Gradients {
    const engine = this.live();
    checkBackwardOptions(options);
    if (engine.spec.dtype !== "f32")
      fail("UNSUPPORTED", `backward needs f32 expert weights; this layer stores them as ${engine.spec.dtype} (create it with dtype "f32" to train)`);
    const state = this.state;
    if (!state) {
      fail(
        "NO_FORWARD_STATE",
        "backward needs a training-mode forward first: call forward(x, { train: true }) (an eval-mode forward or a step discards that state, and each backward uses it up)",
      );
    }
    const d = this.config.dModel;
    if (!isFloat32(dy) || dy.length !== state.batch * d) {
      fail(
        "GRAD_SHAPE",
        `dy must be a Float32Array [B, dModel] = [${state.batch}, ${d}] (${state.batch * d} floats, the shape of the last forward's y), got ${isFloat32(dy) ? `length ${dy.length}` : Object.prototype.toString.call(dy)}`,
      );
    }
    const weights = options.weights ?? true;
    if (typeof weights !== "boolean") fail("INVALID_CONFIG", "options.weights must be a boolean");
    this.trainer ??= new Trainer(engine);
    this.trainer.loadUpstream(state.arena, state.batch, dy);
    // The expert activations of a GPU forward are not in wasm memory: recompute them on the CPU.
    if (!state.expertsInArena) engine.expertPass(state.arena, state.batch);
    try {
      return this.trainer.backward(state.arena, state.batch, weights);
    } finally {
      this.dropState();
    }
  }

  step(options: StepOptions): Promise<void> {
    return this.inOrder(() => this.stepNow(options));
  }

  private stepNow(options: StepOptions): void {
    const engine = this.live();
    checkStepOptions(options);
    if (engine.spec.dtype !== "f32")
      fail("UNSUPPORTED", `step needs f32 expert weights; this layer stores them as ${engine.spec.dtype} (create it with dtype "f32" to train)`);
    const checked = stepOptionsOf(options);
    if (!this.trainer?.hasGradients) fail("NO_GRADIENTS", "step needs gradients: call forward(x, { train: true }) and backward(dy) first");
    this.trainer.step(checked);
    const gpu = this.router.gpuExperts; // the GPU's resident copy too
    if (gpu) {
      gpu.writeWeights(new Map(Object.entries(unpackTensors(engine, 0)) as Array<[keyof MoEWeights, Float32Array]>));
      invalidateResidentGating(gpu); // the resident path re-uploads the gating weights at its next call
    }
    this.dropState(); // a pending forward saw the old weights
  }

  getWeights(): Promise<MoEWeights> {
    return this.inOrder(() => unpackTensors(this.live(), 0));
  }

  /**
   * Times the CPU and GPU experts for a few batch sizes (eval-mode forward calls on pseudo-random
   * rows, the median of `repeats` after one warm-up each, interleaved so that drift of the host's
   * speed hits both alike) and sets the router's crossover from them.
   */
  async calibrate(options: CalibrateOptions = {}): Promise<Calibration> {
    this.live();
    checkCalibrateOptions(options);
    const { dModel: d, k } = this.config;
    const batchSizes = options.batchSizes ?? [1, 4, 16, 64, 256];
    const repeats = options.repeats ?? 3;
    if (!Array.isArray(batchSizes) || batchSizes.length === 0 || !batchSizes.every((b) => Number.isInteger(b) && b > 0)) {
      fail("INVALID_CONFIG", "calibrate: batchSizes must be a non-empty array of positive integers");
    }
    if (!Number.isInteger(repeats) || repeats < 1) fail("INVALID_CONFIG", "calibrate: repeats must be a positive integer");
    const gpu = this.router.gpuExperts;
    const software = this.router.status.software;
    if (!gpu) return { crossover: this.router.crossover, samples: [], software };

    const sizes = [...new Set(batchSizes)].filter((b) => gpu.fits(b)).sort((a, b) => a - b);
    const x = new Float32Array(sizes[sizes.length - 1] * d);
    let state = 0x2545f491; // xorshift32: values in [-1, 1), the same every time
    for (let i = 0; i < x.length; i++) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      x[i] = (state >>> 0) / 2 ** 31 - 1;
    }
    const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
    const samples: Calibration["samples"] = [];
    for (const batch of sizes) {
      const rows = x.subarray(0, batch * d);
      const cpuMs: number[] = [];
      const gpuMs: number[] = [];
      for (let r = 0; r <= repeats; r++) {
        let t = performance.now();
        await this.forward(rows, { backend: "cpu" });
        if (r > 0) cpuMs.push(performance.now() - t);
        t = performance.now();
        const out = await this.forward(rows, { backend: "gpu" });
        if (out.backend !== "gpu") return { crossover: this.router.crossover, samples, software };
        if (r > 0) gpuMs.push(performance.now() - t);
      }
      samples.push({ batch, pairs: batch * k, cpuMs: median(cpuMs), gpuMs: median(gpuMs) });
    }
    return { crossover: this.router.calibrated(samples), samples, software };
  }

  get gpuStatus(): GpuStatus {
    return this.router.status;
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

  /** The first GPU failure's warning (later ones add nothing: every call after it runs on the CPU). */
  private warnFailure(code: MoEWarning["code"], message: string, cause?: unknown): void {
    if (this.warnedFailure || !this.engine) return;
    this.warnedFailure = true;
    this.warn({ code, message, cause });
  }

  dispose(): void {
    disposeResident(this.router.gpu);
    this.router.dispose();
    this.engine?.dispose(); // ends the worker threads, if any
    this.engine = undefined;
    this.trainer = undefined;
    this.state = undefined;
  }

  /** `using layer = await createMoE(…)`: Symbol.dispose exists in Node 20+, Deno, Bun and current browsers. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

function checkOut(name: string, buffer: unknown, type: Float32ArrayConstructor | Int32ArrayConstructor, length: number): void {
  if (buffer === undefined) return;
  if (!(buffer instanceof type) || buffer.length !== length) {
    fail("OUTPUT_SHAPE", `out.${name} must be a ${type.name} of length ${length}`);
  }
}
