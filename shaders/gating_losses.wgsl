// The balancing losses from the statistics (assembly/losses.ts): one workgroup,
//
//   L_importance = w_imp · CV(importance)²,   L_load = w_load · CV(load)²,
//   CV² = population variance / (mean² + 1e-10),
//
// written to stats[2n] and stats[2n + 1].

const WORKGROUP: u32 = 256u;

struct Params {
  n: u32,
  wImportance: f32,
  wLoad: f32,
}

@group(0) @binding(0) var<storage, read_write> stats: array<f32>;
@group(0) @binding(1) var<uniform> params: Params;

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
