// x [B, d] into rows of `stride` floats (d rounded up to 4), zero-padded: the layout the grouped
// GEMM reads its A rows in (vec4 loads).

const WORKGROUP: u32 = 64u;

struct Params {
  batch: u32,
  d: u32,
  stride: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> padded: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * 65535u) * WORKGROUP + li;
  if (i >= params.batch * params.stride) {
    return;
  }
  let row = i / params.stride;
  let col = i % params.stride;
  var v = 0.0;
  if (col < params.d) {
    v = x[row * params.d + col];
  }
  padded[i] = v;
}
