// The gating backward of the checkpoints' routers (assembly/routing.ts) and of shared experts
// (assembly/shared.ts): dLogits [B, ldl] from dGates [B, slots] (⟨E(x), dy⟩ per slot, the routed
// k then the m shared) and the importance loss's gradient. The selection is held fixed, as in the
// paper's backward: a choice bias or a dropped group only chooses experts, so no gradient flows
// through them. These routers run without noise, so the load is a count (no gradient).
//   softmax, p = softmax(z) over all n, S the selected, dG_s = dGates_s + importanceGrad[e_s]:
//     g_s = scale·p_s:            dz_j = [j ∈ S]·g_j·dG_j − p_j·Σ_s g_s·dG_s        (every j)
//     g_s = scale·p_s/Σ_S p:      dz_j = g_j·dG_j − (g_j/scale)·Σ_s g_s·dG_s        (j ∈ S)
//   sigmoid, σ_s = sigmoid(z_s) (the unbiased score):
//     g_s = scale·σ_s:            dz_s = scale·dG_s·σ_s(1 − σ_s)
//     g_s = scale·σ_s/D, D = Σ_S σ + ε:  dz_s = (scale·dG_s − Σ_t g_t·dG_t)/D·σ_s(1 − σ_s)
//   shared gate, G = sigmoid(z_c) on every shared slot:  dz_c = Σ_shared dGates·G(1 − G)
// The paper's top-k softmax (score 0) with a shared expert runs gatingBackward row by row on the
// routed slots. Arithmetic in f64, as gatingBackward.
import { gatingBackward } from "./backward";

export const SCORE_TOPK_SOFTMAX = 0;
export const SCORE_SOFTMAX = 1;
export const SCORE_SIGMOID = 2;

// The routing block: the parameters of routedGatingBackward that the threaded backward reads from
// memory (assembly/backward-threads.ts), written once by writeRoutingBlock. 64 bytes.
const RB_SCORE = 0;
const RB_N = 4;
const RB_K = 8;
const RB_SLOTS = 12;
const RB_RENORM = 16;
const RB_EPS = 20;
const RB_SCALE = 24;
const RB_GATE_COL = 28;
export const ROUTING_BLOCK_BYTES = 64;

/** Fills the routing block at `block` (ROUTING_BLOCK_BYTES, 64-byte aligned). */
export function writeRoutingBlock(block: usize, score: i32, n: i32, k: i32, slots: i32, renormalize: i32, eps: f32, scale: f32, sharedGateCol: i32): void {
  memory.fill(block, 0, ROUTING_BLOCK_BYTES);
  store<i32>(block + RB_SCORE, score);
  store<i32>(block + RB_N, n);
  store<i32>(block + RB_K, k);
  store<i32>(block + RB_SLOTS, slots);
  store<i32>(block + RB_RENORM, renormalize);
  store<f32>(block + RB_EPS, eps);
  store<f32>(block + RB_SCALE, scale);
  store<i32>(block + RB_GATE_COL, sharedGateCol);
}

/** Routed experts (n) of a routing block. */
export function blockN(block: usize): i32 {
  return load<i32>(block + RB_N);
}

/** Routed slots per row (k) of a routing block. */
export function blockK(block: usize): i32 {
  return load<i32>(block + RB_K);
}

/**
 * routedGatingBackward for rows [r0, r1) with the parameters of a routing block; the other
 * pointers are those of the whole batch.
 */
export function routedGatingBackwardRows(
  block: usize, probMode: i32, noisy: i32, r0: i32, r1: i32, logits: usize, ldl: i32, std: usize, h: usize, noise: usize,
  topkIdx: usize, topkGates: usize, nextIdx: usize, dGates: usize, importanceGrad: usize, loadGrad: usize, dLogits: usize,
): void {
  const n = load<i32>(block + RB_N);
  const slots = load<i32>(block + RB_SLOTS);
  const rowL = (<usize>r0 * <usize>ldl) << 2;
  const rowN = (<usize>r0 * <usize>n) << 2;
  const rowS = (<usize>r0 * <usize>slots) << 2;
  routedGatingBackward(
    load<i32>(block + RB_SCORE), probMode, noisy, r1 - r0, n, load<i32>(block + RB_K), slots,
    logits + rowL, ldl, std + rowN, h + rowN, noise + rowN, topkIdx + rowS, topkGates + rowS, nextIdx + (<usize>r0 << 2),
    dGates + rowS, importanceGrad, loadGrad, load<i32>(block + RB_RENORM), load<f32>(block + RB_EPS), load<f32>(block + RB_SCALE),
    load<i32>(block + RB_GATE_COL), dLogits + rowL,
  );
}

/**
 * dLogits [B, ldl] (every column written: zero where no gradient) for a router `score`
 * (SCORE_*) with k routed slots out of `slots` per row (topkIdx, topkGates, dGates: [B, slots]),
 * the slots past k being the shared expert's, gated by logit column sharedGateCol (or -1: not
 * gated). logits: [B, ldl], clean in columns 0..n; std, h, noise: [B, n] and nextIdx [B] (read by
 * the paper's router alone); importanceGrad, loadGrad: [n] f64.
 */
