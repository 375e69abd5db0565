// The backward pass (JOB_BACKWARD) and the optimizer step (JOB_STEP) on the worker pool, with the
// claiming machinery of the forward's expert pass (assembly/experts.ts: claim, finish, waitFor,
// guided chunk sizes). Every output element is computed by one thread, by the same kernel code and
// in the same order as the single-threaded pass (assembly/backward.ts, assembly/optim.ts), so the
// gradients and the weights have the same bits for any number of threads and any claiming order:
// the GEMM kernels compute each element of C on its own (tiles only group elements), so a call on
// a subset of C's panels, rows or columns gives those elements' bits.
//
// Phases of a backward run, each ending at a barrier because the next reads what it wrote:
//   ROWS     by batch rows: each pair's dGate = ⟨out, dy⟩ and out ← gate·dy, then gatingBackward
//            of the row (dLogits).
//   W2       dW2 = actᵀ·gdy and db2 by (expert, 8-column panel); d[W_g | W_noise] = xᵀ·dLogits
//            by panel; dx = dLogits·[W_g | W_noise]ᵀ by 8-column block of dx.
//   DACT     dact = gdy·W2ᵀ over act, then dpre = dact ⊙ act′(pre) over pre, by (expert, 8 hidden
//            columns) (after W2: dW2 read act).
//   W1       dW1 = gatheredᵀ·dpre and db1 by (expert, panel).
//   DX       dgathered = dpre·W1ᵀ over gathered by (expert, 8-column block) (after W1: it read gathered).
//   SCATTER  by batch rows: dx[row] += dgathered of its k pairs, in expert order as scatterAddRows.
// The GEMM phases' chunks are contiguous ranges of estimated cost over their items, shrinking as
// the phase goes (gemmChunkStart), like the forward's.
import { claim, finish, gemmChunkStart, waitFor } from "./experts";
import {
  columnSums, gatingBackward, gemmABt, gemmAtB, geluBackward4, outputGradPair, reluBackward4, swigluBackward4,
} from "./backward";
import { sgdStep, adamStep } from "./optim";
import { routedGatingBackwardRows } from "./routing-backward";
import {
  KIND_RELU, KIND_SWIGLU, CTL_CLAIMED, CTL_FINISHED, COUNTER_BACKWARD, COUNTER_STEP,
  CTL_KIND, CTL_D, CTL_H, CTL_N, CTL_K, CTL_BATCH, CTL_X, CTL_W1, CTL_B1, CTL_W2, CTL_B2, CTL_EXPERT_OFFSETS,
  CTL_POS_OF, CTL_TOPK_GATES, CTL_GATHERED, CTL_PRE, CTL_ACT, CTL_OUT, CTL_GATE_W, CTL_LOGITS, CTL_LDL,
  CTL_DY, CTL_DX, CTL_DGATES, CTL_DLOGITS, CTL_STD, CTL_NOISY_H, CTL_NOISE, CTL_TOPK_IDX, CTL_NEXT_IDX,
  CTL_IMPORTANCE_GRAD, CTL_LOAD_GRAD, CTL_GATING_MODE, CTL_GRAD_OFFSET,
  CTL_STEP_W, CTL_STEP_LEN, CTL_ADAM_M, CTL_ADAM_V, CTL_OPTIMIZER, CTL_LR, CTL_BETA1, CTL_BETA2, CTL_EPS, CTL_BC1, CTL_BC2,
} from "../src/abi";

const PHASE_ROWS = 0;
const PHASE_W2 = 1;
const PHASE_DACT = 2;
const PHASE_W1 = 3;
const PHASE_DX = 4;
const PHASE_SCATTER = 5;
/** Chunks per thread: row phases (uniform work) and GEMM phases (guided, as the forward's). */
const ROW_CHUNKS_PER_THREAD = 2;
const GEMM_CHUNKS_PER_THREAD = 8;
/** The forward's cost model (assembly/experts.ts): streaming a block ≈ 3 rows of arithmetic on it. */
const PANEL_COST_ROWS: i64 = 3;
/** Chunks per thread of an optimizer step (memory-bound; small, so a descheduled thread holds little). */
const STEP_CHUNKS_PER_THREAD = 8;

