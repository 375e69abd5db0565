// The baseline: the same inference forward written the obvious way in plain JavaScript loops over
// Float32Arrays (clean gating, top-k, softmax over the k, each selected expert's MLP per row).
// It is what a user gets without WebAssembly; its y is checked against edge-moe's in the suite.

export function createPlainJs({ d, h, n, k }, expert, w) {
  const logits = new Float32Array(n);
  const hidden = new Float32Array(h);
  const gateHidden = new Float32Array(h);
  const order = new Int32Array(n);
  const gates = new Float64Array(k);
  const swiglu = expert === "swiglu";

  // out[0..cols) += Σ_i v[i] · W[i, :] for a row-major [rows, cols] block of W at offset
  const vecMat = (v, rows, W, offset, cols, out) => {
    for (let i = 0; i < rows; i++) {
      const a = v[i];
      const base = offset + i * cols;
      for (let j = 0; j < cols; j++) out[j] += a * W[base + j];
    }
  };

  return function forward(x, batch) {
    const y = new Float32Array(batch * d);
    for (let r = 0; r < batch; r++) {
      const xr = x.subarray(r * d, r * d + d);
      logits.fill(0);
      vecMat(xr, d, w.wGate, 0, n, logits);
      for (let i = 0; i < n; i++) order[i] = i;
      // top-k by partial selection, descending (ties: lower index first)
      for (let s = 0; s < k; s++) {
        let best = s;
        for (let i = s + 1; i < n; i++) {
          const a = logits[order[i]],
            b = logits[order[best]];
          if (a > b || (a === b && order[i] < order[best])) best = i;
        }
        const t = order[s];
        order[s] = order[best];
        order[best] = t;
      }
      let sum = 0;
      for (let s = 0; s < k; s++) {
        gates[s] = Math.exp(logits[order[s]] - logits[order[0]]);
        sum += gates[s];
      }
      const yr = y.subarray(r * d, r * d + d);
      for (let s = 0; s < k; s++) {
        const e = order[s];
        const g = gates[s] / sum;
        if (swiglu) {
          gateHidden.fill(0);
          hidden.fill(0);
          vecMat(xr, d, w.wGateProj, e * d * h, h, gateHidden);
          vecMat(xr, d, w.wUp, e * d * h, h, hidden);
          for (let j = 0; j < h; j++) {
            const a = gateHidden[j];
            hidden[j] *= a / (1 + Math.exp(-a));
          }
          const o = new Float32Array(d);
          vecMat(hidden, h, w.wDown, e * h * d, d, o);
          for (let j = 0; j < d; j++) yr[j] += g * o[j];
        } else {
          for (let j = 0; j < h; j++) hidden[j] = w.b1[e * h + j];
          vecMat(xr, d, w.w1, e * d * h, h, hidden);
          for (let j = 0; j < h; j++) if (hidden[j] < 0) hidden[j] = 0;
          const o = w.b2.slice(e * d, e * d + d);
          vecMat(hidden, h, w.w2, e * h * d, d, o);
          for (let j = 0; j < d; j++) yr[j] += g * o[j];
        }
      }
    }
    return y;
  };
}
