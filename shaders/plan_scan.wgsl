// The plan's offsets and the grouped GEMM's tile tables, from the per-expert pair counts of the
// top-k pass (the counting sort of assembly/experts.ts buildPlan, on the GPU):
//
//   offsets[e] = Σ_{e' < e} counts[e'],  offsets[n] = B·k
//
// and for each weight buffer of each projection (a descriptor), the table shaders/grouped_gemm.wgsl
// reads: tiles of up to TILE_M positions of each of the buffer's slabs' experts, the count first,
// and the indirect dispatch arguments of that buffer's GEMM: (groupsX, min(tiles, 65535),
// ⌈tiles / 65535⌉). One workgroup; invocation t fills the tables of descriptors t, t + 256, …
// (an invocation sums the counts itself: no barrier is needed, and n is small).

const WORKGROUP: u32 = 256u;
const TILE_M: u32 = {{TILE_M}}u;
const MAX_DISPATCH: u32 = 65535u;

struct Params {
  n: u32,
  descriptors: u32,
}

// One weight buffer of a projection (src/gpu/resident.ts writes these once per layer).
struct Descriptor {
  tableWord: u32,       // where its table starts in `tiles` (u32 words)
  firstSlab: u32,       // its first slab, in the projection's slab order (expert-major)
  slabs: u32,
  slabsPerExpert: u32,
  slabStride4: u32,     // one slab, in vec4
  slabN4: u32,          // slab width, in vec4
  indirectWord: u32,    // where its dispatch arguments go in `indirect`
  groupsX: u32,         // workgroups across the slab's columns
}

@group(0) @binding(0) var<storage, read> counts: array<u32>;
@group(0) @binding(1) var<storage, read> descriptors: array<Descriptor>;
@group(0) @binding(2) var<storage, read_write> offsets: array<u32>;
@group(0) @binding(3) var<storage, read_write> tiles: array<u32>;
@group(0) @binding(4) var<storage, read_write> indirect: array<u32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(local_invocation_index) li: u32) {
  let n = params.n;
  if (li == 0u) {
    var acc = 0u;
    for (var e = 0u; e < n; e++) {
      offsets[e] = acc;
      acc += counts[e];
    }
    offsets[n] = acc;
  }
  for (var t = li; t < params.descriptors; t += WORKGROUP) {
    let desc = descriptors[t];
    var count = 0u;
    var expert = 0u;
    var first = 0u;  // offsets[expert]
    for (var g = desc.firstSlab; g < desc.firstSlab + desc.slabs; g++) {
      let e = g / desc.slabsPerExpert;
      while (expert < e) {
        first += counts[expert];
        expert++;
      }
      let m = counts[e];
      let slab4 = (g - desc.firstSlab) * desc.slabStride4;
      let col4 = (g % desc.slabsPerExpert) * desc.slabN4;
      for (var t0 = 0u; t0 < m; t0 += TILE_M) {
        let at = desc.tableWord + 4u * (1u + count);
        tiles[at] = first + t0;
        tiles[at + 1u] = min(TILE_M, m - t0);
        tiles[at + 2u] = slab4;
        tiles[at + 3u] = col4;
        count++;
      }
    }
    tiles[desc.tableWord] = count;
    indirect[desc.indirectWord] = desc.groupsX;
    indirect[desc.indirectWord + 1u] = min(count, MAX_DISPATCH);
    indirect[desc.indirectWord + 2u] = (count + MAX_DISPATCH - 1u) / MAX_DISPATCH;
  }
}
