// The peer: the same inference forward composed from TensorFlow.js ops on its WebAssembly backend
// (XNNPACK, SIMD; threads where the host allows), as a user would write it today:
// matMul gating, topk, softmax over the k, per expert a gather of its rows and fused
// matMul + bias + relu (swiglu: two matMuls, sigmoid, muls), then one scatterND that sums the
// gate-weighted expert outputs into y. Every expert's weights are tensors made once, so XNNPACK
// packs them once and reuses its operators. The routing (rows per expert) is read back to JS,
// which is what composing from ops needs.
//
// `tf` is the namespace of @tensorflow/tfjs-core with the wasm backend registered and set.

export function createTfjsPeer(tf, { d, h, n, k }, expert, w) {
  const swiglu = expert === "swiglu";
  const wGate = tf.tensor2d(w.wGate, [d, n]);
  const slice = (a, e, size) => a.subarray(e * size, (e + 1) * size);
  const experts = [];
  for (let e = 0; e < n; e++) {
    experts.push(
      swiglu
        ? {
            wg: tf.tensor2d(slice(w.wGateProj, e, d * h), [d, h]),
            wu: tf.tensor2d(slice(w.wUp, e, d * h), [d, h]),
            wd: tf.tensor2d(slice(w.wDown, e, h * d), [h, d]),
          }
        : {
            w1: tf.tensor2d(slice(w.w1, e, d * h), [d, h]),
            b1: tf.tensor1d(slice(w.b1, e, h)),
            w2: tf.tensor2d(slice(w.w2, e, h * d), [h, d]),
            b2: tf.tensor1d(slice(w.b2, e, d)),
          },
    );
  }
  const rowsOf = Array.from({ length: n }, () => []);
  const gatesOf = Array.from({ length: n }, () => []);

  function forward(x, batch) {
    const y = tf.tidy(() => {
      const xt = tf.tensor2d(x, [batch, d]);
      const logits = tf.matMul(xt, wGate);
      const { values, indices } = tf.topk(logits, k);
      const gates = tf.softmax(values);
      const idx = indices.dataSync();
      const g = gates.dataSync();
      for (let e = 0; e < n; e++) {
        rowsOf[e].length = 0;
        gatesOf[e].length = 0;
      }
      for (let q = 0; q < batch * k; q++) {
        rowsOf[idx[q]].push((q / k) | 0);
        gatesOf[idx[q]].push(g[q]);
      }
      const parts = [];
      const rows = [];
      for (let e = 0; e < n; e++) {
        const m = rowsOf[e].length;
        if (m === 0) continue;
        const xe = tf.gather(xt, tf.tensor1d(rowsOf[e], "int32"));
        const W = experts[e];
        let oe;
        if (swiglu) {
          const gp = tf.matMul(xe, W.wg);
          const act = tf.mul(tf.mul(gp, tf.sigmoid(gp)), tf.matMul(xe, W.wu));
          oe = tf.matMul(act, W.wd);
        } else {
          const he = tf.fused.matMul({ a: xe, b: W.w1, bias: W.b1, activation: "relu" });
          oe = tf.fused.matMul({ a: he, b: W.w2, bias: W.b2 });
        }
        parts.push(tf.mul(oe, tf.tensor2d(gatesOf[e], [m, 1])));
        rows.push(...rowsOf[e]);
      }
      return tf.scatterND(tf.tensor2d(rows, [rows.length, 1], "int32"), tf.concat(parts), [batch, d]);
    });
    const out = y.dataSync();
    y.dispose();
    return out;
  }

  function dispose() {
    wGate.dispose();
    for (const W of experts) for (const t of Object.values(W)) t.dispose();
  }

  return { forward, dispose };
}
