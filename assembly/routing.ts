// Routing variants of pretrained MoE checkpoints that topkSoftmax (topk.ts: softmax over the k
// selected logits, = softmax over all n → top-k → renormalise) does not cover:
//   topkSoftmaxAll:      softmax over all n → top-k, optionally renormalised and scaled
//                        (qwen2_moe / qwen3_moe / olmoe with norm_topk_prob false, switch_transformers)
//   topkSigmoidGrouped:  sigmoid → + choice bias → group-limited top-k → weights from the unbiased
//                        sigmoid, optionally renormalised (+eps) → × scale (deepseek_v3)
// Selection: per row, a sorted run of the k largest (insertion with strict comparison: on equal
// values the lower index ranks first), so topkIdx is in descending order of the selection score.
// exp in float64, results rounded to float32 (as topk.ts). Scalar: n is a few hundred at most and
// the selection dominates; the logits' GEMM is where the time goes.
import { insert } from "./topk";

/**
 * logits: [B, n]. Softmax over all n; the k largest (by logit, which orders them as the
 * probabilities) to topkIdx [B, k]; their probabilities to topkGates [B, k], divided by their sum
 * when renormalize != 0, then × scale. scratch: k f32 + k i32.
 */
export function topkSoftmaxAll(logits: usize, b: i32, n: i32, k: i32, renormalize: i32, scale: f32, topkIdx: usize, topkGates: usize, scratch: usize): void {
  const vals = scratch;
  const idxs = scratch + (<usize>k << 2);
  for (let r = 0; r < b; r++) {
    const row = logits + ((<usize>r * <usize>n) << 2);
    let count = 0;
    for (let j = 0; j < n; j++) count = insert(vals, idxs, count, k, load<f32>(row + (<usize>j << 2)), j);
    const top = <f64>load<f32>(vals);
    let sum: f64 = 0;
    for (let j = 0; j < n; j++) sum += Math.exp(<f64>load<f32>(row + (<usize>j << 2)) - top);
    let kept: f64 = 0;
    for (let s = 0; s < k; s++) kept += Math.exp(<f64>load<f32>(vals + (<usize>s << 2)) - top);
    const factor = <f64>scale / (renormalize != 0 ? kept : sum);
    const o = (<usize>r * <usize>k) << 2;
    for (let s = 0; s < k; s++) {
      store<i32>(topkIdx + o + (<usize>s << 2), load<i32>(idxs + (<usize>s << 2)));
      store<f32>(topkGates + o + (<usize>s << 2), <f32>(Math.exp(<f64>load<f32>(vals + (<usize>s << 2)) - top) * factor));
    }
  }
}

/**
 * logits: [B, n]; bias: [n] or 0 (none). score = sigmoid(logit) (f32); choice = score + bias (f32).
 * Experts form nGroup groups of n / nGroup (≥ 2); a group's score is the sum of its two largest
 * choices; all but the topkGroup best groups (ties: lower group first) have their choices set to
 * 0 (not −∞, as deepseek_v3's masked_fill(…, 0.0)); the k largest choices go to topkIdx [B, k]
 * (descending choice); topkGates [B, k] = their unbiased scores, divided by (their sum + eps) when
 * renormalize != 0, then × scale. nGroup = 1 is plain top-k over the biased scores.
 * scratch: 2n f32 + nGroup f32 + max(k, topkGroup, 2) × (f32 + i32).
 */
export function topkSigmoidGrouped(
  logits: usize, b: i32, n: i32, k: i32, bias: usize, nGroup: i32, topkGroup: i32,
  renormalize: i32, eps: f32, scale: f32, topkIdx: usize, topkGates: usize, scratch: usize,
): void {
  const size = n / nGroup;
  const scores = scratch;
  const choice = scores + (<usize>n << 2);
  const groupScore = choice + (<usize>n << 2);
  let cap = k > topkGroup ? k : topkGroup;
  if (cap < 2) cap = 2;
  const vals = groupScore + (<usize>nGroup << 2);
  const idxs = vals + (<usize>cap << 2);
  for (let r = 0; r < b; r++) {
    const row = logits + ((<usize>r * <usize>n) << 2);
    for (let j = 0; j < n; j++) {
      const s = <f32>(1.0 / (1.0 + Math.exp(-<f64>load<f32>(row + (<usize>j << 2)))));
      store<f32>(scores + (<usize>j << 2), s);
      store<f32>(choice + (<usize>j << 2), bias != 0 ? s + load<f32>(bias + (<usize>j << 2)) : s);
    }
    if (nGroup > 1) {
      for (let g = 0; g < nGroup; g++) {
        let count = 0;
        for (let j = g * size; j < (g + 1) * size; j++) count = insert(vals, idxs, count, 2, load<f32>(choice + (<usize>j << 2)), j);
        store<f32>(groupScore + (<usize>g << 2), load<f32>(vals) + load<f32>(vals + 4));
      }
      let count = 0;
      for (let g = 0; g < nGroup; g++) count = insert(vals, idxs, count, topkGroup, load<f32>(groupScore + (<usize>g << 2)), g);
      // groupScore now marks kept groups: 1 kept, 0 dropped
      for (let g = 0; g < nGroup; g++) store<f32>(groupScore + (<usize>g << 2), 0);
      for (let s = 0; s < topkGroup; s++) store<f32>(groupScore + (<usize>load<i32>(idxs + (<usize>s << 2)) << 2), 1);
      for (let j = 0; j < n; j++) {
        if (load<f32>(groupScore + (<usize>(j / size) << 2)) == 0) store<f32>(choice + (<usize>j << 2), 0);
      }
    }
    let count = 0;
    for (let j = 0; j < n; j++) count = insert(vals, idxs, count, k, load<f32>(choice + (<usize>j << 2)), j);
    let sum: f32 = 0;
    for (let s = 0; s < k; s++) sum += load<f32>(scores + (<usize>load<i32>(idxs + (<usize>s << 2)) << 2));
    const denominator: f32 = sum + eps;
    const o = (<usize>r * <usize>k) << 2;
    for (let s = 0; s < k; s++) {
      const e = load<i32>(idxs + (<usize>s << 2));
      let w = load<f32>(scores + (<usize>e << 2));
      if (renormalize != 0) w /= denominator;
      store<i32>(topkIdx + o + (<usize>s << 2), e);
      store<f32>(topkGates + o + (<usize>s << 2), w * scale);
    }
  }
}
