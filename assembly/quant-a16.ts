// int8 and int4 expert GEMMs with 16-bit activations: integer dot products in i32.
//
// The weights are the int8 and int4 panels of assembly/quant.ts, unchanged. Each A row is
// quantized on the fly, symmetric with one f32 scale per row: q = round(x · 32767/max|x|) in
// [−32767, 32767] (16 bits: its rounding moves y by a few 1e-5 of max|y|, far below the weights'
// own error). Then i32x4.dot_i16x8_s multiplies two rows of weights (sign-extended to i16) by two
// activations and adds the pair, exactly: 16 multiply-adds take two widening loads and two
// unpacks (int8) or a load and shifts (int4), two dot products and two adds, where dequantizing
// to f32 took more instructions than the f32 weights' multiply-adds. Integer sums are exact, so
// every build and thread count gives the same bits.
//
//   int8: pairs of rows (kk, kk + 1). The panel's two rows are sign-extended by their loads and
//         interleaved column by column; the activation pair is the i32 at i16 offset kk. The i32 sum
//         is carried to f32 every INT8_SPAN rows (|Σ| ≤ 512·127·32767 < 2^31).
//         y = (f32(Σ x·q) · sx) · sw[j] (+ bias[j]).
//   int4: an octet's i32 lane holds a column's 8 rows, row r in bits 28−4r..31−4r, so as i16x8
//         its high half holds rows 0..3 and its low half rows 4..7, each row's nibble on top
//         after a shift left of 4r: one arithmetic shift right by 12 then gives the pair (row r,
//         row r + 4). The activations are stored in that order, per octet 4, 0, 5, 1, 6, 2, 7, 3.
//         Each block of 32 rows is scaled by its column scales in f32:
//         y = sx · Σ_block f32(Σ x·q) · s[block, j] (+ bias[j]).
import { qPanelBytes, Q4_BLOCK_BYTES, Q4_SCALES } from "./quant";
import { DTYPE_INT8, DTYPE_INT4, Q4_BLOCK } from "../src/abi";

/** Largest |q| of an activation. */
const X_LEVELS: f32 = 32767;
/** Rows of an int8 panel summed in i32 before the sum is carried to f32. */
const INT8_SPAN: i32 = 512;

/** i16 elements of one quantized row of k activations (a multiple of 32: whole int4 blocks). */
// @ts-ignore: decorator
@inline
export function a16Stride(k: i32): i32 {
  return (k + 31) & ~31;
}

// ---- activations ----------------------------------------------------------------------------------

// @ts-ignore: decorator
@inline
function quant4(src: usize, top: v128): v128 {
  // x / max|x| first (≤ 1 in magnitude, also for a subnormal max), then the levels
  return i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(f32x4.div(v128.load(src), top), f32x4.splat(X_LEVELS))));
}

/**
 * Quantizes rows [0, m) of A (f32, row stride lda floats, k columns) into i16 (row stride ldq
 * elements, columns k..a16Stride(k) zero), in int8 order (natural) or int4 order (per octet
 * 4, 0, 5, 1, 6, 2, 7, 3); scales: the rows' max|x| / 32767 (f32 [m]).
 */
