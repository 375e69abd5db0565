// The ONNX Runtime peer: the same inference forward as one ONNX graph, x → MatMul(W_gate) →
// com.microsoft::MoE (ORT's fused operator: softmax, top-k, renormalised gates, per-expert GEMMs
// and the weighted sum, in one kernel), built by bench/onnx-moe.mjs from the case's weights.
// Runtime-neutral: the host passes the `ort` namespace of onnxruntime-web (wasm execution
// provider; its thread count, env.wasm.numThreads, is fixed when that namespace first starts, so
// each thread count needs a namespace of its own) or of onnxruntime-node (native CPU execution
// provider; threads per session).

import { caseModel, qcaseModel } from "./onnx-moe.mjs";

/** The experts ORT's operator computes as edge-moe does: its gelu is the tanh approximation, edge-moe's the exact erf. */
export const ORT_EXPERTS = ["relu", "swiglu"];

/** QMoE models by case weights and bits: the 1- and 2-thread sessions of a case share one (quantizing a case takes seconds). */
const quantizedModels = new WeakMap();
function quantizedModel(shape, expert, weights, bits) {
  let byBits = quantizedModels.get(weights);
  if (!byBits) quantizedModels.set(weights, (byBits = new Map()));
  if (!byBits.has(bits)) byBits.set(bits, qcaseModel(shape, expert, weights, bits));
  return byBits.get(bits);
}

/**
 * @param {any} ort            the onnxruntime-web or onnxruntime-node namespace
 * @param {{ d: number, h: number, n: number, k: number }} shape
 * @param {"relu" | "swiglu"} expert
 * @param {Record<string, Float32Array>} weights   bench/cases.mjs makeWeights
 * @param {{ ep: "wasm" | "cpu", threads: number, bits?: 8 | 4 }} config
 *   "cpu" (onnxruntime-node): `threads` intra-op threads, one inter-op thread, no spinning
 *   (idle pool threads sleep, as edge-moe's workers do, rather than take a core between calls);
 *   `bits`: com.microsoft::QMoE at 8 or 4 bits (bench/onnx-moe.mjs qcaseModel) instead of the f32 MoE
 * @returns {Promise<{ forward(x: Float32Array, batch: number): Promise<Float32Array>, dispose(): Promise<void>, threads: number }>}
 */
export async function createOrtPeer(ort, shape, expert, weights, { ep, threads, bits }) {
  if (!ORT_EXPERTS.includes(expert)) throw new RangeError(`ONNX Runtime peer: ${expert} experts are not compared (ORT's gelu is the tanh approximation)`);
  const options = { executionProviders: [ep], graphOptimizationLevel: "all", executionMode: "sequential" };
  if (ep === "cpu") {
    Object.assign(options, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } },
    });
  }
  const model = bits ? quantizedModel(shape, expert, weights, bits) : caseModel(shape, expert, weights);
  const session = await ort.InferenceSession.create(model, options);
  const d = shape.d;
  return {
    threads: ep === "wasm" ? ort.env.wasm.numThreads : threads,
    async forward(x, batch) {
      const input = new ort.Tensor("float32", x.length === batch * d ? x : x.subarray(0, batch * d), [batch, d]);
      const out = await session.run({ input });
      const y = out.output.data;
      out.output.dispose?.();
      return y;
    },
    async dispose() {
      await session.release();
    },
  };
}

/**
 * onnxruntime-web at `threads` threads: `load` imports a copy of the module of its own (a URL with
 * a distinct query), whose wasm is started here with a one-node model, before the next copy is
 * imported (two copies imported before either started both took the threaded path in Deno).
 * @param {() => Promise<any>} load
 * @param {number} threads
 */
export async function startOrtWeb(load, threads) {
  // where the host looks like Node (Deno), the wasm's start replaces these globals with
  // worker_threads' classes, which other code of the page or process (edge-moe's workers) then
  // gets; its own thread pool is started by then, so they are put back
  const saved = ["Worker", "MessageChannel", "MessagePort"].map((name) => [name, Object.getOwnPropertyDescriptor(globalThis, name)]);
  try {
    const ort = await load();
    ort.env.wasm.numThreads = threads;
    const shape = { d: 4, h: 4, n: 2, k: 1 };
    const zeros = (length) => new Float32Array(length);
    const w = { wGate: zeros(8), w1: zeros(32), b1: zeros(8), w2: zeros(32), b2: zeros(8) };
    const warm = await createOrtPeer(ort, shape, "relu", w, { ep: "wasm", threads });
    await warm.forward(zeros(4), 1);
    await warm.dispose();
    return ort;
  } finally {
    for (const [name, descriptor] of saved) {
      if (descriptor) Object.defineProperty(globalThis, name, descriptor);
    }
  }
}

/**
 * Max |a − b| over max |b|: the relative error the peers are checked with (≤ 1e-4 against edge-moe's y).
 * @param {ArrayLike<number>} a @param {ArrayLike<number>} b
 */
export function relativeError(a, b) {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return scale > 0 ? err / scale : err;
}