// @ts-ignore: decorator
@inline
function slot(ctl: usize, index: i32): i32 {
  return load<i32>(ctl + (<usize>index << 2));
}

// @ts-ignore: decorator
@inline
function ptr(ctl: usize, index: i32): usize {
  return <usize>load<i32>(ctl + (<usize>index << 2));
}

// @ts-ignore: decorator
@inline
function roundUp8(v: i32): i32 {
  return (v + 7) & ~7;
}

function chunksOf(phase: i32, threads: i32): i32 {
  return phase == PHASE_ROWS || phase == PHASE_SCATTER ? threads * ROW_CHUNKS_PER_THREAD : threads * GEMM_CHUNKS_PER_THREAD;
}

/**
 * Thread `thread`'s part of a JOB_BACKWARD run: the phases in turn, each's chunks claimed from one
 * counter (run r's claims of phase ph follow those of every phase before, of every run before).
 */
export function backwardThread(ctl: usize, thread: i32, threads: i32, run: i32, mayBlock: bool): void {
  let perRun = 0;
  for (let phase = PHASE_ROWS; phase <= PHASE_SCATTER; phase++) perRun += chunksOf(phase, threads);
  let base = run * perRun;
  const finished = ctl + (<usize>(CTL_FINISHED + COUNTER_BACKWARD) << 2);
  for (let phase = PHASE_ROWS; phase <= PHASE_SCATTER; phase++) {
    const chunks = chunksOf(phase, threads);
    const end = base + chunks;
    for (let c = claim(ctl, COUNTER_BACKWARD, end); c >= 0; c = claim(ctl, COUNTER_BACKWARD, end)) {
      // a claim below this phase's base cannot happen: every chunk before it finished at the barrier
      const chunk = c - base;
      if (phase == PHASE_ROWS || phase == PHASE_SCATTER) {
        const batch = slot(ctl, CTL_BATCH);
        const r0 = <i32>(<i64>batch * chunk / chunks);
        const r1 = <i32>(<i64>batch * (chunk + 1) / chunks);
        if (r1 > r0) {
          if (phase == PHASE_ROWS) gradRows(ctl, r0, r1);
          else scatterRows(ctl, r0, r1);
        }
      } else {
        const total = gemmPhase(ctl, phase, 0, 0, false);
        gemmPhase(ctl, phase, gemmChunkStart(total, chunk, chunks, threads), gemmChunkStart(total, chunk + 1, chunks, threads), true);
      }
      finish(ctl, COUNTER_BACKWARD, end);
    }
    // the next phase reads what every chunk of this one wrote; workers need not wait for the last
    if (phase < PHASE_SCATTER || thread == 0) waitFor(ctl, finished, end, mayBlock);
    base = end;
  }
}

/** Rows [r0, r1): every pair's dGate and gate·dy (expertOutputGrads), then their dLogits (gatingBackward). */
function gradRows(ctl: usize, r0: i32, r1: i32): void {
  const d = slot(ctl, CTL_D);
  const n = slot(ctl, CTL_N);
  const k = slot(ctl, CTL_K);
  const ldl = slot(ctl, CTL_LDL);
  const out = ptr(ctl, CTL_OUT);
  const dy = ptr(ctl, CTL_DY);
  const posOf = ptr(ctl, CTL_POS_OF);
  const topkGates = ptr(ctl, CTL_TOPK_GATES);
  const dGates = ptr(ctl, CTL_DGATES);
  for (let q = r0 * k; q < r1 * k; q++) outputGradPair(out, d, dy, k, load<i32>(posOf + (<usize>q << 2)), q, topkGates, dGates);
  const mode = slot(ctl, CTL_GATING_MODE);
  // the routers of assembly/routing.ts and shared experts: bits 6 and up address their routing
  // block (assembly/routing-backward.ts), and CTL_N, CTL_K count the shared slices and slots too
  const block = <usize>(mode & ~63);
  if (block != 0) {
    routedGatingBackwardRows(
      block, mode & 1, (mode >> 1) & 1, r0, r1, ptr(ctl, CTL_LOGITS), ldl, ptr(ctl, CTL_STD), ptr(ctl, CTL_NOISY_H), ptr(ctl, CTL_NOISE),
      ptr(ctl, CTL_TOPK_IDX), topkGates, ptr(ctl, CTL_NEXT_IDX), dGates, ptr(ctl, CTL_IMPORTANCE_GRAD), ptr(ctl, CTL_LOAD_GRAD), ptr(ctl, CTL_DLOGITS),
    );
    return;
  }
  const rowL = (<usize>r0 * <usize>ldl) << 2;
  const rowN = (<usize>r0 * <usize>n) << 2;
  const rowK = (<usize>r0 * <usize>k) << 2;
  gatingBackward(
    mode & 1, (mode >> 1) & 1, r1 - r0, n, k,
    ptr(ctl, CTL_LOGITS) + rowL, ldl, ptr(ctl, CTL_STD) + rowN, ptr(ctl, CTL_NOISY_H) + rowN, ptr(ctl, CTL_NOISE) + rowN,
    ptr(ctl, CTL_TOPK_IDX) + rowK, topkGates + rowK, ptr(ctl, CTL_NEXT_IDX) + (<usize>r0 << 2), dGates + rowK,
    ptr(ctl, CTL_IMPORTANCE_GRAD), ptr(ctl, CTL_LOAD_GRAD), ptr(ctl, CTL_DLOGITS) + rowL,
  );
}