export function quantizeRowsA16(int4: bool, a: usize, lda: i32, m: i32, k: i32, dst: usize, ldq: i32, scales: usize): void {
  const k4 = k & ~3;
  const k8 = k & ~7;
  const kq = a16Stride(k);
  for (let r = 0; r < m; r++) {
    const row = a + ((<usize>r * <usize>lda) << 2);
    const out = dst + ((<usize>r * <usize>ldq) << 1);
    let top4 = f32x4.splat(0);
    let kk = 0;
    for (; kk < k4; kk += 4) top4 = f32x4.max(top4, f32x4.abs(v128.load(row + (<usize>kk << 2))));
    let top = max<f32>(max<f32>(f32x4.extract_lane(top4, 0), f32x4.extract_lane(top4, 1)), max<f32>(f32x4.extract_lane(top4, 2), f32x4.extract_lane(top4, 3)));
    for (; kk < k; kk++) top = max<f32>(top, abs<f32>(load<f32>(row + (<usize>kk << 2))));
    store<f32>(scales + (<usize>r << 2), top / X_LEVELS);
    if (!(top > 0)) {
      memory.fill(out, 0, <usize>kq << 1);
      continue;
    }
    const topv = f32x4.splat(top);
    for (kk = 0; kk < k8; kk += 8) {
      const src = row + (<usize>kk << 2);
      let q = i16x8.narrow_i32x4_s(quant4(src, topv), quant4(src + 16, topv));
      if (int4) q = i16x8.shuffle(q, q, 4, 0, 5, 1, 6, 2, 7, 3);
      v128.store(out + (<usize>kk << 1), q);
    }
    for (; kk < kq; kk += 8) {
      // the last, partial octet and the zero padding
      for (let p = 0; p < 8; p++) {
        const src = int4 ? kk + (p & 1 ? p >> 1 : 4 + (p >> 1)) : kk + p;
        const q = src < k ? <i32>nearest<f32>((load<f32>(row + (<usize>src << 2)) / top) * X_LEVELS) : 0;
        store<i16>(out + ((<usize>(kk + p)) << 1), <i16>q);
      }
    }
  }
}

// ---- int8 -----------------------------------------------------------------------------------------

/**
 * Columns 0..3 (hi false) or 4..7 of rows kk, kk + 1 of an int8 panel as i16, each column's two
 * rows adjacent: the rows sign-extended by their loads, then interleaved (punpcklwd / punpckhwd).
 */
// @ts-ignore: decorator
@inline
function pairRows(row0: v128, row1: v128, hi: bool): v128 {
  return hi ? i16x8.shuffle(row0, row1, 4, 12, 5, 13, 6, 14, 7, 15) : i16x8.shuffle(row0, row1, 0, 8, 1, 9, 2, 10, 3, 11);
}

// @ts-ignore: decorator
@inline
function dot(w: v128, x: v128, acc: v128): v128 {
  return i32x4.add(acc, i32x4.dot_i16x8_s(w, x));
}

/** A span's i32 sums carried into the f32 partial sums at c (the first span stores them). */
// @ts-ignore: decorator
@inline
function carry(first: bool, acc: v128, c: usize): void {
  const s = f32x4.convert_i32x4_s(acc);
  v128.store(c, first ? s : f32x4.add(v128.load(c), s));
}

/** The finished int8 columns at c: (partial · sx) · sw (+ bias). */
// @ts-ignore: decorator
@inline
function finish8(c: usize, sx: v128, scales: usize, bias: usize): void {
  let y = f32x4.mul(f32x4.mul(v128.load(c), sx), v128.load(scales));
  if (bias != 0) y = f32x4.add(y, v128.load(bias));
  v128.store(c, y);
}

