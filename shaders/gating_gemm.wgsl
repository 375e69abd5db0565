// The gating GEMM of the resident path (Shazeer et al. 2017, eq. 3–5): one product for both
// gating matrices, as the CPU kernels do (src/cpu/engine.ts gate):
//
//   logits[B, ldl] = x[B, d] · [W_g | W_noise]        (clean in columns 0..n, raw in n..2n)
//
// `cols` is n in eval mode or without noisy gating (only the clean half is needed), 2n in noisy
// training. TILE × TILE outputs per workgroup, x and W tiles staged in workgroup memory.

const TILE: u32 = {{TILE}}u;

struct Dims {
  batch: u32,  // rows B
  d: u32,      // row length of x (unpadded)
  cols: u32,   // columns to compute
  ldl: u32,    // row length of logits and of W
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> logits: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

var<workgroup> tileX: array<f32, TILE * TILE>;  // [row][k]
var<workgroup> tileW: array<f32, TILE * TILE>;  // [k][col]

@compute @workgroup_size(TILE, TILE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  // More than 65535 row tiles continue in z (the dispatch limit per dimension).
  let row = (wid.y + wid.z * 65535u) * TILE + lid.y;
  let col = wid.x * TILE + lid.x;
  let d = dims.d;
  var acc = 0.0;
  for (var k0 = 0u; k0 < d; k0 += TILE) {
    var xv = 0.0;
    if (row < dims.batch && k0 + lid.x < d) {
      xv = x[row * d + k0 + lid.x];
    }
    tileX[lid.y * TILE + lid.x] = xv;
    var wv = 0.0;
    if (k0 + lid.y < d && col < dims.cols) {
      wv = w[(k0 + lid.y) * dims.ldl + col];
    }
    tileW[lid.y * TILE + lid.x] = wv;
    workgroupBarrier();
    for (var kk = 0u; kk < TILE; kk++) {
      acc += tileX[lid.y * TILE + kk] * tileW[kk * TILE + lid.x];
    }
    workgroupBarrier();
  }
  if (row < dims.batch && col < dims.cols) {
    logits[row * dims.ldl + col] = acc;
  }
}
