// Probes of what this machine gives WebAssembly, for the roofline of each benchmark case:
//   simdPeak, relaxedPeak   f32x4 mul + add / relaxed_madd throughput, register-only
//   simdTile, relaxedTile   the same through the GEMM's 4 × 8 tile on L1-resident data
//   dotPeak, relaxedDotPeak i32x4.dot_i16x8_s (8 multiply-adds) / relaxed i8 dot (16) throughput,
//                           register-only: the arithmetic ceiling of the int8/int4 and W8A8 kernels
//   readBytes, readStreams  streaming reads of a buffer with v128 loads, one stream / four (bandwidth)
// Built twice by bench/machine.mjs: with SIMD only (runs everywhere) and with relaxed SIMD.
//
// The register-only loops have the shape of the GEMM micro-kernel (4 × 2 tile: c[i][j] += a[i]·b[j],
// 8 independent accumulators). The loop body is two steps with b0 and b1 swapped, so no
// accumulator sees the same product twice in a row (measured: a register swap per step instead
// costs ~30% here).

/** Runs `iters` (even) steps of 8 f32x4 mul+add pairs; returns a value that depends on every lane. */
export function simdPeak(iters: i32, seed: f32): f32 {
  const a0 = f32x4.splat(seed), a1 = f32x4.splat(seed * 0.5), a2 = f32x4.splat(seed * 0.25), a3 = f32x4.splat(seed * 0.125);
  const b0 = f32x4.splat(1e-7), b1 = f32x4.splat(-1e-7);
  let c00 = f32x4.splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (let i = 0; i < iters; i += 2) {
    c00 = f32x4.add(c00, f32x4.mul(a0, b0));
    c01 = f32x4.add(c01, f32x4.mul(a0, b1));
    c10 = f32x4.add(c10, f32x4.mul(a1, b0));
    c11 = f32x4.add(c11, f32x4.mul(a1, b1));
    c20 = f32x4.add(c20, f32x4.mul(a2, b0));
    c21 = f32x4.add(c21, f32x4.mul(a2, b1));
    c30 = f32x4.add(c30, f32x4.mul(a3, b0));
    c31 = f32x4.add(c31, f32x4.mul(a3, b1));
    c00 = f32x4.add(c00, f32x4.mul(a0, b1));
    c01 = f32x4.add(c01, f32x4.mul(a0, b0));
    c10 = f32x4.add(c10, f32x4.mul(a1, b1));
    c11 = f32x4.add(c11, f32x4.mul(a1, b0));
    c20 = f32x4.add(c20, f32x4.mul(a2, b1));
    c21 = f32x4.add(c21, f32x4.mul(a2, b0));
    c30 = f32x4.add(c30, f32x4.mul(a3, b1));
    c31 = f32x4.add(c31, f32x4.mul(a3, b0));
  }
  const s = f32x4.add(f32x4.add(f32x4.add(c00, c01), f32x4.add(c10, c11)), f32x4.add(f32x4.add(c20, c21), f32x4.add(c30, c31)));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);
}

/** Runs `iters` (even) steps of 8 f32x4.relaxed_madd; returns a value that depends on every lane. */
export function relaxedPeak(iters: i32, seed: f32): f32 {
  if (!ASC_FEATURE_RELAXED_SIMD) return NaN; // the simd-only build has no relaxed probe
  const a0 = f32x4.splat(seed), a1 = f32x4.splat(seed * 0.5), a2 = f32x4.splat(seed * 0.25), a3 = f32x4.splat(seed * 0.125);
  const b0 = f32x4.splat(1e-7), b1 = f32x4.splat(-1e-7);
  let c00 = f32x4.splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (let i = 0; i < iters; i += 2) {
    c00 = f32x4.relaxed_madd(a0, b0, c00);
    c01 = f32x4.relaxed_madd(a0, b1, c01);
    c10 = f32x4.relaxed_madd(a1, b0, c10);
    c11 = f32x4.relaxed_madd(a1, b1, c11);
    c20 = f32x4.relaxed_madd(a2, b0, c20);
    c21 = f32x4.relaxed_madd(a2, b1, c21);
    c30 = f32x4.relaxed_madd(a3, b0, c30);
    c31 = f32x4.relaxed_madd(a3, b1, c31);
    c00 = f32x4.relaxed_madd(a0, b1, c00);
    c01 = f32x4.relaxed_madd(a0, b0, c01);
    c10 = f32x4.relaxed_madd(a1, b1, c10);
    c11 = f32x4.relaxed_madd(a1, b0, c11);
    c20 = f32x4.relaxed_madd(a2, b1, c20);
    c21 = f32x4.relaxed_madd(a2, b0, c21);
    c30 = f32x4.relaxed_madd(a3, b1, c30);
    c31 = f32x4.relaxed_madd(a3, b0, c31);
  }
  const s = f32x4.add(f32x4.add(f32x4.add(c00, c01), f32x4.add(c10, c11)), f32x4.add(f32x4.add(c20, c21), f32x4.add(c30, c31)));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);
}

