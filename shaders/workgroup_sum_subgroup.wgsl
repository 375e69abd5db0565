// Σ over a workgroup of WORKGROUP invocations (the module defines WORKGROUP) with subgroup
// operations, for devices with the `subgroups` feature: subgroupAdd within each subgroup, then the
// subgroups' partial sums. No subgroup size or layout is assumed. The same results as
// workgroup_sum.wgsl within float rounding. Placed first in a module: `enable` must lead it.

enable subgroups;
// Subgroup operations under conditions uniform per subgroup (its leader's index).
diagnostic(off, subgroup_uniformity);

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
