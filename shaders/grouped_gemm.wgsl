// Grouped GEMM of the sparse experts (Shazeer et al. 2017, eq. 1: only the (row, slot) pairs that
// chose an expert are computed). The pairs of a batch sit in expert order (the plan of the CPU
// gating, assembly/experts.ts buildPlan); a tile is up to TILE_M consecutive positions of one
// expert, so every workgroup multiplies rows of A by one expert's weights:
//
//   C[p, :] = epilogue(A[row(p), :] · W_e (+ b_e))        for the positions p of one tile
//
// The same template is instantiated twice per layer (src/gpu/experts.ts):
//   up:   A = x rows gathered through pairOf (row(p) = pairOf[p] / k), C = act,
//         epilogue relu / gelu (exact erf) with b1, or swiglu: silu(x·W_gate) ⊙ (x·W_up), both
//         projections from one pass (each weight slab holds the gate half, then the up half)
//   down: A = act (row(p) = p), C = out, epilogue: + b2 (relu / gelu) or nothing (swiglu)
//
// Weights are resident on the GPU in "slabs": per expert, the weight columns in one or more slabs
// of shape.slabN4 vec4 columns, each slab [HALVES · shape.kRows rows, then one bias row when
// HAS_BIAS], zero-padded. Slabs are grouped into buffers that respect the adapter's binding limit; a
// dispatch covers the tiles of one such buffer. A tile entry says where its slab lies in the bound
// buffer and which columns of C it writes.
//
// Weight storage (DTYPE, src/abi.ts DTYPE_*): a slab is 32-bit words; per half, in the slab's
// column order (c = 0 … slabN−1) and zero past the real rows and columns:
//   0 f32:  [kRows][slabN] floats.
//   1 f16, 2 bf16: [kRows][slabN / 2] words, column 2i in the low half, 2i+1 in the high half.
//   3 int8: [kRows][slabN / 4] words, column 4i+j in byte j (two's complement), then [slabN] f32
//           scales (one per column): w = q·scale.
//   4 int4: [kRows / 8][slabN] words, word (g, c) holding rows 8g…8g+7 of column c, row 8g+r in
//           bits 28−4r…31−4r (the CPU panels' lanes), then [kRows / 32][slabN] f32 scales (one
//           per column and block of 32 rows): w = q·scale.
// The bias row (f32) follows the halves. The weight tile is dequantized on its way into workgroup
// memory, so the inner loop and its f32 accumulation are the same for every dtype. f16 weights come
// from f16Weights(), a function the module is composed with (src/gpu/shaders.ts): f16_bits.wgsl
// unpacks the bits with integer operations (no device feature needed), f16_native.wgsl reads them
// as f16 values on devices with `shader-f16`; both give the exact f32 of every half.
//
// The tile shape, the activation and the A source are template values (the double-brace
// placeholders, filled in by src/gpu/shaders.ts); the layer's sizes come in a uniform, so layers
// of any size share the compiled pipelines. Workgroup: TN4 × (TILE_M / THREAD_M) invocations
// (≤ 256); each invocation accumulates THREAD_M rows × 4 columns (one vec4) per weight half in
// registers; A and W tiles are staged in workgroup memory; every global load is a vec4.

const TILE_M: u32 = {{TILE_M}}u;        // positions per tile
const TILE_N: u32 = {{TILE_N}}u;        // columns per workgroup (multiple of 4)
const TILE_K: u32 = {{TILE_K}}u;        // inner-dimension step (multiple of 4)
const THREAD_M: u32 = {{THREAD_M}}u;    // rows per invocation
const GATHER: bool = {{GATHER}};        // A rows through pairOf (up) or by position (down)
const ACTIVATION: u32 = {{ACTIVATION}}u; // 0 none, 1 relu, 2 gelu, 3 swiglu
const HAS_BIAS: bool = {{HAS_BIAS}};    // a bias row follows the weight rows of each slab
const DTYPE: u32 = {{DTYPE}}u;           // 0 f32, 1 f16, 2 bf16, 3 int8, 4 int4

const SWIGLU: bool = ACTIVATION == 3u;
const HALVES: u32 = select(1u, 2u, SWIGLU);
const TN4: u32 = TILE_N / 4u;
const TK4: u32 = TILE_K / 4u;
const THREADS: u32 = TN4 * (TILE_M / THREAD_M);
const W_TILE: u32 = TILE_K * TN4;        // one half of the weight tile, in vec4

