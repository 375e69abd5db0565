// W8A8: int8 weights × int8 activations, integer dot products accumulating in i32.
//
// Weights: the int8 dtype's values (symmetric per output column, q = round(w / s), s = max|w|/127,
// q in [−127, 127]: assembly/quant.ts), in panels laid out for a 4-term dot product. A panel of 8
// columns × kq rows (kq = kPad rounded up to 16) holds, per group of 4 rows, two v128: columns
// 0..3 then 4..7, i32 lane j = column j's 4 rows (row 4g + r in byte r). Then 8 f32 column scales,
// then 8 i32: 64 · (column sum of q). kq·8 + 64 bytes.
//
// Activations: each A row is quantized on the fly, symmetric with one f32 scale per row,
// q = round(x · 63/max|x|) in [−63, 63], and stored as the byte u = q + 64 in [1, 127].
// The relaxed i8 dot products (i32x4.relaxed_dot_i8x16_i7x16_add_s and its i16x8 form) are the
// same on every host only when their second operand has the top bit clear (x86 multiplies it as unsigned, Arm as signed): u is that operand, the weights
// the signed one, and Σ w·q = Σ w·u − 64·Σ w takes the offset back out exactly. The simd build
// computes the same Σ w·u with i32x4.dot_i16x8_s on sign-extended i16, so the two builds give the
// same i32 sums and the same GEMM output bits. Activations keep 7 bits (not 8) for that: see
// docs/numerics-quantized.md for what it costs.
//
// y[r, j] = (f32(Σ w·q) · sw[j]) · sx[r] (+ bias[j]), computed in that order.
import { activateColumns } from "./experts";
import { unpackPanelsQ as unpackQ, packPanelsQ as packQ } from "./quant";
import { KIND_SWIGLU, DTYPE_W8A8 } from "../src/abi";

/** Largest |q| of an activation. */
const A_LEVELS: f32 = 63;
/** The offset that keeps an activation byte's top bit clear. */
const A_OFFSET: i32 = 64;

// @ts-ignore: decorator
@inline
function round16(v: i32): i32 {
  return (v + 15) & ~15;
}

/** Bytes of one W8A8 panel (8 columns × kPad rows). */
export function w8a8PanelBytes(kPad: i32): usize {
  return (<usize>round16(kPad) << 3) + 64;
}

// @ts-ignore: decorator
@inline
function weightAt(panel: usize, kk: i32, j: i32): usize {
  return panel + (<usize>(kk >> 2) << 5) + (<usize>j << 2) + <usize>(kk & 3);
}

/** Packs a row-major [K, N] matrix (row stride ldSrc floats) into W8A8 panels, panel p at slot p·panelStep. */
export function packPanelsW8A8(src: usize, k: i32, n: i32, ldSrc: i32, dst: usize, kPad: i32, panelStep: i32): void {
  const kq = round16(kPad);
  const panelBytes = w8a8PanelBytes(kPad);
  const panels = (n + 7) >> 3;
  for (let p = 0; p < panels; p++) {
    const panel = dst + <usize>(p * panelStep) * panelBytes;
    memory.fill(panel, 0, panelBytes);
    const c0 = p << 3;
    const width = min(8, n - c0);
    for (let j = 0; j < width; j++) {
      const col = src + ((<usize>c0 + <usize>j) << 2);
      let top: f32 = 0;
      for (let kk = 0; kk < k; kk++) top = max<f32>(top, abs<f32>(load<f32>(col + ((<usize>kk * <usize>ldSrc) << 2))));
      const scale = top / 127; // as the int8 dtype
      let sum = 0;
      for (let kk = 0; kk < k; kk++) {
        const w = load<f32>(col + ((<usize>kk * <usize>ldSrc) << 2));
        const q = scale == 0 ? 0 : <i32>min<f32>(127, max<f32>(-127, nearest<f32>(w / scale)));
        store<i8>(weightAt(panel, kk, j), <i8>q);
        sum += q;
      }
      store<f32>(panel + (<usize>kq << 3) + (<usize>j << 2), scale);
      store<i32>(panel + (<usize>kq << 3) + 32 + (<usize>j << 2), sum * A_OFFSET);
    }
  }
}

