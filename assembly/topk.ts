// KeepTopK and Softmax of the gating network (Shazeer et al. 2017, eq. 3):
//   G(x) = Softmax(KeepTopK(H(x), k)),
// by partial selection: per row, the k+1 largest H are kept in a sorted run (insertion, strict
// comparison, so on equal values the lower expert index ranks first). The (k+1)-th is the
// threshold the load estimator needs (kth_excluding, see losses.ts).

/** Inserts (v, j) into the descending run vals/idxs of length count < cap or replacing the last; returns the new count. */
// @ts-ignore: decorator
@inline
export function insert(vals: usize, idxs: usize, count: i32, cap: i32, v: f32, j: i32): i32 {
  let pos: i32;
  if (count < cap) {
    pos = count++;
  } else if (v > load<f32>(vals + (<usize>(cap - 1) << 2))) {
    pos = cap - 1;
  } else {
    return count;
  }
  while (pos > 0 && load<f32>(vals + (<usize>(pos - 1) << 2)) < v) {
    store<f32>(vals + (<usize>pos << 2), load<f32>(vals + (<usize>(pos - 1) << 2)));
    store<i32>(idxs + (<usize>pos << 2), load<i32>(idxs + (<usize>(pos - 1) << 2)));
    pos--;
  }
  store<f32>(vals + (<usize>pos << 2), v);
  store<i32>(idxs + (<usize>pos << 2), j);
  return count;
}

/**
 * h: [B, n]. Writes topkIdx [B, k] (descending H), topkGates [B, k] (softmax over the k),
 * nextIdx [B] (the index of the (k+1)-th largest H, or -1 when k == n).
 * scratch: (k+1) f32 + (k+1) i32.
 */
export function topkSoftmax(h: usize, b: i32, n: i32, k: i32, topkIdx: usize, topkGates: usize, nextIdx: usize, scratch: usize): void {
  const keep = min(k + 1, n);
  const vals = scratch;
  const idxs = scratch + (<usize>keep << 2);
  for (let r = 0; r < b; r++) {
    const row = h + ((<usize>r * <usize>n) << 2);
    let count = 0;
    for (let j = 0; j < n; j++) count = insert(vals, idxs, count, keep, load<f32>(row + (<usize>j << 2)), j);
    // softmax over the k kept values; vals[0] is the max
    const top = <f64>load<f32>(vals);
    let sum: f64 = 0;
    for (let s = 0; s < k; s++) sum += Math.exp(<f64>load<f32>(vals + (<usize>s << 2)) - top);
    const inv = 1.0 / sum;
    const o = (<usize>r * <usize>k) << 2;
    for (let s = 0; s < k; s++) {
      store<i32>(topkIdx + o + (<usize>s << 2), load<i32>(idxs + (<usize>s << 2)));
      store<f32>(topkGates + o + (<usize>s << 2), <f32>(Math.exp(<f64>load<f32>(vals + (<usize>s << 2)) - top) * inv));
    }
    store<i32>(nextIdx + (<usize>r << 2), keep > k ? load<i32>(idxs + (<usize>k << 2)) : -1);
  }
}
