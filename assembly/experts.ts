// The experts and the combination y = Σ_i G(x)_i · E_i(x) (Shazeer et al. 2017, eq. 1), sparse:
// only the (row, slot) pairs that chose an expert are computed, grouped by expert so that each
// expert's weights are streamed once per call for all of its rows.
//
//   relu / gelu:  E(x) = act(x·W1 + b1)·W2 + b2
//   swiglu:       E(x) = (silu(x·Wg) ⊙ (x·Wu))·Wd
//
// Layouts (per expert e, packed at creation by packPanelsB; hp = ⌈h/8⌉·8, dp = ⌈d/8⌉·8):
//   w1: [d × hw] panels, hw = hp (relu/gelu) or 2·hp (swiglu: gate and up panels interleaved)
//   b1: [hp] (zero-padded),  w2: [hp × dp] panels,  b2: [dp]   (no biases for swiglu)
// Plan (see buildPlan): expertOffsets [n+1]; for position p in expert order, pairOf[p] is the
// pair index row·k + slot; posOf[pair] = p.
import { gemmPanels } from "./gemm";
import { vgelu, vsilu } from "./vmath";
import { expertUpQ, expertDownQ } from "./quant";
import { expertUpW8A8, expertDownW8A8 } from "./quant-dot";
import {
  KIND_RELU, KIND_SWIGLU, CTL_GENERATION, CTL_CLAIMED, CTL_FINISHED, CTL_FAILED, CTL_CALLER_MAY_BLOCK, CTL_JOB,
  CTL_THREADS, CTL_RUN, CTL_GATE_W, CTL_PANELS, CTL_LOGITS, CTL_LDL, CTL_KIND, CTL_D, CTL_H, CTL_N, CTL_K, CTL_BATCH,
  CTL_X, CTL_W1, CTL_B1, CTL_W2, CTL_B2, CTL_EXPERT_OFFSETS, CTL_PAIR_OF, CTL_POS_OF, CTL_TOPK_GATES, CTL_GATHERED,
  CTL_PRE, CTL_ACT, CTL_OUT, CTL_Y, JOB_GATING, CTL_DTYPE, DTYPE_F32, JOB_BACKWARD, JOB_STEP,
  DTYPE_W8A8, CTL_QA, CTL_QA_SCALES,
} from "../src/abi";
import { backwardThread, stepThread } from "./backward-threads";

// @ts-ignore: decorator
@inline
function roundUp8(v: i32): i32 {
  return (v + 7) & ~7;
}

/**
 * Counting sort of the B·k (row, slot) pairs by expert, stable (row-major order within an
 * expert). Writes expertOffsets [n+1], pairOf [B·k], posOf [B·k].
 */
export function buildPlan(topkIdx: usize, b: i32, k: i32, n: i32, expertOffsets: usize, pairOf: usize, posOf: usize): void {
  const pairs = b * k;
  memory.fill(expertOffsets, 0, <usize>(n + 1) << 2);
  for (let q = 0; q < pairs; q++) {
    const slot = expertOffsets + (<usize>(load<i32>(topkIdx + (<usize>q << 2)) + 1) << 2);
    store<i32>(slot, load<i32>(slot) + 1);
  }
  for (let e = 0; e < n; e++) {
    const at = expertOffsets + (<usize>(e + 1) << 2);
    store<i32>(at, load<i32>(at) + load<i32>(at - 4));
  }
  // expertOffsets[e] is now the start of e: use it as e's cursor while placing the pairs
  for (let q = 0; q < pairs; q++) {
    const e = load<i32>(topkIdx + (<usize>q << 2));
    const at = expertOffsets + (<usize>e << 2);
    const p = load<i32>(at);
    store<i32>(at, p + 1);
    store<i32>(pairOf + (<usize>p << 2), q);
    store<i32>(posOf + (<usize>q << 2), p);
  }
  // each cursor ended at the start of the next expert: shift right by one to restore the starts
  for (let e = n; e > 0; e--) {
    store<i32>(expertOffsets + (<usize>e << 2), load<i32>(expertOffsets + (<usize>(e - 1) << 2)));
  }
  store<i32>(expertOffsets, 0);
}

