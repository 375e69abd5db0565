// Vector (f32x4) elementary functions for the kernels: exp, log1p of (0,1], erf, and the
// activations built on them. Written for this package from the textbook formulas named below;
// every function is pure and branch-free over lanes.

// ---- exp ---------------------------------------------------------------------------------
// Cody–Waite range reduction x = n·ln2 + r, |r| ≤ ln2/2, then a degree-6 polynomial for e^r
// (the minimax coefficients of Cephes' expf, S. Moshier), and 2^n built from the exponent bits.
// Relative error < 2 ulp over [-87, 88]; inputs outside are clamped (e^-87 ≈ 1.6e-38).
const EXP_HI: f32 = 88.3762626647949;
const EXP_LO: f32 = -87.3365447504;
const LOG2E: f32 = 1.44269504088896341;
const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -2.12194440e-4;

// @ts-ignore: decorator
@inline
export function vexp(x: v128): v128 {
  x = f32x4.min(f32x4.max(x, f32x4.splat(EXP_LO)), f32x4.splat(EXP_HI));
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(LOG2E)));
  let r = f32x4.sub(x, f32x4.mul(n, f32x4.splat(LN2_HI)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(LN2_LO)));
  let p = f32x4.splat(1.9875691500e-4);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.3981999507e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(8.3334519073e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(4.1665795894e-2));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.6666665459e-1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(5.0000001201e-1));
  p = f32x4.add(f32x4.add(f32x4.mul(f32x4.mul(p, r), r), r), f32x4.splat(1.0));
  // 2^n: n + 127 in the exponent field. n ∈ [-126, 128]; n = 128 only at the clamp, where
  // e^88.38 is still finite because the polynomial there is < 1.
  const ni = i32x4.trunc_sat_f32x4_s(n);
  const half = i32x4.shr_s(ni, 1);
  const s1 = i32x4.shl(i32x4.add(half, i32x4.splat(127)), 23);
  const s2 = i32x4.shl(i32x4.add(i32x4.sub(ni, half), i32x4.splat(127)), 23);
  return f32x4.mul(f32x4.mul(p, s1), s2);
}

// ---- log ---------------------------------------------------------------------------------
// log(u) for finite u > 0: u = m·2^e with m ∈ [√½, √2), f = m − 1,
// log(m) = f − f²/2 + f³·P(f) (Cephes' logf coefficients), plus e·ln2 in two parts.
// @ts-ignore: decorator
@inline
export function vlog(u: v128): v128 {
  let bits = u;
  let e = i32x4.sub(i32x4.shr_u(bits, 23), i32x4.splat(127));
  let m = v128.or(v128.and(bits, i32x4.splat(0x007fffff)), i32x4.splat(0x3f800000));
  // m ∈ [1,2): fold the part above √2 down to [√½, 1).
  const big = f32x4.gt(m, f32x4.splat(1.41421356237));
  m = v128.bitselect(f32x4.mul(m, f32x4.splat(0.5)), m, big);
  e = i32x4.sub(e, big); // big lanes are -1: e + 1
  const ef = f32x4.convert_i32x4_s(e);
  const f = f32x4.sub(m, f32x4.splat(1.0));
  const z = f32x4.mul(f, f);
  let p = f32x4.splat(7.0376836292e-2);
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(-1.1514610310e-1));
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(1.1676998740e-1));
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(-1.2420140846e-1));
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(1.4249322787e-1));
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(-1.6668057665e-1));
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(2.0000714765e-1));
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(-2.4999993993e-1));
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(3.3333331174e-1));
  let y = f32x4.mul(f32x4.mul(p, z), f);
  y = f32x4.add(y, f32x4.mul(ef, f32x4.splat(LN2_LO)));
  y = f32x4.sub(y, f32x4.mul(z, f32x4.splat(0.5)));
  return f32x4.add(f32x4.add(f, y), f32x4.mul(ef, f32x4.splat(LN2_HI)));
}

