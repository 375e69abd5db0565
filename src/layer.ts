// The layer: validation at the door, gating on the CPU, experts on the CPU or the GPU.
import { checkSeed, validateConfig, validateWeights, type LayerSpec } from "./config.ts";
import { fail } from "./errors.ts";
import { CpuEngine } from "./cpu/engine.ts";
import { instantiateKernels } from "./cpu/wasm.ts";
import { resolveThreads } from "./cpu/threads.ts";
import { completeWeights } from "./train/init.ts";
import { stepOptionsOf, Trainer } from "./train/trainer.ts";
import { unpackTensors } from "./train/tensors.ts";
import { createRouter, type Router } from "./router.ts";
import type { GpuExperts } from "./gpu/experts.ts";
import type { BackendName, BackwardOptions, CalibrateOptions, Calibration, ForwardOptions, ForwardResult, GpuStatus, Gradients, MoEConfig, MoELayer, MoELocalLayer, MoEWeights, StepOptions } from "./types.ts";

/** Creates a layer: validates the configuration, loads the kernels, copies and packs the weights. */
export async function createMoE(config: MoEConfig): Promise<MoELocalLayer> {
  const spec = validateConfig(config);
  const weights = validateWeights(spec, config.weights);
  const threads = await resolveThreads(spec.threads, config.wasmBuild, config.wasm !== undefined);
  const kernels = await instantiateKernels(config.wasm, config.wasmBuild, threads);
  const engine = new CpuEngine(kernels, spec);
  const complete = completeWeights(engine, weights, spec.initSeed);
  engine.loadWeights(complete);
  // backend "gpu" / "auto": a device, and the weights uploaded to it (src/router.ts)
  const router = await createRouter(spec, complete, config);
  if (threads > 1) {
    try {
      await engine.startThreads(threads);
    } catch (error) {
      router.dispose();
      throw error;
    }
  }
  return new Layer(spec, engine, router);
}

function isFloat32(value: unknown): value is Float32Array {
  return value instanceof Float32Array;
}

class Layer implements MoELocalLayer {
  readonly config: MoELayer["config"];
  private engine: CpuEngine | undefined;
  /** The layer's own noise stream: training calls without noise or seed take the next one. */
  private streamCalls = 0;
  /** The last forward, when it ran in training mode and backward has not used it up yet. */
  private forwardState: { batch: number; backend: BackendName } | undefined;
  /** Gradient and optimizer memory, made at the first backward. */
  private trainer: Trainer | undefined;

  private readonly router: Router;

  constructor(spec: LayerSpec, engine: CpuEngine, router: Router) {
    this.engine = engine;
    this.router = router;
    const { dModel, dHidden, numExperts, k, expert, noisyGating, noiseEpsilon, wImportance, wLoad } = spec;
    this.config = Object.freeze({ dModel, dHidden, numExperts, k, expert, noisyGating, noiseEpsilon, wImportance, wLoad });
  }

  private live(): CpuEngine {
    if (!this.engine) fail("DISPOSED", "this layer was disposed; create a new one with createMoE");
    return this.engine;
  }

  async forward(x: Float32Array, options: ForwardOptions = {}): Promise<ForwardResult> {
    this.live();
    checkOptions(options);
    const gpu = this.router.pick(x, options.backend);
    if (!gpu) return this.forwardSync(x, options);
    return this.router.serial(() => this.forwardOn(x, options, gpu));
  }

  /** The CPU path, synchronously. */
  forwardSync(x: Float32Array, options: ForwardOptions = {}): ForwardResult {
    this.live();
    checkOptions(options);
    return this.forwardOn(x, options, undefined) as ForwardResult;
  }

