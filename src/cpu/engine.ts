// The CPU engine: owns one kernel instance and its linear memory, packs the weights (once, at
// creation), runs the gating of a call into an arena of its own, and the expert pass over a plan.
// The TypeScript side only passes pointers; no number is touched in a JS loop on the hot path.
//
// Memory, from low to high: the kernels' static data, the packed weights, persistent regions
// (thread pool control block, gradients, optimizer state), then the arenas: one per call in
// flight, each holding that call's x, gating state, plan, expert activations and y. A call that
// runs while another one's arena is held (a GPU call awaiting its readback, the last training
// forward kept for backward) gets an arena of its own, so calls never share buffers.
import {
  CTL_DTYPE,
  CTL_B1,
  CTL_B2,
  CTL_BATCH,
  CTL_D,
  CTL_EXPERT_OFFSETS,
  CTL_GATHERED,
  CTL_GATE_W,
  CTL_H,
  CTL_K,
  CTL_KIND,
  CTL_LDL,
  CTL_LOGITS,
  CTL_N,
  CTL_OUT,
  CTL_PAIR_OF,
  CTL_PANELS,
  CTL_POS_OF,
  CTL_PRE,
  CTL_ACT,
  CTL_SLOTS,
  CTL_TOPK_GATES,
  CTL_W1,
  CTL_W2,
  CTL_X,
  CTL_Y,
  ALIGN_BYTES,
  PANEL,
  CTL_QA,
  CTL_QA_SCALES,
  DTYPE_W8A8,
} from "../abi.ts";
import { fail } from "../errors.ts";
import { ExpertSliceSource, type LayerSpec } from "../config.ts";
import { sliceOf, type ExpertBackend, type Plan } from "../plan.ts";
import type { MoEWeights } from "../types.ts";
import { arenaLayout, KIND_CODE, packedLayout, roundUp, type ArenaLayout, type PackedLayout } from "./layout.ts";
import { kernelModules, type KernelExports } from "./wasm.ts";
import { ThreadPool } from "./threads.ts";

const PAGE = 65536;
/** Floats of the staging for packing expert weights (4 MiB at most): a block of columns of one matrix at a time. */
const STAGING_FLOATS = 1 << 20;
/**
 * Multiply-adds of the gating GEMM from which a threaded layer splits it across its threads:
 * ~2^17 is ~10 µs of one thread's SIMD, several times the cost of a run's hand-off.
 */
const THREADED_GATING_MACS = 2 ** 17;

/** Views of a whole wasm memory (engine.heap). */
interface HeapViews {
  f32: Float32Array;
  i32: Int32Array;
  f64: Float64Array;
}
const heapViews = (memory: WebAssembly.Memory): HeapViews => {
  const buffer = memory.buffer;
  return { f32: new Float32Array(buffer), i32: new Int32Array(buffer), f64: new Float64Array(buffer) };
};

/** view[at, at + length) into `into` when given (and returned), else into a new array. */
function readOut<T extends Float32Array | Int32Array>(view: T, at: number, length: number, into: T | undefined): T {
  if (!into) return view.slice(at, at + length) as T;
  into.set(view.subarray(at, at + length));
  return into;
}

export type ArenaField = Exclude<keyof ArenaLayout, "capacity" | "bytes">;

/** One call's buffers in wasm memory (layout: src/cpu/layout.ts). */
export class Arena {
  /** Byte offset of the arena in memory: it moves up when a persistent region is allocated below. */
  private base: number;
  readonly layout: ArenaLayout;
  /** Absolute byte addresses of its buffers. */
  readonly ptr = {} as Record<ArenaField, number>;
  /** Holders: the call running on it, and the layer's training state. Free at 0. */
  holds = 0;

  constructor(base: number, layout: ArenaLayout) {
    this.base = base;
    this.layout = layout;
    this.moveBy(0);
  }

  /** Absolute byte address of one of the arena's buffers. */
  at(field: ArenaField): number {
    return this.ptr[field];
  }