/** The dequantized [K, N] weights of W8A8 panels (q · column scale), row stride ldDst floats. */
export function unpackPanelsW8A8(src: usize, k: i32, n: i32, dst: usize, ldDst: i32, kPad: i32, panelStep: i32): void {
  const kq = round16(kPad);
  const panelBytes = w8a8PanelBytes(kPad);
  const panels = (n + 7) >> 3;
  for (let p = 0; p < panels; p++) {
    const panel = src + <usize>(p * panelStep) * panelBytes;
    const c0 = p << 3;
    const width = min(8, n - c0);
    for (let j = 0; j < width; j++) {
      const scale = load<f32>(panel + (<usize>kq << 3) + (<usize>j << 2));
      for (let kk = 0; kk < k; kk++) {
        store<f32>(dst + ((<usize>kk * <usize>ldDst + <usize>c0 + <usize>j) << 2), <f32>load<i8>(weightAt(panel, kk, j)) * scale);
      }
    }
  }
}

// packPanelsQ / unpackPanelsQ (assembly/quant.ts) over every dtype code, W8A8 included: the engine
// and the weight export call these with the layer's code.
export function packPanelsQ(dtype: i32, src: usize, k: i32, n: i32, ldSrc: i32, dst: usize, kPad: i32, panelStep: i32): i32 {
  if (dtype != DTYPE_W8A8) return packQ(dtype, src, k, n, ldSrc, dst, kPad, panelStep);
  packPanelsW8A8(src, k, n, ldSrc, dst, kPad, panelStep);
  return -1;
}
export function unpackPanelsQ(dtype: i32, src: usize, k: i32, n: i32, dst: usize, ldDst: i32, kPad: i32, panelStep: i32): void {
  if (dtype == DTYPE_W8A8) unpackPanelsW8A8(src, k, n, dst, ldDst, kPad, panelStep);
  else unpackQ(dtype, src, k, n, dst, ldDst, kPad, panelStep);
}

// ---- activations ----------------------------------------------------------------------------------

/**
 * Quantizes rows [0, m) of A (f32, row stride lda floats, k columns) into bytes u = q + 64 (row
 * stride ldq bytes; columns k..round16(k) are 64, i.e. q = 0) and their scales max|x|/63 (f32 [m]).
 */
export function quantizeRowsW8A8(a: usize, lda: i32, m: i32, k: i32, dst: usize, ldq: i32, scales: usize): void {
  const k4 = k & ~3;
  const k16 = k & ~15;
  const kq = round16(k);
  for (let r = 0; r < m; r++) {
    const row = a + ((<usize>r * <usize>lda) << 2);
    const out = dst + <usize>r * <usize>ldq;
    let top4 = f32x4.splat(0);
    let kk = 0;
    for (; kk < k4; kk += 4) top4 = f32x4.max(top4, f32x4.abs(v128.load(row + (<usize>kk << 2))));
    let top = max<f32>(max<f32>(f32x4.extract_lane(top4, 0), f32x4.extract_lane(top4, 1)), max<f32>(f32x4.extract_lane(top4, 2), f32x4.extract_lane(top4, 3)));
    for (; kk < k; kk++) top = max<f32>(top, abs<f32>(load<f32>(row + (<usize>kk << 2))));
    const inv: f32 = top > 0 ? A_LEVELS / top : 0;
    store<f32>(scales + (<usize>r << 2), top / A_LEVELS);
    const invv = f32x4.splat(inv);
    const lo = i32x4.splat(-63), hi = i32x4.splat(63), off = i32x4.splat(A_OFFSET);
    kk = 0;
    for (; kk < k16; kk += 16) {
      const src = row + (<usize>kk << 2);
      const q0 = i32x4.add(i32x4.min_s(hi, i32x4.max_s(lo, i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(src), invv))))), off);
      const q1 = i32x4.add(i32x4.min_s(hi, i32x4.max_s(lo, i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(src, 16), invv))))), off);
      const q2 = i32x4.add(i32x4.min_s(hi, i32x4.max_s(lo, i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(src, 32), invv))))), off);
      const q3 = i32x4.add(i32x4.min_s(hi, i32x4.max_s(lo, i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(src, 48), invv))))), off);
      v128.store(out + <usize>kk, i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3)));
    }
    for (; kk < k; kk++) {
      const q = <i32>min<f32>(A_LEVELS, max<f32>(-A_LEVELS, nearest<f32>(load<f32>(row + (<usize>kk << 2)) * inv)));
      store<u8>(out + <usize>kk, <u8>(q + A_OFFSET));
    }
    for (; kk < kq; kk++) store<u8>(out + <usize>kk, <u8>A_OFFSET);
  }
}

