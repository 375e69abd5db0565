// The candidate scan of the top-k passes (gating_topk.wgsl, gating_topk_subgroup.wgsl; the module
// defines KEEP and the H binding `h`): the KEEP largest of a strided share of a row's H, sorted by
// insertion with strict comparison, so on equal values the lower expert index ranks first (the
// order of assembly/topk.ts).

// The kept values and their expert indices, largest first (per invocation).
var<private> vals: array<f32, KEEP>;
var<private> idxs: array<u32, KEEP>;

// Fills vals/idxs with the KEEP largest of h[row·n + j] for j = first, first + step, … < n;
// returns how many were kept (fewer than KEEP when the share is smaller).
fn candidates(row: u32, n: u32, first: u32, step: u32) -> u32 {
  var count = 0u;
  for (var j = first; j < n; j += step) {
    let v = h[row * n + j];
    var pos: u32;
    if (count < KEEP) {
      pos = count;
      count++;
    } else if (v > vals[KEEP - 1u]) {
      pos = KEEP - 1u;
    } else {
      continue;
    }
    while (pos > 0u && vals[pos - 1u] < v) {
      vals[pos] = vals[pos - 1u];
      idxs[pos] = idxs[pos - 1u];
      pos--;
    }
    vals[pos] = v;
    idxs[pos] = j;
  }
  return count;
}
