// GEMM on packed weight panels: C[M, 8·P] = A[M, K] · B[K, 8·P] (+ bias).
//
// B is packed once, at layer creation, into P column panels of width 8: panel p holds
// B[0..K, 8p..8p+8] as K consecutive rows of 8 floats (two v128), zero-padded past N and past
// the real K. The inner loop therefore streams panels contiguously, and a tile of C (4×8 for many
// rows; 2×16, 1×32 for few and for tails) lives in 8 v128 accumulators (V8 gives wasm 16 xmm registers:
// 8 accumulators + 2 B vectors + 4 A splats fit). A is read row-major, one f32 at a time,
// splatted (v128.load32_splat).

// acc + a·b: fused where the build has relaxed SIMD (one rounding), mul + add otherwise.
// @ts-ignore: decorator
@inline
export function madd(a: v128, b: v128, acc: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return f32x4.relaxed_madd(a, b, acc);
  } else {
    return f32x4.add(acc, f32x4.mul(a, b));
  }
}

/**
 * Packs a row-major [K, N] matrix (row stride ldSrc floats) into ceil(N/8) panels of kPad × 8
 * (kPad ≥ K; rows K..kPad and columns N..8·ceil(N/8) are zero). Panel p goes to panel slot
 * p·panelStep, so two matrices can be interleaved panel by panel (panelStep 2, dst offset by one
 * panel for the second): swiglu packs [gate₀ up₀ gate₁ up₁ …] so one GEMM computes both.
 */
export function packPanelsB(src: usize, k: i32, n: i32, ldSrc: i32, dst: usize, kPad: i32, panelStep: i32): void {
  const panels = (n + 7) >> 3;
  for (let p = 0; p < panels; p++) {
    const panel = dst + (<usize>(p * panelStep) * <usize>kPad * 32);
    const c0 = p << 3;
    const width = min(8, n - c0);
    for (let kk = 0; kk < kPad; kk++) {
      const row = panel + (<usize>kk << 5);
      v128.store(row, i32x4.splat(0));
      v128.store(row, i32x4.splat(0), 16);
      if (kk < k) {
        const s = src + ((<usize>kk * <usize>ldSrc + <usize>c0) << 2);
        for (let j = 0; j < width; j++) store<f32>(row + (<usize>j << 2), load<f32>(s + (<usize>j << 2)));
      }
    }
  }
}

/** Inverse of packPanelsB for the real [K, N] part (used to hand weights back to the caller). */
export function unpackPanelsB(src: usize, k: i32, n: i32, dst: usize, ldDst: i32, kPad: i32, panelStep: i32): void {
  const panels = (n + 7) >> 3;
  for (let p = 0; p < panels; p++) {
    const panel = src + (<usize>(p * panelStep) * <usize>kPad * 32);
    const c0 = p << 3;
    const width = min(8, n - c0);
    for (let kk = 0; kk < k; kk++) {
      const row = panel + (<usize>kk << 5);
      const d = dst + ((<usize>kk * <usize>ldDst + <usize>c0) << 2);
      for (let j = 0; j < width; j++) store<f32>(d + (<usize>j << 2), load<f32>(row + (<usize>j << 2)));
    }
  }
}

// ---- micro-kernels ---------------------------------------------------------------------------
// Each computes an R × 8W tile of C from R rows of A and W adjacent panels (panelBytes apart):
// C[r, :] = bias + Σ_kk A[r, kk] · B[kk, :], the sum taken in kk order, one madd per term. Every
// tile shape therefore gives the same bits for the same element, whichever tile (and whichever
// thread, src/cpu/threads.ts) computes it. At most 8 accumulators: V8 gives wasm 16 xmm registers
// (one of them its scratch). A 5 × 8 tile (10 accumulators) for the 1- and 2-row remainders of
// M ≥ 5 measured 17 GFLOP/s against 26 for 4 × 8 + 1 × 8 (bench/diagnostics/gemm-rows.mjs, hot, simd and
// relaxed alike): V8 spills it.

// The 8 bias floats of one panel, or zeros (bias == 0: no bias).
// @ts-ignore: decorator
@inline
function bias4(bias: usize, offset: usize): v128 {
  return bias != 0 ? v128.load(bias + offset) : f32x4.splat(0);
}

// R × 8 tiles, R a constant at every call site: each wrapper below inlines the one template with
// its R, and the optimizer keeps only that many rows (unused accumulators, loads and stores fold
// away).
// tileRx8 computes `rows` rows but stores only the first `stored`: rows past `stored` read A row
// stored − 1 again (a valid row: no read past A, and only copies of a stored row's finite sums),
// and their results are dropped, so a 3-row tail runs as one more 4 × 8 tile on the hot panel.