/** Reads bytes [p, p + len) (len a multiple of 64) with v128 loads, four streams of sums. */
export function readBytes(p: usize, len: usize): f32 {
  let s0 = f32x4.splat(0), s1 = s0, s2 = s0, s3 = s0;
  const end = p + len;
  for (let q = p; q < end; q += 64) {
    s0 = f32x4.add(s0, v128.load(q));
    s1 = f32x4.add(s1, v128.load(q, 16));
    s2 = f32x4.add(s2, v128.load(q, 32));
    s3 = f32x4.add(s3, v128.load(q, 48));
  }
  const s = f32x4.add(f32x4.add(s0, s1), f32x4.add(s2, s3));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);
}

/**
 * Reads bytes [p, p + len) (len a multiple of 256) as four streams at once (the four quarters, 64
 * bytes of each per step): a GEMM over several weight panels reads like this, and some machines
 * give several streams more bandwidth than one.
 */
export function readStreams(p: usize, len: usize): f32 {
  let s0 = f32x4.splat(0), s1 = s0, s2 = s0, s3 = s0;
  const quarter = len >> 2;
  const end = p + quarter;
  for (let q = p; q < end; q += 64) {
    s0 = f32x4.add(s0, f32x4.add(v128.load(q), v128.load(q, 16)));
    s1 = f32x4.add(s1, f32x4.add(v128.load(q, 32), v128.load(q, 48)));
    const r = q + quarter;
    s2 = f32x4.add(s2, f32x4.add(v128.load(r), v128.load(r, 16)));
    s3 = f32x4.add(s3, f32x4.add(v128.load(r, 32), v128.load(r, 48)));
    const t = r + quarter;
    s0 = f32x4.add(s0, f32x4.add(v128.load(t), v128.load(t, 16)));
    s1 = f32x4.add(s1, f32x4.add(v128.load(t, 32), v128.load(t, 48)));
    const u = t + quarter;
    s2 = f32x4.add(s2, f32x4.add(v128.load(u), v128.load(u, 16)));
    s3 = f32x4.add(s3, f32x4.add(v128.load(u, 32), v128.load(u, 48)));
  }
  const s = f32x4.add(f32x4.add(s0, s1), f32x4.add(s2, s3));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);
}

// @ts-ignore: decorator
@inline
function madd(a: v128, b: v128, acc: v128, relaxed: bool): v128 {
  if (ASC_FEATURE_RELAXED_SIMD && relaxed) return f32x4.relaxed_madd(a, b, acc);
  return f32x4.add(acc, f32x4.mul(a, b));
}

// The GEMM micro-kernel's 4 × 8 tile (assembly/gemm.ts) on data that stays in L1: an 8 KiB panel
// (256 rows of 8 floats) and 4 rows of A at p, run `iters` / 256 times. What the tile can do when
// memory is no limit: with the register-only loops above, the peak the roofline uses.
// @ts-ignore: decorator
@inline
function tileL1(iters: i32, p: usize, relaxed: bool): f32 {
  let c00 = f32x4.splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  const a0 = p, a1 = p + 1024, a2 = p + 2048, a3 = p + 3072;
  const panel = p + 4096;
  for (let i = 0; i < iters; i += 256) {
    let b = panel;
    for (let kk = 0; kk < 256; kk++) {
      const off = <usize>kk << 2;
      const b0 = v128.load(b);
      const b1 = v128.load(b, 16);
      const x0 = v128.load32_splat(a0 + off);
      const x1 = v128.load32_splat(a1 + off);
      c00 = madd(x0, b0, c00, relaxed);
      c01 = madd(x0, b1, c01, relaxed);
      const x2 = v128.load32_splat(a2 + off);
      c10 = madd(x1, b0, c10, relaxed);
      c11 = madd(x1, b1, c11, relaxed);
      const x3 = v128.load32_splat(a3 + off);
      c20 = madd(x2, b0, c20, relaxed);
      c21 = madd(x2, b1, c21, relaxed);
      c30 = madd(x3, b0, c30, relaxed);
      c31 = madd(x3, b1, c31, relaxed);
      b += 32;
    }
  }
  const s = f32x4.add(f32x4.add(f32x4.add(c00, c01), f32x4.add(c10, c11)), f32x4.add(f32x4.add(c20, c21), f32x4.add(c30, c31)));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);
}

/** `iters` (a multiple of 256) steps of the 4 × 8 tile with f32x4 mul + add: 64 flops a step. Needs 12 KiB at p. */
export function simdTile(iters: i32, p: usize): f32 {
  return tileL1(iters, p, false);
}

