// KeepTopK and Softmax (Shazeer et al. 2017, eq. 3) per row, as assembly/topk.ts: the KEEP = min(k + 1, n)
// largest H kept in a sorted run by insertion with strict comparison (on equal values the lower
// expert index ranks first), the softmax over the first k, and the index of the (k+1)-th (the
// load estimator's threshold; 0xffffffff when k = n). Each selection also counts one pair for
// its expert (the plan's counting sort, shaders/plan_scan.wgsl). The scan is candidates()
// (shaders/topk_candidates.wgsl, appended to this module) over the whole row.

const WORKGROUP: u32 = 64u;
const K: u32 = {{K}}u;
const KEEP: u32 = {{KEEP}}u;

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
  let row = (wid.x + wid.y * 65535u) * WORKGROUP + li;
  if (row >= params.batch) {
    return;
  }
  let n = params.n;
  candidates(row, n, 0u, 1u);
  let top = vals[0];
  var sum = 0.0;
  for (var s = 0u; s < K; s++) {
    sum += exp(vals[s] - top);
  }
  for (var s = 0u; s < K; s++) {
    topkIdx[row * K + s] = idxs[s];
    topkGates[row * K + s] = exp(vals[s] - top) / sum;
    atomicAdd(&counts[idxs[s]], 1u);
  }
  nextIdx[row] = select(0xffffffffu, idxs[min(K, KEEP - 1u)], KEEP > K);
}
