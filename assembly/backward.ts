// The backward pass of the layer: gradients of J = Σ y·dy + L_importance + L_load with the
// gating noise held fixed (test/fixtures/vectors/README.md, "How the gradients flow"; the paper's
// gating is trained by plain back-propagation through G(x), Shazeer et al. 2017 §2.1, and through
// the smooth load estimator of appendix A).
//
// It runs on what a training-mode forward left in memory (see src/cpu/engine.ts, Scratch) and
// consumes part of it: the expert outputs become gate·dy, the activations dact, the
// pre-activations dpre and the gathered rows dgathered, each in place.
//
// Gradients are written in the packed layout of the weights they belong to (assembly/gemm.ts,
// packPanelsB), so an optimizer step is one elementwise pass over weights and gradients together.
import { madd } from "./gemm";
import { verf, vexp } from "./vmath";
import { KIND_RELU, KIND_SWIGLU } from "../src/abi";
import { CV_EPSILON, lastVariance, meanAndVariance } from "./losses";

const INV_SQRT_2PI: f64 = 0.3989422804014327;

// @ts-ignore: decorator
@inline
function roundUp8(v: i32): i32 {
  return (v + 7) & ~7;
}

// @ts-ignore: decorator
@inline
function hsum(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

// ---- GEMM variants on the packed panels -------------------------------------------------------

/**
 * Packed C = Aᵀ·B, the weight-gradient GEMM: C[kk, c] = Σ_i A[i, kk] · B[i, c].
 * A: [m, kRows] (row stride lda); B: [m, 8·panels] (row stride ldb).
 * C is written in packPanelsB's layout for a [kPad, 8·panels] matrix: panel p at c + p·kPad·32
 * bytes, rows kRows..kPad zero. With m = 0, C is all zeros.
 * A 4×8 tile of C lives in 8 v128 accumulators while the m rows stream past (as gemmPanels).
 */
export function gemmAtB(a: usize, lda: i32, m: i32, kRows: i32, b: usize, ldb: i32, panels: i32, kPad: i32, c: usize): void {
  const rowA = <usize>lda << 2;
  const rowB = <usize>ldb << 2;
  const panelBytes = <usize>kPad << 5;
  for (let p = 0; p < panels; p++) {
    const bCol = b + (<usize>p << 5);
    const panel = c + <usize>p * panelBytes;
    let kk = 0;
    for (; kk + 4 <= kRows; kk += 4) {
      let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
      let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
      let ap = a + (<usize>kk << 2);
      let bp = bCol;
      for (let i = 0; i < m; i++) {
        const b0 = v128.load(bp);
        const b1 = v128.load(bp, 16);
        const x0 = v128.load32_splat(ap);
        const x1 = v128.load32_splat(ap, 4);
        c00 = madd(x0, b0, c00);
        c01 = madd(x0, b1, c01);
        const x2 = v128.load32_splat(ap, 8);
        c10 = madd(x1, b0, c10);
        c11 = madd(x1, b1, c11);
        const x3 = v128.load32_splat(ap, 12);
        c20 = madd(x2, b0, c20);
        c21 = madd(x2, b1, c21);
        c30 = madd(x3, b0, c30);
        c31 = madd(x3, b1, c31);
        ap += rowA;
        bp += rowB;
      }
      const o = panel + (<usize>kk << 5);
      v128.store(o, c00); v128.store(o, c01, 16);
      v128.store(o, c10, 32); v128.store(o, c11, 48);
      v128.store(o, c20, 64); v128.store(o, c21, 80);
      v128.store(o, c30, 96); v128.store(o, c31, 112);
    }
    for (; kk < kRows; kk++) {
      let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
      let ap = a + (<usize>kk << 2);
      let bp = bCol;
      for (let i = 0; i < m; i++) {
        const x0 = v128.load32_splat(ap);
        c00 = madd(x0, v128.load(bp), c00);
        c01 = madd(x0, v128.load(bp, 16), c01);
        ap += rowA;
        bp += rowB;
      }
      const o = panel + (<usize>kk << 5);
      v128.store(o, c00); v128.store(o, c01, 16);
    }
    if (kRows < kPad) memory.fill(panel + (<usize>kRows << 5), 0, <usize>(kPad - kRows) << 5);
  }
}

/**
 * C = A·Bᵀ against a packed B, the input-gradient GEMM: C[i, r] = Σ_c A[i, c] · B[r, c] for
 * r < rows, where B [kPad, 8·panels] is in packPanelsB's layout (row r of panel p holds
 * B[r, 8p..8p+8]). A: [m, 8·panels] (row stride lda); C: [m, rows] (row stride ldc).
 * A 4×2 tile of C is 8 v128 accumulators of lane-wise partial sums, reduced once at the end.
 * Two rows of B at a time meet every row of A (which stays in cache), so B is read once.
 */
export function gemmABt(a: usize, lda: i32, m: i32, bp: usize, panels: i32, kPad: i32, rows: i32, c: usize, ldc: i32): void {
  const rowA = <usize>lda << 2;
  const rowC = <usize>ldc << 2;
  const panelBytes = <usize>kPad << 5;
  let r = 0;
  for (; r + 2 <= rows; r += 2) {
    const w = bp + (<usize>r << 5);
    const col = c + (<usize>r << 2);
    let i = 0;
    for (; i + 4 <= m; i += 4) abtTile(a + <usize>i * rowA, rowA, 4, w, panels, panelBytes, col + <usize>i * rowC, rowC, true);
    if (i < m) abtTile(a + <usize>i * rowA, rowA, m - i, w, panels, panelBytes, col + <usize>i * rowC, rowC, true);
  }
  if (r < rows) {
    const w = bp + (<usize>r << 5);
    const col = c + (<usize>r << 2);
    let i = 0;
    for (; i + 4 <= m; i += 4) abtTile(a + <usize>i * rowA, rowA, 4, w, panels, panelBytes, col + <usize>i * rowC, rowC, false);
    if (i < m) abtTile(a + <usize>i * rowA, rowA, m - i, w, panels, panelBytes, col + <usize>i * rowC, rowC, false);
  }
}

/**
 * C[0..t, 0..2] (or [0..t, 0] when !two) of gemmABt for t ≤ 4 rows of A at a, B rows at w. Rows
 * past t alias the last one and are not stored. Each element is one chain of madds over the
 * panels, the same whatever the tile.
 */
// @ts-ignore: decorator
@inline
function abtTile(a0: usize, rowA: usize, t: i32, w: usize, panels: i32, panelBytes: usize, col: usize, rowC: usize, two: bool): void {
  const a1 = t > 1 ? a0 + rowA : a0;
  const a2 = t > 2 ? a1 + rowA : a1;
  const a3 = t > 3 ? a2 + rowA : a2;
  let s00 = f32x4.splat(0), s01 = f32x4.splat(0), s10 = f32x4.splat(0), s11 = f32x4.splat(0);
  let s20 = f32x4.splat(0), s21 = f32x4.splat(0), s30 = f32x4.splat(0), s31 = f32x4.splat(0);
  let off: usize = 0;
  if (two) {
    for (let p = 0; p < panels; p++) {
      const w0l = v128.load(w), w0h = v128.load(w, 16), w1l = v128.load(w, 32), w1h = v128.load(w, 48);
      let lo = v128.load(a0 + off), hi = v128.load(a0 + off, 16);
      s00 = madd(hi, w0h, madd(lo, w0l, s00));
      s01 = madd(hi, w1h, madd(lo, w1l, s01));
      lo = v128.load(a1 + off); hi = v128.load(a1 + off, 16);
      s10 = madd(hi, w0h, madd(lo, w0l, s10));
      s11 = madd(hi, w1h, madd(lo, w1l, s11));
      lo = v128.load(a2 + off); hi = v128.load(a2 + off, 16);
      s20 = madd(hi, w0h, madd(lo, w0l, s20));
      s21 = madd(hi, w1h, madd(lo, w1l, s21));
      lo = v128.load(a3 + off); hi = v128.load(a3 + off, 16);
      s30 = madd(hi, w0h, madd(lo, w0l, s30));
      s31 = madd(hi, w1h, madd(lo, w1l, s31));
      w += panelBytes;
      off += 32;
    }
  } else {
    for (let p = 0; p < panels; p++) {
      const wl = v128.load(w), wh = v128.load(w, 16);
      s00 = madd(v128.load(a0 + off, 16), wh, madd(v128.load(a0 + off), wl, s00));
      s10 = madd(v128.load(a1 + off, 16), wh, madd(v128.load(a1 + off), wl, s10));
      s20 = madd(v128.load(a2 + off, 16), wh, madd(v128.load(a2 + off), wl, s20));
      s30 = madd(v128.load(a3 + off, 16), wh, madd(v128.load(a3 + off), wl, s30));
      w += panelBytes;
      off += 32;
    }
  }
  store<f32>(col, hsum(s00));
  if (two) store<f32>(col, hsum(s01), 4);
  if (t > 1) {
    store<f32>(col + rowC, hsum(s10));
    if (two) store<f32>(col + rowC, hsum(s11), 4);
  }
  if (t > 2) {
    store<f32>(col + 2 * rowC, hsum(s20));
    if (two) store<f32>(col + 2 * rowC, hsum(s21), 4);
  }
  if (t > 3) {
    store<f32>(col + 3 * rowC, hsum(s30));
    if (two) store<f32>(col + 3 * rowC, hsum(s31), 4);
  }
}

/** out[j] = Σ_i A[i, j] for j < cols (cols % 4 == 0; A row stride lda). The bias gradients. */
export function columnSums(a: usize, lda: i32, m: i32, cols: i32, out: usize): void {
  const rowA = <usize>lda << 2;
  for (let j = 0; j < cols; j += 4) {
    let s = f32x4.splat(0);
    let ap = a + (<usize>j << 2);
    for (let i = 0; i < m; i++) {
      s = f32x4.add(s, v128.load(ap));
      ap += rowA;
    }
    v128.store(out + (<usize>j << 2), s);
  }
}

// ---- experts ----------------------------------------------------------------------------------

/**
 * Per (row, slot) pair p in expert order (plan of buildPlan), with q = pairOf[p], row = q / k:
 *   dGates[q] = ⟨E(x_row), dy_row⟩                  the gate's share of dJ/dG (before the losses)
 *   out[p]    = topkGates[q] · dy_row               overwritten: the expert's upstream gradient
 * out: [B·k, dp] expert outputs (columns d..dp are written zero); dy: [B, d].
 */
export function expertOutputGrads(out: usize, d: i32, dy: usize, b: i32, k: i32, pairOf: usize, topkGates: usize, dGates: usize): void {
  const pairs = b * k;
  for (let p = 0; p < pairs; p++) outputGradPair(out, d, dy, k, p, load<i32>(pairOf + (<usize>p << 2)), topkGates, dGates);
}

/** expertOutputGrads for the one pair q at position p (the threaded pass runs it by rows). */
// @ts-ignore: decorator
@inline
export function outputGradPair(out: usize, d: i32, dy: usize, k: i32, p: i32, q: i32, topkGates: usize, dGates: usize): void {
  const dp = roundUp8(d);
  const d4 = d & ~3;
  const dyRow = dy + ((<usize>(q / k) * <usize>d) << 2);
  const o = out + ((<usize>p * <usize>dp) << 2);
  const g = load<f32>(topkGates + (<usize>q << 2));
  const gv = f32x4.splat(g);
  let acc = f32x4.splat(0);
  let j = 0;
  for (; j < d4; j += 4) {
    const off = <usize>j << 2;
    const dyv = v128.load(dyRow + off);
    acc = madd(v128.load(o + off), dyv, acc);
    v128.store(o + off, f32x4.mul(gv, dyv));
  }
  let dot = hsum(acc);
  for (; j < d; j++) {
    const off = <usize>j << 2;
    const dyv = load<f32>(dyRow + off);
    dot += load<f32>(o + off) * dyv;
    store<f32>(o + off, g * dyv);
  }
  for (; j < dp; j++) store<f32>(o + (<usize>j << 2), 0);
  store<f32>(dGates + (<usize>q << 2), dot);
}

/**
 * dpre = dact ⊙ act′(pre), written over pre. pre: [m, hw]; dact: [m, hp].
 *   relu:   act′ = [a > 0]
 *   gelu:   act′ = Φ(a) + a·φ(a)            (exact-erf GELU: d/da a·Φ(a))
 *   swiglu: act = silu(g)·u,  dg = dact·u·σ(g)·(1 + g·(1 − σ(g))),  du = dact·silu(g)
 *           (pre rows are [g(8) u(8)] blocks, as the interleaved panels produce them)
 */
export function activationBackward(kind: i32, pre: usize, dact: usize, m: i32, hp: i32): void {
  if (kind == KIND_SWIGLU) {
    const halves = m * (hp >> 2); // 4-lane halves of the 8-wide blocks
    for (let i = 0; i < halves; i++) swigluBackward4(pre + (<usize>(i >> 1) << 6) + (<usize>(i & 1) << 4), dact + (<usize>i << 4));
    return;
  }
  const vecs = (m * hp) >> 2;
  if (kind == KIND_RELU) {
    for (let i = 0; i < vecs; i++) reluBackward4(pre + (<usize>i << 4), dact + (<usize>i << 4));
  } else {
    for (let i = 0; i < vecs; i++) geluBackward4(pre + (<usize>i << 4), dact + (<usize>i << 4));
  }
}

// One 4-lane group of activationBackward each (the threaded pass runs them by column blocks).

/** pre[0..4] ← dact[0..4] · [pre > 0]. */
// @ts-ignore: decorator
@inline
export function reluBackward4(pre: usize, dact: usize): void {
  v128.store(pre, v128.and(v128.load(dact), f32x4.gt(v128.load(pre), f32x4.splat(0))));
}

/** pre[0..4] ← dact[0..4] · (Φ(pre) + pre·φ(pre)). */
// @ts-ignore: decorator
@inline
export function geluBackward4(pre: usize, dact: usize): void {
  const one = f32x4.splat(1.0);
  const half = f32x4.splat(0.5);
  const x = v128.load(pre);
  const cdf = f32x4.mul(half, f32x4.add(one, verf(f32x4.mul(x, f32x4.splat(0.7071067811865476)))));
  const pdf = f32x4.mul(f32x4.splat(<f32>INV_SQRT_2PI), vexp(f32x4.mul(f32x4.neg(half), f32x4.mul(x, x))));
  v128.store(pre, f32x4.mul(v128.load(dact), f32x4.add(cdf, f32x4.mul(x, pdf))));
}

/** Gate lanes gp[0..4] and their up lanes gp[8..12] ← dg, du for dact[0..4]. */
// @ts-ignore: decorator
@inline
export function swigluBackward4(gp: usize, dact: usize): void {
  const one = f32x4.splat(1.0);
  const g = v128.load(gp);
  const u = v128.load(gp, 32);
  const da = v128.load(dact);
  const sig = f32x4.div(one, f32x4.add(one, vexp(f32x4.neg(g))));
  const silu = f32x4.mul(g, sig);
  const dsilu = f32x4.mul(sig, f32x4.add(one, f32x4.mul(g, f32x4.sub(one, sig))));
  v128.store(gp, f32x4.mul(f32x4.mul(da, u), dsilu));
  v128.store(gp, f32x4.mul(da, silu), 32);
}

/**
 * Weight and input gradients of experts [eBegin, eEnd) on their gathered rows (layouts as
 * expertsForward). Per expert e with m rows (the gdy rows are out's, from expertOutputGrads):
 *   dW2 = actᵀ·gdy,  db2 = Σ gdy,  dact = gdy·W2ᵀ        (dact over act)
 *   dpre = dact ⊙ act′(pre)                               (over pre)
 *   dW1 = gatheredᵀ·dpre,  db1 = Σ dpre,  dgathered = dpre·W1ᵀ   (over gathered)
 * dw1, db1, dw2, db2 are packed like w1, b1, w2, b2 (db1, db2 = 0 for swiglu). An expert no row
 * chose gets exact zeros and no arithmetic.
 */
export function expertsBackward(
  kind: i32, d: i32, h: i32, eBegin: i32, eEnd: i32,
  w1: usize, w2: usize, expertOffsets: usize, gathered: usize, pre: usize, act: usize, gdy: usize,
  dw1: usize, db1: usize, dw2: usize, db2: usize,
): void {
  const hp = roundUp8(h);
  const dp = roundUp8(d);
  const hw = kind == KIND_SWIGLU ? hp << 1 : hp;
  const w1Bytes = <usize>d * <usize>hw << 2;
  const w2Bytes = <usize>hp * <usize>dp << 2;
  const hasBias = kind != KIND_SWIGLU;
  for (let e = eBegin; e < eEnd; e++) {
    const first = load<i32>(expertOffsets + (<usize>e << 2));
    const m = load<i32>(expertOffsets + (<usize>(e + 1) << 2)) - first;
    const dw1E = dw1 + <usize>e * w1Bytes;
    const dw2E = dw2 + <usize>e * w2Bytes;
    const db1E = db1 + ((<usize>e * <usize>hp) << 2);
    const db2E = db2 + ((<usize>e * <usize>dp) << 2);
    if (m == 0) {
      memory.fill(dw1E, 0, w1Bytes);
      memory.fill(dw2E, 0, w2Bytes);
      if (hasBias) {
        memory.fill(db1E, 0, <usize>hp << 2);
        memory.fill(db2E, 0, <usize>dp << 2);
      }
      continue;
    }
    const gatheredE = gathered + ((<usize>first * <usize>d) << 2);
    const preE = pre + ((<usize>first * <usize>hw) << 2);
    const actE = act + ((<usize>first * <usize>hp) << 2);
    const gdyE = gdy + ((<usize>first * <usize>dp) << 2);
    gemmAtB(actE, hp, m, hp, gdyE, dp, dp >> 3, hp, dw2E);
    if (hasBias) columnSums(gdyE, dp, m, dp, db2E);
    gemmABt(gdyE, dp, m, w2 + <usize>e * w2Bytes, dp >> 3, hp, hp, actE, hp);
    activationBackward(kind, preE, actE, m, hp);
    gemmAtB(gatheredE, d, m, d, preE, hw, hw >> 3, d, dw1E);
    if (hasBias) columnSums(preE, hw, m, hp, db1E);
    gemmABt(preE, hw, m, w1 + <usize>e * w1Bytes, hw >> 3, d, d, gatheredE, d);
  }
}

/** dx[pairOf[p] / k] += src[p] for p < B·k: each row's input gradient from its k experts. */
export function scatterAddRows(src: usize, d: i32, b: i32, k: i32, pairOf: usize, dx: usize): void {
  const rowBytes = <usize>d << 2;
  const d4 = d & ~3;
  const pairs = b * k;
  for (let p = 0; p < pairs; p++) {
    const s = src + <usize>p * rowBytes;
    const o = dx + <usize>(load<i32>(pairOf + (<usize>p << 2)) / k) * rowBytes;
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

// ---- gating -----------------------------------------------------------------------------------

/**
 * In place, v[i] ← weight · ∂CV²(v)/∂v_i for v [n] f64, with CV² = var/(mean² + ε) and the
 * population variance: ∂CV²/∂v_i = 2(v_i − mean)/(n·(mean² + ε)) − 2·mean·var/(n·(mean² + ε)²)
 * (∂var/∂v_i = 2(v_i − mean)/n because the deviations sum to zero).
 */
export function cvSquaredGrad(v: usize, n: i32, weight: f64): void {
  const mean = meanAndVariance(v, n);
  const variance = lastVariance();
  const denom = mean * mean + CV_EPSILON;
  const a = 2.0 / (<f64>n * denom);
  const common = 2.0 * mean * variance / (<f64>n * denom * denom);
  for (let i = 0; i < n; i++) {
    const at = v + (<usize>i << 3);
    store<f64>(at, weight * (a * (load<f64>(at) - mean) - common));
  }
}

/**
 * Gradient of J with respect to the gating GEMM's output, dLogits [B, ldl]: dclean in columns
 * 0..n, draw in n..2n when noisy, zero up to ldl.
 * Inputs: the forward's logits (clean, raw), std, H, noise (all [B, n] but logits), topkIdx,
 * topkGates, nextIdx; dGates [B·k] = ⟨E(x), dy⟩ (expertOutputGrads); importanceGrad and
 * loadGrad [n] f64 = w·CV²′ (cvSquaredGrad; loadGrad is read in prob mode only).
 *   dG_s   = dGates + importanceGrad[e_s]                      dJ/dG over the k selected
 *   dH_e_s = g_s·(dG_s − Σ_t g_t·dG_t)                        softmax backward
 *   prob mode, per i (z = (clean_i − thr_i)/std_i, dz = loadGrad_i·φ(z)):
 *     dclean_i += dz/std_i,  dstd_i −= dz·z/std_i,  dH[threshold expert of i] −= dz/std_i
 *     (the threshold is H of the (k+1)-th expert when i is in the top k, else of the k-th)
 *   dclean += dH;  noisy: dstd += dH·noise, draw = dstd·σ(raw)   (softplus′ = sigmoid)
 * Every dH is added to both accumulators at once (dclean += δ, dstd += δ·noise), so one pass
 * suffices. Arithmetic in f64, like the forward statistics in losses.ts.
 */
export function gatingBackward(
  probMode: i32, noisy: i32, b: i32, n: i32, k: i32,
  logits: usize, ldl: i32, std: usize, h: usize, noise: usize,
  topkIdx: usize, topkGates: usize, nextIdx: usize, dGates: usize,
  importanceGrad: usize, loadGrad: usize, dLogits: usize,
): void {
  for (let r = 0; r < b; r++) {
    const dClean = dLogits + ((<usize>r * <usize>ldl) << 2);
    const dStd = dClean + (<usize>n << 2); // dstd accumulates here, then becomes draw
    const rowN = (<usize>r * <usize>n) << 2;
    const noiseRow = noise + rowN;
    memory.fill(dClean, 0, <usize>ldl << 2);

    // softmax backward over the k selected logits
    const o = (<usize>r * <usize>k) << 2;
    let weighted: f64 = 0;
    for (let s = 0; s < k; s++) {
      const at = o + (<usize>s << 2);
      const e = <usize>load<i32>(topkIdx + at);
      const dG = <f64>load<f32>(dGates + at) + load<f64>(importanceGrad + (e << 3));
      weighted += <f64>load<f32>(topkGates + at) * dG;
    }
    for (let s = 0; s < k; s++) {
      const at = o + (<usize>s << 2);
      const e = <usize>load<i32>(topkIdx + at);
      const g = <f64>load<f32>(topkGates + at);
      const dG = <f64>load<f32>(dGates + at) + load<f64>(importanceGrad + (e << 3));
      addToH(dClean, dStd, noiseRow, noisy, e, g * (dG - weighted));
    }

    if (probMode) {
      const hRow = h + rowN;
      const sRow = std + rowN;
      const cRow = logits + ((<usize>r * <usize>ldl) << 2);
      const nextE = <usize>load<i32>(nextIdx + (<usize>r << 2));
      const kthE = <usize>load<i32>(topkIdx + o + (<usize>(k - 1) << 2));
      const thrIn = <f64>load<f32>(hRow + (nextE << 2));
      const thrOut = <f64>load<f32>(hRow + (kthE << 2));
      for (let i = 0; i < n; i++) {
        const off = <usize>i << 2;
        const inTop = <f64>load<f32>(hRow + off) > thrIn;
        const thr = inTop ? thrIn : thrOut;
        const sd = <f64>load<f32>(sRow + off);
        const z = (<f64>load<f32>(cRow + off) - thr) / sd;
        const dz = load<f64>(loadGrad + (<usize>i << 3)) * INV_SQRT_2PI * Math.exp(-0.5 * z * z);
        store<f32>(dClean + off, <f32>(<f64>load<f32>(dClean + off) + dz / sd));
        store<f32>(dStd + off, <f32>(<f64>load<f32>(dStd + off) - dz * z / sd));
        addToH(dClean, dStd, noiseRow, noisy, inTop ? nextE : kthE, -dz / sd);
      }
    }

    if (noisy) {
      const rawRow = logits + ((<usize>r * <usize>ldl + <usize>n) << 2);
      for (let i = 0; i < n; i++) {
        const off = <usize>i << 2;
        const sig = 1.0 / (1.0 + Math.exp(-<f64>load<f32>(rawRow + off)));
        store<f32>(dStd + off, <f32>(<f64>load<f32>(dStd + off) * sig));
      }
    }
  }
}

// dH[e] += delta, pushed on at once: H = clean + noise·std, so dclean[e] += delta and (noisy)
// dstd[e] += delta·noise[e].
// @ts-ignore: decorator
@inline
function addToH(dClean: usize, dStd: usize, noiseRow: usize, noisy: i32, e: usize, delta: f64): void {
  const off = e << 2;
  store<f32>(dClean + off, <f32>(<f64>load<f32>(dClean + off) + delta));
  if (noisy) store<f32>(dStd + off, <f32>(<f64>load<f32>(dStd + off) + delta * <f64>load<f32>(noiseRow + off)));
}
