// Balancing losses (Shazeer et al. 2017, §4 and appendix A; tensor2tensor expert_utils
// cv_squared, _prob_in_top_k), batchwise:
//   Importance(X) = Σ_x G(x)                       L_importance = w_imp · CV(Importance)²
//   Load(X)_i     = Σ_x P(x, i)                    L_load       = w_load · CV(Load)²
//   P(x, i)       = Φ((clean_i − kth_excluding(H, k, i)) / std_i)
//   kth_excluding(H, k, i) = the k-th largest H of the other experts:
//       the (k+1)-th largest H when i is in the top k (H_i > it), else the k-th largest.
//   CV² = population variance / (mean² + 1e-10).
// Load falls back to counts of selected rows when gating is not noisy or k == n (no (k+1)-th).
import { normalCdf } from "./vmath";

export const CV_EPSILON: f64 = 1e-10;

// AssemblyScript has no tuples: meanAndVariance returns the mean and leaves the variance here.
let varianceOfLast: f64 = 0;
/** The population variance computed by the last meanAndVariance call. */
export function lastVariance(): f64 {
  return varianceOfLast;
}

/** Mean of v[0..n] (f64); its population variance is then lastVariance(). */
export function meanAndVariance(v: usize, n: i32): f64 {
  let sum: f64 = 0;
  for (let i = 0; i < n; i++) sum += load<f64>(v + (<usize>i << 3));
  const mean = sum / <f64>n;
  let ss: f64 = 0;
  for (let i = 0; i < n; i++) {
    const dv = load<f64>(v + (<usize>i << 3)) - mean;
    ss += dv * dv;
  }
  varianceOfLast = ss / <f64>n;
  return mean;
}

/** CV² of v[0..n] (f64): population variance over (mean² + 1e-10). */
export function cvSquared(v: usize, n: i32): f64 {
  const mean = meanAndVariance(v, n);
  return lastVariance() / (mean * mean + CV_EPSILON);
}

/**
 * Importance, load and both losses of one batch.
 * probMode: 1 for the smooth estimator (noisy gating, k < n), 0 for counts.
 * logits: [B, ldl] clean logits in columns 0..n; std, h: [B, n]; topkIdx, topkGates: [B, k];
 * nextIdx: [B] (index of the (k+1)-th largest H).
 * Writes importance [n] f32, load [n] f32, losses [2] f64 (importance, load), and, when
 * loadProb ≠ 0, P(x, i) as [B, n] f32. acc: 2n f64 scratch.
 */
export function balanceLosses(
  probMode: i32, b: i32, n: i32, k: i32,
  logits: usize, ldl: i32, std: usize, h: usize,
  topkIdx: usize, topkGates: usize, nextIdx: usize,
  wImportance: f64, wLoad: f64,
  importance: usize, loadOut: usize, losses: usize, loadProb: usize, acc: usize,
): void {
  const imp = acc;
  const ld = acc + (<usize>n << 3);
  memory.fill(acc, 0, <usize>n << 4);
  for (let r = 0; r < b; r++) {
    const o = (<usize>r * <usize>k) << 2;
    for (let s = 0; s < k; s++) {
      const e = <usize>load<i32>(topkIdx + o + (<usize>s << 2));
      store<f64>(imp + (e << 3), load<f64>(imp + (e << 3)) + <f64>load<f32>(topkGates + o + (<usize>s << 2)));
      if (!probMode) store<f64>(ld + (e << 3), load<f64>(ld + (e << 3)) + 1.0);
    }
  }
  if (probMode) {
    for (let r = 0; r < b; r++) {
      const hRow = h + ((<usize>r * <usize>n) << 2);
      const sRow = std + ((<usize>r * <usize>n) << 2);
      const cRow = logits + ((<usize>r * <usize>ldl) << 2);
      const thrIn = <f64>load<f32>(hRow + (<usize>load<i32>(nextIdx + (<usize>r << 2)) << 2));
      const kthIdx = load<i32>(topkIdx + ((<usize>(r * k + k - 1)) << 2));
      const thrOut = <f64>load<f32>(hRow + (<usize>kthIdx << 2));
      for (let i = 0; i < n; i++) {
        const off = <usize>i << 2;
        const hv = <f64>load<f32>(hRow + off);
        const thr = hv > thrIn ? thrIn : thrOut;
        const p = normalCdf((<f64>load<f32>(cRow + off) - thr) / <f64>load<f32>(sRow + off));
        store<f64>(ld + (<usize>i << 3), load<f64>(ld + (<usize>i << 3)) + p);
        if (loadProb != 0) store<f32>(loadProb + ((<usize>r * <usize>n + <usize>i) << 2), <f32>p);
      }
    }
  }
  for (let i = 0; i < n; i++) {
    store<f32>(importance + (<usize>i << 2), <f32>load<f64>(imp + (<usize>i << 3)));
    store<f32>(loadOut + (<usize>i << 2), <f32>load<f64>(ld + (<usize>i << 3)));
  }
  store<f64>(losses, wImportance * cvSquared(imp, n));
  store<f64>(losses, wLoad * cvSquared(ld, n), 8);
}
