// The combination y = Σᵢ G(x)ᵢ · Eᵢ(x) (Shazeer et al. 2017, eq. 1) over the k experts of each row:
//
//   y[row, :] = Σ_{slot < k} topkGates[row·k + slot] · out[posOf[row·k + slot], :]
//
// summed in slot order, as the CPU kernel (assembly/experts.ts combine) does: WGSL has no float
// atomics, and a fixed order makes every run give the same bits. One invocation per row and four
// columns (vec4 loads of out, whose rows are zero-padded to OUT_STRIDE4 vec4).
//
// Invocation 0 also writes the call's stamp after the last row: the host reads it back with y and
// trusts y only when the stamp is the one it sent (a lost device returns no stamp).

const WORKGROUP: u32 = 64u;

struct Call {
  batch: u32,       // rows of this pass
  stamp: f32,       // written after the last row of y
  d: u32,           // row length of y
  outStride4: u32,  // row length of out in vec4
  topk: u32,        // k
}

@group(0) @binding(0) var<storage, read> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> posOf: array<u32>;
@group(0) @binding(2) var<storage, read> topkGates: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> call: Call;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  // More than 65535 workgroups continue in y (the dispatch limit per dimension).
  let g = (wid.x + wid.y * 65535u) * WORKGROUP + li;
  let d = call.d;
  if (g == 0u) {
    y[call.batch * d] = call.stamp;
  }
  let d4 = (d + 3u) / 4u;
  let row = g / d4;
  if (row >= call.batch) {
    return;
  }
  let c4 = g % d4;
  var sum = vec4<f32>(0.0);
  for (var slot = 0u; slot < call.topk; slot++) {
    let pair = row * call.topk + slot;
    sum += topkGates[pair] * out[posOf[pair] * call.outStride4 + c4];
  }
  let base = row * d + c4 * 4u;
  y[base] = sum.x;
  if (c4 * 4u + 1u < d) { y[base + 1u] = sum.y; }
  if (c4 * 4u + 2u < d) { y[base + 2u] = sum.z; }
  if (c4 * 4u + 3u < d) { y[base + 3u] = sum.w; }
}