  moveBy(bytes: number): void {
    this.base += bytes;
    for (const field of Object.keys(this.layout) as Array<keyof ArenaLayout>) {
      if (field !== "capacity" && field !== "bytes") this.ptr[field] = this.base + this.layout[field];
    }
  }
}

/** The plan of a call whose gating ran in an arena: views made on each read (memory may grow). */
class ArenaPlan implements Plan {
  readonly batch: number;
  readonly k: number;
  readonly numExperts: number;
  readonly dModel: number;
  readonly engine: CpuEngine;
  readonly arena: Arena;

  constructor(engine: CpuEngine, arena: Arena, batch: number) {
    this.engine = engine;
    this.arena = arena;
    this.batch = batch;
    this.k = engine.packed.slots;
    this.numExperts = engine.packed.experts;
    this.dModel = engine.spec.dModel;
    Object.freeze(this);
  }

  get x(): Float32Array {
    return this.engine.f32(this.arena.at("x"), this.batch * this.dModel);
  }
  get topkIndices(): Int32Array {
    return this.engine.i32(this.arena.at("topkIdx"), this.batch * this.k);
  }
  get topkGates(): Float32Array {
    return this.engine.f32(this.arena.at("topkGates"), this.batch * this.k);
  }
  get expertOffsets(): Int32Array {
    return this.engine.i32(this.arena.at("expertOffsets"), this.numExperts + 1);
  }
  get pairOf(): Int32Array {
    return this.engine.i32(this.arena.at("pairOf"), this.batch * this.k);
  }
  get posOf(): Int32Array {
    return this.engine.i32(this.arena.at("posOf"), this.batch * this.k);
  }

  slice(first: number, rows: number): Plan {
    return sliceOf(this.x, this.topkIndices, this.topkGates, this.k, this.numExperts, first, rows);
  }
}

/** What a gating pass produced: the plan, and the arena that holds it and the gating state. */
export interface Gated {
  plan: Plan;
  arena: Arena;
}

export class CpuEngine {
  readonly kernels: KernelExports;
  readonly spec: LayerSpec;
  readonly kind: number;
  readonly packed: PackedLayout;
  /** Absolute byte addresses of the packed weights (b1, b2: 0 for swiglu). */
  readonly weightPtr: { gate: number; w1: number; b1: number; w2: number; b2: number; choiceBias: number };
  readonly weightEnd: number;

  /** Start of the arenas (everything below lives as long as the layer). */
  private arenaBase: number;
  /** End of the last arena. */
  private top: number;
  private arenas: Arena[] = [];
  /**
   * Views of the whole memory, made again whenever reserve grows it (nothing else does: the kernels
   * never grow it). Calls read and write through these instead of making views of `memory.buffer`:
   * on cold caches each such view costs microseconds.
   */
  private heap: HeapViews;
  private pool: ThreadPool | undefined;

  constructor(kernels: KernelExports, spec: LayerSpec) {
    this.kernels = kernels;
    this.spec = spec;
    this.kind = KIND_CODE[spec.expert];
    this.packed = packedLayout(spec);
    this.heap = heapViews(kernels.memory);
    const start = roundUp(kernels.heapBase(), ALIGN_BYTES);
    const o = this.packed.offsets;
    const at = (offset: number) => (offset < 0 ? 0 : start + offset);
    this.weightPtr = { gate: at(o.gate), w1: at(o.w1), b1: at(o.b1), w2: at(o.w2), b2: at(o.b2), choiceBias: at(o.choiceBias) };
    this.weightEnd = start + this.packed.bytes;
    this.arenaBase = this.weightEnd;
    this.top = this.weightEnd;
    this.reserve(this.top);
  }

  // ---- memory -------------------------------------------------------------------------------

  /**
   * Zeroed memory that lives as long as the layer, beside the weights (thread control block,
   * gradients, optimizer state): the arenas move up to make room, their contents kept.
   */
  allocPersistent(bytes: number): number {
    const ptr = this.arenaBase;
    const shift = roundUp(bytes, ALIGN_BYTES);
    this.reserve(this.top + shift);
    new Uint8Array(this.heap.f32.buffer).copyWithin(this.arenaBase + shift, this.arenaBase, this.top);
    for (const arena of this.arenas) arena.moveBy(shift);
    this.arenaBase += shift;
    this.top += shift;
    new Uint8Array(this.heap.f32.buffer, ptr, bytes).fill(0);
    return ptr;
  }

