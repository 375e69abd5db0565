// The layer: validation at the door, gating on the CPU, experts on the CPU or the GPU.
import { checkSeed, validateConfig, validateWeights, type LayerSpec } from "./config.ts";
import { fail } from "./errors.ts";
import { CpuEngine } from "./cpu/engine.ts";
import { instantiateKernels } from "./cpu/wasm.ts";
import type { BackendName, ForwardOptions, ForwardResult, MoEConfig, MoELayer } from "./types.ts";

/** Creates a layer: validates the configuration, loads the kernels, copies and packs the weights. */
export async function createMoE(config: MoEConfig): Promise<MoELayer> {
  const spec = validateConfig(config);
  const weights = validateWeights(spec, config.weights);
  if (spec.backend === "gpu") {
    fail("NO_GPU", 'backend "gpu" is not available in this build yet; use backend "cpu"');
  }
  const kernels = await instantiateKernels(config.wasm);
  const engine = new CpuEngine(kernels, spec);
  engine.loadWeights(weights);
  return new Layer(spec, engine);
}

function isFloat32(value: unknown): value is Float32Array {
  return value instanceof Float32Array;
}

class Layer implements MoELayer {
  readonly config: MoELayer["config"];
  private engine: CpuEngine | undefined;
  /** The layer's own noise stream: training calls without noise or seed take the next one. */
  private streamCalls = 0;

  constructor(spec: LayerSpec, engine: CpuEngine) {
    this.engine = engine;
    const { dModel, dHidden, numExperts, k, expert, noisyGating, noiseEpsilon, wImportance, wLoad } = spec;
    this.config = Object.freeze({ dModel, dHidden, numExperts, k, expert, noisyGating, noiseEpsilon, wImportance, wLoad });
  }

  private live(): CpuEngine {
    if (!this.engine) fail("DISPOSED", "this layer was disposed; create a new one with createMoE");
    return this.engine;
  }

  async forward(x: Float32Array, options: ForwardOptions = {}): Promise<ForwardResult> {
    return this.forwardSync(x, options);
  }

  /** The CPU path, synchronously. */
  forwardSync(x: Float32Array, options: ForwardOptions = {}): ForwardResult {
    const engine = this.live();
    const { dModel: d, numExperts: n, k, noisyGating } = this.config;
    if (!isFloat32(x)) fail("INPUT_SHAPE", `x must be a Float32Array [B·${d}], got ${Object.prototype.toString.call(x)}`);
    if (x.length === 0 || x.length % d !== 0) {
      fail("INPUT_SHAPE", `x.length (${x.length}) must be a positive multiple of dModel (${d}): x is [B, ${d}] row-major`);
    }
    const batch = x.length / d;
    const train = options.train ?? false;
    if (typeof train !== "boolean") fail("INVALID_CONFIG", "options.train must be a boolean");

    let noise: Float32Array | undefined;
    let seed = { key: engine.spec.seed, stream: 0 };
    if (train && noisyGating) {
      if (options.noise !== undefined) {
        noise = options.noise;
        if (!isFloat32(noise) || noise.length !== batch * n) {
          fail("NOISE_SHAPE", `noise must be a Float32Array of B·n = ${batch}·${n} = ${batch * n} standard normals, got ${isFloat32(noise) ? `length ${noise.length}` : Object.prototype.toString.call(noise)}`);
        }
        for (let i = 0; i < noise.length; i++) {
          if (!Number.isFinite(noise[i])) fail("NOISE_SHAPE", `noise[${i}] is ${noise[i]}; noise must be finite`);
        }
      } else if (options.seed !== undefined) {
        seed = { key: checkSeed("options.seed", options.seed), stream: 0 };
      } else {
        seed = { key: engine.spec.seed, stream: (this.streamCalls + 1) >>> 0 };
      }
    }
    const out = options.out ?? {};
    checkOut("y", out.y, Float32Array, batch * d);
    checkOut("topkIndices", out.topkIndices, Int32Array, batch * k);
    checkOut("topkGates", out.topkGates, Float32Array, batch * k);

    engine.gate(x, batch, train, noise, seed);
    if (train && noisyGating && noise === undefined && options.seed === undefined) this.streamCalls++;
    engine.runExperts(batch);
    const backend: BackendName = "cpu";

    const s = engine.scratch;
    const result: ForwardResult = {
      y: copyOut(engine.f32(s.y, batch * d), out.y),
      topkIndices: copyOut(engine.i32(s.topkIdx, batch * k), out.topkIndices),
      topkGates: copyOut(engine.f32(s.topkGates, batch * k), out.topkGates),
      backend,
    };
    if (train) {
      const losses = engine.f64(s.losses, 2);
      result.importance = engine.f32(s.importance, n).slice();
      result.load = engine.f32(s.load, n).slice();
      result.lossImportance = losses[0];
      result.lossLoad = losses[1];
    }
    return result;
  }

  dispose(): void {
    this.engine = undefined;
  }
}

function checkOut(name: string, buffer: unknown, type: Float32ArrayConstructor | Int32ArrayConstructor, length: number): void {
  if (buffer === undefined) return;
  if (!(buffer instanceof type) || buffer.length !== length) {
    fail("OUTPUT_SHAPE", `out.${name} must be a ${type.name} of length ${length}`);
  }
}

function copyOut<T extends Float32Array | Int32Array>(view: T, into: T | undefined): T {
  if (into) {
    into.set(view);
    return into;
  }
  return view.slice() as T;
}
