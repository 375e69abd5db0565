// Σ over a workgroup of WORKGROUP invocations (the module defines WORKGROUP): a tree sum in
// workgroup memory. workgroup_sum_subgroup.wgsl is the same with subgroup operations.

var<workgroup> part: array<vec2<f32>, WORKGROUP>;

// Σ over the workgroup of each invocation's v (the result in every invocation).
fn total(li: u32, v: vec2<f32>) -> vec2<f32> {
  part[li] = v;
  workgroupBarrier();
  for (var half = WORKGROUP / 2u; half > 0u; half /= 2u) {
    if (li < half) {
      part[li] += part[li + half];
    }
    workgroupBarrier();
  }
  let sum = part[0];
  workgroupBarrier();
  return sum;
}
