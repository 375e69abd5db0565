// The top-k pass of shaders/gating_topk.wgsl with subgroups (used when the device has the
// `subgroups` feature): one subgroup per row. Each lane keeps the KEEP largest H of its strided
// share of the experts (candidates(), shaders/topk_candidates.wgsl, the scan of the fallback),
// then KEEP rounds pick the largest head of all lanes: the largest value by subgroupMax, and
// among lanes holding it the lowest expert index by subgroupMin. That is the order of the
// fallback (descending H; on equal H the lower index first), so the selection is the same, exactly.
//
// Subgroup sizes differ by device (4 to 128) and subgroups need not be contiguous runs of
// local_invocation_index, so nothing is assumed: a workgroup takes WORKGROUP rows, row i of them
// belongs to invocation i, and each subgroup works through its own invocations' rows, the lowest
// first (no workgroup memory is shared).

enable subgroups;
// The subgroup builtins run in control flow that is uniform per subgroup (every lane of a
// subgroup works on the same row), which WGSL's workgroup-level analysis cannot see.
diagnostic(off, subgroup_uniformity);

const WORKGROUP: u32 = 64u;
const K: u32 = {{K}}u;
const KEEP: u32 = {{KEEP}}u;
const NONE: u32 = 0xffffffffu;
const LOWEST: f32 = -0x1.fffffep+127f;  // what exhausted lanes offer

struct Params {
  batch: u32,
  n: u32,
}

@group(0) @binding(0) var<storage, read> h: array<f32>;
@group(0) @binding(1) var<storage, read_write> topkIdx: array<u32>;
@group(0) @binding(2) var<storage, read_write> topkGates: array<f32>;
@group(0) @binding(3) var<storage, read_write> nextIdx: array<u32>;
@group(0) @binding(4) var<storage, read_write> counts: array<atomic<u32>>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let lanes = subgroupAdd(1u);
  let lane = subgroupExclusiveAdd(1u);
  let first = (wid.x + wid.y * 65535u) * WORKGROUP;
  let n = params.n;
  var pending = first + li < params.batch;
  loop {
    let slot = subgroupMin(select(NONE, li, pending));
    if (slot == NONE) {
      break;
    }
    if (li == slot) {
      pending = false;
    }
    let row = first + slot;
    // this lane's KEEP largest of experts lane, lane + lanes, …
    let count = candidates(row, n, lane, lanes);
    // merge: the row's KEEP largest, the same in every lane
    var topVals: array<f32, KEEP>;
    var topIdxs: array<u32, KEEP>;
    var head = 0u;
    for (var s = 0u; s < KEEP; s++) {
      let live = head < count;
      let v = select(LOWEST, vals[min(head, KEEP - 1u)], live);
      let j = select(NONE, idxs[min(head, KEEP - 1u)], live);
      var best = subgroupMax(v);
      var winner = subgroupMin(select(NONE, j, live && v == best));
      if (winner == NONE) {
        // every live head is -∞ (or NaN): they tie, the lowest index first
        winner = subgroupMin(j);
        best = subgroupMin(select(LOWEST, v, j == winner));
      }
      if (j == winner) {
        head++;
      }
      topVals[s] = best;
      topIdxs[s] = winner;
    }
    if (lane == 0u) {
      let top = topVals[0];
      var sum = 0.0;
      for (var s = 0u; s < K; s++) {
        sum += exp(topVals[s] - top);
      }
      for (var s = 0u; s < K; s++) {
        topkIdx[row * K + s] = topIdxs[s];
        topkGates[row * K + s] = exp(topVals[s] - top) / sum;
        atomicAdd(&counts[topIdxs[s]], 1u);
      }
      nextIdx[row] = select(NONE, topIdxs[min(K, KEEP - 1u)], KEEP > K);
    }
  }
}
