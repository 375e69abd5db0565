// Training on the CPU engine: the backward pass (assembly/backward.ts) and the optimizer step
// (assembly/optim.ts), driven by pointers into the engine's memory.
//
// Memory: the gradients are one persistent region with exactly the layout of the packed weights
// (CpuEngine.weightPtr … weightEnd), so the gradient of the weight at byte p is at p + gradOffset,
// and Adam's two moments are two more such regions (allocated at the first Adam step). An
// optimizer step is then one elementwise pass over the whole region; the zero padding of the
// panels gets zero gradients and stays zero. The per-batch buffers of the backward pass (dy, dx,
// dLogits, dGates) are part of the forward's arena; the rest reuses the forward's buffers in place.
import type { Arena, CpuEngine } from "../cpu/engine.ts";
import type { KernelExports } from "../cpu/wasm.ts";
import { fail } from "../errors.ts";
import type { Gradients, StepOptions } from "../types.ts";
import { unpackTensors } from "./tensors.ts";

/** The training kernels (assembly/backward.ts, assembly/optim.ts). */
interface TrainKernels extends KernelExports {
  expertOutputGrads(out: number, d: number, dy: number, b: number, k: number, pairOf: number, topkGates: number, dGates: number): void;
  cvSquaredGrad(v: number, n: number, weight: number): void;
  gatingBackward(
    probMode: number, noisy: number, b: number, n: number, k: number,
    logits: number, ldl: number, std: number, h: number, noise: number,
    topkIdx: number, topkGates: number, nextIdx: number, dGates: number,
    importanceGrad: number, loadGrad: number, dLogits: number,
  ): void;
  gemmAtB(a: number, lda: number, m: number, kRows: number, b: number, ldb: number, panels: number, kPad: number, c: number): void;
  gemmABt(a: number, lda: number, m: number, bp: number, panels: number, kPad: number, rows: number, c: number, ldc: number): void;
  expertsBackward(
    kind: number, d: number, h: number, eBegin: number, eEnd: number,
    w1: number, w2: number, expertOffsets: number, gathered: number, pre: number, act: number, gdy: number,
    dw1: number, db1: number, dw2: number, db2: number,
  ): void;
  scatterAddRows(src: number, d: number, b: number, k: number, pairOf: number, dx: number): void;
  sgdStep(w: number, g: number, len: number, lr: number): void;
  adamStep(w: number, g: number, m: number, v: number, len: number, lr: number, beta1: number, beta2: number, eps: number, bc1: number, bc2: number): void;
}

export class Trainer {
  private readonly engine: CpuEngine;
  private readonly kernels: TrainKernels;
  /** Bytes from a packed weight to its gradient. */
  private readonly gradOffset: number;
  private readonly regionBytes: number;
  private adam: { m: number; v: number; steps: number } | undefined;
  /** Whether backward has filled the gradient region. */
  hasGradients = false;

  constructor(engine: CpuEngine) {
    this.engine = engine;
    this.kernels = engine.kernels as TrainKernels;
    this.regionBytes = engine.weightEnd - engine.weightPtr.gate;
    this.gradOffset = engine.allocPersistent(this.regionBytes) - engine.weightPtr.gate;
  }

  /** Copies the upstream gradient dy [batch, d] (length already checked) in; rejects NaN/Inf. */
  loadUpstream(arena: Arena, batch: number, dy: Float32Array): void {
    const engine = this.engine;
    const d = engine.spec.dModel;
    const at = arena.at("dy");
    engine.f32(at, batch * d).set(dy);
    const bad = this.kernels.firstNonFinite(at, batch * d);
    if (bad >= 0) {
      fail("GRAD_SHAPE", `dy[${bad}] (row ${Math.floor(bad / d)}, column ${bad % d}) is ${dy[bad]}; the upstream gradient must be finite`);
    }
  }