/** R × 8 (R = rows ≤ 4, `stored` of them written) over one int8 panel. */
// @ts-ignore: decorator
@inline
function tile8(rows: i32, stored: i32, a0: usize, rowA: usize, sx0: usize, k: i32, panel: usize, kPad: i32, bias: usize, c: usize, rowC: usize): void {
  const a1 = stored > 1 ? a0 + rowA : a0;
  const a2 = stored > 2 ? a1 + rowA : a1;
  const a3 = stored > 3 ? a2 + rowA : a2;
  const z = i32x4.splat(0);
  for (let k0 = 0; k0 < k; k0 += INT8_SPAN) {
    const kEnd = min(k, k0 + INT8_SPAN);
    let c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
    for (let kk = k0; kk < kEnd; kk += 2) {
      const at = panel + (<usize>kk << 3);
      const row0 = v128.load8x8_s(at), row1 = v128.load8x8_s(at, 8);
      const w0 = pairRows(row0, row1, false);
      const w1 = pairRows(row0, row1, true);
      const off = <usize>kk << 1;
      const x0 = v128.load32_splat(a0 + off);
      c00 = dot(w0, x0, c00); c01 = dot(w1, x0, c01);
      if (rows > 1) { const x1 = v128.load32_splat(a1 + off); c10 = dot(w0, x1, c10); c11 = dot(w1, x1, c11); }
      if (rows > 2) { const x2 = v128.load32_splat(a2 + off); c20 = dot(w0, x2, c20); c21 = dot(w1, x2, c21); }
      if (rows > 3) { const x3 = v128.load32_splat(a3 + off); c30 = dot(w0, x3, c30); c31 = dot(w1, x3, c31); }
    }
    const first = k0 == 0;
    carry(first, c00, c); carry(first, c01, c + 16);
    if (stored > 1) { carry(first, c10, c + rowC); carry(first, c11, c + rowC + 16); }
    if (stored > 2) { carry(first, c20, c + 2 * rowC); carry(first, c21, c + 2 * rowC + 16); }
    if (stored > 3) { carry(first, c30, c + 3 * rowC); carry(first, c31, c + 3 * rowC + 16); }
  }
  const scales = panel + (<usize>kPad << 3);
  const b1 = bias != 0 ? bias + 16 : 0;
  for (let r = 0; r < stored; r++) {
    const sx = v128.load32_splat(sx0 + (<usize>r << 2));
    const cr = c + <usize>r * rowC;
    finish8(cr, sx, scales, bias);
    finish8(cr + 16, sx, scales + 16, b1);
  }
}

/** 1 × 32 over four int8 panels (the GEMV of a batch of one: four weight streams). */
// @ts-ignore: decorator
@inline
function tile8x32(a0: usize, sx0: usize, k: i32, panel: usize, panelBytes: usize, kPad: i32, bias: usize, c: usize): void {
  const p1 = panel + panelBytes, p2 = p1 + panelBytes, p3 = p2 + panelBytes;
  const z = i32x4.splat(0);
  for (let k0 = 0; k0 < k; k0 += INT8_SPAN) {
    const kEnd = min(k, k0 + INT8_SPAN);
    let c0 = z, c1 = z, c2 = z, c3 = z, c4 = z, c5 = z, c6 = z, c7 = z;
    for (let kk = k0; kk < kEnd; kk += 2) {
      const x = v128.load32_splat(a0 + (<usize>kk << 1));
      const row = <usize>kk << 3;
      const u0 = v128.load8x8_s(panel + row), v0 = v128.load8x8_s(panel + row, 8);
      c0 = dot(pairRows(u0, v0, false), x, c0); c1 = dot(pairRows(u0, v0, true), x, c1);
      const u1 = v128.load8x8_s(p1 + row), v1 = v128.load8x8_s(p1 + row, 8);
      c2 = dot(pairRows(u1, v1, false), x, c2); c3 = dot(pairRows(u1, v1, true), x, c3);
      const u2 = v128.load8x8_s(p2 + row), v2 = v128.load8x8_s(p2 + row, 8);
      c4 = dot(pairRows(u2, v2, false), x, c4); c5 = dot(pairRows(u2, v2, true), x, c5);
      const u3 = v128.load8x8_s(p3 + row), v3 = v128.load8x8_s(p3 + row, 8);
      c6 = dot(pairRows(u3, v3, false), x, c6); c7 = dot(pairRows(u3, v3, true), x, c7);
    }
    const first = k0 == 0;
    carry(first, c0, c); carry(first, c1, c + 16); carry(first, c2, c + 32); carry(first, c3, c + 48);
    carry(first, c4, c + 64); carry(first, c5, c + 80); carry(first, c6, c + 96); carry(first, c7, c + 112);
  }
  const sx = v128.load32_splat(sx0);
  const scales = <usize>kPad << 3;
  for (let q = 0; q < 4; q++) {
    const p = panel + <usize>q * panelBytes + scales;
    const cq = c + (<usize>q << 5);
    const bq = bias != 0 ? bias + (<usize>q << 5) : 0;
    finish8(cq, sx, p, bq);
    finish8(cq + 16, sx, p + 16, bq != 0 ? bq + 16 : 0);
  }
}