/** dst[p, 0..d] = x[pairOf[p] / k, 0..d] for p in [first, first + count). */
export function gatherRows(x: usize, d: i32, k: i32, pairOf: usize, first: i32, count: i32, dst: usize): void {
  const rowBytes = <usize>d << 2;
  for (let p = first; p < first + count; p++) {
    const row = load<i32>(pairOf + (<usize>p << 2)) / k;
    memory.copy(dst + <usize>p * rowBytes, x + <usize>row * rowBytes, rowBytes);
  }
}

/**
 * act[r, 8u..8u+8] = activation(pre row r, unit u) for rows r < m and hidden-column units
 * u ∈ [u0, u1) (8 columns each). pre has row stride ldPre floats, act ldAct. For swiglu a unit of
 * pre is 16 floats [gate(8) up(8)] (the interleaved panels of packPanelsB, panelStep 2).
 */
export function activateColumns(kind: i32, pre: usize, ldPre: i32, m: i32, u0: i32, u1: i32, act: usize, ldAct: i32): void {
  const rowPre = <usize>ldPre << 2;
  const rowAct = <usize>ldAct << 2;
  const zero = f32x4.splat(0);
  for (let r = 0; r < m; r++) {
    const preRow = pre + <usize>r * rowPre;
    const actRow = act + <usize>r * rowAct;
    for (let u = u0; u < u1; u++) {
      const dst = actRow + (<usize>u << 5);
      if (kind == KIND_SWIGLU) {
        const src = preRow + (<usize>u << 6);
        v128.store(dst, f32x4.mul(vsilu(v128.load(src)), v128.load(src, 32)));
        v128.store(dst, f32x4.mul(vsilu(v128.load(src, 16)), v128.load(src, 48)), 16);
      } else {
        const src = preRow + (<usize>u << 5);
        if (kind == KIND_RELU) {
          v128.store(dst, f32x4.max(v128.load(src), zero));
          v128.store(dst, f32x4.max(v128.load(src, 16), zero), 16);
        } else {
          v128.store(dst, vgelu(v128.load(src)));
          v128.store(dst, vgelu(v128.load(src, 16)), 16);
        }
      }
    }
  }
}

// ---- one expert, by column blocks (the serial and the threaded pass share these) --------------

/**
 * Up-projection and activation of expert e (rows first..first+m of the gathered layout) for the
 * hidden-column units [u0, u1): pre[:, unit] = x·W1[:, unit] (+ b1), act[:, unit] = act(pre).
 * A unit is 8 hidden columns: one W1 panel, or a gate+up panel pair for swiglu.
 */
function expertUp(
  kind: i32, d: i32, hp: i32, e: i32, first: i32, m: i32, u0: i32, u1: i32,
  w1: usize, b1: usize, gathered: usize, pre: usize, act: usize,
): void {
  const swiglu = kind == KIND_SWIGLU;
  const hw = swiglu ? hp << 1 : hp;
  const panelsPerUnit = swiglu ? 2 : 1;
  const panelBytes = <usize>d << 5;
  const p0 = u0 * panelsPerUnit;
  const a = gathered + ((<usize>first * <usize>d) << 2);
  const preE = pre + ((<usize>first * <usize>hw) << 2);
  const w1E = w1 + <usize>e * (<usize>(hw >> 3) * panelBytes);
  const bias = swiglu ? <usize>0 : b1 + ((<usize>e * <usize>hp + (<usize>u0 << 3)) << 2);
  gemmPanels(a, d, m, d, w1E + <usize>p0 * panelBytes, (u1 - u0) * panelsPerUnit, d, preE + (<usize>p0 << 5), hw, bias);
  activateColumns(kind, preE, hw, m, u0, u1, act + ((<usize>first * <usize>hp) << 2), hp);
}