// ---- micro-kernels --------------------------------------------------------------------------------

/** The finished 4 columns: (f32(acc − 64·Σw) · sw) · sx (+ bias). */
// @ts-ignore: decorator
@inline
function finish4(acc: v128, sums: usize, scales: usize, sx: v128, bias: usize, hi: bool): v128 {
  const off: usize = hi ? 16 : 0;
  const exact = i32x4.sub(acc, v128.load(sums + off));
  const y = f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(exact), v128.load(scales + off)), sx);
  return bias != 0 ? f32x4.add(y, v128.load(bias + off)) : y;
}

// relaxed: acc + Σ of 4 products per lane. Spelled as the i16x8 dot, extadd_pairwise and add that
// i32x4.relaxed_dot_i8x16_i7x16_add_s is defined as (no i16 pair can saturate: |w·u| ≤ 127·127):
// V8 11 (Node 20)'s baseline compiler (Liftoff, which runs a function's first calls) computes the
// fused instruction as twice the dot product without the accumulator.
// @ts-ignore: decorator
@inline
function dot4(w: v128, u: v128, acc: v128): v128 {
  return i32x4.add(acc, i32x4.extadd_pairwise_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(w, u)));
}

/**
 * Relaxed R × 8 tile (R = rows ≤ 4, `stored` of them written): per group of 4 rows of the panel,
 * the two weight vectors and one 4-byte splat of each A row, two dot products per row.
 */
// @ts-ignore: decorator
@inline
function rtileRx8(rows: i32, stored: i32, a0: usize, rowA: usize, sx0: usize, kq: i32, panel: usize, bias: usize, c: usize, rowC: usize): void {
  const a1 = stored > 1 ? a0 + rowA : a0;
  const a2 = stored > 2 ? a1 + rowA : a1;
  const a3 = stored > 3 ? a2 + rowA : a2;
  const z = i32x4.splat(0);
  let c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
  for (let kk = 0; kk < kq; kk += 4) {
    const wp = panel + (<usize>kk << 3);
    const w0 = v128.load(wp);
    const w1 = v128.load(wp, 16);
    const off = <usize>kk;
    const u0 = v128.load32_splat(a0 + off);
    c00 = dot4(w0, u0, c00); c01 = dot4(w1, u0, c01);
    if (rows > 1) { const u1 = v128.load32_splat(a1 + off); c10 = dot4(w0, u1, c10); c11 = dot4(w1, u1, c11); }
    if (rows > 2) { const u2 = v128.load32_splat(a2 + off); c20 = dot4(w0, u2, c20); c21 = dot4(w1, u2, c21); }
    if (rows > 3) { const u3 = v128.load32_splat(a3 + off); c30 = dot4(w0, u3, c30); c31 = dot4(w1, u3, c31); }
  }
  const scales = panel + (<usize>kq << 3);
  const sums = scales + 32;
  let sx = v128.load32_splat(sx0);
  v128.store(c, finish4(c00, sums, scales, sx, bias, false)); v128.store(c + 16, finish4(c01, sums, scales, sx, bias, true));
  if (stored > 1) { sx = v128.load32_splat(sx0 + 4); const r = c + rowC; v128.store(r, finish4(c10, sums, scales, sx, bias, false)); v128.store(r + 16, finish4(c11, sums, scales, sx, bias, true)); }
  if (stored > 2) { sx = v128.load32_splat(sx0 + 8); const r = c + 2 * rowC; v128.store(r, finish4(c20, sums, scales, sx, bias, false)); v128.store(r + 16, finish4(c21, sums, scales, sx, bias, true)); }
  if (stored > 3) { sx = v128.load32_splat(sx0 + 12); const r = c + 3 * rowC; v128.store(r, finish4(c30, sums, scales, sx, bias, false)); v128.store(r + 16, finish4(c31, sums, scales, sx, bias, true)); }
}

