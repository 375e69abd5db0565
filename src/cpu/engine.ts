// The CPU engine: owns one kernel instance and its linear memory, lays out the packed weights
// (once, at creation) and the per-batch scratch (once per batch capacity), and drives the kernels.
// The TypeScript side only passes pointers; no number is touched in a JS loop on the hot path.
import { fail } from "../errors.ts";
import type { LayerSpec } from "../config.ts";
import type { MoEWeights } from "../types.ts";
import { kernelModules, type KernelExports } from "./wasm.ts";
import { CONTROL, ThreadPool } from "./threads.ts";

const PAGE = 65536;
const ALIGN = 64;
const KIND_CODE = { relu: 0, gelu: 1, swiglu: 2 } as const;
/**
 * Multiply-adds of the gating GEMM from which a threaded layer splits it across its threads:
 * ~2^17 is ~10 µs of one thread's SIMD, several times the cost of a run's hand-off.
 */
const THREADED_GATING_MACS = 2 ** 17;

const roundUp = (v: number, m: number) => Math.ceil(v / m) * m;

/** Views of a whole wasm memory (engine.heap). */
interface HeapViews { f32: Float32Array; i32: Int32Array; f64: Float64Array }
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

/**
 * Byte offsets of the per-batch scratch, for a batch capacity. Every field but `capacity` is an
 * offset (allocPersistent moves them all when it moves the scratch).
 */
interface Scratch {
  capacity: number;
  x: [number, number]; // double-buffered: a rejected x never overwrites the last accepted one
  logits: number; noise: number; std: number; h: number;
  topkIdx: number; topkGates: number; nextIdx: number; topkScratch: number;
  importance: number; load: number; losses: number; lossAcc: number;
  expertOffsets: number; pairOf: number; posOf: number;
  gathered: number; pre: number; act: number; out: number; y: number;
  // backward (src/train/): upstream gradient, input gradient, gating-GEMM output gradient, dJ/dG
  dy: number; dx: number; dLogits: number; dGates: number;
  end: number;
}

/** What a gating pass leaves in memory, for the expert pass and the outputs. */
export interface GatingResult {
  batch: number;
  train: boolean;
}

export class CpuEngine {
  readonly kernels: KernelExports;
  readonly spec: LayerSpec;
  readonly kind: number;
  /** Padded widths: hidden (hp), model (dp), up-projection output (hw: 2·hp for swiglu). */
  readonly hp: number; readonly dp: number; readonly hw: number;
  /** Gating GEMM output columns: clean, then raw when noisy; row stride ldl. */
  readonly gateCols: number; readonly ldl: number;

  private top: number;
  /** The packed weights (b1, b2 are 0 for swiglu); they fill [weightPtr.gate, weightEnd). */
  readonly weightPtr: { gate: number; w1: number; b1: number; w2: number; b2: number };
  readonly weightEnd: number;
  private scratchBase: number;
  /**
   * Views of the whole memory, made again whenever reserve grows it (nothing else does: the kernels
   * never grow it). A call reads and writes through these instead of making views of
   * `memory.buffer`: on cold caches each such view costs microseconds (bench/cold-call.mjs).
   */
  private heap: HeapViews;
  private s: Scratch | undefined;
  private xSlot = 0;

  constructor(kernels: KernelExports, spec: LayerSpec) {
    this.kernels = kernels;
    this.spec = spec;
    this.kind = KIND_CODE[spec.expert];
    const { dModel: d, dHidden: h, numExperts: n } = spec;
    this.hp = roundUp(h, 8);
    this.dp = roundUp(d, 8);
    this.hw = spec.expert === "swiglu" ? 2 * this.hp : this.hp;
    this.gateCols = spec.noisyGating ? 2 * n : n;
    this.ldl = roundUp(this.gateCols, 8);
    this.heap = heapViews(kernels.memory);
    this.top = roundUp(kernels.heapBase(), ALIGN);
    const bias = spec.expert !== "swiglu";
    this.weightPtr = {
      gate: this.alloc(4 * d * this.ldl),
      w1: this.alloc(4 * n * d * this.hw),
      b1: bias ? this.alloc(4 * n * this.hp) : 0,
      w2: this.alloc(4 * n * this.hp * this.dp),
      b2: bias ? this.alloc(4 * n * this.dp) : 0,
    };
    this.weightEnd = this.top;
    this.scratchBase = this.top;
  }