/** Down-projection of expert e for the output panels [q0, q1): out[:, panel] = act·W2[:, panel] (+ b2). */
function expertDown(
  kind: i32, hp: i32, dp: i32, e: i32, first: i32, m: i32, q0: i32, q1: i32,
  w2: usize, b2: usize, act: usize, out: usize,
): void {
  const panelBytes = <usize>hp << 5;
  const w2E = w2 + <usize>e * (<usize>(dp >> 3) * panelBytes);
  const bias = kind == KIND_SWIGLU ? <usize>0 : b2 + ((<usize>e * <usize>dp + (<usize>q0 << 3)) << 2);
  gemmPanels(
    act + ((<usize>first * <usize>hp) << 2), hp, m, hp, w2E + <usize>q0 * panelBytes, q1 - q0, hp,
    out + ((<usize>first * <usize>dp + (<usize>q0 << 3)) << 2), dp, bias,
  );
}

/**
 * Runs experts [eBegin, eEnd) on their gathered rows, one thread, expert by expert.
 * gathered [B·k, d], pre [B·k, hw], act [B·k, hp], out [B·k, dp]; expert e owns rows
 * expertOffsets[e] .. expertOffsets[e+1] of each. An expert with no rows costs nothing.
 */
export function expertsForward(
  kind: i32, d: i32, h: i32, eBegin: i32, eEnd: i32,
  w1: usize, b1: usize, w2: usize, b2: usize,
  expertOffsets: usize, gathered: usize, pre: usize, act: usize, out: usize,
): void {
  const hp = roundUp8(h);
  const dp = roundUp8(d);
  for (let e = eBegin; e < eEnd; e++) {
    const first = load<i32>(expertOffsets + (<usize>e << 2));
    const m = load<i32>(expertOffsets + (<usize>(e + 1) << 2)) - first;
    if (m == 0) continue;
    expertUp(kind, d, hp, e, first, m, 0, hp >> 3, w1, b1, gathered, pre, act);
    expertDown(kind, hp, dp, e, first, m, 0, dp >> 3, w2, b2, act, out);
  }
}

/**
 * y[r] = Σ_{s<k} topkGates[r, s] · out[posOf[r·k + s]], slots summed in order (deterministic).
 * out: [B·k, dp]; y: [B, d].
 */
export function combine(out: usize, d: i32, b: i32, k: i32, posOf: usize, topkGates: usize, y: usize): void {
  combineRows(out, d, 0, b, k, posOf, topkGates, y);
}

/** combine for rows [r0, r1) only. */
function combineRows(out: usize, d: i32, r0: i32, r1: i32, k: i32, posOf: usize, topkGates: usize, y: usize): void {
  const dp = roundUp8(d);
  const d4 = d & ~3;
  for (let r = r0; r < r1; r++) {
    const yRow = y + ((<usize>r * <usize>d) << 2);
    for (let s = 0; s < k; s++) {
      const q = r * k + s;
      const src = out + ((<usize>load<i32>(posOf + (<usize>q << 2)) * <usize>dp) << 2);
      const g = load<f32>(topkGates + (<usize>q << 2));
      const gv = f32x4.splat(g);
      let j = 0;
      if (s == 0) {
        for (; j < d4; j += 4) v128.store(yRow + (<usize>j << 2), f32x4.mul(gv, v128.load(src + (<usize>j << 2))));
        for (; j < d; j++) store<f32>(yRow + (<usize>j << 2), g * load<f32>(src + (<usize>j << 2)));
      } else {
        for (; j < d4; j += 4) {
          const o = <usize>j << 2;
          v128.store(yRow + o, f32x4.add(v128.load(yRow + o), f32x4.mul(gv, v128.load(src + o))));
        }
        for (; j < d; j++) store<f32>(yRow + (<usize>j << 2), load<f32>(yRow + (<usize>j << 2)) + g * load<f32>(src + (<usize>j << 2)));
      }
    }
  }
}