// ---- int4 -----------------------------------------------------------------------------------------

// An octet's rows (r, r + 4) as i16 pairs: i16x8.shr_s(t, 12) with t the octet shifted left by 4r
// (each step shifts t once more).

/** acc + an octet's 8 rows of 4 columns (t: its nibble lanes) times activation pairs x0..x3 (rows r, r + 4). */
// @ts-ignore: decorator
@inline
function octet(t: v128, x0: v128, x1: v128, x2: v128, x3: v128, acc: v128): v128 {
  const p0 = i32x4.dot_i16x8_s(i16x8.shr_s(t, 12), x0);
  const p1 = i32x4.dot_i16x8_s(i16x8.shr_s(i16x8.shl(t, 4), 12), x1);
  const p2 = i32x4.dot_i16x8_s(i16x8.shr_s(i16x8.shl(t, 8), 12), x2);
  const p3 = i32x4.dot_i16x8_s(i16x8.shr_s(i16x8.shl(t, 12), 12), x3);
  return i32x4.add(acc, i32x4.add(i32x4.add(p0, p1), i32x4.add(p2, p3)));
}

/** A block's i32 sums, scaled by its column scales, into the f32 partial sums at c. */
// @ts-ignore: decorator
@inline
function carry4(first: bool, acc: v128, scales: v128, c: usize): void {
  const s = f32x4.mul(f32x4.convert_i32x4_s(acc), scales);
  v128.store(c, first ? s : f32x4.add(v128.load(c), s));
}

/** The finished int4 columns at c: partial · sx (+ bias). */
// @ts-ignore: decorator
@inline
function finish4(c: usize, sx: v128, bias: usize): void {
  let y = f32x4.mul(v128.load(c), sx);
  if (bias != 0) y = f32x4.add(y, v128.load(bias));
  v128.store(c, y);
}

/** R × 8 (R = rows ≤ 4, `stored` of them written) over one int4 panel. */
// @ts-ignore: decorator
@inline
function tile4(rows: i32, stored: i32, a0: usize, rowA: usize, sx0: usize, k: i32, panel: usize, bias: usize, c: usize, rowC: usize): void {
  const a1 = stored > 1 ? a0 + rowA : a0;
  const a2 = stored > 2 ? a1 + rowA : a1;
  const a3 = stored > 3 ? a2 + rowA : a2;
  const z = i32x4.splat(0);
  for (let k0 = 0; k0 < k; k0 += Q4_BLOCK) {
    const block = panel + <usize>(k0 >> 5) * Q4_BLOCK_BYTES;
    let c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
    const octets = min(4, (k - k0 + 7) >> 3);
    for (let o = 0; o < octets; o++) {
      let t0 = v128.load(block + (<usize>o << 5));
      let t1 = v128.load(block + (<usize>o << 5), 16);
      const off = <usize>(k0 + (o << 3)) << 1;
      for (let r = 0; r < 4; r++) {
        const w0 = i16x8.shr_s(t0, 12);
        const w1 = i16x8.shr_s(t1, 12);
        t0 = i16x8.shl(t0, 4);
        t1 = i16x8.shl(t1, 4);
        const at = off + (<usize>r << 2);
        const x0 = v128.load32_splat(a0 + at);
        c00 = dot(w0, x0, c00); c01 = dot(w1, x0, c01);
        if (rows > 1) { const x1 = v128.load32_splat(a1 + at); c10 = dot(w0, x1, c10); c11 = dot(w1, x1, c11); }
        if (rows > 2) { const x2 = v128.load32_splat(a2 + at); c20 = dot(w0, x2, c20); c21 = dot(w1, x2, c21); }
        if (rows > 3) { const x3 = v128.load32_splat(a3 + at); c30 = dot(w0, x3, c30); c31 = dot(w1, x3, c31); }
      }
    }
    const s0 = v128.load(block + Q4_SCALES), s1 = v128.load(block + Q4_SCALES, 16);
    const first = k0 == 0;
    carry4(first, c00, s0, c); carry4(first, c01, s1, c + 16);
    if (stored > 1) { carry4(first, c10, s0, c + rowC); carry4(first, c11, s1, c + rowC + 16); }
    if (stored > 2) { carry4(first, c20, s0, c + 2 * rowC); carry4(first, c21, s1, c + 2 * rowC + 16); }
    if (stored > 3) { carry4(first, c30, s0, c + 3 * rowC); carry4(first, c31, s1, c + 3 * rowC + 16); }
  }
  const b1 = bias != 0 ? bias + 16 : 0;
  for (let r = 0; r < stored; r++) {
    const sx = v128.load32_splat(sx0 + (<usize>r << 2));
    const cr = c + <usize>r * rowC;
    finish4(cr, sx, bias);
    finish4(cr + 16, sx, b1);
  }
}