  /** Memory past everything else for one step's staging; valid until the next allocation. */
  staging(bytes: number): number {
    const ptr = roundUp(this.top, ALIGN_BYTES);
    this.reserve(ptr + bytes);
    return ptr;
  }

  private reserve(end: number): void {
    const memory = this.kernels.memory;
    const have = memory.buffer.byteLength;
    if (end > have) {
      try {
        memory.grow(Math.ceil((end - have) / PAGE));
      } catch {
        fail(
          "INVALID_CONFIG",
          `the layer needs ${Math.ceil(end / 2 ** 20)} MiB of wasm memory, more than this host allows (4 GiB at most); use a smaller batch or a smaller layer`,
        );
      }
      this.heap = heapViews(memory);
    }
  }

  // Byte addresses reach 4 GiB: `>>>` keeps them unsigned where `>>` would turn them negative.
  f32(ptr: number, length: number): Float32Array {
    return this.heap.f32.subarray(ptr >>> 2, (ptr >>> 2) + length);
  }
  i32(ptr: number, length: number): Int32Array {
    return this.heap.i32.subarray(ptr >>> 2, (ptr >>> 2) + length);
  }
  f64(ptr: number, length: number): Float64Array {
    return this.heap.f64.subarray(ptr >>> 3, (ptr >>> 3) + length);
  }
  /** x, whole, into memory at ptr. */
  writeF32(ptr: number, x: Float32Array): void {
    this.heap.f32.set(x, ptr >>> 2);
  }
  /** `length` floats at ptr: into `into` when given (and returned), else a new array. */
  readF32(ptr: number, length: number, into?: Float32Array): Float32Array {
    return readOut(this.heap.f32, ptr >>> 2, length, into);
  }
  /** The first `cols` of each of `rows` rows of stride `stride` from `view`, into `into`. */
  readRows<T extends Float32Array | Int32Array>(view: T, rows: number, cols: number, stride: number, into: T): T {
    if (cols === stride) {
      into.set(view.subarray(0, rows * cols));
      return into;
    }
    for (let r = 0; r < rows; r++) into.set(view.subarray(r * stride, r * stride + cols), r * cols);
    return into;
  }
  /** `length` ints at ptr: into `into` when given (and returned), else a new array. */
  readI32(ptr: number, length: number, into?: Int32Array): Int32Array {
    return readOut(this.heap.i32, ptr >>> 2, length, into);
  }

  // ---- arenas -------------------------------------------------------------------------------

  /**
   * An arena for `batch` rows, held once: a free one that is large enough, else a new one (laid
   * out from the arenas' start when none is held, so memory stays at the largest batch seen).
   */
  acquire(batch: number): Arena {
    let arena: Arena | undefined;
    for (const a of this.arenas) {
      if (a.holds === 0 && a.layout.capacity >= batch && (!arena || a.layout.capacity < arena.layout.capacity)) arena = a;
    }
    if (!arena) {
      if (this.arenas.every((a) => a.holds === 0)) {
        this.arenas = [];
        this.top = this.arenaBase;
      }
      // Beside held arenas, a new one takes the largest capacity so far: a layer then holds at most
      // (calls in flight + the training state) arenas of its largest batch, however batches vary.
      const capacity = Math.max(batch, ...this.arenas.map((a) => a.layout.capacity));
      const layout = arenaLayout(this.spec, this.packed, capacity);
      const base = roundUp(this.top, ALIGN_BYTES);
      this.reserve(base + layout.bytes);
      this.top = base + layout.bytes;
      arena = new Arena(base, layout);
      this.arenas.push(arena);
    }
    arena.holds = 1;
    return arena;
  }

  /** Drops one hold of an arena; at none it is free for the next call. */
  release(arena: Arena): void {
    if (arena.holds > 0) arena.holds--;
  }