  /**
   * The backward pass of the training forward whose state is in `arena`, for the upstream gradient
   * loadUpstream put in. Uses up the forward's expert buffers.
   * Returns dx and, when `weights`, every weight's gradient in the input layout.
   */
  backward(arena: Arena, batch: number, weights: boolean): Gradients {
    const engine = this.engine;
    const K = this.kernels;
    const s = arena.ptr;
    const { dModel: d, dHidden: h, numExperts: n, k, noisyGating, wImportance, wLoad } = engine.spec;
    const { ldl } = engine.packed;
    const w = engine.weightPtr;
    const g = this.gradOffset;

    // dJ/dG from the experts (⟨E(x), dy⟩), and the experts' upstream gradient gate·dy over out
    K.expertOutputGrads(s.out, d, s.dy, batch, k, s.pairOf, s.topkGates, s.dGates);
    // w·CV²′ of importance and load, in place over the forward's f64 sums (lossAcc: [imp | load])
    const probMode = noisyGating && k < n ? 1 : 0;
    const importanceGrad = s.lossAcc;
    const loadGrad = s.lossAcc + 8 * n;
    K.cvSquaredGrad(importanceGrad, n, wImportance);
    if (probMode) K.cvSquaredGrad(loadGrad, n, wLoad);
    K.gatingBackward(
      probMode, noisyGating ? 1 : 0, batch, n, k, s.logits, ldl, s.std, s.h, s.noise,
      s.topkIdx, s.topkGates, s.nextIdx, s.dGates, importanceGrad, loadGrad, s.dLogits,
    );
    // gating GEMM backward: d[W_g | W_noise] = xᵀ·dLogits, dx = dLogits·[W_g | W_noise]ᵀ
    K.gemmAtB(s.x, d, batch, d, s.dLogits, ldl, ldl / 8, d, w.gate + g);
    K.gemmABt(s.dLogits, ldl, batch, w.gate, ldl / 8, d, d, s.dx, d);
    // experts, then each row's share of dx from its k experts
    const bias = engine.spec.expert !== "swiglu";
    K.expertsBackward(
      engine.kind, d, h, 0, n, w.w1, w.w2, s.expertOffsets, s.gathered, s.pre, s.act, s.out,
      w.w1 + g, bias ? w.b1 + g : 0, w.w2 + g, bias ? w.b2 + g : 0,
    );
    K.scatterAddRows(s.gathered, d, batch, k, s.pairOf, s.dx);
    this.hasGradients = true;

    const x = engine.f32(s.dx, batch * d).slice();
    return weights ? { x, ...unpackTensors(engine, g) } : { x };
  }

  /** Applies the last gradients to the packed weights, in place. Options already validated. */
  step(options: Required<StepOptions>): void {
    const engine = this.engine;
    const floats = this.regionBytes / 4;
    const w = engine.weightPtr.gate;
    const g = w + this.gradOffset;
    if (options.optimizer === "sgd") {
      this.kernels.sgdStep(w, g, floats, options.lr);
      return;
    }
    this.adam ??= { m: engine.allocPersistent(this.regionBytes), v: engine.allocPersistent(this.regionBytes), steps: 0 };
    const t = ++this.adam.steps;
    this.kernels.adamStep(
      w, g, this.adam.m, this.adam.v, floats, options.lr, options.beta1, options.beta2, options.eps,
      1 - options.beta1 ** t, 1 - options.beta2 ** t,
    );
  }
}

/** Checks step()'s options and fills in the defaults. */
export function stepOptionsOf(options: StepOptions): Required<StepOptions> {
  if (typeof options !== "object" || options === null) fail("INVALID_CONFIG", "step needs an options object { lr, optimizer? }");
  const optimizer = options.optimizer ?? "sgd";
  if (optimizer !== "sgd" && optimizer !== "adam") {
    fail("INVALID_CONFIG", `optimizer must be "sgd" or "adam", got ${JSON.stringify(optimizer)}`);
  }
  const number = (name: keyof StepOptions, value: unknown, fallback: number | undefined, ok: (v: number) => boolean, range: string): number => {
    if (value === undefined && fallback !== undefined) return fallback;
    if (typeof value !== "number" || !Number.isFinite(value) || !ok(value)) {
      fail("INVALID_CONFIG", `step option ${name} must be a number ${range}, got ${String(value)}`);
    }
    return value;
  };
  return {
    lr: number("lr", options.lr, undefined, (v) => v > 0, "> 0"),
    optimizer,
    beta1: number("beta1", options.beta1, 0.9, (v) => v >= 0 && v < 1, "in [0, 1)"),
    beta2: number("beta2", options.beta2, 0.999, (v) => v >= 0 && v < 1, "in [0, 1)"),
    eps: number("eps", options.eps, 1e-8, (v) => v > 0, "> 0"),
  };
}
