// Noisy gating after the GEMM (Shazeer et al. 2017, eq. 4; the formulas of assembly/gating.ts):
//
//   std = softplus(raw) + noiseEpsilon,   H = clean + noise · std     (noisy training)
//   H = clean                                                          (otherwise)
//
// The noise is the caller's [B, n] matrix, or normal i = row·n + expert of the counter-based
// generator of assembly/rng.ts (Philox4x32-10 keyed (seedLo, seedHi), counter (i/4, stream, 0, 0),
// then Box–Muller): the same normals as the CPU, up to the rounding of f32 log/cos/sin against
// the CPU's f64. The transcendental functions are evaluated here by range reduction and
// polynomials, not by WGSL's log/cos/sin, whose accuracy the specification leaves loose.
//
// With CHECK set, a non-finite logit raises flags[0] (the host then fails the call).

const WORKGROUP: u32 = 64u;

struct Params {
  batch: u32,
  n: u32,
  ldl: u32,
  mode: u32,      // 0 clean, 1 seeded noise, 2 the caller's noise
  seedLo: u32,
  seedHi: u32,
  stream: u32,
  check: u32,     // 1: flag non-finite logits
  eps: f32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> givenNoise: array<f32>;
@group(0) @binding(2) var<storage, read_write> stdOut: array<f32>;
@group(0) @binding(3) var<storage, read_write> h: array<f32>;
@group(0) @binding(4) var<storage, read_write> flags: array<atomic<u32>>;
@group(0) @binding(5) var<uniform> params: Params;

// (hi, lo) of the 64-bit product a·b, from 16-bit halves (WGSL has no 64-bit integers).
fn mulHiLo(a: u32, b: u32) -> vec2<u32> {
  let al = a & 0xffffu;
  let ah = a >> 16u;
  let bl = b & 0xffffu;
  let bh = b >> 16u;
  let ll = al * bl;
  let lh = al * bh;
  let hl = ah * bl;
  let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  return vec2<u32>(ah * bh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u), a * b);
}

fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = counter;
  var k = key;
  for (var round = 0u; round < 10u; round++) {
    let p0 = mulHiLo(0xd2511f53u, c.x);
    let p1 = mulHiLo(0xcd9e8d57u, c.z);
    c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    k += vec2<u32>(0x9e3779b9u, 0xbb67ae85u);
  }
  return c;
}

// 2·atanh(s) = ln((1 + s) / (1 − s)) for |s| ≤ 1/3, by its odd series (to s¹⁹: < 2e-10 relative).
fn twoAtanh(s: f32) -> f32 {
  let s2 = s * s;
  var p = 1.0 / 19.0;
  p = fma(p, s2, 1.0 / 17.0);
  p = fma(p, s2, 1.0 / 15.0);
  p = fma(p, s2, 1.0 / 13.0);
  p = fma(p, s2, 1.0 / 11.0);
  p = fma(p, s2, 1.0 / 9.0);
  p = fma(p, s2, 1.0 / 7.0);
  p = fma(p, s2, 1.0 / 5.0);
  p = fma(p, s2, 1.0 / 3.0);
  return 2.0 * fma(s * s2, p, s);
}

// −ln((q + ½)·2⁻³²), the squared radius over two of Box–Muller, for a uniform u32 q.
fn negLogUnit(q: u32) -> f32 {
  if (q >= 0x80000000u) {
    // u ≥ ½: −ln(1 − v) with v = 1 − u = (~q + ½)·2⁻³² taken exactly from the integer, so that
    // values of u near 1 lose nothing to rounding u itself.
    let v = f32(2u * ~q + 1u) * 1.16415321826934814453125e-10;  // 2⁻³³
    return -twoAtanh(-v / (2.0 - v));
  }
  // u < ½: u = (2q + 1)·2⁻³³ = m·2^e with m in [√½, √2): ln u = ln m + (e − 33)·ln 2.
  let parts = frexp(f32(2u * q + 1u));
  var m = parts.fract;
  var e = parts.exp - 33;
  if (m < 0.70710678118654752) {
    m *= 2.0;
    e -= 1;
  }
  let lnM = twoAtanh((m - 1.0) / (m + 1.0));
  // ln 2 in two parts (the first exact in f32 times any |e| < 2⁹).
  let fe = f32(e);
  return -(fe * 0.693145751953125 + (fe * 1.428606820286226e-6 + lnM));
}

