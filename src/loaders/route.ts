// A family's routing (families.ts, Routing) on router logits, in JavaScript: the same rules as
// the wasm kernels of assembly/routing.ts (topkSoftmaxAll, topkSigmoidGrouped), for a layer
// composed over createMoE until the engine routes with those kernels itself.
import type { Routing } from "./families.ts";

/** Inserts (v, j) into the descending run (equal values: the earlier j stays first). */
function insert(vals: Float32Array, idxs: Int32Array, count: number, cap: number, v: number, j: number): number {
  let pos: number;
  if (count < cap) pos = count++;
  else if (v > vals[cap - 1]) pos = cap - 1;
  else return count;
  while (pos > 0 && vals[pos - 1] < v) {
    vals[pos] = vals[pos - 1];
    idxs[pos] = idxs[pos - 1];
    pos--;
  }
  vals[pos] = v;
  idxs[pos] = j;
  return count;
}

/**
 * logits [B, n] → topkIndices [B, k] (descending selection score) and topkGates [B, k] (the factor
 * each chosen expert's output is multiplied by).
 */
export function route(logits: Float32Array, b: number, n: number, k: number, routing: Routing): { topkIndices: Int32Array; topkGates: Float32Array } {
  const topkIndices = new Int32Array(b * k);
  const topkGates = new Float32Array(b * k);
  const cap = Math.max(k, routing.groups?.topkGroup ?? 0, 2);
  const vals = new Float32Array(cap);
  const idxs = new Int32Array(cap);
  const scores = new Float32Array(n);
  const choice = new Float32Array(n);
  for (let r = 0; r < b; r++) {
    const row = logits.subarray(r * n, (r + 1) * n);
    let count = 0;
    if (routing.score === "softmax") {
      for (let j = 0; j < n; j++) count = insert(vals, idxs, count, k, row[j], j);
      const top = vals[0];
      let total = 0;
      for (let j = 0; j < n; j++) total += Math.exp(row[j] - top);
      let kept = 0;
      for (let s = 0; s < k; s++) kept += Math.exp(vals[s] - top);
      const factor = routing.scale / (routing.renormalize ? kept + routing.renormEpsilon : total);
      for (let s = 0; s < k; s++) {
        topkIndices[r * k + s] = idxs[s];
        topkGates[r * k + s] = Math.exp(vals[s] - top) * factor;
      }
      continue;
    }
    for (let j = 0; j < n; j++) {
      scores[j] = 1 / (1 + Math.exp(-row[j]));
      choice[j] = routing.choiceBias ? scores[j] + routing.choiceBias[j] : scores[j];
    }
    const groups = routing.groups;
    if (groups && groups.nGroup > 1) {
      const size = n / groups.nGroup;
      const groupScore = new Float32Array(groups.nGroup);
      for (let g = 0; g < groups.nGroup; g++) {
        let c = 0;
        for (let j = g * size; j < (g + 1) * size; j++) c = insert(vals, idxs, c, 2, choice[j], j);
        groupScore[g] = vals[0] + vals[1];
      }
      let c = 0;
      for (let g = 0; g < groups.nGroup; g++) c = insert(vals, idxs, c, groups.topkGroup, groupScore[g], g);
      const kept = new Uint8Array(groups.nGroup);
      for (let s = 0; s < groups.topkGroup; s++) kept[idxs[s]] = 1;
      for (let j = 0; j < n; j++) if (!kept[Math.floor(j / size)]) choice[j] = 0;
    }
    for (let j = 0; j < n; j++) count = insert(vals, idxs, count, k, choice[j], j);
    let sum = 0;
    for (let s = 0; s < k; s++) sum = Math.fround(sum + scores[idxs[s]]);
    const denominator = Math.fround(sum + routing.renormEpsilon);
    for (let s = 0; s < k; s++) {
      const w = routing.renormalize ? Math.fround(scores[idxs[s]] / denominator) : scores[idxs[s]];
      topkIndices[r * k + s] = idxs[s];
      topkGates[r * k + s] = w * routing.scale;
    }
  }
  return { topkIndices, topkGates };
}