  /** The arena of a plan made by this engine's gating and still held, else undefined. */
  arenaOf(plan: Plan): Arena | undefined {
    return plan instanceof ArenaPlan && plan.engine === this && plan.arena.holds > 0 ? plan.arena : undefined;
  }

  // ---- weights ------------------------------------------------------------------------------

  /**
   * Copies, checks (NaN/Inf) and packs every weight. `weights` holds the tensors weightShapes()
   * names, already validated for length, the expert tensors with the shared expert's slices
   * appended (src/routing.ts withSharedSlices). Quantized expert weights (spec.dtype) are
   * quantized here, once.
   */
  loadWeights(weights: Map<keyof MoEWeights, Float32Array>): void {
    const { dModel: d, dHidden: h, numExperts: routed } = this.spec;
    const K = this.kernels;
    const w = this.weightPtr;
    const { gateCols, hp, dp, w1Bytes, w2Bytes, panelBytes, experts: n, sharedGateCol, dtype, dtypeCode } = this.packed;
    // Staging where the arenas will later live, for the gating matrix or one block of an expert
    // matrix's columns: an expert matrix whole would grow the memory by its f32 size for good.
    const staging = this.staging(4 * Math.max(d * gateCols, Math.min(STAGING_FLOATS, d * h), Math.max(d, h) * PANEL));
    const check = (name: keyof MoEWeights, length: number, indexOf: (i: number) => number, src: Float32Array, at: (i: number) => number): void => {
      const bad = K.firstNonFinite(staging, length);
      if (bad >= 0) fail("NON_FINITE_WEIGHT", `weights.${name}[${indexOf(bad)}] is ${src[at(bad)]}; weights must be finite numbers`);
    };
    const stage = (name: keyof MoEWeights, from: number, length: number): void => {
      const src = weights.get(name)!;
      this.f32(staging, length).set(src.subarray(from, from + length));
      check(
        name,
        length,
        (i) => from + i,
        src,
        (i) => from + i,
      );
    };

    // Gating: [W_g | W_noise | shared gate] side by side as one [d, gateCols] matrix, one GEMM over x.
    const blocks: Array<[keyof MoEWeights, number]> = [["wGate", routed]];
    if (this.spec.noisyGating) blocks.push(["wNoise", routed]);
    if (sharedGateCol >= 0) blocks.push(["sharedGate", 1]);
    const parts = blocks.map(([name, cols]) => {
      stage(name, 0, d * cols);
      return this.f32(staging, d * cols).slice();
    });
    const all = this.f32(staging, d * gateCols);
    let col = 0;
    blocks.forEach(([, cols], i) => {
      for (let r = 0; r < d; r++) all.set(parts[i].subarray(r * cols, r * cols + cols), r * gateCols + col);
      col += cols;
    });
    K.packPanelsB(staging, d, gateCols, gateCols, w.gate, d, 1);
    const bias = this.spec.routing.choiceBias;
    if (bias) this.f32(w.choiceBias, routed).set(bias);

    /** Expert e's slice of a tensor (one call of a per-expert source) and its index in the whole tensor. */
    const sliceOfExpert = (name: keyof MoEWeights, e: number, length: number): [Float32Array, number] => {
      const src = weights.get(name)!;
      return src instanceof ExpertSliceSource ? [src.expert(e), e * length] : [src.subarray(e * length, (e + 1) * length), e * length];
    };
    // One expert matrix [rows, cols] into its panels, in the layer's dtype: a block of whole panels'
    // columns at a time through the staging (panel p of the matrix lies at dst + p·panelStep·pBytes).
    const pack = (name: keyof MoEWeights, e: number, rows: number, cols: number, dst: number, kPad: number, panelStep: number, pBytes: number): void => {
      const [src, base] = sliceOfExpert(name, e, rows * cols);
      const block = Math.max(PANEL, Math.floor(STAGING_FLOATS / rows / PANEL) * PANEL);
      for (let c0 = 0; c0 < cols; c0 += block) {
        const width = Math.min(block, cols - c0);
        const view = this.f32(staging, rows * width);
        if (width === cols) view.set(src);
        else for (let r = 0; r < rows; r++) view.set(src.subarray(r * cols + c0, r * cols + c0 + width), r * width);
        const at = (i: number) => Math.floor(i / width) * cols + c0 + (i % width);
        check(name, rows * width, (i) => base + at(i), src, at);
        const panel = dst + (c0 / PANEL) * panelStep * pBytes;
        if (dtypeCode === 0) {
          K.packPanelsB(staging, rows, width, width, panel, kPad, panelStep);
          continue;
        }
        const bad = K.packPanelsQ(dtypeCode, staging, rows, width, width, panel, kPad, panelStep);
        if (bad >= 0) {
          const range = dtype === "f16" ? `±65504; use dtype "bf16" or scale the weights down` : "it rounds to ±Infinity; scale the weights down";
          fail("INVALID_CONFIG", `weights.${name}[${base + at(bad)}] is ${src[at(bad)]}, beyond the range of dtype "${dtype}" (${range})`);
        }
      }
    };
    const packBias = (name: keyof MoEWeights, e: number, length: number, dst: number, padded: number): void => {
      const [src, base] = sliceOfExpert(name, e, length);
      this.f32(staging, length).set(src);
      check(
        name,
        length,
        (i) => base + i,
        src,
        (i) => i,
      );
      this.f32(dst, padded).fill(0).set(this.f32(staging, length));
    };
    for (let e = 0; e < n; e++) {
      if (this.spec.expert === "swiglu") {
        pack("wGateProj", e, d, h, w.w1 + e * w1Bytes, d, 2, panelBytes);
        pack("wUp", e, d, h, w.w1 + e * w1Bytes + panelBytes, d, 2, panelBytes);
        pack("wDown", e, h, d, w.w2 + e * w2Bytes, hp, 1, this.packed.downPanelBytes);
      } else {
        pack("w1", e, d, h, w.w1 + e * w1Bytes, d, 1, panelBytes);
        pack("w2", e, h, d, w.w2 + e * w2Bytes, hp, 1, this.packed.downPanelBytes);
        packBias("b1", e, h, w.b1 + 4 * e * hp, hp);
        packBias("b2", e, d, w.b2 + 4 * e * dp, dp);
      }
    }
  }