/** Relaxed 1 × 32: one row over four panels (the GEMV of a batch of one: four weight streams). */
// @ts-ignore: decorator
@inline
function rtile1x32(a0: usize, sx0: usize, kq: i32, panel: usize, panelBytes: usize, bias: usize, c: usize): void {
  const p1 = panel + panelBytes, p2 = p1 + panelBytes, p3 = p2 + panelBytes;
  const z = i32x4.splat(0);
  let c0 = z, c1 = z, c2 = z, c3 = z, c4 = z, c5 = z, c6 = z, c7 = z;
  for (let kk = 0; kk < kq; kk += 4) {
    const wo = <usize>kk << 3;
    const u = v128.load32_splat(a0 + <usize>kk);
    c0 = dot4(v128.load(panel + wo), u, c0); c1 = dot4(v128.load(panel + wo, 16), u, c1);
    c2 = dot4(v128.load(p1 + wo), u, c2); c3 = dot4(v128.load(p1 + wo, 16), u, c3);
    c4 = dot4(v128.load(p2 + wo), u, c4); c5 = dot4(v128.load(p2 + wo, 16), u, c5);
    c6 = dot4(v128.load(p3 + wo), u, c6); c7 = dot4(v128.load(p3 + wo, 16), u, c7);
  }
  const sx = v128.load32_splat(sx0);
  const tail = <usize>kq << 3;
  const b1 = bias != 0 ? bias + 32 : 0, b2 = bias != 0 ? bias + 64 : 0, b3 = bias != 0 ? bias + 96 : 0;
  v128.store(c, finish4(c0, panel + tail + 32, panel + tail, sx, bias, false)); v128.store(c + 16, finish4(c1, panel + tail + 32, panel + tail, sx, bias, true));
  v128.store(c + 32, finish4(c2, p1 + tail + 32, p1 + tail, sx, b1, false)); v128.store(c + 48, finish4(c3, p1 + tail + 32, p1 + tail, sx, b1, true));
  v128.store(c + 64, finish4(c4, p2 + tail + 32, p2 + tail, sx, b2, false)); v128.store(c + 80, finish4(c5, p2 + tail + 32, p2 + tail, sx, b2, true));
  v128.store(c + 96, finish4(c6, p3 + tail + 32, p3 + tail, sx, b3, false)); v128.store(c + 112, finish4(c7, p3 + tail + 32, p3 + tail, sx, b3, true));
}

// simd: i32x4.dot_i16x8_s on the weights and A bytes sign-extended to i16. One dot covers two
// columns × 4 rows as [col a rows 0-1, col a rows 2-3, col b rows 0-1, col b rows 2-3]; four such
// accumulators per A row, summed pairwise into 8 columns at the end. 2 rows × 8 columns: 8
// accumulators, 4 widened weight vectors and one A vector stay in registers.

/** [c0, c1, c2, c3] from pair sums p = [c0 r01, c0 r23, c1 r01, c1 r23] and q (columns 2, 3). */
// @ts-ignore: decorator
@inline
function pairSum(p: v128, q: v128): v128 {
  return i32x4.add(i32x4.shuffle(p, q, 0, 2, 4, 6), i32x4.shuffle(p, q, 1, 3, 5, 7));
}