// ---- the expert pass (and the gating GEMM) on several threads --------------------------------------
// Every thread (the caller is thread 0; src/cpu/threads.ts starts the others) runs
// poolThread(ctl, thread) on the same shared memory, which runs the job of the control block: the
// expert pass (JOB_EXPERTS) or the gating GEMM (JOB_GATING, one phase of row chunks: gatingThread
// below). The expert pass has four phases: gather the rows;
// up-projection + activation; down-projection; combine. Each phase is cut into a fixed number of
// chunks, which the threads claim one at a time (an atomic counter per phase) until none is left,
// and a phase starts when every chunk of the one before is done. Gather and combine chunks are row
// ranges; GEMM chunks are contiguous ranges of estimated cost over the (expert, column block)
// pairs, long first and shrinking (gemmChunkStart), so a thread streams its own part of the weights
// (both cores' bandwidth at small batches) and does its part of the arithmetic (at large ones), and
// the threads end a phase within a small chunk of each other. Claiming instead of a fixed share
// per thread means a worker the OS has not scheduled yet delays nobody: the others take its chunks.
// The counters only grow (run r's chunks of a phase are claims r·chunks .. (r+1)·chunks − 1, taken
// by compare-and-swap so no claim ever spills into the next run), so a worker that is late for a
// run finds nothing left and nothing has to be reset or waited for between runs.
// A column block is computed exactly as by the serial pass, so y has the same bits for any number
// of threads and any claiming order.
//
// The control block: i32 slots at ctl (src/abi.ts CTL_*), written by src/cpu/threads.ts.

const PHASE_GATHER = 0;
const PHASE_UP = 1;
const PHASE_DOWN = 2;
const PHASE_COMBINE = 3;
const PHASE_GATING = 4; // the one phase of a JOB_GATING run
/** Row chunks per thread of the gating GEMM (uniform work: a little slack for a late thread). */
const GATING_CHUNKS_PER_THREAD = 2;
/**
 * Chunks per thread in the GEMM phases. Their sizes shrink (guided scheduling, gemmChunkStart):
 * the first chunks are long weight streams, the last ones small, so the threads finish a phase
 * together.
 */
const GEMM_CHUNKS_PER_THREAD = 8;

/**
 * The cost model of the split, in units of "one row times one column block": reading a block of
 * weights from memory costs about as long as PANEL_COST_ROWS rows of arithmetic on it
 * (2 flops per 4 bytes: 2·peak / bandwidth ≈ 2 · 20 GFLOP/s / 13 GB/s ≈ 3 on a typical
 * x86 server core).
 */
const PANEL_COST_ROWS: i64 = 3;

/**
 * About a millisecond of atomic loads: waits shorter than this (most: chunks are short) never pay
 * for a sleep and a wake-up, which cost from tens of µs to milliseconds on a busy host.
 */
const SPINS_BEFORE_SLEEP = 1 << 20;

// @ts-ignore: decorator
@inline
function slot(ctl: usize, index: i32): i32 {
  return load<i32>(ctl + (<usize>index << 2));
}

/**
 * Waits until the i32 at `counter` reaches `target` (or a worker failed): spins first, then, where
 * this thread may block, sleeps on the counter in 1 ms naps (whoever completes it notifies), so
 * that a thread the OS has descheduled is not waited for by busy cores.
 */
export function waitFor(ctl: usize, counter: usize, target: i32, mayBlock: bool): void {
  if (!ASC_FEATURE_THREADS) return; // single-threaded builds: one thread did every chunk
  const failed = ctl + (<usize>CTL_FAILED << 2);
  for (let spins = 0; ; spins++) {
    const seen = atomic.load<i32>(counter);
    if (seen >= target || atomic.load<i32>(failed) != 0) return;
    if (mayBlock && spins >= SPINS_BEFORE_SLEEP) atomic.wait<i32>(counter, seen, 1_000_000);
  }
}