/**
 * dx[r] += gathered[p] for rows [r0, r1) and each of their k positions p, smallest p first: the
 * order in which scatterAddRows (which walks p upwards) adds them.
 */
function scatterRows(ctl: usize, r0: i32, r1: i32): void {
  const d = slot(ctl, CTL_D);
  const k = slot(ctl, CTL_K);
  const src = ptr(ctl, CTL_GATHERED);
  const posOf = ptr(ctl, CTL_POS_OF);
  const dx = ptr(ctl, CTL_DX);
  const rowBytes = <usize>d << 2;
  const d4 = d & ~3;
  for (let r = r0; r < r1; r++) {
    const o = dx + <usize>r * rowBytes;
    const slots = posOf + ((<usize>r * <usize>k) << 2);
    let last = -1;
    for (let t = 0; t < k; t++) {
      let p = i32.MAX_VALUE; // the next position after `last` (positions are distinct)
      for (let s = 0; s < k; s++) {
        const q = load<i32>(slots + (<usize>s << 2));
        if (q > last && q < p) p = q;
      }
      last = p;
      const s = src + <usize>p * rowBytes;
      let j = 0;
      for (; j < d4; j += 4) {
        const off = <usize>j << 2;
        v128.store(o + off, f32x4.add(v128.load(o + off), v128.load(s + off)));
      }
      for (; j < d; j++) {
        const off = <usize>j << 2;
        store<f32>(o + off, load<f32>(o + off) + load<f32>(s + off));
      }
    }
  }
}

// The items of a GEMM phase whose cost start lies in [lo, hi): spanFirst .. spanEnd of a segment
// (globals are per thread: each thread has its own instance).
let spanFirst: i32 = 0;
let spanEnd: i32 = 0;

/** Whether a segment of `items` items of `cost` each, starting at `start`, has items in [lo, hi). */
function span(start: i64, items: i32, cost: i64, lo: i64, hi: i64): bool {
  if (items <= 0 || cost <= 0 || hi <= start) return false;
  spanFirst = <i32>min<i64>(<i64>items, lo > start ? (lo - start + cost - 1) / cost : 0);
  spanEnd = <i32>min<i64>(<i64>items, (hi - start + cost - 1) / cost);
  return spanFirst < spanEnd;
}

/**
 * One GEMM phase's items whose cost start lies in [lo, hi) when `exec`; returns the phase's total
 * cost (the same walk, so the totals and the items agree). An item of an m-row GEMM with inner
 * dimension K costs K·(m + PANEL_COST_ROWS).
 */