  /**
   * Zeroed memory that lives as long as the layer, beside the weights (gradients, optimizer
   * state): the per-batch scratch moves up to make room, its contents kept.
   */
  allocPersistent(bytes: number): number {
    const ptr = roundUp(this.scratchBase, ALIGN);
    const shift = roundUp(ptr + bytes, ALIGN) - this.scratchBase;
    const s = this.s;
    if (s) {
      this.reserve(s.end + shift);
      new Uint8Array(this.heap.f32.buffer).copyWithin(this.scratchBase + shift, this.scratchBase, s.end);
      for (const key of Object.keys(s) as Array<keyof Scratch>) {
        if (key === "x") s.x = [s.x[0] + shift, s.x[1] + shift];
        else if (key !== "capacity") s[key] += shift;
      }
      this.top = s.end;
    } else {
      this.reserve(this.scratchBase + shift);
      this.top = this.scratchBase + shift;
    }
    this.scratchBase += shift;
    new Uint8Array(this.heap.f32.buffer, ptr, bytes).fill(0);
    return ptr;
  }

  /** Memory past everything else for one call's staging; valid until the next allocation. */
  staging(bytes: number): number {
    const ptr = roundUp(this.top, ALIGN);
    this.reserve(ptr + bytes);
    return ptr;
  }

  private alloc(bytes: number): number {
    const ptr = roundUp(this.top, ALIGN);
    this.top = ptr + bytes;
    this.reserve(this.top);
    return ptr;
  }

  private reserve(end: number): void {
    const memory = this.kernels.memory;
    const have = memory.buffer.byteLength;
    if (end > have) {
      try {
        memory.grow(Math.ceil((end - have) / PAGE));
      } catch {
        fail("INVALID_CONFIG", `the layer needs ${Math.ceil(end / 2 ** 20)} MiB of wasm memory, more than this host allows (4 GiB at most); use a smaller batch or a smaller layer`);
      }
      this.heap = heapViews(memory);
    }
  }

  f32(ptr: number, length: number): Float32Array {
    return this.heap.f32.subarray(ptr >> 2, (ptr >> 2) + length);
  }
  i32(ptr: number, length: number): Int32Array {
    return this.heap.i32.subarray(ptr >> 2, (ptr >> 2) + length);
  }
  f64(ptr: number, length: number): Float64Array {
    return this.heap.f64.subarray(ptr >> 3, (ptr >> 3) + length);
  }
  /** x, whole, into memory at ptr. */
  writeF32(ptr: number, x: Float32Array): void {
    this.heap.f32.set(x, ptr >> 2);
  }
  /** `length` floats at ptr: into `into` when given (and returned), else a new array. */
  readF32(ptr: number, length: number, into?: Float32Array): Float32Array {
    return readOut(this.heap.f32, ptr >> 2, length, into);
  }
  /** `length` ints at ptr: into `into` when given (and returned), else a new array. */
  readI32(ptr: number, length: number, into?: Int32Array): Int32Array {
    return readOut(this.heap.i32, ptr >> 2, length, into);
  }

  // ---- weights ------------------------------------------------------------------------------

  /**
   * Copies, checks (NaN/Inf) and packs every weight. `weights` holds exactly the tensors
   * weightShapes() names, already validated for length.
   */
  loadWeights(weights: Map<keyof MoEWeights, Float32Array>): void {
    const { dModel: d, dHidden: h, numExperts: n } = this.spec;
    const K = this.kernels;
    const w = this.weightPtr;
    // Staging for one matrix at a time, placed where the scratch will later live.
    const staging = roundUp(this.scratchBase, ALIGN);
    this.reserve(staging + 4 * Math.max(d * this.gateCols, d * h));
    const stage = (name: keyof MoEWeights, from: number, length: number): void => {
      const src = weights.get(name)!;
      this.f32(staging, length).set(src.subarray(from, from + length));
      const bad = K.firstNonFinite(staging, length);
      if (bad >= 0) {
        fail("NON_FINITE_WEIGHT", `weights.${name}[${from + bad}] is ${src[from + bad]}; weights must be finite numbers`);
      }
    };

    // Gating: [W_g | W_noise] side by side as one [d, gateCols] matrix, one GEMM over x.
    stage("wGate", 0, d * n);
    if (this.spec.noisyGating) {
      const wGate = this.f32(staging, d * n).slice();
      stage("wNoise", 0, d * n);
      const wNoise = this.f32(staging, d * n).slice();
      const both = this.f32(staging, d * 2 * n);
      for (let r = 0; r < d; r++) {
        both.set(wGate.subarray(r * n, r * n + n), r * 2 * n);
        both.set(wNoise.subarray(r * n, r * n + n), r * 2 * n + n);
      }
    }
    K.packPanelsB(staging, d, this.gateCols, this.gateCols, w.gate, d, 1);

    const w1Bytes = 4 * d * this.hw;
    const w2Bytes = 4 * this.hp * this.dp;
    const panelBytes = 4 * 8 * d; // one up-projection panel: d rows × 8 floats
    for (let e = 0; e < n; e++) {
      if (this.spec.expert === "swiglu") {
        stage("wGateProj", e * d * h, d * h);
        K.packPanelsB(staging, d, h, h, w.w1 + e * w1Bytes, d, 2);
        stage("wUp", e * d * h, d * h);
        K.packPanelsB(staging, d, h, h, w.w1 + e * w1Bytes + panelBytes, d, 2);
        stage("wDown", e * h * d, h * d);
        K.packPanelsB(staging, h, d, d, w.w2 + e * w2Bytes, this.hp, 1);
      } else {
        stage("w1", e * d * h, d * h);
        K.packPanelsB(staging, d, h, h, w.w1 + e * w1Bytes, d, 1);
        stage("w2", e * h * d, h * d);
        K.packPanelsB(staging, h, d, d, w.w2 + e * w2Bytes, this.hp, 1);
        stage("b1", e * h, h);
        this.f32(w.b1 + 4 * e * this.hp, this.hp).fill(0).set(this.f32(staging, h));
        stage("b2", e * d, d);
        this.f32(w.b2 + 4 * e * this.dp, this.dp).fill(0).set(this.f32(staging, d));
      }
    }
  }