/** Claims the next chunk of `phase` in the run whose claims end at `end`: its claim number, or −1 when none is left. */
export function claim(ctl: usize, phase: i32, end: i32): i32 {
  const counter = ctl + (<usize>(CTL_CLAIMED + phase) << 2);
  if (!ASC_FEATURE_THREADS) {
    const c = load<i32>(counter);
    if (c >= end) return -1;
    store<i32>(counter, c + 1);
    return c;
  }
  let c = atomic.load<i32>(counter);
  while (c < end) {
    const seen = atomic.cmpxchg<i32>(counter, c, c + 1);
    if (seen == c) return c;
    c = seen;
  }
  return -1;
}

/** Marks one chunk of `phase` finished; the run's last one wakes the threads sleeping on the phase. */
export function finish(ctl: usize, phase: i32, end: i32): void {
  const counter = ctl + (<usize>(CTL_FINISHED + phase) << 2);
  if (!ASC_FEATURE_THREADS) {
    store<i32>(counter, load<i32>(counter) + 1);
    return;
  }
  if (atomic.add<i32>(counter, 1) + 1 == end) atomic.notify(counter, -1);
}

/**
 * Chunk `chunk` of `chunks` of a GEMM phase (PHASE_UP: up + activation, PHASE_DOWN: down): walks
 * the experts with rows and runs the column blocks whose cost range starts in
 * [total·chunk/chunks, total·(chunk+1)/chunks).
 */
function gemmChunk(ctl: usize, phase: i32, chunk: i32, chunks: i32): void {
  const kind = slot(ctl, CTL_KIND);
  const dtype = slot(ctl, CTL_DTYPE);
  const d = slot(ctl, CTL_D);
  const hp = roundUp8(slot(ctl, CTL_H));
  const dp = roundUp8(d);
  const n = slot(ctl, CTL_N);
  const offsets = <usize>slot(ctl, CTL_EXPERT_OFFSETS);
  const blocks = phase == PHASE_UP ? hp >> 3 : dp >> 3;
  let total: i64 = 0;
  for (let e = 0; e < n; e++) {
    const m = load<i32>(offsets + (<usize>(e + 1) << 2)) - load<i32>(offsets + (<usize>e << 2));
    if (m > 0) total += <i64>blocks * (<i64>m + PANEL_COST_ROWS);
  }
  const threads = slot(ctl, CTL_THREADS);
  const lo = gemmChunkStart(total, chunk, chunks, threads);
  const hi = gemmChunkStart(total, chunk + 1, chunks, threads);
  let start: i64 = 0;
  for (let e = 0; e < n && start < hi; e++) {
    const first = load<i32>(offsets + (<usize>e << 2));
    const m = load<i32>(offsets + (<usize>(e + 1) << 2)) - first;
    if (m == 0) continue;
    const blockCost = <i64>m + PANEL_COST_ROWS;
    // block u is this chunk's when lo ≤ start + u·blockCost < hi
    const b0 = <i32>min<i64>(blocks, lo > start ? (lo - start + blockCost - 1) / blockCost : 0);
    const b1 = <i32>min<i64>(blocks, (hi - start + blockCost - 1) / blockCost);
    if (b0 < b1 && dtype == DTYPE_W8A8) {
      const qa = <usize>slot(ctl, CTL_QA), qs = <usize>slot(ctl, CTL_QA_SCALES);
      if (phase == PHASE_UP) {
        expertUpW8A8(kind, d, hp, e, first, m, b0, b1, <usize>slot(ctl, CTL_W1), <usize>slot(ctl, CTL_B1),
          <usize>slot(ctl, CTL_GATHERED), <usize>slot(ctl, CTL_PRE), <usize>slot(ctl, CTL_ACT), qa, qs);
      } else {
        expertDownW8A8(kind, hp, dp, e, first, m, b0, b1, <usize>slot(ctl, CTL_W2), <usize>slot(ctl, CTL_B2),
          <usize>slot(ctl, CTL_ACT), <usize>slot(ctl, CTL_OUT), qa, qs);
      }
    } else if (b0 < b1) {
      if (phase == PHASE_UP) {
        if (dtype != DTYPE_F32) {
          expertUpQ(dtype, kind, d, hp, e, first, m, b0, b1, <usize>slot(ctl, CTL_W1), <usize>slot(ctl, CTL_B1),
            <usize>slot(ctl, CTL_GATHERED), <usize>slot(ctl, CTL_PRE), <usize>slot(ctl, CTL_ACT),
            <usize>slot(ctl, CTL_QA), <usize>slot(ctl, CTL_QA_SCALES));
        } else {
          expertUp(kind, d, hp, e, first, m, b0, b1, <usize>slot(ctl, CTL_W1), <usize>slot(ctl, CTL_B1),
            <usize>slot(ctl, CTL_GATHERED), <usize>slot(ctl, CTL_PRE), <usize>slot(ctl, CTL_ACT));
        }
      } else if (dtype != DTYPE_F32) {
        expertDownQ(dtype, kind, hp, dp, e, first, m, b0, b1, <usize>slot(ctl, CTL_W2), <usize>slot(ctl, CTL_B2),
          <usize>slot(ctl, CTL_ACT), <usize>slot(ctl, CTL_OUT), <usize>slot(ctl, CTL_QA), <usize>slot(ctl, CTL_QA_SCALES));
      } else {
        expertDown(kind, hp, dp, e, first, m, b0, b1, <usize>slot(ctl, CTL_W2), <usize>slot(ctl, CTL_B2),
          <usize>slot(ctl, CTL_ACT), <usize>slot(ctl, CTL_OUT));
      }
    }
    start += <i64>blocks * blockCost;
  }
}