// @ts-ignore: decorator
@inline
function stile(rows: i32, a0: usize, rowA: usize, sx0: usize, kq: i32, panel: usize, bias: usize, c: usize, rowC: usize): void {
  const a1 = rows > 1 ? a0 + rowA : a0;
  const z = i32x4.splat(0);
  let p00 = z, p01 = z, p02 = z, p03 = z, p10 = z, p11 = z, p12 = z, p13 = z;
  for (let kk = 0; kk < kq; kk += 4) {
    const wp = panel + (<usize>kk << 3);
    const w0 = v128.load(wp);
    const w1 = v128.load(wp, 16);
    const w0l = i16x8.extend_low_i8x16_s(w0), w0h = i16x8.extend_high_i8x16_s(w0);
    const w1l = i16x8.extend_low_i8x16_s(w1), w1h = i16x8.extend_high_i8x16_s(w1);
    const u0 = i16x8.extend_low_i8x16_s(v128.load32_splat(a0 + <usize>kk));
    p00 = i32x4.add(p00, i32x4.dot_i16x8_s(w0l, u0)); p01 = i32x4.add(p01, i32x4.dot_i16x8_s(w0h, u0));
    p02 = i32x4.add(p02, i32x4.dot_i16x8_s(w1l, u0)); p03 = i32x4.add(p03, i32x4.dot_i16x8_s(w1h, u0));
    if (rows > 1) {
      const u1 = i16x8.extend_low_i8x16_s(v128.load32_splat(a1 + <usize>kk));
      p10 = i32x4.add(p10, i32x4.dot_i16x8_s(w0l, u1)); p11 = i32x4.add(p11, i32x4.dot_i16x8_s(w0h, u1));
      p12 = i32x4.add(p12, i32x4.dot_i16x8_s(w1l, u1)); p13 = i32x4.add(p13, i32x4.dot_i16x8_s(w1h, u1));
    }
  }
  const scales = panel + (<usize>kq << 3);
  const sums = scales + 32;
  let sx = v128.load32_splat(sx0);
  v128.store(c, finish4(pairSum(p00, p01), sums, scales, sx, bias, false));
  v128.store(c + 16, finish4(pairSum(p02, p03), sums, scales, sx, bias, true));
  if (rows > 1) {
    sx = v128.load32_splat(sx0 + 4);
    v128.store(c + rowC, finish4(pairSum(p10, p11), sums, scales, sx, bias, false));
    v128.store(c + rowC + 16, finish4(pairSum(p12, p13), sums, scales, sx, bias, true));
  }
}

/**
 * C[M, 8·P] = dequant(Aq[M, kq] · Wq[kq, 8·P]) (+ bias[8·P]) over W8A8 panels packed with kPad
 * (kq = round16(kPad) bytes of each Aq row are read: quantizeRowsW8A8's padding). Aq: row stride
 * lda bytes; sx: the rows' f32 scales. M = 1 (relaxed) as 1 × 32 over groups of four panels;
 * otherwise panel by panel (the panel stays in L1 while the row tiles run over it).
 */
export function gemmW8A8(a: usize, lda: i32, sx: usize, m: i32, kPad: i32, bp: usize, panels: i32, c: usize, ldc: i32, bias: usize): void {
  if (m <= 0) return;
  const kq = round16(kPad);
  const rowA = <usize>lda;
  const rowC = <usize>ldc << 2;
  const panelBytes = w8a8PanelBytes(kPad);
  if (ASC_FEATURE_RELAXED_SIMD) {
    let p0 = 0;
    if (m == 1) {
      for (; p0 + 4 <= panels; p0 += 4) {
        const col = <usize>p0 << 5;
        rtile1x32(a, sx, kq, bp + <usize>p0 * panelBytes, panelBytes, bias != 0 ? bias + col : 0, c + col);
      }
    }
    for (let p = p0; p < panels; p++) {
      const panel = bp + <usize>p * panelBytes;
      const col = <usize>p << 5;
      const biasP = bias != 0 ? bias + col : 0;
      let i = 0;
      for (; i + 4 <= m; i += 4) rtileRx8(4, 4, a + <usize>i * rowA, rowA, sx + (<usize>i << 2), kq, panel, biasP, c + <usize>i * rowC + col, rowC);
      const rest = m - i;
      const ai = a + <usize>i * rowA, si = sx + (<usize>i << 2), ci = c + <usize>i * rowC + col;
      if (rest == 3) rtileRx8(4, 3, ai, rowA, si, kq, panel, biasP, ci, rowC);
      else if (rest == 2) rtileRx8(2, 2, ai, rowA, si, kq, panel, biasP, ci, rowC);
      else if (rest == 1) rtileRx8(1, 1, ai, rowA, si, kq, panel, biasP, ci, rowC);
    }
  } else {
    for (let p = 0; p < panels; p++) {
      const panel = bp + <usize>p * panelBytes;
      const col = <usize>p << 5;
      const biasP = bias != 0 ? bias + col : 0;
      let i = 0;
      for (; i + 2 <= m; i += 2) stile(2, a + <usize>i * rowA, rowA, sx + (<usize>i << 2), kq, panel, biasP, c + <usize>i * rowC + col, rowC);
      if (i < m) stile(1, a + <usize>i * rowA, rowA, sx + (<usize>i << 2), kq, panel, biasP, c + <usize>i * rowC + col, rowC);
    }
  }
}