// @ts-ignore: decorator
@inline
function tileRx8(rows: i32, stored: i32, a0: usize, rowA: usize, k: i32, panel: usize, bias: usize, c: usize, rowC: usize): void {
  const a1 = stored > 1 ? a0 + rowA : a0;
  const a2 = stored > 2 ? a1 + rowA : a1;
  const a3 = stored > 3 ? a2 + rowA : a2;
  const init0 = bias4(bias, 0), init1 = bias4(bias, 16);
  let c00 = init0, c01 = init1, c10 = init0, c11 = init1;
  let c20 = init0, c21 = init1, c30 = init0, c31 = init1;
  let b = panel;
  for (let kk = 0; kk < k; kk++) {
    const off = <usize>kk << 2;
    const b0 = v128.load(b);
    const b1 = v128.load(b, 16);
    const x0 = v128.load32_splat(a0 + off);
    c00 = madd(x0, b0, c00); c01 = madd(x0, b1, c01);
    if (rows > 1) { const x1 = v128.load32_splat(a1 + off); c10 = madd(x1, b0, c10); c11 = madd(x1, b1, c11); }
    if (rows > 2) { const x2 = v128.load32_splat(a2 + off); c20 = madd(x2, b0, c20); c21 = madd(x2, b1, c21); }
    if (rows > 3) { const x3 = v128.load32_splat(a3 + off); c30 = madd(x3, b0, c30); c31 = madd(x3, b1, c31); }
    b += 32;
  }
  v128.store(c, c00); v128.store(c, c01, 16);
  if (stored > 1) { v128.store(c + rowC, c10); v128.store(c + rowC, c11, 16); }
  if (stored > 2) { v128.store(c + 2 * rowC, c20); v128.store(c + 2 * rowC, c21, 16); }
  if (stored > 3) { v128.store(c + 3 * rowC, c30); v128.store(c + 3 * rowC, c31, 16); }
}

// 4 × 8: the compute-bound workhorse (per kk: 2 panel loads, 4 splats, 8 madds). Inlined at
// both its call sites: as a function of its own V8 ran it 10–15% slower (bench/diagnostics/gemm-rows.mjs).
// @ts-ignore: decorator
@inline
function tile4x8(a0: usize, rowA: usize, k: i32, panel: usize, bias: usize, c: usize, rowC: usize): void {
  tileRx8(4, 4, a0, rowA, k, panel, bias, c, rowC);
}
// a 3-row tail of M ≥ 7 at the 4 × 8 rate: computes a copy of row 2 as its 4th row, stores 3
function tile4x8Store3(a0: usize, rowA: usize, k: i32, panel: usize, bias: usize, c: usize, rowC: usize): void {
  tileRx8(4, 3, a0, rowA, k, panel, bias, c, rowC);
}
function tile3x8(a0: usize, rowA: usize, k: i32, panel: usize, bias: usize, c: usize, rowC: usize): void {
  tileRx8(3, 3, a0, rowA, k, panel, bias, c, rowC);
}
function tile2x8(a0: usize, rowA: usize, k: i32, panel: usize, bias: usize, c: usize, rowC: usize): void {
  tileRx8(2, 2, a0, rowA, k, panel, bias, c, rowC);
}
// 1 × 8 stays written out: built from tileRx8 it changed binaryen's inlining of gemmPanels and
// made the M = 1 path (tile1x32) 1.5× slower in V8 (measured, same bits).
function tile1x8(a0: usize, k: i32, panel: usize, bias: usize, c: usize): void {
  let c0 = bias4(bias, 0);
  let c1 = bias4(bias, 16);
  let b = panel;
  for (let kk = 0; kk < k; kk++) {
    const x = v128.load32_splat(a0 + (<usize>kk << 2));
    c0 = madd(x, v128.load(b), c0);
    c1 = madd(x, v128.load(b, 16), c1);
    b += 32;
  }
  v128.store(c, c0);
  v128.store(c, c1, 16);
}
// 2 × 16: two rows over two panels (two read streams; small batches: every weight byte read once).
function tile2x16(a0: usize, rowA: usize, k: i32, panel: usize, panelBytes: usize, bias: usize, c: usize, rowC: usize): void {
  const a1 = a0 + rowA;
  const init0 = bias4(bias, 0), init1 = bias4(bias, 16), init2 = bias4(bias, 32), init3 = bias4(bias, 48);
  let c00 = init0, c01 = init1, c02 = init2, c03 = init3;
  let c10 = init0, c11 = init1, c12 = init2, c13 = init3;
  let b = panel;
  for (let kk = 0; kk < k; kk++) {
    const off = <usize>kk << 2;
    const x0 = v128.load32_splat(a0 + off);
    const x1 = v128.load32_splat(a1 + off);
    const b0 = v128.load(b);
    const b1 = v128.load(b, 16);
    c00 = madd(x0, b0, c00); c01 = madd(x0, b1, c01);
    c10 = madd(x1, b0, c10); c11 = madd(x1, b1, c11);
    const b2 = v128.load(b + panelBytes);
    const b3 = v128.load(b + panelBytes, 16);
    c02 = madd(x0, b2, c02); c03 = madd(x0, b3, c03);
    c12 = madd(x1, b2, c12); c13 = madd(x1, b3, c13);
    b += 32;
  }
  const c1 = c + rowC;
  v128.store(c, c00); v128.store(c, c01, 16); v128.store(c, c02, 32); v128.store(c, c03, 48);
  v128.store(c1, c10); v128.store(c1, c11, 16); v128.store(c1, c12, 32); v128.store(c1, c13, 48);
}