  // ---- scratch ------------------------------------------------------------------------------

  /** Lays out the scratch for `batch` rows when it does not fit yet (sized once per capacity). */
  private ensureCapacity(batch: number): Scratch {
    if (this.s && this.s.capacity >= batch) return this.s;
    const { dModel: d, numExperts: n, k } = this.spec;
    const pairs = batch * k;
    this.top = this.scratchBase;
    const f = (count: number) => this.alloc(4 * count);
    const s: Scratch = {
      capacity: batch,
      x: [f(batch * d), f(batch * d)],
      logits: f(batch * this.ldl), noise: f(roundUp(batch * n, 4)), std: f(batch * n), h: f(batch * n),
      topkIdx: f(pairs), topkGates: f(pairs), nextIdx: f(batch), topkScratch: f(2 * (k + 1)),
      importance: f(n), load: f(n), losses: this.alloc(16), lossAcc: this.alloc(16 * n),
      expertOffsets: f(n + 1), pairOf: f(pairs), posOf: f(pairs),
      gathered: f(pairs * d), pre: f(pairs * this.hw), act: f(pairs * this.hp), out: f(pairs * this.dp),
      y: f(batch * d),
      dy: f(batch * d), dx: f(batch * d), dLogits: f(batch * this.ldl), dGates: f(pairs),
      end: 0,
    };
    s.end = this.top;
    this.s = s;
    return s;
  }

  get scratch(): Scratch {
    if (!this.s) throw new Error("no batch has run yet");
    return this.s;
  }
  get xPtr(): number {
    return this.scratch.x[this.xSlot];
  }

  // ---- forward ------------------------------------------------------------------------------

  /**
   * Copies x in, checks it, and runs the gating network: logits, noise (train + noisy),
   * top-k + softmax, balancing losses (train), and the dispatch plan.
   * `noise` (already checked for length and finiteness) overrides the seeded generator.
   */
  gate(x: Float32Array, batch: number, train: boolean, noise: Float32Array | undefined, seed: { key: number; stream: number }): void {
    const K = this.kernels;
    const { dModel: d, numExperts: n, k, noisyGating } = this.spec;
    this.pool?.wake(); // the expert pass's workers wake up while the gating runs
    const grows = !this.s || this.s.capacity < batch;
    // A larger batch lays the scratch out anew: check x before that, in staging, so a rejected x
    // leaves the last training forward's state (read by backward) intact.
    if (this.spec.checkFinite && grows) this.writeChecked(this.staging(4 * batch * d), x);
    const s = this.ensureCapacity(batch);
    const xPtr = s.x[1 - this.xSlot];
    if (this.spec.checkFinite && !grows) this.writeChecked(xPtr, x);
    else this.writeF32(xPtr, x);
    this.xSlot = 1 - this.xSlot;

    const noisy = train && noisyGating;
    // Eval mode needs only the clean columns (the first ⌈n/8⌉ panels).
    const panels = noisy ? this.ldl / 8 : Math.ceil(n / 8);
    if (this.pool && batch * d * panels * 8 >= THREADED_GATING_MACS) {
      // the same GEMM in row chunks across the threads (assembly/experts.ts gatingThread): same bits
      const c = this.pool.control;
      c[CONTROL.d] = d; c[CONTROL.batch] = batch; c[CONTROL.x] = xPtr;
      c[CONTROL.gateW] = this.weightPtr.gate; c[CONTROL.panels] = panels; c[CONTROL.logits] = s.logits; c[CONTROL.ldl] = this.ldl;
      this.pool.runGating();
    } else {
      K.gemmPanels(xPtr, d, batch, d, this.weightPtr.gate, panels, d, s.logits, this.ldl, 0);
    }
    if (noisy) {
      if (noise) {
        this.f32(s.noise, batch * n).set(noise);
      } else {
        K.normalNoise(s.noise, batch * n, 0, seed.stream >>> 0, seed.key >>> 0, Math.floor(seed.key / 2 ** 32) >>> 0);
      }
      K.noisyLogits(s.logits, this.ldl, batch, n, s.noise, this.spec.noiseEpsilon, s.std, s.h);
    } else {
      K.cleanLogits(s.logits, this.ldl, batch, n, s.h);
    }
    K.topkSoftmax(s.h, batch, n, k, s.topkIdx, s.topkGates, s.nextIdx, s.topkScratch);
    if (train) {
      const probMode = noisy && k < n ? 1 : 0;
      K.balanceLosses(
        probMode, batch, n, k, s.logits, this.ldl, s.std, s.h, s.topkIdx, s.topkGates, s.nextIdx,
        this.spec.wImportance, this.spec.wLoad, s.importance, s.load, s.losses, 0, s.lossAcc,
      );
    }
    K.buildPlan(s.topkIdx, batch, k, n, s.expertOffsets, s.pairOf, s.posOf);
  }

