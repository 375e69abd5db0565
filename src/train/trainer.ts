// Training on the CPU engine: the backward pass (assembly/backward.ts) and the optimizer step
// (assembly/optim.ts), driven by pointers into the engine's memory.
//
// Memory: the gradients are one persistent region with exactly the layout of the packed weights
// (CpuEngine.weightPtr … weightEnd), so the gradient of the weight at byte p is at p + gradOffset,
// and Adam's two moments are two more such regions (allocated at the first Adam step). An
// optimizer step is then one elementwise pass over the whole region; the zero padding of the
// panels gets zero gradients and stays zero. The per-batch buffers of the backward pass (dy, dx,
// dLogits, dGates) are part of the forward's arena; the rest reuses the forward's buffers in place.
//
// A layer with threads > 1 runs both on its worker pool (assembly/backward-threads.ts): every
// gradient and weight gets the bits of the single-threaded pass.
import {
  CTL_ADAM_M,
  CTL_ADAM_V,
  CTL_BC1,
  CTL_BC2,
  CTL_BETA1,
  CTL_BETA2,
  CTL_DGATES,
  CTL_DLOGITS,
  CTL_DX,
  CTL_DY,
  CTL_EPS,
  CTL_GATE_W,
  CTL_GATING_MODE,
  CTL_GRAD_OFFSET,
  CTL_IMPORTANCE_GRAD,
  CTL_LDL,
  CTL_LOAD_GRAD,
  CTL_LOGITS,
  CTL_LR,
  CTL_NEXT_IDX,
  CTL_NOISE,
  CTL_NOISY_H,
  CTL_OPTIMIZER,
  CTL_SLOTS,
  CTL_STD,
  CTL_STEP_LEN,
  CTL_STEP_W,
  CTL_TOPK_IDX,
  JOB_BACKWARD,
  JOB_STEP,
} from "../abi.ts";
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
    probMode: number,
    noisy: number,
    b: number,
    n: number,
    k: number,
    logits: number,
    ldl: number,
    std: number,
    h: number,
    noise: number,
    topkIdx: number,
    topkGates: number,
    nextIdx: number,
    dGates: number,
    importanceGrad: number,
    loadGrad: number,
    dLogits: number,
  ): void;
  gemmAtB(a: number, lda: number, m: number, kRows: number, b: number, ldb: number, panels: number, kPad: number, c: number): void;
  gemmABt(a: number, lda: number, m: number, bp: number, panels: number, kPad: number, rows: number, c: number, ldc: number): void;
  expertsBackward(
    kind: number,
    d: number,
    h: number,
    eBegin: number,
    eEnd: number,
    w1: number,
    w2: number,
    expertOffsets: number,
    gathered: number,
    pre: number,
    act: number,
    gdy: number,
    dw1: number,
    db1: number,
    dw2: number,
    db2: number,
  ): void;
  scatterAddRows(src: number, d: number, b: number, k: number, pairOf: number, dx: number): void;
  routedGatingBackward(
    score: number,
    probMode: number,
    noisy: number,
    b: number,
    n: number,
    k: number,
    slots: number,
    logits: number,
    ldl: number,
    std: number,
    h: number,
    noise: number,
    topkIdx: number,
    topkGates: number,
    nextIdx: number,
    dGates: number,
    importanceGrad: number,
    loadGrad: number,
    renormalize: number,
    eps: number,
    scale: number,
    sharedGateCol: number,
    dLogits: number,
  ): void;
  writeRoutingBlock(
    block: number,
    score: number,
    n: number,
    k: number,
    slots: number,
    renormalize: number,
    eps: number,
    scale: number,
    sharedGateCol: number,
  ): void;
  sgdStep(w: number, g: number, len: number, lr: number): void;
  adamStep(w: number, g: number, m: number, v: number, len: number, lr: number, beta1: number, beta2: number, eps: number, bc1: number, bc2: number): void;
}