  // ---- gating -------------------------------------------------------------------------------

  /**
   * Takes an arena, copies x in, checks it, and runs the gating network: logits, noise (train +
   * noisy), top-k + softmax, balancing losses (train), and the plan. `noise` (already checked)
   * overrides the seeded generator. On failure the arena is released and nothing else changed.
   */
  gate(x: Float32Array, batch: number, train: boolean, noise: Float32Array | undefined, seed: { key: number; stream: number }): Gated {
    const K = this.kernels;
    const { dModel: d, numExperts: n, k, noisyGating, routing } = this.spec;
    const { ldl, slots, experts, sharedGateCol } = this.packed;
    this.pool?.wake(); // the expert pass's workers wake up while the gating runs
    const arena = this.acquire(batch);
    try {
      const xPtr = arena.at("x");
      const logits = arena.at("logits");
      this.writeF32(xPtr, x);
      if (this.spec.checkFinite) {
        const bad = K.firstNonFinite(xPtr, batch * d);
        if (bad >= 0) fail("NON_FINITE_INPUT", `x[${bad}] (row ${Math.floor(bad / d)}, column ${bad % d}) is ${x[bad]}; inputs must be finite`);
      }
      const noisy = train && noisyGating;
      // Eval mode needs only the clean columns (and the shared expert's gate).
      const panels = noisy ? ldl / PANEL : Math.ceil(Math.max(n, sharedGateCol + 1) / PANEL);
      if (this.pool && batch * d * panels * PANEL >= THREADED_GATING_MACS) {
        // the same GEMM in row chunks across the threads (assembly/experts.ts gatingThread): same bits
        const c = this.pool.control;
        c[CTL_D] = d;
        c[CTL_BATCH] = batch;
        c[CTL_X] = xPtr;
        c[CTL_GATE_W] = this.weightPtr.gate;
        c[CTL_PANELS] = panels;
        c[CTL_LOGITS] = logits;
        c[CTL_LDL] = ldl;
        this.pool.runGating();
      } else {
        K.gemmPanels(xPtr, d, batch, d, this.weightPtr.gate, panels, d, logits, ldl, 0);
      }
      const s = arena.ptr;
      if (noisy) {
        if (noise) this.f32(s.noise, batch * n).set(noise);
        else K.normalNoise(s.noise, batch * n, 0, seed.stream >>> 0, seed.key >>> 0, Math.floor(seed.key / 2 ** 32) >>> 0);
        K.noisyLogits(logits, ldl, batch, n, s.noise, this.spec.noiseEpsilon, s.std, s.h);
      } else {
        K.cleanLogits(logits, ldl, batch, n, s.h);
      }
      // Finite x can still overflow the logits (|x| near 3.4e38): the gates would be NaN.
      if (this.spec.checkFinite && K.firstNonFinite(s.h, batch * n) >= 0) {
        fail("NON_FINITE_INPUT", "x·W_g overflowed float32 (x holds values too large for the gating network); scale x down");
      }
      const renorm = routing.renormalize ? 1 : 0;
      if (routing.score === "topk-softmax") {
        K.topkSoftmax(s.h, batch, n, k, s.topkIdx, s.topkGates, s.nextIdx, s.topkScratch);
      } else if (routing.score === "softmax") {
        K.topkSoftmaxAll(s.h, batch, n, k, renorm, routing.scale, s.topkIdx, s.topkGates, s.topkScratch);
      } else {
        K.topkSigmoidGrouped(
          s.h,
          batch,
          n,
          k,
          this.weightPtr.choiceBias,
          routing.nGroup,
          routing.topkGroup,
          renorm,
          routing.renormEpsilon,
          routing.scale,
          s.topkIdx,
          s.topkGates,
          s.topkScratch,
        );
      }
      if (train) {
        const probMode = noisy && k < n ? 1 : 0;
        K.balanceLosses(
          probMode,
          batch,
          n,
          k,
          logits,
          ldl,
          s.std,
          s.h,
          s.topkIdx,
          s.topkGates,
          s.nextIdx,
          this.spec.wImportance,
          this.spec.wLoad,
          s.importance,
          s.load,
          s.losses,
          0,
          s.lossAcc,
        );
      }
      if (slots > k) K.appendSharedSlots(s.topkIdx, s.topkGates, batch, k, slots - k, n, logits, ldl, sharedGateCol);
      K.buildPlan(s.topkIdx, batch, slots, experts, s.expertOffsets, s.pairOf, s.posOf);
    } catch (error) {
      this.release(arena);
      throw error;
    }
    return { plan: new ArenaPlan(this, arena, batch), arena };
  }