function gemmPhase(ctl: usize, phase: i32, lo: i64, hi: i64, exec: bool): i64 {
  const kind = slot(ctl, CTL_KIND);
  const d = slot(ctl, CTL_D);
  const hp = roundUp8(slot(ctl, CTL_H));
  const dp = roundUp8(d);
  const hw = kind == KIND_SWIGLU ? hp << 1 : hp;
  const n = slot(ctl, CTL_N);
  const hasBias = kind != KIND_SWIGLU;
  const offsets = ptr(ctl, CTL_EXPERT_OFFSETS);
  const g = ptr(ctl, CTL_GRAD_OFFSET);
  const gathered = ptr(ctl, CTL_GATHERED);
  const pre = ptr(ctl, CTL_PRE);
  const act = ptr(ctl, CTL_ACT);
  const gdy = ptr(ctl, CTL_OUT);
  const w1 = ptr(ctl, CTL_W1);
  const w2 = ptr(ctl, CTL_W2);
  const b1 = ptr(ctl, CTL_B1);
  const b2 = ptr(ctl, CTL_B2);
  const w1Bytes = <usize>d * <usize>hw << 2;
  const w2Bytes = <usize>hp * <usize>dp << 2;
  const dBlocks = (d + 7) >> 3;
  let start: i64 = 0;
  for (let e = 0; e < n; e++) {
    const first = load<i32>(offsets + (<usize>e << 2));
    const m = load<i32>(offsets + (<usize>(e + 1) << 2)) - first;
    const rows = <i64>m + PANEL_COST_ROWS;
    const gatheredE = gathered + ((<usize>first * <usize>d) << 2);
    const preE = pre + ((<usize>first * <usize>hw) << 2);
    const actE = act + ((<usize>first * <usize>hp) << 2);
    const gdyE = gdy + ((<usize>first * <usize>dp) << 2);
    if (phase == PHASE_W2) {
      // every expert: one with no rows gets zeros (gemmAtB and columnSums over m = 0)
      const cost = <i64>hp * rows;
      if (exec && span(start, dp >> 3, cost, lo, hi)) {
        const q0 = spanFirst, q1 = spanEnd;
        const b = gdyE + (<usize>q0 << 5);
        gemmAtB(actE, hp, m, hp, b, dp, q1 - q0, hp, w2 + g + <usize>e * w2Bytes + (<usize>q0 * <usize>hp << 5));
        if (hasBias) columnSums(b, dp, m, (q1 - q0) << 3, b2 + g + ((<usize>e * <usize>dp + (<usize>q0 << 3)) << 2));
      }
      start += <i64>(dp >> 3) * cost;
    } else if (phase == PHASE_W1) {
      const cost = <i64>d * rows;
      if (exec && span(start, hw >> 3, cost, lo, hi)) {
        const p0 = spanFirst, p1 = spanEnd;
        const b = preE + (<usize>p0 << 5);
        gemmAtB(gatheredE, d, m, d, b, hw, p1 - p0, d, w1 + g + <usize>e * w1Bytes + (<usize>p0 * <usize>d << 5));
        if (hasBias) columnSums(b, hw, m, (p1 - p0) << 3, b1 + g + ((<usize>e * <usize>hp + (<usize>p0 << 3)) << 2));
      }
      start += <i64>(hw >> 3) * cost;
    } else if (m > 0) {
      if (phase == PHASE_DACT) {
        const cost = <i64>dp * rows;
        if (exec && span(start, hp >> 3, cost, lo, hi)) {
          const u0 = spanFirst, u1 = spanEnd;
          gemmABt(gdyE, dp, m, w2 + <usize>e * w2Bytes + (<usize>u0 << 8), dp >> 3, hp, (u1 - u0) << 3, actE + (<usize>u0 << 5), hp);
          activationBackwardUnits(kind, preE, hw, actE, hp, m, u0, u1);
        }
        start += <i64>(hp >> 3) * cost;
      } else { // PHASE_DX
        const cost = <i64>hw * rows;
        if (exec && span(start, dBlocks, cost, lo, hi)) {
          const j0 = spanFirst << 3, j1 = min(d, spanEnd << 3);
          gemmABt(preE, hw, m, w1 + <usize>e * w1Bytes + (<usize>j0 << 5), hw >> 3, d, j1 - j0, gatheredE + (<usize>j0 << 2), d);
        }
        start += <i64>dBlocks * cost;
      }
    }
  }
  if (phase == PHASE_W2) {
    // the gating GEMM: d[W_g | W_noise] = xᵀ·dLogits by panel, dx = dLogits·[W_g | W_noise]ᵀ by 8 columns
    const batch = slot(ctl, CTL_BATCH);
    const ldl = slot(ctl, CTL_LDL);
    const dLogits = ptr(ctl, CTL_DLOGITS);
    const gate = ptr(ctl, CTL_GATE_W);
    const rows = <i64>batch + PANEL_COST_ROWS;
    let cost = <i64>d * rows;
    if (exec && span(start, ldl >> 3, cost, lo, hi)) {
      const p0 = spanFirst, p1 = spanEnd;
      gemmAtB(ptr(ctl, CTL_X), d, batch, d, dLogits + (<usize>p0 << 5), ldl, p1 - p0, d, gate + g + (<usize>p0 * <usize>d << 5));
    }
    start += <i64>(ldl >> 3) * cost;
    cost = <i64>ldl * rows;
    if (exec && span(start, dBlocks, cost, lo, hi)) {
      const j0 = spanFirst << 3, j1 = min(d, spanEnd << 3);
      gemmABt(dLogits, ldl, batch, gate + (<usize>j0 << 5), ldl >> 3, d, j1 - j0, ptr(ctl, CTL_DX) + (<usize>j0 << 2), d);
    }
    start += <i64>dBlocks * cost;
  }
  return start;
}