// (cos θ, sin θ) for θ in [0, π/4], by Taylor polynomials (errors < 2e-9).
fn cosSinSmall(t: f32) -> vec2<f32> {
  let t2 = t * t;
  var c = -1.0 / 3628800.0;
  c = fma(c, t2, 1.0 / 40320.0);
  c = fma(c, t2, -1.0 / 720.0);
  c = fma(c, t2, 1.0 / 24.0);
  c = fma(c, t2, -0.5);
  c = fma(c, t2, 1.0);
  var s = 1.0 / 362880.0;
  s = fma(s, t2, -1.0 / 5040.0);
  s = fma(s, t2, 1.0 / 120.0);
  s = fma(s, t2, -1.0 / 6.0);
  s = fma(s * t2, t, t);
  return vec2<f32>(c, s);
}

// (cos, sin) of 2π·(q + ½)·2⁻³²: the quadrant from q's top bits, the rest reduced to [0, π/4]
// in integers.
fn cosSinTurn(q: u32) -> vec2<f32> {
  let rem = q & 0x3fffffffu;
  let step = 7.314590396335798e-10;  // 2π·2⁻³³
  var cs: vec2<f32>;
  if (rem < 0x20000000u) {
    cs = cosSinSmall(f32(2u * rem + 1u) * step);
  } else {
    cs = cosSinSmall(f32(0x80000000u - 2u * rem - 1u) * step).yx;  // π/2 − φ
  }
  switch (q >> 30u) {
    case 0u: { return cs; }
    case 1u: { return vec2<f32>(-cs.y, cs.x); }
    case 2u: { return -cs; }
    default: { return vec2<f32>(cs.y, -cs.x); }
  }
}

// Normal number i of the stream (assembly/rng.ts normalNoise with first = 0).
fn normal(i: u32) -> f32 {
  let bits = philox(vec4<u32>(i >> 2u, params.stream, 0u, 0u), vec2<u32>(params.seedLo, params.seedHi));
  let lane = i & 3u;
  var q = bits.x;
  var angle = bits.y;
  if (lane >= 2u) {
    q = bits.z;
    angle = bits.w;
  }
  let r = sqrt(2.0 * negLogUnit(q));
  let cs = cosSinTurn(angle);
  return r * select(cs.x, cs.y, (lane & 1u) == 1u);
}

fn isFinite(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

// softplus(r) = max(r, 0) + ln(1 + e^−|r|), ln(1 + z) kept accurate for small z.
fn softplus(r: f32) -> f32 {
  let z = exp(-abs(r));
  let u = 1.0 + z;
  var l = z;
  if (u != 1.0) {
    l = log(u) * z / (u - 1.0);
  }
  return max(r, 0.0) + l;
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * 65535u) * WORKGROUP + li;
  let n = params.n;
  if (i >= params.batch * n) {
    return;
  }
  let row = i / n;
  let col = i % n;
  let clean = logits[row * params.ldl + col];
  var finite = isFinite(clean);
  if (params.mode == 0u) {
    h[i] = clean;
  } else {
    let raw = logits[row * params.ldl + n + col];
    finite = finite && isFinite(raw);
    var z: f32;
    if (params.mode == 1u) {
      z = normal(i);
    } else {
      z = givenNoise[i];
    }
    let s = softplus(raw) + params.eps;
    stdOut[i] = s;
    h[i] = clean + z * s;
  }
  if (params.check == 1u && !finite) {
    atomicOr(&flags[0], 1u);
  }
}
