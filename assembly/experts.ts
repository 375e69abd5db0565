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

export const KIND_RELU = 0;
export const KIND_GELU = 1;
export const KIND_SWIGLU = 2;

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

/** act[M, hp] = activation(pre[M, hw]). */
export function activate(kind: i32, pre: usize, m: i32, hp: i32, act: usize): void {
  if (kind == KIND_SWIGLU) {
    // pre rows: [g(8) u(8)] blocks
    const blocks = m * (hp >> 3);
    for (let i = 0; i < blocks; i++) {
      const src = pre + (<usize>i << 6);
      const dst = act + (<usize>i << 5);
      v128.store(dst, f32x4.mul(vsilu(v128.load(src)), v128.load(src, 32)));
      v128.store(dst, f32x4.mul(vsilu(v128.load(src, 16)), v128.load(src, 48)), 16);
    }
    return;
  }
  const vecs = (m * hp) >> 2;
  if (kind == KIND_RELU) {
    const zero = f32x4.splat(0);
    for (let i = 0; i < vecs; i++) {
      const o = <usize>i << 4;
      v128.store(act + o, f32x4.max(v128.load(pre + o), zero));
    }
  } else {
    for (let i = 0; i < vecs; i++) {
      const o = <usize>i << 4;
      v128.store(act + o, vgelu(v128.load(pre + o)));
    }
  }
}

/**
 * Runs experts [eBegin, eEnd) on their gathered rows.
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
  const hw = kind == KIND_SWIGLU ? hp << 1 : hp;
  const w1Bytes = <usize>d * <usize>hw << 2;
  const w2Bytes = <usize>hp * <usize>dp << 2;
  const hasBias = kind != KIND_SWIGLU;
  for (let e = eBegin; e < eEnd; e++) {
    const first = load<i32>(expertOffsets + (<usize>e << 2));
    const m = load<i32>(expertOffsets + (<usize>(e + 1) << 2)) - first;
    if (m == 0) continue;
    const a = gathered + ((<usize>first * <usize>d) << 2);
    const preE = pre + ((<usize>first * <usize>hw) << 2);
    const actE = act + ((<usize>first * <usize>hp) << 2);
    const outE = out + ((<usize>first * <usize>dp) << 2);
    gemmPanels(a, d, m, d, w1 + <usize>e * w1Bytes, hw >> 3, d, preE, hw, hasBias ? b1 + ((<usize>e * <usize>hp) << 2) : 0);
    activate(kind, preE, m, hp, actE);
    gemmPanels(actE, hp, m, hp, w2 + <usize>e * w2Bytes, dp >> 3, hp, outE, dp, hasBias ? b2 + ((<usize>e * <usize>dp) << 2) : 0);
  }
}

/**
 * y[r] = Σ_{s<k} topkGates[r, s] · out[posOf[r·k + s]], slots summed in order (deterministic).
 * out: [B·k, dp]; y: [B, d].
 */
export function combine(out: usize, d: i32, b: i32, k: i32, posOf: usize, topkGates: usize, y: usize): void {
  const dp = roundUp8(d);
  const d4 = d & ~3;
  for (let r = 0; r < b; r++) {
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