// The layer's sizes for this pass.
struct Shape {
  topk: u32,       // k: pair index = row·k + slot
  aStride4: u32,   // row length of A in vec4 (zero-padded)
  kRows: u32,      // weight rows per half-slab (multiple of TILE_K, and of 32 for int4; zero past A's width)
  slabN4: u32,     // slab width in vec4 (multiple of TILE_N / 4)
  cStride4: u32,   // row length of C in vec4
}

// One tile of positions: [pos0, pos0 + rows) of one expert, whose slab starts at vec4 `slab` of
// the bound weight buffer and writes C columns from vec4 `col4`. tiles[0].pos0 is the tile count.
struct Tile {
  pos0: u32,
  rows: u32,
  slab: u32,
  col4: u32,
}

@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> pairOf: array<u32>;
@group(0) @binding(2) var<storage, read> tiles: array<Tile>;
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> shape: Shape;

var<workgroup> tileA: array<vec4<f32>, TILE_M * TK4>;   // [TILE_M rows][TK4]
var<workgroup> tileW: array<vec4<f32>, W_TILE * HALVES>; // [half][TILE_K rows][TN4]

// The four 16-bit halves of the two 32-bit words from word `at` (even): the low half first.
fn halfBits(at: u32) -> vec4<u32> {
  let quad = w[at / 4u];
  let lo = select(quad.x, quad.z, (at & 2u) == 2u);
  let hi = select(quad.y, quad.w, (at & 2u) == 2u);
  return vec4<u32>(lo & 0xffffu, lo >> 16u, hi & 0xffffu, hi >> 16u);
}

// 32-bit words of one half of a slab (the layouts above).
fn halfWords() -> u32 {
  let n = shape.slabN4 * 4u;
  switch DTYPE {
    case 1u, 2u: { return shape.kRows * n / 2u; }
    case 3u: { return shape.kRows * n / 4u + n; }
    case 4u: { return (shape.kRows / 8u + shape.kRows / 32u) * n; }
    default: { return shape.kRows * n; }
  }
}

// Columns 4·c4 … 4·c4+3 of weight row `row` of the half that starts at word `base` (a multiple of 4).
fn weight4(base: u32, row: u32, c4: u32) -> vec4<f32> {
  let n4 = shape.slabN4;
  let b4 = base / 4u;
  switch DTYPE {
    case 1u: {
      return f16Weights(base + (row * n4 + c4) * 2u);
    }
    case 2u: {
      return bitcast<vec4<f32>>(halfBits(base + (row * n4 + c4) * 2u) << vec4<u32>(16u));
    }
    case 3u: {
      let at = row * n4 + c4;  // word index within the half
      let q = bitcast<i32>(w[b4 + at / 4u][at % 4u]);
      let v = vec4<i32>(q << 24u, q << 16u, q << 8u, q) >> vec4<u32>(24u);
      return vec4<f32>(v) * bitcast<vec4<f32>>(w[b4 + shape.kRows * n4 / 4u + c4]);
    }
    case 4u: {
      let q = bitcast<vec4<i32>>(w[b4 + (row / 8u) * n4 + c4]);
      let v = (q << vec4<u32>(4u * (row % 8u))) >> vec4<u32>(28u);
      return vec4<f32>(v) * bitcast<vec4<f32>>(w[b4 + (shape.kRows / 8u + row / 32u) * n4 + c4]);
    }
    default: {
      return bitcast<vec4<f32>>(w[b4 + row * n4 + c4]);
    }
  }
}

// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), the formula of the CPU kernels
// (assembly/vmath.ts verf); odd symmetry for x < 0.
fn erf4(x: vec4<f32>) -> vec4<f32> {
  let ax = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * ax);
  let p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - p * exp(-min(ax * ax, vec4<f32>(87.0))));
}

// gelu(v) = v·Φ(v) = v·½·(1 + erf(v/√2)), the exact-erf GELU.
fn gelu4(v: vec4<f32>) -> vec4<f32> {
  return v * 0.5 * (1.0 + erf4(v * 0.7071067811865476));
}

