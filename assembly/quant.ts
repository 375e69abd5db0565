// Quantized expert weights: packing at creation, and the expert pass over the quantized panels (no
// f32 copy of the weights exists anywhere): f16 and bf16 by micro-kernels that dequantize in
// registers, int8 and int4 by integer dot products over 16-bit activations (assembly/quant-a16.ts).
//
// Panels are those of packPanelsB (assembly/gemm.ts): 8 output columns × kPad input rows, in the
// same panel order (and the same interleaving for swiglu), so the expert pass keeps its structure.
// Per panel, by dtype:
//   f16, bf16: kPad rows of 8 u16 (16 bytes a row).
//   int8:      kPad rows of 8 i8, then 8 f32 scales (one per column: symmetric, per output
//              channel, scale = max|w| / 127, q = round(w / scale) in [−127, 127]).
//   int4:      blocks of Q4_BLOCK = 32 rows, each 128 bytes of nibbles then 8 f32 scales (one per
//              column and block: symmetric, q = round(w / scale) clamped to [−7, 7], the scale
//              the one of max|w|/7 and slightly smaller ones with the least squared error,
//              stored as a 4-bit two's complement). In a block, octet o (rows 8o..8o+7) is two
//              v128 (columns 0..3, then 4..7) whose i32 lane j holds column j's 8 rows, row 8o+r
//              in bits 28−4r..31−4r. f32 scales (not f16): 5 bits a weight instead of 4.5, and no
//              conversion in the inner loop.
// The dequantized weight (getWeights) is q·scale in f32 or the f16/bf16 value, exactly. Rows past
// K and columns past N are zero, as in packPanelsB.
import { madd } from "./gemm";
import { activateColumns } from "./experts";
import { KIND_SWIGLU } from "../src/abi";
import { a16Stride, gemmPanelsA16 } from "./quant-a16";

// dtype codes (src/cpu/layout.ts DTYPE_CODE): 0 is f32, the packPanelsB layout.
import { DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_INT8, DTYPE_INT4, Q4_BLOCK } from "../src/abi";
export { DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_INT8, DTYPE_INT4 };
/** Bytes of one int4 block of one panel: 32 rows × 8 nibbles, then 8 f32 scales. */
export const Q4_BLOCK_BYTES: usize = 160;
/** Where a block's scales start. */
export const Q4_SCALES: usize = 128;

/** f16 bits h placed as (h << 16) >> 3 (arithmetic) & F16_MASK are the f32 of value·2^−112. */
const F16_MASK: i32 = -1879048193; // 0x8fffffff
/** 2^112, which restores it (exact for normals and subnormals). */
const F16_RESCALE: f32 = reinterpret<f32>(0x77800000);

/** Bytes of one panel (8 columns × kPad rows) of a dtype. */
export function qPanelBytes(dtype: i32, kPad: i32): usize {
  const rows = <usize>kPad;
  if (dtype == DTYPE_F16 || dtype == DTYPE_BF16) return rows << 4;
  if (dtype == DTYPE_INT8) return (rows << 3) + 32;
  if (dtype == DTYPE_INT4) return ((rows + 31) >> 5) * Q4_BLOCK_BYTES;
  return rows << 5;
}

// ---- conversions (scalar: packing and unpacking) ----------------------------------------------

/** f32 → f16 bits, round to nearest even; −1 when the value rounds past ±65504. */
function f32ToF16(x: f32): i32 {
  const bits = reinterpret<u32>(x);
  const sign = <i32>(bits >> 16) & 0x8000;
  const a = bits & 0x7fffffff;
  if (a >= 0x477ff000) return -1;
  if (a < 0x38800000) {
    // below 2^−14: a multiple of the subnormal unit 2^−24 (×2^24 is exact; nearest ties to even)
    return sign | <i32>nearest<f32>(reinterpret<f32>(a) * 16777216.0);
  }
  let h = <i32>((a - 0x38000000) >> 13);
  const rest = a & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1) != 0)) h++;
  return sign | h;
}

/** f16 bits → f32, by the same integer steps as the kernels. */
function f16ToF32(h: i32): f32 {
  return reinterpret<f32>(((h << 16) >> 3) & F16_MASK) * F16_RESCALE;
}