  /** x into memory at ptr, then NON_FINITE_INPUT if it holds a NaN or an infinity. */
  private writeChecked(ptr: number, x: Float32Array): void {
    this.writeF32(ptr, x);
    const bad = this.kernels.firstNonFinite(ptr, x.length);
    if (bad >= 0) {
      const d = this.spec.dModel;
      fail("NON_FINITE_INPUT", `x[${bad}] (row ${Math.floor(bad / d)}, column ${bad % d}) is ${x[bad]}; inputs must be finite`);
    }
  }

  /** The experts and the combination on the CPU: y [B, d] in scratch. */
  runExperts(batch: number): void {
    const K = this.kernels;
    const s = this.scratch;
    const { dModel: d, dHidden: h, numExperts: n, k } = this.spec;
    const w = this.weightPtr;
    if (this.pool) {
      // The same pass split across the threads (assembly/experts.ts, poolThread): same bits.
      const c = this.pool.control;
      c[CONTROL.kind] = this.kind; c[CONTROL.d] = d; c[CONTROL.h] = h; c[CONTROL.n] = n; c[CONTROL.k] = k;
      c[CONTROL.batch] = batch; c[CONTROL.x] = this.xPtr;
      c[CONTROL.w1] = w.w1; c[CONTROL.b1] = w.b1; c[CONTROL.w2] = w.w2; c[CONTROL.b2] = w.b2;
      c[CONTROL.expertOffsets] = s.expertOffsets; c[CONTROL.pairOf] = s.pairOf; c[CONTROL.posOf] = s.posOf;
      c[CONTROL.topkGates] = s.topkGates; c[CONTROL.gathered] = s.gathered; c[CONTROL.pre] = s.pre;
      c[CONTROL.act] = s.act; c[CONTROL.out] = s.out; c[CONTROL.y] = s.y;
      this.pool.runExperts();
      return;
    }
    K.gatherRows(this.xPtr, d, k, s.pairOf, 0, batch * k, s.gathered);
    K.expertsForward(this.kind, d, h, 0, n, w.w1, w.b1, w.w2, w.b2, s.expertOffsets, s.gathered, s.pre, s.act, s.out);
    K.combine(s.out, d, batch, k, s.posOf, s.topkGates, s.y);
  }

  /** Bytes of wasm memory in use (weights + scratch). */
  get memoryBytes(): number {
    return this.kernels.memory.buffer.byteLength;
  }

  // ---- threads ------------------------------------------------------------------------------

  private pool: ThreadPool | undefined;

  /** Threads running the expert pass: 1, or the pool's size. */
  get threads(): number {
    return this.pool?.threads ?? 1;
  }

  /**
   * Starts `threads − 1` workers on this engine's shared memory (a threaded build only); from then
   * on runExperts splits the expert pass across them. Called once, at creation.
   */
  async startThreads(threads: number): Promise<void> {
    const module = kernelModules.get(this.kernels);
    if (!module || !WebAssembly.Module.imports(module).some((i) => i.kind === "memory")) {
      fail("INVALID_CONFIG", `threads: ${threads} needs a threaded kernel build (wasmBuild "simd-threads" or "relaxed-threads", or an injected wasm of one)`);
    }
    const ctl = this.allocPersistent(4 * CONTROL.slots);
    this.pool = await ThreadPool.start(module, this.kernels, ctl, threads);
  }

  /** Ends the workers, if any. */
  dispose(): void {
    this.pool?.terminate();
    this.pool = undefined;
  }
}
