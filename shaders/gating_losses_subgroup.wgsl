// The balancing losses of shaders/gating_losses.wgsl (same formulas, same bindings) with
// subgroups, used when the device has the `subgroups` feature: subgroupAdd within each subgroup,
// then the subgroups' partial sums (the same results within float rounding).

enable subgroups;
// Subgroup operations under conditions uniform per subgroup (its leader's index).
diagnostic(off, subgroup_uniformity);

const WORKGROUP: u32 = 256u;

struct Params {
  n: u32,
  wImportance: f32,
  wLoad: f32,
}

@group(0) @binding(0) var<storage, read_write> stats: array<f32>;
@group(0) @binding(1) var<uniform> params: Params;

// one partial sum per subgroup, at its lowest invocation's index (zeros elsewhere)
var<workgroup> part: array<vec2<f32>, WORKGROUP>;
var<workgroup> result: vec2<f32>;

// Σ over the workgroup of each invocation's v (the result in every invocation).
fn total(li: u32, v: vec2<f32>) -> vec2<f32> {
  let sum = subgroupAdd(v);
  let leader = subgroupMin(li);
  part[li] = select(vec2<f32>(0.0), sum, li == leader);
  workgroupBarrier();
  // the subgroup of invocation 0 adds the partial sums
  if (leader == 0u) {
    let lanes = subgroupAdd(1u);
    var acc = vec2<f32>(0.0);
    for (var i = subgroupExclusiveAdd(1u); i < WORKGROUP; i += lanes) {
      acc += part[i];
    }
    let all = subgroupAdd(acc);
    if (li == 0u) {
      result = all;
    }
  }
  workgroupBarrier();
  return result;
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(local_invocation_index) li: u32) {
  let n = params.n;
  var sum = vec2<f32>(0.0);
  for (var i = li; i < n; i += WORKGROUP) {
    sum += vec2<f32>(stats[i], stats[n + i]);
  }
  let mean = total(li, sum) / f32(n);
  var ss = vec2<f32>(0.0);
  for (var i = li; i < n; i += WORKGROUP) {
    let dv = vec2<f32>(stats[i], stats[n + i]) - mean;
    ss += dv * dv;
  }
  let variance = total(li, ss) / f32(n);
  if (li == 0u) {
    let cv2 = variance / (mean * mean + 1e-10);
    stats[2u * n] = params.wImportance * cv2.x;
    stats[2u * n + 1u] = params.wLoad * cv2.y;
  }
}