/**
 * activationBackward (assembly/backward.ts) for the hidden-column units [u0, u1) of m rows: pre
 * (row stride hw floats; a swiglu unit is 16 floats [gate(8) up(8)]) ← dpre, from dact (stride hp).
 */
function activationBackwardUnits(kind: i32, pre: usize, hw: i32, dact: usize, hp: i32, m: i32, u0: i32, u1: i32): void {
  const rowPre = <usize>hw << 2;
  const rowAct = <usize>hp << 2;
  for (let r = 0; r < m; r++) {
    const preRow = pre + <usize>r * rowPre;
    const actRow = dact + <usize>r * rowAct;
    for (let u = u0; u < u1; u++) {
      const da = actRow + (<usize>u << 5);
      if (kind == KIND_SWIGLU) {
        const gp = preRow + (<usize>u << 6);
        swigluBackward4(gp, da);
        swigluBackward4(gp + 16, da + 16);
      } else {
        const p = preRow + (<usize>u << 5);
        if (kind == KIND_RELU) {
          reluBackward4(p, da);
          reluBackward4(p + 16, da + 16);
        } else {
          geluBackward4(p, da);
          geluBackward4(p + 16, da + 16);
        }
      }
    }
  }
}

/**
 * Thread `thread`'s part of a JOB_STEP run: sgdStep or adamStep over contiguous ranges of whole
 * 4-float groups (elementwise: any split gives the same bits).
 */
export function stepThread(ctl: usize, thread: i32, threads: i32, run: i32, mayBlock: bool): void {
  const chunks = threads * STEP_CHUNKS_PER_THREAD;
  const base = run * chunks;
  const end = base + chunks;
  for (let c = claim(ctl, COUNTER_STEP, end); c >= 0; c = claim(ctl, COUNTER_STEP, end)) {
    const groups = slot(ctl, CTL_STEP_LEN) >> 2;
    const i0 = <i32>(<i64>groups * (c - base) / chunks) << 2;
    const i1 = <i32>(<i64>groups * (c - base + 1) / chunks) << 2;
    if (i1 > i0) {
      const off = <usize>i0 << 2;
      const w = ptr(ctl, CTL_STEP_W) + off;
      const gr = w + ptr(ctl, CTL_GRAD_OFFSET);
      const lr = load<f32>(ctl + (<usize>CTL_LR << 2));
      if (slot(ctl, CTL_OPTIMIZER) == 0) {
        sgdStep(w, gr, i1 - i0, lr);
      } else {
        adamStep(
          w, gr, ptr(ctl, CTL_ADAM_M) + off, ptr(ctl, CTL_ADAM_V) + off, i1 - i0, lr,
          load<f32>(ctl + (<usize>CTL_BETA1 << 2)), load<f32>(ctl + (<usize>CTL_BETA2 << 2)), load<f32>(ctl + (<usize>CTL_EPS << 2)),
          load<f32>(ctl + (<usize>CTL_BC1 << 2)), load<f32>(ctl + (<usize>CTL_BC2 << 2)),
        );
      }
    }
    finish(ctl, COUNTER_STEP, end);
  }
  if (thread == 0) waitFor(ctl, ctl + (<usize>(CTL_FINISHED + COUNTER_STEP) << 2), end, mayBlock);
}