  /** Validation, gating and the outputs; the experts on the CPU, or on `gpu` (then a Promise). */
  private forwardOn(x: Float32Array, options: ForwardOptions, gpu: GpuExperts | undefined): ForwardResult | Promise<ForwardResult> {
    const engine = this.live();
    const { dModel: d, numExperts: n, k, noisyGating } = this.config;
    if (!isFloat32(x)) fail("INPUT_SHAPE", `x must be a Float32Array [B·${d}], got ${Object.prototype.toString.call(x)}`);
    if (x.length === 0 || x.length % d !== 0) {
      fail("INPUT_SHAPE", `x.length (${x.length}) must be a positive multiple of dModel (${d}): x is [B, ${d}] row-major`);
    }
    const batch = x.length / d;
    const train = options.train ?? false;
    if (typeof train !== "boolean") fail("INVALID_CONFIG", "options.train must be a boolean");

    // noise and seed are checked whenever given (a malformed one is a bug even where unused);
    // they are used only in training mode with noisy gating.
    const givenNoise = options.noise;
    if (givenNoise !== undefined && (!isFloat32(givenNoise) || givenNoise.length !== batch * n)) {
      fail("NOISE_SHAPE", `noise must be a Float32Array of B·n = ${batch}·${n} = ${batch * n} standard normals, got ${isFloat32(givenNoise) ? `length ${givenNoise.length}` : Object.prototype.toString.call(givenNoise)}`);
    }
    const givenSeed = options.seed === undefined ? undefined : checkSeed("options.seed", options.seed);
    let noise: Float32Array | undefined;
    let seed = { key: engine.spec.seed, stream: 0 };
    if (train && noisyGating) {
      if (givenNoise !== undefined) {
        noise = givenNoise;
        for (let i = 0; i < noise.length; i++) {
          if (!Number.isFinite(noise[i])) fail("NOISE_SHAPE", `noise[${i}] is ${noise[i]}; noise must be finite`);
        }
      } else if (givenSeed !== undefined) {
        seed = { key: givenSeed, stream: 0 };
      } else {
        seed = { key: engine.spec.seed, stream: (this.streamCalls + 1) >>> 0 };
      }
    }
    const out = options.out ?? {};
    checkOut("y", out.y, Float32Array, batch * d);
    checkOut("topkIndices", out.topkIndices, Int32Array, batch * k);
    checkOut("topkGates", out.topkGates, Float32Array, batch * k);

    engine.gate(x, batch, train, noise, seed);
    this.forwardState = undefined; // the gating state in the scratch is this call's now
    if (train && noisyGating && noise === undefined && givenSeed === undefined) this.streamCalls++;
    const backend: BackendName = gpu ? "gpu" : "cpu";
    if (!gpu) engine.runExperts(batch);

    const s = engine.scratch;
    const result: ForwardResult = {
      y: gpu ? (out.y ?? new Float32Array(batch * d)) : engine.readF32(s.y, batch * d, out.y),
      topkIndices: engine.readI32(s.topkIdx, batch * k, out.topkIndices),
      topkGates: engine.readF32(s.topkGates, batch * k, out.topkGates),
      backend,
    };
    if (train) {
      const losses = engine.f64(s.losses, 2);
      result.importance = engine.f32(s.importance, n).slice();
      result.load = engine.f32(s.load, n).slice();
      result.lossImportance = losses[0];
      result.lossLoad = losses[1];
      this.forwardState = { batch, backend };
    }
    return gpu ? this.router.runExperts(gpu, engine, batch, result) : result;
  }

  async backward(dy: Float32Array, options: BackwardOptions = {}): Promise<Gradients> {
    return this.backwardSync(dy, options);
  }

  /** backward, synchronously (it always runs on the CPU). */
  backwardSync(dy: Float32Array, options: BackwardOptions = {}): Gradients {
    const engine = this.live();
    const state = this.forwardState;
    if (!state) {
      fail("NO_FORWARD_STATE", "backward needs a training-mode forward first: call forward(x, { train: true }) (an eval-mode forward or a step discards that state, and each backward uses it up)");
    }
    const d = this.config.dModel;
    if (!isFloat32(dy) || dy.length !== state.batch * d) {
      fail("GRAD_SHAPE", `dy must be a Float32Array [B, dModel] = [${state.batch}, ${d}] (${state.batch * d} floats, the shape of the last forward's y), got ${isFloat32(dy) ? `length ${dy.length}` : Object.prototype.toString.call(dy)}`);
    }
    const weights = options.weights ?? true;
    if (typeof weights !== "boolean") fail("INVALID_CONFIG", "options.weights must be a boolean");
    this.trainer ??= new Trainer(engine);
    this.trainer.loadUpstream(state.batch, dy);
    // The expert activations of a GPU forward are not in wasm memory: recompute them on the CPU.
    if (state.backend !== "cpu") engine.runExperts(state.batch);
    this.forwardState = undefined;
    return this.trainer.backward(state.batch, weights);
  }

  async step(options: StepOptions): Promise<void> {
    this.stepSync(options);
  }

  /** step, synchronously. */
  stepSync(options: StepOptions): void {
    this.live();
    const checked = stepOptionsOf(options);
    if (!this.trainer?.hasGradients) fail("NO_GRADIENTS", "step needs gradients: call forward(x, { train: true }) and backward(dy) first");
    this.trainer.step(checked);
    this.router.weightsChanged(() => unpackTensors(this.live(), 0)); // the GPU's copy too
    this.forwardState = undefined; // a pending forward saw the old weights
  }

  async getWeights(): Promise<MoEWeights> {
    return unpackTensors(this.live(), 0);
  }

  calibrate(options?: CalibrateOptions): Promise<Calibration> {
    this.live();
    return this.router.calibrate((x, backend) => this.forward(x, { backend }), options);
  }

  get gpuStatus(): GpuStatus {
    return this.router.status;
  }

  dispose(): void {
    this.router.dispose();
    this.engine?.dispose(); // ends the worker threads, if any
    this.engine = undefined;
    this.trainer = undefined;
    this.forwardState = undefined;
  }
}

function checkOptions(options: unknown): void {
  if (typeof options !== "object" || options === null) {
    fail("INVALID_CONFIG", `forward options must be an object { train, noise, seed, out, backend } or left out, got ${String(options)}`);
  }
  const out = (options as ForwardOptions).out;
  if (out !== undefined && out !== null && typeof out !== "object") {
    fail("OUTPUT_SHAPE", `options.out must be an object { y?, topkIndices?, topkGates? } of output buffers, got ${String(out)}`);
  }
}

function checkOut(name: string, buffer: unknown, type: Float32ArrayConstructor | Int32ArrayConstructor, length: number): void {
  if (buffer === undefined) return;
  if (!(buffer instanceof type) || buffer.length !== length) {
    fail("OUTPUT_SHAPE", `out.${name} must be a ${type.name} of length ${length}`);
  }
}

