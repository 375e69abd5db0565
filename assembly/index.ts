// The wasm module's exports: plain functions over pointers into this module's memory.
// The TypeScript side (src/cpu/) owns the memory layout; nothing here allocates.
export { packPanelsB, unpackPanelsB, gemmPanels } from "./gemm";
export { noisyLogits, cleanLogits, firstNonFinite } from "./gating";
export { normalNoise, philoxBlock } from "./rng";
export { topkSoftmax } from "./topk";
export { topkSoftmaxAll, topkSigmoidGrouped } from "./routing";
export { appendSharedSlots } from "./shared";
export { balanceLosses } from "./losses";
export { buildPlan, gatherRows, expertsForward, combine, poolThread } from "./experts";
export {
  expertOutputGrads, cvSquaredGrad, gatingBackward, gemmAtB, gemmABt, expertsBackward, scatterAddRows,
} from "./backward";
export { routedGatingBackward, writeRoutingBlock } from "./routing-backward";
export { sgdStep, adamStep } from "./optim";

/** First free byte after the module's static data: the TypeScript arena starts here. */
export function heapBase(): usize {
  return __heap_base;
}
export { expertsForwardQ } from "./quant";
export { packPanelsQ, unpackPanelsQ, quantizeRowsW8A8, gemmW8A8, expertsForwardW8A8 } from "./quant-dot";