// 1 × 32: one row over four panels (four read streams: a GEMV at memory speed).
function tile1x32(a0: usize, k: i32, panel: usize, panelBytes: usize, bias: usize, c: usize): void {
  let c0 = bias4(bias, 0), c1 = bias4(bias, 16), c2 = bias4(bias, 32), c3 = bias4(bias, 48);
  let c4 = bias4(bias, 64), c5 = bias4(bias, 80), c6 = bias4(bias, 96), c7 = bias4(bias, 112);
  const p1 = panelBytes;
  const p2 = panelBytes << 1;
  const p3 = p2 + panelBytes;
  let b = panel;
  for (let kk = 0; kk < k; kk++) {
    const x = v128.load32_splat(a0 + (<usize>kk << 2));
    c0 = madd(x, v128.load(b), c0); c1 = madd(x, v128.load(b, 16), c1);
    c2 = madd(x, v128.load(b + p1), c2); c3 = madd(x, v128.load(b + p1, 16), c3);
    c4 = madd(x, v128.load(b + p2), c4); c5 = madd(x, v128.load(b + p2, 16), c5);
    c6 = madd(x, v128.load(b + p3), c6); c7 = madd(x, v128.load(b + p3, 16), c7);
    b += 32;
  }
  v128.store(c, c0); v128.store(c, c1, 16); v128.store(c, c2, 32); v128.store(c, c3, 48);
  v128.store(c, c4, 64); v128.store(c, c5, 80); v128.store(c, c6, 96); v128.store(c, c7, 112);
}


/**
 * C[M, 8·P] = A[M, K] · Bpacked (+ bias[8·P] when bias ≠ 0).
 * a: row stride lda floats; c: row stride ldc floats, 16-byte aligned rows (ldc % 4 == 0).
 * A column block of C (panels p0..p1 of B, bias and C offset by p0·8 floats) is the same call on
 * bp + p0·kPad·32: that is how the threads split a GEMM (assembly/experts.ts).
 *
 * M ≤ 3 (small batches, memory bound): all rows in flight over 4 (M = 1) or 2 (M = 2) adjacent
 * panels at a time, so every weight byte is read once and the memory system sees several streams;
 * M = 3 as 1 × 32 on 4 panels, then 2 × 16 twice on the same, now hot, panels (gemmPanels3).
 * M ≥ 4 (compute bound): panels are the outer loop, so one panel (K·32 bytes) stays in L1/L2 while
 * the 4-row tiles and a 3-row tail stream past it (rows in blocks of ~1 MiB of A); a 1- or 2-row
 * tail runs once per group of panels (gemmPanelsGroupedTail).
 */
export function gemmPanels(a: usize, lda: i32, m: i32, k: i32, bp: usize, panels: i32, kPad: i32, c: usize, ldc: i32, bias: usize): void {
  const rowA = <usize>lda << 2;
  const rowC = <usize>ldc << 2;
  const panelBytes = <usize>kPad << 5;
  if (m <= 0) return;
  if (m == 3) {
    gemmPanels3(a, rowA, k, bp, panels, panelBytes, c, rowC, bias);
    return;
  }
  if (m <= 2) {
    // no 4-row tiles: the whole of A is a 1- or 2-row tail
    gemmPanelsGroupedTail(a, rowA, 0, m, m, k, bp, panels, panelBytes, c, rowC, bias);
    return;
  }
  // Rows in blocks of ~1 MiB of A (block rows × K floats), about a core's L2 (1 MiB on Zen 4 and
  // recent Xeons; Zen 3's 512 KiB measured no better with 256 KiB blocks, 1 and 2 threads): only
  // large M (> 128 rows at K = 2048) is split; the panels are then read once per block.
  const blockRows = max(64, (A_BLOCK_BYTES / (k << 2)) & ~3);
  for (let r0 = 0; r0 < m; r0 += blockRows) {
    const r1 = min(m, r0 + blockRows);
    const rest = (r1 - r0) & 3;
    if (rest == 1 || rest == 2) {
      gemmPanelsGroupedTail(a, rowA, r0, r1, rest, k, bp, panels, panelBytes, c, rowC, bias);
      continue;
    }
    for (let p = 0; p < panels; p++) {
      const panel = bp + <usize>p * panelBytes;
      const col = <usize>p << 5;
      const biasP = bias != 0 ? bias + col : 0;
      let i = r0;
      for (; i + 4 <= r1; i += 4) tile4x8(a + <usize>i * rowA, rowA, k, panel, biasP, c + <usize>i * rowC + col, rowC);
      // a 3-row tail as one more 4 × 8 tile on the hot panel
      if (i < r1) tile4x8Store3(a + <usize>i * rowA, rowA, k, panel, biasP, c + <usize>i * rowC + col, rowC);
    }
  }
}