/** 1 × 16 over two int4 panels (the GEMV of a batch of one), the partial sums in registers. */
// @ts-ignore: decorator
@inline
function tile4x16(a0: usize, sx0: usize, k: i32, panel: usize, panelBytes: usize, bias: usize, c: usize): void {
  const p1 = panel + panelBytes;
  const z = i32x4.splat(0);
  let f0 = f32x4.splat(0), f1 = f0, f2 = f0, f3 = f0;
  for (let k0 = 0; k0 < k; k0 += Q4_BLOCK) {
    const blockOffset = <usize>(k0 >> 5) * Q4_BLOCK_BYTES;
    const block0 = panel + blockOffset;
    const block1 = p1 + blockOffset;
    let c0 = z, c1 = z, c2 = z, c3 = z;
    const octets = min(4, (k - k0 + 7) >> 3);
    for (let o = 0; o < octets; o++) {
      const at = <usize>o << 5;
      const t0 = v128.load(block0 + at), t1 = v128.load(block0 + at, 16);
      const t2 = v128.load(block1 + at), t3 = v128.load(block1 + at, 16);
      const off = a0 + (<usize>(k0 + (o << 3)) << 1);
      const x0 = v128.load32_splat(off), x1 = v128.load32_splat(off, 4);
      const x2 = v128.load32_splat(off, 8), x3 = v128.load32_splat(off, 12);
      c0 = octet(t0, x0, x1, x2, x3, c0);
      c1 = octet(t1, x0, x1, x2, x3, c1);
      c2 = octet(t2, x0, x1, x2, x3, c2);
      c3 = octet(t3, x0, x1, x2, x3, c3);
    }
    f0 = f32x4.add(f0, f32x4.mul(f32x4.convert_i32x4_s(c0), v128.load(block0 + Q4_SCALES)));
    f1 = f32x4.add(f1, f32x4.mul(f32x4.convert_i32x4_s(c1), v128.load(block0 + Q4_SCALES, 16)));
    f2 = f32x4.add(f2, f32x4.mul(f32x4.convert_i32x4_s(c2), v128.load(block1 + Q4_SCALES)));
    f3 = f32x4.add(f3, f32x4.mul(f32x4.convert_i32x4_s(c3), v128.load(block1 + Q4_SCALES, 16)));
  }
  const sx = v128.load32_splat(sx0);
  v128.store(c, f0); v128.store(c, f1, 16); v128.store(c, f2, 32); v128.store(c, f3, 48);
  finish4(c, sx, bias);
  finish4(c + 16, sx, bias != 0 ? bias + 16 : 0);
  finish4(c + 32, sx, bias != 0 ? bias + 32 : 0);
  finish4(c + 48, sx, bias != 0 ? bias + 48 : 0);
}

// ---- drivers ----------------------------------------------------------------------------------------

// @ts-ignore: decorator
@inline
function tileA16(int4: bool, rows: i32, stored: i32, a0: usize, rowA: usize, sx0: usize, k: i32, panel: usize, kPad: i32, bias: usize, c: usize, rowC: usize): void {
  if (int4) tile4(rows, stored, a0, rowA, sx0, k, panel, bias, c, rowC);
  else tile8(rows, stored, a0, rowA, sx0, k, panel, kPad, bias, c, rowC);
}