  // ---- experts ------------------------------------------------------------------------------

  /** The expert pass and the combination over the plan in `arena`: y [B, d] in the arena. */
  expertPass(arena: Arena, batch: number): void {
    const K = this.kernels;
    const { dModel: d, dHidden: h } = this.spec;
    const { experts: n, slots: k } = this.packed;
    const w = this.weightPtr;
    const s = arena.ptr;
    const dtype = this.packed.dtypeCode;
    if (this.pool) {
      // The same pass split across the threads (assembly/experts.ts, poolThread): same bits.
      this.writeExpertSlots(this.pool.control, arena, batch);
      this.pool.runExperts();
      return;
    }
    K.gatherRows(s.x, d, k, s.pairOf, 0, batch * k, s.gathered);
    if (dtype === DTYPE_W8A8)
      K.expertsForwardW8A8(this.kind, d, h, 0, n, w.w1, w.b1, w.w2, w.b2, s.expertOffsets, s.gathered, s.pre, s.act, s.out, s.qa, s.qaScales);
    else if (dtype === 0) K.expertsForward(this.kind, d, h, 0, n, w.w1, w.b1, w.w2, w.b2, s.expertOffsets, s.gathered, s.pre, s.act, s.out);
    else K.expertsForwardQ(this.kind, dtype, d, h, 0, n, w.w1, w.b1, w.w2, w.b2, s.expertOffsets, s.gathered, s.pre, s.act, s.out, s.qa, s.qaScales);
    K.combine(s.out, d, batch, k, s.posOf, s.topkGates, s.y);
  }