/**
 * M = 3 without a 3-row tile over two panels (12 accumulators: V8 spills them, 19–21 GFLOP/s
 * hot): per group of 4 panels, row 2 as 1 × 32 (four read streams fetch the group from memory),
 * then rows 0–1 as two 2 × 16 on the group, now in L2.
 */
function gemmPanels3(a: usize, rowA: usize, k: i32, bp: usize, panels: i32, panelBytes: usize, c: usize, rowC: usize, bias: usize): void {
  const a2 = a + (rowA << 1);
  const c2 = c + (rowC << 1);
  let p = 0;
  for (; p + 4 <= panels; p += 4) {
    const panel = bp + <usize>p * panelBytes;
    const col = <usize>p << 5;
    const biasP = bias != 0 ? bias + col : 0;
    tile1x32(a2, k, panel, panelBytes, biasP, c2 + col);
    tile2x16(a, rowA, k, panel, panelBytes, biasP, c + col, rowC);
    tile2x16(a, rowA, k, panel + (panelBytes << 1), panelBytes, biasP != 0 ? biasP + 64 : 0, c + col + 64, rowC);
  }
  for (; p < panels; p++) {
    const panel = bp + <usize>p * panelBytes;
    const col = <usize>p << 5;
    tile3x8(a, rowA, k, panel, bias != 0 ? bias + col : 0, c + col, rowC);
  }
}

/**
 * Rows r0..r1 of gemmPanels with a 1- or 2-row tail (`rest`; M ≤ 2 is all tail). On one panel
 * such a tail has too few accumulator chains (1 × 8: 2, 2 × 8: 4; the madd's latency needs about
 * 8) to keep the FP pipes busy, so it runs once per group of panels as 1 × 32 or 2 × 16, right
 * after the group's 4-row tiles, while the group (2–4 panels) is still in L2; for M ≤ 2 the group's
 * panels are its read streams. bench/diagnostics/gemm-rows.mjs, K = 1024, hot: M = 5, 6, 9, 10 from 26–34 to
 * 29–41 GFLOP/s (simd, relaxed), the rate of M = 4.
 */
function gemmPanelsGroupedTail(a: usize, rowA: usize, r0: i32, r1: i32, rest: i32, k: i32, bp: usize, panels: i32,
  panelBytes: usize, c: usize, rowC: usize, bias: usize): void {
  const tail = r1 - rest;
  const group = rest == 1 ? 4 : 2;
  const ai = a + <usize>tail * rowA;
  for (let p0 = 0; p0 < panels; p0 += group) {
    const p1 = min(panels, p0 + group);
    for (let p = p0; p < p1; p++) {
      const panel = bp + <usize>p * panelBytes;
      const col = <usize>p << 5;
      const biasP = bias != 0 ? bias + col : 0;
      for (let i = r0; i < tail; i += 4) tile4x8(a + <usize>i * rowA, rowA, k, panel, biasP, c + <usize>i * rowC + col, rowC);
    }
    const panel = bp + <usize>p0 * panelBytes;
    const col = <usize>p0 << 5;
    const biasP = bias != 0 ? bias + col : 0;
    const ci = c + <usize>tail * rowC + col;
    if (p1 - p0 == group) {
      if (rest == 1) tile1x32(ai, k, panel, panelBytes, biasP, ci);
      else tile2x16(ai, rowA, k, panel, panelBytes, biasP, ci, rowC);
      continue;
    }
    // the last panels, fewer than a group
    for (let q = 0; q < p1 - p0; q++) {
      const off = <usize>q;
      const biasQ = biasP != 0 ? biasP + (off << 5) : 0;
      if (rest == 1) tile1x8(ai, k, panel + off * panelBytes, biasQ, ci + (off << 5));
      else tile2x8(ai, rowA, k, panel + off * panelBytes, biasQ, ci + (off << 5), rowC);
    }
  }
}

/** Bytes of A one row block may span (gemmPanels): about the L2 of one core (see above). */
const A_BLOCK_BYTES: i32 = 1 << 20;