/**
 * One dtype's driver: M = 1 over groups of panels (int8 four, int4 two), then panel by panel;
 * M ≥ 2 panel by panel, the panel staying in L1 while the row tiles run over it.
 */
// @ts-ignore: decorator
@inline
function gemmA16(int4: bool, aq: usize, ldq: i32, sx: usize, m: i32, k: i32, bp: usize, panels: i32, kPad: i32, c: usize, ldc: i32, bias: usize): void {
  if (m <= 0) return;
  const rowA = <usize>ldq << 1;
  const rowC = <usize>ldc << 2;
  const panelBytes = qPanelBytes(int4 ? DTYPE_INT4 : DTYPE_INT8, kPad);
  let p0 = 0;
  if (m == 1) {
    const group = int4 ? 2 : 4;
    for (; p0 + group <= panels; p0 += group) {
      const col = <usize>p0 << 5;
      const biasP = bias != 0 ? bias + col : 0;
      if (int4) tile4x16(aq, sx, k, bp + <usize>p0 * panelBytes, panelBytes, biasP, c + col);
      else tile8x32(aq, sx, k, bp + <usize>p0 * panelBytes, panelBytes, kPad, biasP, c + col);
    }
  }
  for (let p = p0; p < panels; p++) {
    const panel = bp + <usize>p * panelBytes;
    const col = <usize>p << 5;
    const biasP = bias != 0 ? bias + col : 0;
    let i = 0;
    for (; i + 4 <= m; i += 4) tileA16(int4, 4, 4, aq + <usize>i * rowA, rowA, sx + (<usize>i << 2), k, panel, kPad, biasP, c + <usize>i * rowC + col, rowC);
    const rest = m - i;
    const ai = aq + <usize>i * rowA, si = sx + (<usize>i << 2), ci = c + <usize>i * rowC + col;
    if (rest == 3) tileA16(int4, 4, 3, ai, rowA, si, k, panel, kPad, biasP, ci, rowC);
    else if (rest == 2) tileA16(int4, 2, 2, ai, rowA, si, k, panel, kPad, biasP, ci, rowC);
    else if (rest == 1) tileA16(int4, 1, 1, ai, rowA, si, k, panel, kPad, biasP, ci, rowC);
  }
}

function gemmA16Int8(aq: usize, ldq: i32, sx: usize, m: i32, k: i32, bp: usize, panels: i32, kPad: i32, c: usize, ldc: i32, bias: usize): void {
  gemmA16(false, aq, ldq, sx, m, k, bp, panels, kPad, c, ldc, bias);
}
function gemmA16Int4(aq: usize, ldq: i32, sx: usize, m: i32, k: i32, bp: usize, panels: i32, kPad: i32, c: usize, ldc: i32, bias: usize): void {
  gemmA16(true, aq, ldq, sx, m, k, bp, panels, kPad, c, ldc, bias);
}

/**
 * C[M, 8·P] = (A[M, K] rounded to 16 bits a row) · Bquantized (+ bias[8·P]) over int8 or int4
 * panels packed by packPanelsQ with this kPad: A is quantized into aq (row stride ldq ≥
 * a16Stride(k) i16) and sx (f32 [M]) first.
 */
export function gemmPanelsA16(dtype: i32, a: usize, lda: i32, m: i32, k: i32, bp: usize, panels: i32, kPad: i32, c: usize, ldc: i32, bias: usize, aq: usize, ldq: i32, sx: usize): void {
  const int4 = dtype == DTYPE_INT4;
  quantizeRowsA16(int4, a, lda, m, k, aq, ldq, sx);
  if (int4) gemmA16Int4(aq, ldq, sx, m, k, bp, panels, kPad, c, ldc, bias);
  else gemmA16Int8(aq, ldq, sx, m, k, bp, panels, kPad, c, ldc, bias);
}
