// Noisy top-k gating, the parts after the fused gating GEMM (Shazeer et al. 2017, eq. 3–5;
// tensor2tensor expert_utils.noisy_top_k_gating):
//   clean = x·W_g,  raw = x·W_noise          (both from one GEMM over x: logits = x·[W_g | W_noise])
//   std   = softplus(raw) + noiseEpsilon     (epsilon added after the softplus, as tensor2tensor)
//   H     = clean + noise·std                (training mode only; noise ~ N(0,1) is held fixed)
import { vsoftplus } from "./vmath";

/**
 * logits: [B, ldl] with clean in columns 0..n and raw in n..2n. Writes std and H, both [B, n].
 * noise: [B, n] standard normals.
 */
export function noisyLogits(logits: usize, ldl: i32, b: i32, n: i32, noise: usize, eps: f32, std: usize, h: usize): void {
  const epsV = f32x4.splat(eps);
  for (let r = 0; r < b; r++) {
    const clean = logits + ((<usize>r * <usize>ldl) << 2);
    const raw = clean + (<usize>n << 2);
    const o = <usize>r * <usize>n << 2;
    let j = 0;
    for (; j + 4 <= n; j += 4) {
      const off = <usize>j << 2;
      const s = f32x4.add(vsoftplus(v128.load(raw + off)), epsV);
      v128.store(std + o + off, s);
      v128.store(h + o + off, f32x4.add(v128.load(clean + off), f32x4.mul(v128.load(noise + o + off), s)));
    }
    for (; j < n; j++) {
      // tail: run the lane-wise formula on one lane so tails round exactly like the body
      const off = <usize>j << 2;
      const s = f32x4.extract_lane(f32x4.add(vsoftplus(f32x4.splat(load<f32>(raw + off))), epsV), 0);
      store<f32>(std + o + off, s);
      store<f32>(h + o + off, load<f32>(clean + off) + load<f32>(noise + o + off) * s);
    }
  }
}

/** Copies the clean logits ([B, ldl], first n columns) into H [B, n] (eval mode or clean gating). */
export function cleanLogits(logits: usize, ldl: i32, b: i32, n: i32, h: usize): void {
  for (let r = 0; r < b; r++) {
    memory.copy(h + ((<usize>r * <usize>n) << 2), logits + ((<usize>r * <usize>ldl) << 2), <usize>n << 2);
  }
}

/**
 * Index of the first non-finite value (NaN or ±Inf) in p[0..len], or -1.
 * One vector pass: v − v is 0 for finite v and NaN otherwise.
 */
export function firstNonFinite(p: usize, len: i32): i32 {
  let i = 0;
  for (; i + 16 <= len; i += 16) {
    const q = p + (<usize>i << 2);
    const a = v128.load(q), b = v128.load(q, 16), c = v128.load(q, 32), d = v128.load(q, 48);
    let s = f32x4.sub(a, a);
    s = f32x4.add(s, f32x4.sub(b, b));
    s = f32x4.add(s, f32x4.sub(c, c));
    s = f32x4.add(s, f32x4.sub(d, d));
    if (v128.any_true(f32x4.ne(s, s))) break;
  }
  for (; i < len; i++) {
    const v = load<f32>(p + (<usize>i << 2));
    if (v - v != 0) return i;
  }
  return -1;
}