/**
 * Weights from which a threaded layer splits an optimizer step across its threads: below, one
 * pass over them (~10 µs) costs about what waking the workers does.
 */
const THREADED_STEP_FLOATS = 1 << 14;

/** The router codes of assembly/routing-backward.ts (SCORE_*). */
const SCORE_CODE = { "topk-softmax": 0, softmax: 1, sigmoid: 2 } as const;
/** Bytes of a routing block (assembly/routing-backward.ts ROUTING_BLOCK_BYTES). */
const ROUTING_BLOCK_BYTES = 64;

export class Trainer {
  private readonly engine: CpuEngine;
  private readonly kernels: TrainKernels;
  /** Bytes from a packed weight to its gradient. */
  private readonly gradOffset: number;
  private readonly regionBytes: number;
  private adam: { m: number; v: number; steps: number } | undefined;
  /**
   * The router's routing block for the threaded backward, or 0 for the paper's router without a
   * shared expert (which runs gatingBackward itself).
   */
  private readonly routingBlock: number;
  /** Whether backward has filled the gradient region. */
  hasGradients = false;

  constructor(engine: CpuEngine) {
    this.engine = engine;
    this.kernels = engine.kernels as TrainKernels;
    this.regionBytes = engine.weightEnd - engine.weightPtr.gate;
    this.gradOffset = engine.allocPersistent(this.regionBytes) - engine.weightPtr.gate;
    const { routing, numExperts, k } = engine.spec;
    const { slots, sharedGateCol } = engine.packed;
    this.routingBlock = 0;
    if (routing.score !== "topk-softmax" || slots > k) {
      this.routingBlock = engine.allocPersistent(ROUTING_BLOCK_BYTES);
      // the pool finds it in CTL_GATING_MODE's bits 6 and up: it must be 64-byte aligned
      if (this.routingBlock % 64 !== 0) throw new Error(`edge-moe: the routing block at ${this.routingBlock} is not 64-byte aligned`);
      this.kernels.writeRoutingBlock(
        this.routingBlock,
        SCORE_CODE[routing.score],
        numExperts,
        k,
        slots,
        routing.renormalize ? 1 : 0,
        routing.renormEpsilon,
        routing.scale,
        sharedGateCol,
      );
    }
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

    // w·CV²′ of importance and load, in place over the forward's f64 sums (lossAcc: [imp | load])
    const probMode = noisyGating && k < n ? 1 : 0;
    const importanceGrad = s.lossAcc;
    const loadGrad = s.lossAcc + 8 * n;
    K.cvSquaredGrad(importanceGrad, n, wImportance);
    if (probMode) K.cvSquaredGrad(loadGrad, n, wLoad);
    // the plan's slots per row and experts: the routed k and n, then the shared expert's slices
    const { slots, experts } = engine.packed;
    const routing = engine.spec.routing;
    const pool = engine.threadPool;
    if (pool) {
      // the same pass in chunks across the threads (assembly/backward-threads.ts): same bits
      const c = pool.control;
      engine.writeExpertSlots(c, arena, batch);
      c[CTL_GATE_W] = w.gate;
      c[CTL_LOGITS] = s.logits;
      c[CTL_LDL] = ldl;
      c[CTL_DY] = s.dy;
      c[CTL_DX] = s.dx;
      c[CTL_DGATES] = s.dGates;
      c[CTL_DLOGITS] = s.dLogits;
      c[CTL_STD] = s.std;
      c[CTL_NOISY_H] = s.h;
      c[CTL_NOISE] = s.noise;
      c[CTL_TOPK_IDX] = s.topkIdx;
      c[CTL_NEXT_IDX] = s.nextIdx;
      c[CTL_IMPORTANCE_GRAD] = importanceGrad;
      c[CTL_LOAD_GRAD] = loadGrad;
      // bits 6 and up: the routing block (64-byte aligned), read by the rows phase
      c[CTL_GATING_MODE] = probMode | (noisyGating ? 2 : 0) | this.routingBlock;
      c[CTL_GRAD_OFFSET] = g;
      pool.runTraining(JOB_BACKWARD);
    } else {
      // dJ/dG from the experts (⟨E(x), dy⟩), and the experts' upstream gradient gate·dy over out
      K.expertOutputGrads(s.out, d, s.dy, batch, slots, s.pairOf, s.topkGates, s.dGates);
      if (this.routingBlock === 0) {
        K.gatingBackward(
          probMode,
          noisyGating ? 1 : 0,
          batch,
          n,
          k,
          s.logits,
          ldl,
          s.std,
          s.h,
          s.noise,
          s.topkIdx,
          s.topkGates,
          s.nextIdx,
          s.dGates,
          importanceGrad,
          loadGrad,
          s.dLogits,
        );
      } else {
        K.routedGatingBackward(
          SCORE_CODE[routing.score],
          probMode,
          noisyGating ? 1 : 0,
          batch,
          n,
          k,
          slots,
          s.logits,
          ldl,
          s.std,
          s.h,
          s.noise,
          s.topkIdx,
          s.topkGates,
          s.nextIdx,
          s.dGates,
          importanceGrad,
          loadGrad,
          routing.renormalize ? 1 : 0,
          routing.renormEpsilon,
          routing.scale,
          engine.packed.sharedGateCol,
          s.dLogits,
        );
      }
      // gating GEMM backward: d[W_g | W_noise | shared gate] = xᵀ·dLogits, dx = dLogits·[…]ᵀ
      K.gemmAtB(s.x, d, batch, d, s.dLogits, ldl, ldl / 8, d, w.gate + g);
      K.gemmABt(s.dLogits, ldl, batch, w.gate, ldl / 8, d, d, s.dx, d);
      // experts, then each row's share of dx from its experts
      const bias = engine.spec.expert !== "swiglu";
      K.expertsBackward(
        engine.kind,
        d,
        h,
        0,
        experts,
        w.w1,
        w.w2,
        s.expertOffsets,
        s.gathered,
        s.pre,
        s.act,
        s.out,
        w.w1 + g,
        bias ? w.b1 + g : 0,
        w.w2 + g,
        bias ? w.b2 + g : 0,
      );
      K.scatterAddRows(s.gathered, d, batch, slots, s.pairOf, s.dx);
    }
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
    const adam = options.optimizer === "adam";
    if (adam) this.adam ??= { m: engine.allocPersistent(this.regionBytes), v: engine.allocPersistent(this.regionBytes), steps: 0 };
    const t = adam ? ++this.adam!.steps : 0;
    const bc1 = 1 - options.beta1 ** t;
    const bc2 = 1 - options.beta2 ** t;
    const pool = engine.threadPool;
    if (pool && floats >= THREADED_STEP_FLOATS) {
      const c = pool.control;
      const f = new Float32Array(c.buffer, c.byteOffset, CTL_SLOTS);
      c[CTL_STEP_W] = w;
      c[CTL_STEP_LEN] = floats;
      c[CTL_GRAD_OFFSET] = this.gradOffset;
      c[CTL_OPTIMIZER] = adam ? 1 : 0;
      c[CTL_ADAM_M] = adam ? this.adam!.m : 0;
      c[CTL_ADAM_V] = adam ? this.adam!.v : 0;
      // stored as the f32 the kernels' parameters would round them to
      f[CTL_LR] = options.lr;
      f[CTL_BETA1] = options.beta1;
      f[CTL_BETA2] = options.beta2;
      f[CTL_EPS] = options.eps;
      f[CTL_BC1] = bc1;
      f[CTL_BC2] = bc2;
      pool.runTraining(JOB_STEP);
      return;
    }
    if (!adam) {
      this.kernels.sgdStep(w, g, floats, options.lr);
      return;
    }
    this.kernels.adamStep(w, g, this.adam!.m, this.adam!.v, floats, options.lr, options.beta1, options.beta2, options.eps, bc1, bc2);
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
