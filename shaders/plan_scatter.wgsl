// The plan's pairs in expert order: each (row, slot) pair q takes the next free position of its
// expert's range, p = offsets[e] + (an atomic cursor of e), and writes pairOf[p] = q, posOf[q] = p.
// Positions within an expert come in no fixed order; nothing depends on it: the grouped GEMM
// computes each position alone and the combination sums each row's slots in slot order.

const WORKGROUP: u32 = 64u;

struct Params {
  pairs: u32,
}

@group(0) @binding(0) var<storage, read> topkIdx: array<u32>;
@group(0) @binding(1) var<storage, read> offsets: array<u32>;
@group(0) @binding(2) var<storage, read_write> cursors: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> pairOf: array<u32>;
@group(0) @binding(4) var<storage, read_write> posOf: array<u32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let q = (wid.x + wid.y * 65535u) * WORKGROUP + li;
  if (q >= params.pairs) {
    return;
  }
  let e = topkIdx[q];
  let p = offsets[e] + atomicAdd(&cursors[e], 1u);
  pairOf[p] = q;
  posOf[q] = p;
}