/**
 * Where chunk `chunk` of a GEMM phase starts in its cost range [0, total): each chunk takes
 * 1/(2·threads) of what the chunks before it left (guided scheduling), the last one all the rest.
 * With GEMM_CHUNKS_PER_THREAD = 8 the last takes (1 − 1/(2·threads))^(8·threads − 1) ≈ e^−4 ≈ 2% of
 * the work, where equal chunks (1/(4·threads) each) left a thread idle for up to one at a phase's end.
 * A pure function of its arguments: every thread computes the same bounds.
 */
export function gemmChunkStart(total: i64, chunk: i32, chunks: i32, threads: i32): i64 {
  if (chunk >= chunks) return total;
  const left = Math.pow(1.0 - 1.0 / <f64>(threads << 1), <f64>chunk);
  return <i64>(<f64>total * (1.0 - left));
}

/** Chunk `chunk` of `chunks` of a row phase: gather (pairs) or combine (rows). */
function rowChunk(ctl: usize, phase: i32, chunk: i32, chunks: i32): void {
  const d = slot(ctl, CTL_D);
  const k = slot(ctl, CTL_K);
  const batch = slot(ctl, CTL_BATCH);
  if (phase == PHASE_GATHER) {
    const pairs = batch * k;
    const p0 = <i32>(<i64>pairs * chunk / chunks);
    const p1 = <i32>(<i64>pairs * (chunk + 1) / chunks);
    gatherRows(<usize>slot(ctl, CTL_X), d, k, <usize>slot(ctl, CTL_PAIR_OF), p0, p1 - p0, <usize>slot(ctl, CTL_GATHERED));
  } else {
    const r0 = <i32>(<i64>batch * chunk / chunks);
    const r1 = <i32>(<i64>batch * (chunk + 1) / chunks);
    combineRows(<usize>slot(ctl, CTL_OUT), d, r0, r1, k, <usize>slot(ctl, CTL_POS_OF), <usize>slot(ctl, CTL_TOPK_GATES), <usize>slot(ctl, CTL_Y));
  }
}