// log(1 + t) for t ≥ 0, accurate for tiny t: with u = fl(1 + t), log1p(t) = log(u)·t/(u − 1)
// (D. Goldberg, "What every computer scientist should know about floating-point", 1991).
// @ts-ignore: decorator
@inline
export function vlog1p(t: v128): v128 {
  const u = f32x4.add(t, f32x4.splat(1.0));
  const d = f32x4.sub(u, f32x4.splat(1.0));
  const exact = f32x4.eq(d, f32x4.splat(0.0));
  const safeD = v128.bitselect(f32x4.splat(1.0), d, exact);
  const r = f32x4.div(f32x4.mul(vlog(u), t), safeD);
  return v128.bitselect(t, r, exact);
}

// softplus(r) = log(1 + e^r) = max(r, 0) + log1p(e^−|r|), stable for every r.
// @ts-ignore: decorator
@inline
export function vsoftplus(r: v128): v128 {
  return f32x4.add(f32x4.max(r, f32x4.splat(0.0)), vlog1p(vexp(f32x4.neg(f32x4.abs(r)))));
}

// ---- erf ---------------------------------------------------------------------------------
// Abramowitz & Stegun 7.1.26: erf(x) = 1 − (a1·t + … + a5·t⁵)·e^(−x²), t = 1/(1 + p·x), x ≥ 0;
// |error| ≤ 1.5e-7. Odd symmetry for x < 0. The same formula runs in the WGSL shaders.
const ERF_P: f64 = 0.3275911;
const ERF_A1: f64 = 0.254829592;
const ERF_A2: f64 = -0.284496736;
const ERF_A3: f64 = 1.421413741;
const ERF_A4: f64 = -1.453152027;
const ERF_A5: f64 = 1.061405429;

// @ts-ignore: decorator
@inline
export function verf(x: v128): v128 {
  const ax = f32x4.abs(x);
  const t = f32x4.div(f32x4.splat(1.0), f32x4.add(f32x4.splat(1.0), f32x4.mul(ax, f32x4.splat(<f32>ERF_P))));
  let p = f32x4.splat(<f32>ERF_A5);
  p = f32x4.add(f32x4.mul(p, t), f32x4.splat(<f32>ERF_A4));
  p = f32x4.add(f32x4.mul(p, t), f32x4.splat(<f32>ERF_A3));
  p = f32x4.add(f32x4.mul(p, t), f32x4.splat(<f32>ERF_A2));
  p = f32x4.add(f32x4.mul(p, t), f32x4.splat(<f32>ERF_A1));
  p = f32x4.mul(p, t);
  const e = f32x4.sub(f32x4.splat(1.0), f32x4.mul(p, vexp(f32x4.neg(f32x4.mul(ax, ax)))));
  // copy the sign of x onto e
  return v128.or(e, v128.and(x, i32x4.splat(0x80000000)));
}

// ---- activations -------------------------------------------------------------------------
// gelu(a) = a·Φ(a) = a·½·(1 + erf(a/√2))   (exact-erf GELU, not the tanh approximation)
// @ts-ignore: decorator
@inline
export function vgelu(a: v128): v128 {
  const phi = f32x4.mul(f32x4.splat(0.5), f32x4.add(f32x4.splat(1.0), verf(f32x4.mul(a, f32x4.splat(0.7071067811865476)))));
  return f32x4.mul(a, phi);
}

// silu(g) = g·σ(g) = g / (1 + e^−g)
// @ts-ignore: decorator
@inline
export function vsilu(g: v128): v128 {
  return f32x4.div(g, f32x4.add(f32x4.splat(1.0), vexp(f32x4.neg(g))));
}

// ---- scalar f64 helpers for the gating statistics ----------------------------------------
// erf in f64 by the same A&S 7.1.26 formula (|error| ≤ 1.5e-7), used by Φ in the load estimator.
export function erf64(x: f64): f64 {
  const ax = Math.abs(x);
  const t = 1.0 / (1.0 + ERF_P * ax);
  const p = t * (ERF_A1 + t * (ERF_A2 + t * (ERF_A3 + t * (ERF_A4 + t * ERF_A5))));
  const e = 1.0 - p * Math.exp(-ax * ax);
  return x < 0 ? -e : e;
}

// Φ(z) = ½·(1 + erf(z/√2)), the standard normal CDF.
export function normalCdf(z: f64): f64 {
  return 0.5 * (1.0 + erf64(z * 0.7071067811865476));
}
