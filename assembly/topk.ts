// KeepTopK and Softmax of the gating network (Shazeer et al. 2017, eq. 3):
//   G(x) = Softmax(KeepTopK(H(x), k)),
// by partial selection: per row, the k+1 largest H are kept in a sorted run (insertion, strict
// comparison, so on equal values the lower expert index ranks first). The (k+1)-th is the
// threshold the load estimator needs (kth_excluding, see losses.ts).

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
    for (let j = 0; j < n; j++) {
      const v = load<f32>(row + (<usize>j << 2));
      let pos: i32;
      if (count < keep) {
        pos = count++;
      } else if (v > load<f32>(vals + (<usize>(keep - 1) << 2))) {
        pos = keep - 1;
      } else {
        continue;
      }
      while (pos > 0 && load<f32>(vals + (<usize>(pos - 1) << 2)) < v) {
        store<f32>(vals + (<usize>pos << 2), load<f32>(vals + (<usize>(pos - 1) << 2)));
        store<i32>(idxs + (<usize>pos << 2), load<i32>(idxs + (<usize>(pos - 1) << 2)));
        pos--;
      }
      store<f32>(vals + (<usize>pos << 2), v);
      store<i32>(idxs + (<usize>pos << 2), j);
    }
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