// ---- the expert pass ----------------------------------------------------------------------------
// qa: the quantized rows (pairs × round16(max(d, hp)) bytes), qs: their scales (f32 [pairs]). The
// up-projection quantizes expert e's gathered rows, the down-projection its activations, into the
// rows first..first+m (stride round16(d), then round16(hp)): every chunk of the thread pool that
// works on expert e quantizes them first. Two chunks of one expert may write the same bytes at
// once, always the same values (a pure function of the rows), so every read sees those values.

/** expertUp (assembly/experts.ts) in W8A8: hidden-column units [u0, u1) of expert e. */
export function expertUpW8A8(
  kind: i32, d: i32, hp: i32, e: i32, first: i32, m: i32, u0: i32, u1: i32,
  w1: usize, b1: usize, gathered: usize, pre: usize, act: usize, qa: usize, qs: usize,
): void {
  const swiglu = kind == KIND_SWIGLU;
  const hw = swiglu ? hp << 1 : hp;
  const panelsPerUnit = swiglu ? 2 : 1;
  const panelBytes = w8a8PanelBytes(d);
  const dq = round16(d);
  const p0 = u0 * panelsPerUnit;
  const aq = qa + <usize>first * <usize>dq;
  const sx = qs + (<usize>first << 2);
  quantizeRowsW8A8(gathered + ((<usize>first * <usize>d) << 2), d, m, d, aq, dq, sx);
  const preE = pre + ((<usize>first * <usize>hw) << 2);
  const w1E = w1 + <usize>e * (<usize>(hw >> 3) * panelBytes);
  const bias = swiglu ? <usize>0 : b1 + ((<usize>e * <usize>hp + (<usize>u0 << 3)) << 2);
  gemmW8A8(aq, dq, sx, m, d, w1E + <usize>p0 * panelBytes, (u1 - u0) * panelsPerUnit, preE + (<usize>p0 << 5), hw, bias);
  activateColumns(kind, preE, hw, m, u0, u1, act + ((<usize>first * <usize>hp) << 2), hp);
}

/** expertDown in W8A8: output panels [q0, q1) of expert e. */
export function expertDownW8A8(
  kind: i32, hp: i32, dp: i32, e: i32, first: i32, m: i32, q0: i32, q1: i32,
  w2: usize, b2: usize, act: usize, out: usize, qa: usize, qs: usize,
): void {
  const panelBytes = w8a8PanelBytes(hp);
  const hq = round16(hp);
  const aq = qa + <usize>first * <usize>hq;
  const sx = qs + (<usize>first << 2);
  quantizeRowsW8A8(act + ((<usize>first * <usize>hp) << 2), hp, m, hp, aq, hq, sx);
  const w2E = w2 + <usize>e * (<usize>(dp >> 3) * panelBytes);
  const bias = kind == KIND_SWIGLU ? <usize>0 : b2 + ((<usize>e * <usize>dp + (<usize>q0 << 3)) << 2);
  gemmW8A8(aq, hq, sx, m, hp, w2E + <usize>q0 * panelBytes, q1 - q0, out + ((<usize>first * <usize>dp + (<usize>q0 << 3)) << 2), dp, bias);
}

/** expertsForward over W8A8 panels: experts [eBegin, eEnd), one thread. */
export function expertsForwardW8A8(
  kind: i32, d: i32, h: i32, eBegin: i32, eEnd: i32,
  w1: usize, b1: usize, w2: usize, b2: usize,
  expertOffsets: usize, gathered: usize, pre: usize, act: usize, out: usize, qa: usize, qs: usize,
): void {
  const hp = (h + 7) & ~7;
  const dp = (d + 7) & ~7;
  for (let e = eBegin; e < eEnd; e++) {
    const first = load<i32>(expertOffsets + (<usize>e << 2));
    const m = load<i32>(expertOffsets + (<usize>(e + 1) << 2)) - first;
    if (m == 0) continue;
    expertUpW8A8(kind, d, hp, e, first, m, 0, hp >> 3, w1, b1, gathered, pre, act, qa, qs);
    expertDownW8A8(kind, hp, dp, e, first, m, 0, dp >> 3, w2, b2, act, out, qa, qs);
  }
}
