// GEMM on packed weight panels: C[M, 8·P] = A[M, K] · B[K, 8·P] (+ bias).
//
// B is packed once, at layer creation, into P column panels of width 8: panel p holds
// B[0..K, 8p..8p+8] as K consecutive rows of 8 floats (two v128), zero-padded past N and past
// the real K. The inner loop therefore streams one panel contiguously, and a 4×8 tile of C lives
// in 8 v128 accumulators (V8 gives wasm 16 xmm registers: 8 accumulators + 2 B vectors + 4 A
// splats fit). A is read row-major, one f32 at a time, splatted (v128.load32_splat).

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

/** Floats in one packed panel set for a [K, N] matrix: ceil(N/8) panels of kPad × 8. */
export function packedPanelsLength(kPad: i32, n: i32): i32 {
  return ((n + 7) >> 3) * kPad * 8;
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

/**
 * C[M, 8·P] = A[M, K] · Bpacked (+ bias[8·P] when bias ≠ 0).
 * a: row stride lda floats; c: row stride ldc floats, 16-byte aligned rows (ldc % 4 == 0).
 * Panels are the outer loop so one panel (K·32 bytes) stays in L1 while all rows stream past it.
 */
export function gemmPanels(a: usize, lda: i32, m: i32, k: i32, bp: usize, panels: i32, kPad: i32, c: usize, ldc: i32, bias: usize): void {
  const rowA = <usize>lda << 2;
  const rowC = <usize>ldc << 2;
  const panelBytes = <usize>kPad << 5;
  for (let p = 0; p < panels; p++) {
    const panel = bp + <usize>p * panelBytes;
    let init0 = f32x4.splat(0);
    let init1 = f32x4.splat(0);
    if (bias != 0) {
      init0 = v128.load(bias + (<usize>p << 5));
      init1 = v128.load(bias + (<usize>p << 5), 16);
    }
    const cCol = c + (<usize>p << 5);
    let i = 0;
    for (; i + 4 <= m; i += 4) {
      const a0 = a + <usize>i * rowA;
      const a1 = a0 + rowA;
      const a2 = a1 + rowA;
      const a3 = a2 + rowA;
      let c00 = init0, c01 = init1, c10 = init0, c11 = init1;
      let c20 = init0, c21 = init1, c30 = init0, c31 = init1;
      let b = panel;
      for (let kk = 0; kk < k; kk++) {
        const off = <usize>kk << 2;
        const b0 = v128.load(b);
        const b1 = v128.load(b, 16);
        const x0 = v128.load32_splat(a0 + off);
        const x1 = v128.load32_splat(a1 + off);
        c00 = madd(x0, b0, c00);
        c01 = madd(x0, b1, c01);
        const x2 = v128.load32_splat(a2 + off);
        c10 = madd(x1, b0, c10);
        c11 = madd(x1, b1, c11);
        const x3 = v128.load32_splat(a3 + off);
        c20 = madd(x2, b0, c20);
        c21 = madd(x2, b1, c21);
        c30 = madd(x3, b0, c30);
        c31 = madd(x3, b1, c31);
        b += 32;
      }
      const o = cCol + <usize>i * rowC;
      v128.store(o, c00); v128.store(o, c01, 16);
      v128.store(o + rowC, c10); v128.store(o + rowC, c11, 16);
      v128.store(o + 2 * rowC, c20); v128.store(o + 2 * rowC, c21, 16);
      v128.store(o + 3 * rowC, c30); v128.store(o + 3 * rowC, c31, 16);
    }
    for (; i < m; i++) {
      const a0 = a + <usize>i * rowA;
      let c00 = init0, c01 = init1;
      let b = panel;
      for (let kk = 0; kk < k; kk++) {
        const x0 = v128.load32_splat(a0 + (<usize>kk << 2));
        c00 = madd(x0, v128.load(b), c00);
        c01 = madd(x0, v128.load(b, 16), c01);
        b += 32;
      }
      const o = cCol + <usize>i * rowC;
      v128.store(o, c00); v128.store(o, c01, 16);
    }
  }
}