export function routedGatingBackward(
  score: i32, probMode: i32, noisy: i32, b: i32, n: i32, k: i32, slots: i32,
  logits: usize, ldl: i32, std: usize, h: usize, noise: usize,
  topkIdx: usize, topkGates: usize, nextIdx: usize, dGates: usize,
  importanceGrad: usize, loadGrad: usize,
  renormalize: i32, eps: f32, scale: f32, sharedGateCol: i32, dLogits: usize,
): void {
  const sc = <f64>scale;
  for (let r = 0; r < b; r++) {
    const rowL = (<usize>r * <usize>ldl) << 2;
    const rowN = (<usize>r * <usize>n) << 2;
    const o = (<usize>r * <usize>slots) << 2;
    const z = logits + rowL;
    const dz = dLogits + rowL;
    if (score == SCORE_TOPK_SOFTMAX) {
      gatingBackward(
        probMode, noisy, 1, n, k, z, ldl, std + rowN, h + rowN, noise + rowN,
        topkIdx + o, topkGates + o, nextIdx + (<usize>r << 2), dGates + o, importanceGrad, loadGrad, dz,
      );
    } else {
      memory.fill(dz, 0, <usize>ldl << 2);
      if (score == SCORE_SOFTMAX) {
        let top = <f64>load<f32>(z);
        for (let j = 1; j < n; j++) top = Math.max(top, <f64>load<f32>(z + (<usize>j << 2)));
        let sum: f64 = 0;
        for (let j = 0; j < n; j++) sum += Math.exp(<f64>load<f32>(z + (<usize>j << 2)) - top);
        let kept: f64 = 0;
        for (let s = 0; s < k; s++) kept += Math.exp(<f64>load<f32>(z + (<usize>load<i32>(topkIdx + o + (<usize>s << 2)) << 2)) - top);
        const factor = sc / (renormalize != 0 ? kept : sum);
        let weighted: f64 = 0; // Σ_s g_s·dG_s
        for (let s = 0; s < k; s++) {
          const e = <usize>load<i32>(topkIdx + o + (<usize>s << 2));
          const g = Math.exp(<f64>load<f32>(z + (e << 2)) - top) * factor;
          weighted += g * (<f64>load<f32>(dGates + o + (<usize>s << 2)) + load<f64>(importanceGrad + (e << 3)));
        }
        if (renormalize == 0) {
          for (let j = 0; j < n; j++) store<f32>(dz + (<usize>j << 2), <f32>(-Math.exp(<f64>load<f32>(z + (<usize>j << 2)) - top) / sum * weighted));
        }
        for (let s = 0; s < k; s++) {
          const e = <usize>load<i32>(topkIdx + o + (<usize>s << 2));
          const g = Math.exp(<f64>load<f32>(z + (e << 2)) - top) * factor;
          const dG = <f64>load<f32>(dGates + o + (<usize>s << 2)) + load<f64>(importanceGrad + (e << 3));
          const v = renormalize != 0 ? g * dG - g / sc * weighted : <f64>load<f32>(dz + (e << 2)) + g * dG;
          store<f32>(dz + (e << 2), <f32>v);
        }
      } else {
        let denominator: f64 = <f64>eps;
        for (let s = 0; s < k; s++) denominator += sigmoid(<f64>load<f32>(z + (<usize>load<i32>(topkIdx + o + (<usize>s << 2)) << 2)));
        let weighted: f64 = 0;
        if (renormalize != 0) {
          for (let s = 0; s < k; s++) {
            const e = <usize>load<i32>(topkIdx + o + (<usize>s << 2));
            const g = sc * sigmoid(<f64>load<f32>(z + (e << 2))) / denominator;
            weighted += g * (<f64>load<f32>(dGates + o + (<usize>s << 2)) + load<f64>(importanceGrad + (e << 3)));
          }
        }
        for (let s = 0; s < k; s++) {
          const e = <usize>load<i32>(topkIdx + o + (<usize>s << 2));
          const sg = sigmoid(<f64>load<f32>(z + (e << 2)));
          const dG = <f64>load<f32>(dGates + o + (<usize>s << 2)) + load<f64>(importanceGrad + (e << 3));
          const dScore = renormalize != 0 ? (sc * dG - weighted) / denominator : sc * dG;
          store<f32>(dz + (e << 2), <f32>(dScore * sg * (1.0 - sg)));
        }
      }
    }
    if (sharedGateCol >= 0 && slots > k) {
      let dGate: f64 = 0;
      for (let s = k; s < slots; s++) dGate += <f64>load<f32>(dGates + o + (<usize>s << 2));
      const g = sigmoid(<f64>load<f32>(z + (<usize>sharedGateCol << 2)));
      store<f32>(dz + (<usize>sharedGateCol << 2), <f32>(dGate * g * (1.0 - g)));
    }
  }
}

// @ts-ignore: decorator
@inline
function sigmoid(v: f64): f64 {
  return 1.0 / (1.0 + Math.exp(-v));
}