/**
 * Thread `thread`'s part of the run described by the control block. JOB_EXPERTS: claims and runs
 * chunks of each phase of the expert pass in turn; JOB_GATING: the gating GEMM's row chunks. The
 * caller (thread 0) returns when every chunk of the last phase is done.
 */
export function poolThread(ctl: usize, thread: i32): void {
  const threads = slot(ctl, CTL_THREADS);
  const run = slot(ctl, CTL_RUN);
  const mayBlock = thread != 0 || slot(ctl, CTL_CALLER_MAY_BLOCK) != 0;
  const job = slot(ctl, CTL_JOB);
  if (job == JOB_GATING) {
    gatingThread(ctl, thread, threads, run, mayBlock);
    return;
  }
  if (job == JOB_BACKWARD) { // training: assembly/backward-threads.ts
    backwardThread(ctl, thread, threads, run, mayBlock);
    return;
  }
  if (job == JOB_STEP) {
    stepThread(ctl, thread, threads, run, mayBlock);
    return;
  }
  for (let phase = PHASE_GATHER; phase <= PHASE_COMBINE; phase++) {
    const gemm = phase == PHASE_UP || phase == PHASE_DOWN;
    const chunks = gemm ? threads * GEMM_CHUNKS_PER_THREAD : threads;
    const base = run * chunks;
    const end = base + chunks;
    for (let c = claim(ctl, phase, end); c >= 0; c = claim(ctl, phase, end)) {
      if (gemm) gemmChunk(ctl, phase, c - base, chunks);
      else rowChunk(ctl, phase, c - base, chunks);
      finish(ctl, phase, end);
    }
    // the next phase reads what every chunk of this one wrote; workers need not wait for the last
    if (phase < PHASE_COMBINE || thread == 0) waitFor(ctl, ctl + (<usize>(CTL_FINISHED + phase) << 2), end, mayBlock);
  }
}

/**
 * Thread `thread`'s part of a JOB_GATING run: the gating GEMM (logits = x · [W_g | W_noise] panels,
 * src/cpu/engine.ts gate) in row chunks of whole 4-row tiles. Every logit is one dot product
 * summed in k order whichever tile computes it, so any split gives the single thread's bits.
 */
function gatingThread(ctl: usize, thread: i32, threads: i32, run: i32, mayBlock: bool): void {
  const d = slot(ctl, CTL_D);
  const batch = slot(ctl, CTL_BATCH);
  const x = <usize>slot(ctl, CTL_X);
  const logits = <usize>slot(ctl, CTL_LOGITS);
  const ldl = slot(ctl, CTL_LDL);
  const chunks = threads * GATING_CHUNKS_PER_THREAD;
  const base = run * chunks;
  const end = base + chunks;
  for (let c = claim(ctl, PHASE_GATING, end); c >= 0; c = claim(ctl, PHASE_GATING, end)) {
    const r0 = <i32>(<i64>batch * (c - base) / chunks) & ~3;
    const r1 = c + 1 == end ? batch : <i32>(<i64>batch * (c - base + 1) / chunks) & ~3;
    if (r1 > r0) {
      gemmPanels(x + <usize>r0 * d * 4, d, r1 - r0, d, <usize>slot(ctl, CTL_GATE_W), slot(ctl, CTL_PANELS), d,
        logits + <usize>r0 * ldl * 4, ldl, 0);
    }
    finish(ctl, PHASE_GATING, end);
  }
  if (thread == 0) waitFor(ctl, ctl + (<usize>(CTL_FINISHED + PHASE_GATING) << 2), end, mayBlock);
}