// silu(g) = g·σ(g) = g / (1 + e^−g); the exponent is clamped where e^−g would overflow.
fn silu4(g: vec4<f32>) -> vec4<f32> {
  return g / (1.0 + exp(min(-g, vec4<f32>(88.0))));
}

@compute @workgroup_size(TN4, TILE_M / THREAD_M)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  // More than 65535 tiles continue in z (the dispatch limit per dimension).
  let t = wid.y + wid.z * 65535u;
  if (t >= tiles[0].pos0) {
    return;
  }
  let tile = tiles[1u + t];
  let colTile4 = wid.x * TN4;   // first vec4 column of this workgroup inside the slab
  let halfLen = halfWords();         // one half-slab, in words
  let slabWord = tile.slab * 4u;

  var acc: array<vec4<f32>, THREAD_M>;
  var accUp: array<vec4<f32>, THREAD_M>;  // swiglu's up projection
  for (var i = 0u; i < THREAD_M; i++) {
    acc[i] = vec4<f32>(0.0);
    accUp[i] = vec4<f32>(0.0);
  }

  for (var k0 = 0u; k0 < shape.kRows; k0 += TILE_K) {
    // A tile: TILE_M rows × TILE_K columns, zero past the tile's rows and past A's width.
    for (var i = li; i < TILE_M * TK4; i += THREADS) {
      let r = i / TK4;
      let k4 = k0 / 4u + i % TK4;
      var v = vec4<f32>(0.0);
      if (r < tile.rows && k4 < shape.aStride4) {
        let p = tile.pos0 + r;
        var row = p;
        if (GATHER) {
          row = pairOf[p] / shape.topk;
        }
        v = a[row * shape.aStride4 + k4];
      }
      tileA[i] = v;
    }
    // Weight tile(s): TILE_K rows × TILE_N columns of each half (slabs are zero-padded: no checks).
    for (var i = li; i < W_TILE * HALVES; i += THREADS) {
      let half = i / W_TILE;
      let j = i % W_TILE;
      tileW[i] = weight4(slabWord + half * halfLen, k0 + j / TN4, colTile4 + j % TN4);
    }
    workgroupBarrier();

    for (var kq = 0u; kq < TK4; kq++) {
      let wRow = kq * 4u * TN4 + lid.x;
      let w0 = tileW[wRow];
      let w1 = tileW[wRow + TN4];
      let w2 = tileW[wRow + 2u * TN4];
      let w3 = tileW[wRow + 3u * TN4];
      for (var i = 0u; i < THREAD_M; i++) {
        let av = tileA[(lid.y * THREAD_M + i) * TK4 + kq];
        acc[i] = fma(vec4<f32>(av.w), w3, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.x), w0, acc[i]))));
      }
      if (SWIGLU) {
        let u0 = tileW[W_TILE + wRow];
        let u1 = tileW[W_TILE + wRow + TN4];
        let u2 = tileW[W_TILE + wRow + 2u * TN4];
        let u3 = tileW[W_TILE + wRow + 3u * TN4];
        for (var i = 0u; i < THREAD_M; i++) {
          let av = tileA[(lid.y * THREAD_M + i) * TK4 + kq];
          accUp[i] = fma(vec4<f32>(av.w), u3, fma(vec4<f32>(av.z), u2, fma(vec4<f32>(av.y), u1, fma(vec4<f32>(av.x), u0, accUp[i]))));
        }
      }
    }
    workgroupBarrier();
  }

  var bias = vec4<f32>(0.0);
  if (HAS_BIAS) {
    bias = bitcast<vec4<f32>>(w[(slabWord + HALVES * halfLen) / 4u + colTile4 + lid.x]);
  }
  for (var i = 0u; i < THREAD_M; i++) {
    let r = lid.y * THREAD_M + i;
    if (r < tile.rows) {
      var v = acc[i] + bias;
      if (ACTIVATION == 1u) {
        v = max(v, vec4<f32>(0.0));
      } else if (ACTIVATION == 2u) {
        v = gelu4(v);
      } else if (SWIGLU) {
        v = silu4(v) * accUp[i];
      }
      c[(tile.pos0 + r) * shape.cStride4 + tile.col4 + colTile4 + lid.x] = v;
    }
  }
}