/** f32 → bf16 bits, round to nearest even; −1 when the value rounds past the f32 range. */
function f32ToBf16(x: f32): i32 {
  const bits = reinterpret<u32>(x);
  if ((bits & 0x7fffffff) >= 0x7f7f8000) return -1;
  return <i32>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

// @ts-ignore: decorator
@inline
function srcAt(col: usize, ldSrc: i32, kk: i32): f32 {
  return load<f32>(col + ((<usize>kk * <usize>ldSrc) << 2));
}

// @ts-ignore: decorator
@inline
function quantize(w: f32, scale: f32, limit: f32): i32 {
  if (scale == 0) return 0;
  return <i32>min<f32>(limit, max<f32>(-limit, nearest<f32>(w / scale)));
}

/** Address of the i32 lane that holds int4 row kk of column j of a panel (the row's nibble: 28 − 4·(kk & 7)). */
// @ts-ignore: decorator
@inline
function q4LaneAt(panel: usize, kk: i32, j: i32): usize {
  return panel + <usize>(kk >> 5) * Q4_BLOCK_BYTES + (<usize>((kk >> 3) & 3) << 5) + (<usize>j << 2);
}

/** The scales of the panel row kk belongs to (int8: the panel's; int4: its block's). */
// @ts-ignore: decorator
@inline
function scalesAt(dtype: i32, panel: usize, kPad: i32, kk: i32): usize {
  if (dtype == DTYPE_INT8) return panel + (<usize>kPad << 3);
  return panel + <usize>(kk >> 5) * Q4_BLOCK_BYTES + Q4_SCALES;
}

/**
 * The scale of one int4 block of a column (rows b0..b1): of max|w|/7 and a few smaller ones (the
 * largest weights then clipped to ±7·scale), the one with the least squared error: with 15 levels
 * a slightly clipped range pays (y's error on the golden vectors: 4% less than with max|w|/7).
 */
function q4Scale(col: usize, ldSrc: i32, b0: i32, b1: i32): f32 {
  let top: f32 = 0;
  for (let kk = b0; kk < b1; kk++) top = max<f32>(top, abs<f32>(srcAt(col, ldSrc, kk)));
  let best = top / 7;
  let bestErr = Infinity;
  for (let step = 0; step < 8; step++) {
    const scale = top * (1 - <f32>step * 0.03) / 7;
    if (scale == 0) break;
    let err: f64 = 0;
    for (let kk = b0; kk < b1; kk++) {
      const w = srcAt(col, ldSrc, kk);
      const diff = <f64>w - <f64>(<f32>quantize(w, scale, 7) * scale);
      err += diff * diff;
    }
    if (err < bestErr) {
      bestErr = err;
      best = scale;
    }
  }
  return best;
}

/**
 * Quantizes a row-major [K, N] matrix (row stride ldSrc floats) into ceil(N/8) panels of the
 * dtype, panel p at slot p·panelStep (as packPanelsB). Returns −1, or (f16, bf16) the index
 * kk·ldSrc + column of the first value beyond the dtype's range (nothing is then usable).
 */
export function packPanelsQ(dtype: i32, src: usize, k: i32, n: i32, ldSrc: i32, dst: usize, kPad: i32, panelStep: i32): i32 {
  const panelBytes = qPanelBytes(dtype, kPad);
  const panels = (n + 7) >> 3;
  for (let p = 0; p < panels; p++) {
    const panel = dst + <usize>(p * panelStep) * panelBytes;
    memory.fill(panel, 0, panelBytes);
    const c0 = p << 3;
    const width = min(8, n - c0);
    for (let j = 0; j < width; j++) {
      const col = src + ((<usize>c0 + <usize>j) << 2);
      if (dtype == DTYPE_F16 || dtype == DTYPE_BF16) {
        for (let kk = 0; kk < k; kk++) {
          const bits = dtype == DTYPE_F16 ? f32ToF16(srcAt(col, ldSrc, kk)) : f32ToBf16(srcAt(col, ldSrc, kk));
          if (bits < 0) return kk * ldSrc + c0 + j;
          store<u16>(panel + (<usize>kk << 4) + (<usize>j << 1), <u16>bits);
        }
      } else if (dtype == DTYPE_INT8) {
        let top: f32 = 0;
        for (let kk = 0; kk < k; kk++) top = max<f32>(top, abs<f32>(srcAt(col, ldSrc, kk)));
        const scale = top / 127;
        store<f32>(panel + (<usize>kPad << 3) + (<usize>j << 2), scale);
        for (let kk = 0; kk < k; kk++) store<i8>(panel + (<usize>kk << 3) + <usize>j, <i8>quantize(srcAt(col, ldSrc, kk), scale, 127));
      } else {
        for (let b0 = 0; b0 < k; b0 += Q4_BLOCK) {
          const block = panel + <usize>(b0 >> 5) * Q4_BLOCK_BYTES;
          const b1 = min(k, b0 + Q4_BLOCK);
          const scale = q4Scale(col, ldSrc, b0, b1);
          store<f32>(block + Q4_SCALES + (<usize>j << 2), scale);
          for (let kk = b0; kk < b1; kk++) {
            const q = quantize(srcAt(col, ldSrc, kk), scale, 7) & 15;
            const at = q4LaneAt(panel, kk, j);
            store<i32>(at, load<i32>(at) | (q << (28 - ((kk & 7) << 2))));
          }
        }
      }
    }
  }
  return -1;
}

/** The dequantized value of row kk, column j of a panel. */
function dequantAt(dtype: i32, panel: usize, kPad: i32, kk: i32, j: i32): f32 {
  if (dtype == DTYPE_F16) return f16ToF32(<i32>load<u16>(panel + (<usize>kk << 4) + (<usize>j << 1)));
  if (dtype == DTYPE_BF16) return reinterpret<f32>(<i32>load<u16>(panel + (<usize>kk << 4) + (<usize>j << 1)) << 16);
  const scale = load<f32>(scalesAt(dtype, panel, kPad, kk) + (<usize>j << 2));
  if (dtype == DTYPE_INT8) return <f32>load<i8>(panel + (<usize>kk << 3) + <usize>j) * scale;
  return <f32>((load<i32>(q4LaneAt(panel, kk, j)) << ((kk & 7) << 2)) >> 28) * scale;
}

/** Inverse of packPanelsQ for the real [K, N] part: the dequantized weights the kernels use. */
export function unpackPanelsQ(dtype: i32, src: usize, k: i32, n: i32, dst: usize, ldDst: i32, kPad: i32, panelStep: i32): void {
  const panelBytes = qPanelBytes(dtype, kPad);
  const panels = (n + 7) >> 3;
  for (let p = 0; p < panels; p++) {
    const panel = src + <usize>(p * panelStep) * panelBytes;
    const c0 = p << 3;
    const width = min(8, n - c0);
    for (let kk = 0; kk < k; kk++) {
      const d = dst + ((<usize>kk * <usize>ldDst + <usize>c0) << 2);
      for (let j = 0; j < width; j++) store<f32>(d + (<usize>j << 2), dequantAt(dtype, panel, kPad, kk, j));
    }
  }
}

// ---- dequantization in registers ----------------------------------------------------------------
// f16 and bf16 (int8 and int4 take integer dot products: assembly/quant-a16.ts): rowBits is the
// row's 8 raw u16 weights, half its columns 0..3 or 4..7 as f32x4.

// @ts-ignore: decorator
@inline
function rowBits(panel: usize, kk: i32): v128 {
  return v128.load(panel + (<usize>kk << 4));
}

// @ts-ignore: decorator
@inline
function half(dtype: i32, bits: v128, hi: bool): v128 {
  const zero = i32x4.splat(0);
  // each u16 into the top half of an i32 lane: bf16 is then its f32
  const top = hi ? i16x8.shuffle(zero, bits, 4, 12, 5, 13, 6, 14, 7, 15) : i16x8.shuffle(zero, bits, 0, 8, 1, 9, 2, 10, 3, 11);
  if (dtype == DTYPE_BF16) return top;
  return f32x4.mul(v128.and(i32x4.shr_s(top, 3), i32x4.splat(F16_MASK)), f32x4.splat(F16_RESCALE));
}

// ---- micro-kernels (f16, bf16) ----------------------------------------------------------------------
// The tiles of gemm.ts over f16/bf16 panels: R × 8 (R = 1..4; `stored` of them kept, as tileRx8)
// and 1 × 32 (four panels, panelBytes apart). Sums run in kk order, one madd per term, from the
// bias: the same bits as the f32 kernels on the dequantized weights.

// @ts-ignore: decorator
@inline
function initAcc(bias: usize, offset: usize): v128 {
  return bias != 0 ? v128.load(bias + offset) : f32x4.splat(0);
}

// @ts-ignore: decorator
@inline
function qtileRx8(dtype: i32, rows: i32, stored: i32, a0: usize, rowA: usize, k: i32, panel: usize, bias: usize, c: usize, rowC: usize): void {
  const a1 = stored > 1 ? a0 + rowA : a0;
  const a2 = stored > 2 ? a1 + rowA : a1;
  const a3 = stored > 3 ? a2 + rowA : a2;
  const init0 = initAcc(bias, 0), init1 = initAcc(bias, 16);
  let c00 = init0, c01 = init1, c10 = init0, c11 = init1;
  let c20 = init0, c21 = init1, c30 = init0, c31 = init1;
  for (let kk = 0; kk < k; kk++) {
    const off = <usize>kk << 2;
    const bits = rowBits(panel, kk);
    const b0 = half(dtype, bits, false);
    const b1 = half(dtype, bits, true);
    const x0 = v128.load32_splat(a0 + off);
    c00 = madd(x0, b0, c00); c01 = madd(x0, b1, c01);
    if (rows > 1) { const x1 = v128.load32_splat(a1 + off); c10 = madd(x1, b0, c10); c11 = madd(x1, b1, c11); }
    if (rows > 2) { const x2 = v128.load32_splat(a2 + off); c20 = madd(x2, b0, c20); c21 = madd(x2, b1, c21); }
    if (rows > 3) { const x3 = v128.load32_splat(a3 + off); c30 = madd(x3, b0, c30); c31 = madd(x3, b1, c31); }
  }
  v128.store(c, c00); v128.store(c, c01, 16);
  if (stored > 1) { v128.store(c + rowC, c10); v128.store(c + rowC, c11, 16); }
  if (stored > 2) { v128.store(c + 2 * rowC, c20); v128.store(c + 2 * rowC, c21, 16); }
  if (stored > 3) { v128.store(c + 3 * rowC, c30); v128.store(c + 3 * rowC, c31, 16); }
}

// 1 × 32: one row over four panels (four read streams: the GEMV of a batch of one).
// @ts-ignore: decorator
@inline
function qtile1x32(dtype: i32, a0: usize, k: i32, panel: usize, panelBytes: usize, bias: usize, c: usize): void {
  const p1 = panel + panelBytes;
  const p2 = p1 + panelBytes;
  const p3 = p2 + panelBytes;
  let c0 = initAcc(bias, 0), c1 = initAcc(bias, 16), c2 = initAcc(bias, 32), c3 = initAcc(bias, 48);
  let c4 = initAcc(bias, 64), c5 = initAcc(bias, 80), c6 = initAcc(bias, 96), c7 = initAcc(bias, 112);
  for (let kk = 0; kk < k; kk++) {
    const x = v128.load32_splat(a0 + (<usize>kk << 2));
    const q0 = rowBits(panel, kk);
    c0 = madd(x, half(dtype, q0, false), c0); c1 = madd(x, half(dtype, q0, true), c1);
    const q1 = rowBits(p1, kk);
    c2 = madd(x, half(dtype, q1, false), c2); c3 = madd(x, half(dtype, q1, true), c3);
    const q2 = rowBits(p2, kk);
    c4 = madd(x, half(dtype, q2, false), c4); c5 = madd(x, half(dtype, q2, true), c5);
    const q3 = rowBits(p3, kk);
    c6 = madd(x, half(dtype, q3, false), c6); c7 = madd(x, half(dtype, q3, true), c7);
  }
  v128.store(c, c0); v128.store(c, c1, 16); v128.store(c, c2, 32); v128.store(c, c3, 48);
  v128.store(c, c4, 64); v128.store(c, c5, 80); v128.store(c, c6, 96); v128.store(c, c7, 112);
}

/**
 * The driver of one dtype: M = 1 as 1 × 32 over groups of four panels (then 1 × 8); M ≥ 2 panel by
 * panel, each panel staying in L1 while 4-row tiles and a 1-3-row tail run over it, so every
 * weight is read from memory once per call.
 */
// @ts-ignore: decorator
@inline
function gemmQ(dtype: i32, a: usize, lda: i32, m: i32, k: i32, bp: usize, panels: i32, kPad: i32, c: usize, ldc: i32, bias: usize): void {
  const rowA = <usize>lda << 2;
  const rowC = <usize>ldc << 2;
  const panelBytes = qPanelBytes(dtype, kPad);
  if (m <= 0) return;
  if (m == 1) {
    let p = 0;
    for (; p + 4 <= panels; p += 4) {
      const col = <usize>p << 5;
      qtile1x32(dtype, a, k, bp + <usize>p * panelBytes, panelBytes, bias != 0 ? bias + col : 0, c + col);
    }
    for (; p < panels; p++) {
      const col = <usize>p << 5;
      qtileRx8(dtype, 1, 1, a, rowA, k, bp + <usize>p * panelBytes, bias != 0 ? bias + col : 0, c + col, rowC);
    }
    return;
  }
  for (let p = 0; p < panels; p++) {
    const panel = bp + <usize>p * panelBytes;
    const col = <usize>p << 5;
    const biasP = bias != 0 ? bias + col : 0;
    let i = 0;
    for (; i + 4 <= m; i += 4) qtileRx8(dtype, 4, 4, a + <usize>i * rowA, rowA, k, panel, biasP, c + <usize>i * rowC + col, rowC);
    const rest = m - i;
    const ai = a + <usize>i * rowA;
    const ci = c + <usize>i * rowC + col;
    if (rest == 3) qtileRx8(dtype, 4, 3, ai, rowA, k, panel, biasP, ci, rowC);
    else if (rest == 2) qtileRx8(dtype, 2, 2, ai, rowA, k, panel, biasP, ci, rowC);
    else if (rest == 1) qtileRx8(dtype, 1, 1, ai, rowA, k, panel, biasP, ci, rowC);
  }
}

function gemmF16(a: usize, lda: i32, m: i32, k: i32, bp: usize, panels: i32, kPad: i32, c: usize, ldc: i32, bias: usize): void {
  gemmQ(DTYPE_F16, a, lda, m, k, bp, panels, kPad, c, ldc, bias);
}
function gemmBf16(a: usize, lda: i32, m: i32, k: i32, bp: usize, panels: i32, kPad: i32, c: usize, ldc: i32, bias: usize): void {
  gemmQ(DTYPE_BF16, a, lda, m, k, bp, panels, kPad, c, ldc, bias);
}

// ---- the expert pass over quantized weights ----------------------------------------------------
// int8 and int4 run with 16-bit activations (assembly/quant-a16.ts): qa holds the quantized rows
// (pairs × a16Stride(max(d, hp)) i16; the up-projection's rows with stride a16Stride(d), the
// down-projection's with a16Stride(hp)), qs their scales (f32 [pairs]). Every chunk of the thread
// pool that works on expert e quantizes its rows first; two chunks of one expert may write the
// same bytes at once, always the same values (a pure function of the rows).

/** The expert GEMM of one dtype: f16/bf16 dequantize to f32 in registers, int8/int4 go through 16-bit activations. */
// @ts-ignore: decorator
@inline
function expertGemm(dtype: i32, a: usize, lda: i32, m: i32, k: i32, bp: usize, panels: i32, kPad: i32, c: usize, ldc: i32, bias: usize, qa: usize, qs: usize, first: i32): void {
  if (dtype == DTYPE_INT8 || dtype == DTYPE_INT4) {
    const ldq = a16Stride(k);
    gemmPanelsA16(dtype, a, lda, m, k, bp, panels, kPad, c, ldc, bias, qa + ((<usize>first * <usize>ldq) << 1), ldq, qs + (<usize>first << 2));
  } else if (dtype == DTYPE_F16) {
    gemmF16(a, lda, m, k, bp, panels, kPad, c, ldc, bias);
  } else {
    gemmBf16(a, lda, m, k, bp, panels, kPad, c, ldc, bias);
  }
}

/**
 * expertUp (assembly/experts.ts) over quantized w1 panels: hidden-column units [u0, u1) of expert
 * e, pre = x·W1 (+ b1), act = activation(pre). b1 stays f32.
 */
export function expertUpQ(
  dtype: i32, kind: i32, d: i32, hp: i32, e: i32, first: i32, m: i32, u0: i32, u1: i32,
  w1: usize, b1: usize, gathered: usize, pre: usize, act: usize, qa: usize, qs: usize,
): void {
  const swiglu = kind == KIND_SWIGLU;
  const hw = swiglu ? hp << 1 : hp;
  const panelsPerUnit = swiglu ? 2 : 1;
  const panelBytes = qPanelBytes(dtype, d);
  const p0 = u0 * panelsPerUnit;
  const a = gathered + ((<usize>first * <usize>d) << 2);
  const preE = pre + ((<usize>first * <usize>hw) << 2);
  const w1E = w1 + <usize>e * (<usize>(hw >> 3) * panelBytes);
  const bias = swiglu ? <usize>0 : b1 + ((<usize>e * <usize>hp + (<usize>u0 << 3)) << 2);
  expertGemm(dtype, a, d, m, d, w1E + <usize>p0 * panelBytes, (u1 - u0) * panelsPerUnit, d, preE + (<usize>p0 << 5), hw, bias, qa, qs, first);
  activateColumns(kind, preE, hw, m, u0, u1, act + ((<usize>first * <usize>hp) << 2), hp);
}

/** expertDown over quantized w2 panels: output panels [q0, q1) of expert e (b2 stays f32). */
export function expertDownQ(
  dtype: i32, kind: i32, hp: i32, dp: i32, e: i32, first: i32, m: i32, q0: i32, q1: i32,
  w2: usize, b2: usize, act: usize, out: usize, qa: usize, qs: usize,
): void {
  const panelBytes = qPanelBytes(dtype, hp);
  const w2E = w2 + <usize>e * (<usize>(dp >> 3) * panelBytes);
  const bias = kind == KIND_SWIGLU ? <usize>0 : b2 + ((<usize>e * <usize>dp + (<usize>q0 << 3)) << 2);
  expertGemm(
    dtype, act + ((<usize>first * <usize>hp) << 2), hp, m, hp, w2E + <usize>q0 * panelBytes, q1 - q0, hp,
    out + ((<usize>first * <usize>dp + (<usize>q0 << 3)) << 2), dp, bias, qa, qs, first,
  );
}

/**
 * expertsForward (assembly/experts.ts) over quantized weights: experts [eBegin, eEnd), one thread.
 * w1/w2 hold packPanelsQ panels of `dtype` (w1: kPad = d; w2: kPad = hp), b1/b2 the f32 biases;
 * qa/qs: the 16-bit activations' scratch (int8, int4).
 */
export function expertsForwardQ(
  kind: i32, dtype: i32, d: i32, h: i32, eBegin: i32, eEnd: i32,
  w1: usize, b1: usize, w2: usize, b2: usize,
  expertOffsets: usize, gathered: usize, pre: usize, act: usize, out: usize, qa: usize, qs: usize,
): void {
  const hp = (h + 7) & ~7;
  const dp = (d + 7) & ~7;
  for (let e = eBegin; e < eEnd; e++) {
    const first = load<i32>(expertOffsets + (<usize>e << 2));
    const m = load<i32>(expertOffsets + (<usize>(e + 1) << 2)) - first;
    if (m == 0) continue;
    expertUpQ(dtype, kind, d, hp, e, first, m, 0, hp >> 3, w1, b1, gathered, pre, act, qa, qs);
    expertDownQ(dtype, kind, hp, dp, e, first, m, 0, dp >> 3, w2, b2, act, out, qa, qs);
  }
}
