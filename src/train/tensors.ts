// The layer's packed tensors, read back in the input layout (types.ts MoEWeights): the weights
// themselves (getWeights) and their gradients, which share the weights' packed layout at a fixed
// byte offset (trainer.ts). Inverse of CpuEngine.loadWeights: quantized expert weights come back
// dequantized, the values the kernels compute with.
import type { CpuEngine } from "../cpu/engine.ts";
import { foldSharedSlices } from "../routing.ts";
import type { MoEWeights } from "../types.ts";

/**
 * The tensors packed at the engine's weight pointers + `offset` bytes, unpacked into fresh
 * Float32Arrays named and shaped as createMoE takes them.
 */
export function unpackTensors(engine: CpuEngine, offset: number): MoEWeights {
  const { dModel: d, dHidden: h, numExperts: routed, expert, noisyGating, shared } = engine.spec;
  const K = engine.kernels;
  const { hp, dp, gateCols, w1Bytes, w2Bytes, panelBytes, experts: n, sharedGateCol, dtypeCode } = engine.packed;
  const w = engine.weightPtr;
  const staging = engine.staging(4 * Math.max(d * gateCols, d * h));
  const out: MoEWeights = {};

  // Gating: one [d, gateCols] matrix [W_g | W_noise | shared gate], split by columns.
  K.unpackPanelsB(w.gate + offset, d, gateCols, staging, gateCols, d, 1);
  const all = engine.f32(staging, d * gateCols);
  const columns = (first: number, cols: number): Float32Array => {
    const m = new Float32Array(d * cols);
    for (let r = 0; r < d; r++) m.set(all.subarray(r * gateCols + first, r * gateCols + first + cols), r * cols);
    return m;
  };
  out.wGate = columns(0, routed);
  if (noisyGating) out.wNoise = columns(routed, routed);
  if (sharedGateCol >= 0) out.sharedGate = columns(sharedGateCol, 1);

  // Experts: one [d, h] or [h, d] matrix at a time through the staging area.
  const unpackEach = (ptr: number, perExpert: number, rows: number, cols: number, kPad: number, panelStep: number): Float32Array => {
    const all = new Float32Array(n * rows * cols);
    for (let e = 0; e < n; e++) {
      // quantized weights (only the weights themselves: gradients exist for f32 layers alone)
      if (dtypeCode !== 0 && offset === 0) K.unpackPanelsQ(dtypeCode, ptr + e * perExpert, rows, cols, staging, cols, kPad, panelStep);
      else K.unpackPanelsB(ptr + offset + e * perExpert, rows, cols, staging, cols, kPad, panelStep);
      all.set(engine.f32(staging, rows * cols), e * rows * cols);
    }
    return all;
  };
  const unpadEach = (ptr: number, padded: number, width: number): Float32Array => {
    const all = new Float32Array(n * width);
    const src = engine.f32(ptr + offset, n * padded);
    for (let e = 0; e < n; e++) all.set(src.subarray(e * padded, e * padded + width), e * width);
    return all;
  };
  if (expert === "swiglu") {
    out.wGateProj = unpackEach(w.w1, w1Bytes, d, h, d, 2);
    out.wUp = unpackEach(w.w1 + panelBytes, w1Bytes, d, h, d, 2);
    out.wDown = unpackEach(w.w2, w2Bytes, h, d, hp, 1);
  } else {
    out.w1 = unpackEach(w.w1, w1Bytes, d, h, d, 1);
    out.b1 = unpadEach(w.b1, hp, h);
    out.w2 = unpackEach(w.w2, w2Bytes, h, d, hp, 1);
    out.b2 = unpadEach(w.b2, dp, d);
  }
  return shared ? foldSharedSlices(out, shared, d, h, routed) : out;
}
