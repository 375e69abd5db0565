// The balancing statistics of one batch (Shazeer et al. 2017, §4 and appendix A; the formulas
// of assembly/losses.ts), one workgroup per expert i, a tree sum over the rows:
//
//   importance_i = Σ_x G(x)_i
//   load_i       = Σ_x P(x, i),  P(x, i) = Φ((clean_i − kth_excluding(H, k, i)) / std_i)   (prob mode)
//                = Σ_x [i among x's top k]                                                   (counts)
//   kth_excluding = the (k+1)-th largest H when H_i is above it, else the k-th largest.
//
// Writes stats[i] = importance_i and stats[n + i] = load_i. Composed with workgroup_sum.wgsl or,
// on devices with subgroups, workgroup_sum_subgroup.wgsl (src/gpu/shaders.ts), which define total().

const WORKGROUP: u32 = 256u;

struct Params {
  batch: u32,
  n: u32,
  k: u32,
  ldl: u32,
  probMode: u32,  // 1: the smooth estimator (noisy gating, k < n); 0: counts
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> stdDev: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read> topkIdx: array<u32>;
@group(0) @binding(4) var<storage, read> topkGates: array<f32>;
@group(0) @binding(5) var<storage, read> nextIdx: array<u32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;
@group(0) @binding(7) var<uniform> params: Params;

// Φ(z) = ½·(1 + erf(z/√2)), erf by Abramowitz & Stegun 7.1.26 as the CPU kernels (assembly/vmath.ts).
fn normalCdf(z: f32) -> f32 {
  let x = z * 0.7071067811865476;
  let ax = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * ax);
  let p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  let e = 1.0 - p * exp(-min(ax * ax, 87.0));
  return 0.5 * (1.0 + select(e, -e, x < 0.0));
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let e = wid.x + wid.y * 65535u;
  let n = params.n;
  let k = params.k;
  var imp = 0.0;
  var load = 0.0;
  if (e < n) {
    for (var r = li; r < params.batch; r += WORKGROUP) {
      var chosen = false;
      for (var s = 0u; s < k; s++) {
        if (topkIdx[r * k + s] == e) {
          imp += topkGates[r * k + s];
          chosen = true;
        }
      }
      if (params.probMode == 1u) {
        let thrIn = h[r * n + nextIdx[r]];
        let thrOut = h[r * n + topkIdx[r * k + k - 1u]];
        let hv = h[r * n + e];
        let thr = select(thrOut, thrIn, hv > thrIn);
        load += normalCdf((logits[r * params.ldl + e] - thr) / stdDev[r * n + e]);
      } else if (chosen) {
        load += 1.0;
      }
    }
  }
  let sums = total(li, vec2<f32>(imp, load));
  if (li == 0u && e < n) {
    stats[e] = sums.x;
    stats[n + e] = sums.y;
  }
}