  /**
   * The expert pass's slots of the pool's control block, for the plan and buffers in `arena`: what
   * the forward's pass reads, and the backward's too (it reads the same expert layout).
   */
  writeExpertSlots(c: Int32Array, arena: Arena, batch: number): void {
    const w = this.weightPtr;
    const s = arena.ptr;
    c[CTL_KIND] = this.kind;
    c[CTL_DTYPE] = this.packed.dtypeCode;
    c[CTL_D] = this.spec.dModel;
    c[CTL_H] = this.spec.dHidden;
    c[CTL_N] = this.packed.experts;
    c[CTL_K] = this.packed.slots;
    c[CTL_BATCH] = batch;
    c[CTL_X] = s.x;
    c[CTL_W1] = w.w1;
    c[CTL_B1] = w.b1;
    c[CTL_W2] = w.w2;
    c[CTL_B2] = w.b2;
    c[CTL_EXPERT_OFFSETS] = s.expertOffsets;
    c[CTL_PAIR_OF] = s.pairOf;
    c[CTL_POS_OF] = s.posOf;
    c[CTL_TOPK_GATES] = s.topkGates;
    c[CTL_GATHERED] = s.gathered;
    c[CTL_PRE] = s.pre;
    c[CTL_ACT] = s.act;
    c[CTL_OUT] = s.out;
    c[CTL_Y] = s.y;
    c[CTL_QA] = s.qa;
    c[CTL_QA_SCALES] = s.qaScales;
  }

  // ---- threads ------------------------------------------------------------------------------

  /** The worker pool of a threaded layer (training runs its jobs on it too). */
  get threadPool(): ThreadPool | undefined {
    return this.pool;
  }

  /**
   * Starts `threads − 1` workers on this engine's shared memory (a threaded build only); from then
   * on the expert pass and large gating GEMMs split across them. Called once, at creation.
   */
  async startThreads(threads: number): Promise<void> {
    const module = kernelModules.get(this.kernels);
    if (!module || !WebAssembly.Module.imports(module).some((i) => i.kind === "memory")) {
      fail("INVALID_CONFIG", `threads: ${threads} needs a threaded kernel build (wasmBuild "simd-threads" or "relaxed-threads", or an injected wasm of one)`);
    }
    const ctl = this.allocPersistent(4 * CTL_SLOTS);
    this.pool = await ThreadPool.start(module, this.kernels, ctl, threads);
  }

  /** Ends the workers, if any. */
  dispose(): void {
    this.pool?.terminate();
    this.pool = undefined;
  }
}

/** The experts on the CPU, as an expert back end: runs a plan made by this engine or any other. */
export class CpuExperts implements ExpertBackend {
  readonly name = "cpu";
  private readonly engine: CpuEngine;

  constructor(engine: CpuEngine) {
    this.engine = engine;
  }

  /**
   * y = the experts over the plan. A plan of this engine's gating runs in place; any other (a
   * slice, a plan from elsewhere) is copied into an arena of its own first.
   */
  run(plan: Plan, y: Float32Array): void {
    const engine = this.engine;
    const { batch } = plan;
    let arena = engine.arenaOf(plan);
    const own = !arena;
    if (!arena) {
      const { slots: k, experts: n } = engine.packed;
      arena = engine.acquire(batch);
      engine.writeF32(arena.at("x"), plan.x);
      engine.i32(arena.at("topkIdx"), batch * k).set(plan.topkIndices);
      engine.writeF32(arena.at("topkGates"), plan.topkGates);
      engine.kernels.buildPlan(arena.at("topkIdx"), batch, k, n, arena.at("expertOffsets"), arena.at("pairOf"), arena.at("posOf"));
    }
    try {
      engine.expertPass(arena, batch);
      engine.readF32(arena.at("y"), batch * engine.spec.dModel, y);
    } finally {
      if (own) engine.release(arena);
    }
  }

  dispose(): void {}
}
