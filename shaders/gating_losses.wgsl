// The balancing losses from the statistics (assembly/losses.ts): one workgroup,
//
//   L_importance = w_imp · CV(importance)²,   L_load = w_load · CV(load)²,
//   CV² = population variance / (mean² + 1e-10),
//
// written to stats[2n] and stats[2n + 1]. Composed with workgroup_sum.wgsl or, on devices with
// subgroups, workgroup_sum_subgroup.wgsl (src/gpu/shaders.ts), which define total().

const WORKGROUP: u32 = 256u;

struct Params {
  n: u32,
  wImportance: f32,
  wLoad: f32,
}

@group(0) @binding(0) var<storage, read_write> stats: array<f32>;
@group(0) @binding(1) var<uniform> params: Params;

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