/** The same with f32x4.relaxed_madd (NaN in the simd-only build). */
export function relaxedTile(iters: i32, p: usize): f32 {
  if (!ASC_FEATURE_RELAXED_SIMD) return NaN;
  return tileL1(iters, p, true);
}

/** Fills [p, p + len) with small floats (so the reads above sum finite values). */
export function fillBytes(p: usize, len: usize): void {
  const v = f32x4.splat(1e-6);
  for (let q = p; q < p + len; q += 16) v128.store(q, v);
}

/**
 * Runs `iters` (even) steps of 8 i32x4.dot_i16x8_s, each added to its own accumulator (the int8 and
 * int4 kernels' inner step); returns a value that depends on every lane.
 */
export function dotPeak(iters: i32, seed: i32): i32 {
  const a0 = i16x8.splat(<i16>seed), a1 = i16x8.splat(<i16>(seed + 1)), a2 = i16x8.splat(<i16>(seed + 2)), a3 = i16x8.splat(<i16>(seed + 3));
  const b0 = i16x8.splat(3), b1 = i16x8.splat(-5);
  let c00 = i32x4.splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (let i = 0; i < iters; i += 2) {
    c00 = i32x4.add(c00, i32x4.dot_i16x8_s(a0, b0));
    c01 = i32x4.add(c01, i32x4.dot_i16x8_s(a0, b1));
    c10 = i32x4.add(c10, i32x4.dot_i16x8_s(a1, b0));
    c11 = i32x4.add(c11, i32x4.dot_i16x8_s(a1, b1));
    c20 = i32x4.add(c20, i32x4.dot_i16x8_s(a2, b0));
    c21 = i32x4.add(c21, i32x4.dot_i16x8_s(a2, b1));
    c30 = i32x4.add(c30, i32x4.dot_i16x8_s(a3, b0));
    c31 = i32x4.add(c31, i32x4.dot_i16x8_s(a3, b1));
    c00 = i32x4.add(c00, i32x4.dot_i16x8_s(a0, b1));
    c01 = i32x4.add(c01, i32x4.dot_i16x8_s(a0, b0));
    c10 = i32x4.add(c10, i32x4.dot_i16x8_s(a1, b1));
    c11 = i32x4.add(c11, i32x4.dot_i16x8_s(a1, b0));
    c20 = i32x4.add(c20, i32x4.dot_i16x8_s(a2, b1));
    c21 = i32x4.add(c21, i32x4.dot_i16x8_s(a2, b0));
    c30 = i32x4.add(c30, i32x4.dot_i16x8_s(a3, b1));
    c31 = i32x4.add(c31, i32x4.dot_i16x8_s(a3, b0));
  }
  const s = i32x4.add(i32x4.add(i32x4.add(c00, c01), i32x4.add(c10, c11)), i32x4.add(i32x4.add(c20, c21), i32x4.add(c30, c31)));
  return i32x4.extract_lane(s, 0) + i32x4.extract_lane(s, 1) + i32x4.extract_lane(s, 2) + i32x4.extract_lane(s, 3);
}

/** dotPeak with i32x4.relaxed_dot_i8x16_i7x16_add_s (16 multiply-adds a step; the W8A8 kernels' step). */
export function relaxedDotPeak(iters: i32, seed: i32): i32 {
  if (!ASC_FEATURE_RELAXED_SIMD) return 0;
  const a0 = i8x16.splat(<i8>seed), a1 = i8x16.splat(<i8>(seed + 1)), a2 = i8x16.splat(<i8>(seed + 2)), a3 = i8x16.splat(<i8>(seed + 3));
  const b0 = i8x16.splat(3), b1 = i8x16.splat(5);
  let c00 = i32x4.splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (let i = 0; i < iters; i += 2) {
    c00 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a0, b0, c00);
    c01 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a0, b1, c01);
    c10 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a1, b0, c10);
    c11 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a1, b1, c11);
    c20 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a2, b0, c20);
    c21 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a2, b1, c21);
    c30 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a3, b0, c30);
    c31 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a3, b1, c31);
    c00 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a0, b1, c00);
    c01 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a0, b0, c01);
    c10 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a1, b1, c10);
    c11 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a1, b0, c11);
    c20 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a2, b1, c20);
    c21 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a2, b0, c21);
    c30 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a3, b1, c30);
    c31 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a3, b0, c31);
  }
  const s = i32x4.add(i32x4.add(i32x4.add(c00, c01), i32x4.add(c10, c11)), i32x4.add(i32x4.add(c20, c21), i32x4.add(c30, c31)));
  return i32x4.extract_lane(s, 0) + i32x4.extract_lane(s, 1) + i32x4.extract_lane(s, 2) + i32x4.extract_lane(s, 3);
}

export function heapBase(): usize {
  return __heap_base;
}
