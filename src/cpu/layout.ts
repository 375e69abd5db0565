// Where everything lies in a layer's wasm memory: the packed weights (once per layer) and one call's
// arena (once per batch capacity). Every offset the TypeScript side uses comes from here; the
// kernels derive the same strides from d, h and PANEL (src/abi.ts).
import { ALIGN_BYTES, KIND_GELU, KIND_RELU, KIND_SWIGLU, PANEL } from "../abi.ts";
import type { LayerSpec } from "../config.ts";

export const roundUp = (v: number, m: number): number => Math.ceil(v / m) * m;

export const KIND_CODE = { relu: KIND_RELU, gelu: KIND_GELU, swiglu: KIND_SWIGLU } as const;

/** The packed weights: padded widths, per-expert strides and byte offsets from the region's start. */
export interface PackedLayout {
  /** Padded widths: hidden (hp), model (dp), up-projection output (hw: 2·hp for swiglu). */
  hp: number;
  dp: number;
  hw: number;
  /** Experts in the packed weights: the routed ones, then the shared expert's slices. */
  experts: number;
  /** Slots per row of the plan: the routed k, then one per shared slice. */
  slots: number;
  /**
   * Gating GEMM output columns (clean [n], then raw [n] when noisy, then the shared expert's gate
   * when gated) and its padded row stride.
   */
  gateCols: number;
  ldl: number;
  /** The shared expert's gate column, or -1. */
  sharedGateCol: number;
  /** Bytes of one expert's w1 panels, of its w2 panels, and of one up-projection panel (d × PANEL). */
  w1Bytes: number;
  w2Bytes: number;
  panelBytes: number;
  /** Byte offsets from the start of the region (b1, b2: -1 for swiglu, which has no biases). */
  offsets: { gate: number; w1: number; b1: number; w2: number; b2: number; choiceBias: number };
  bytes: number;
}

export function packedLayout(spec: Pick<LayerSpec, "dModel" | "dHidden" | "numExperts" | "k" | "expert" | "noisyGating" | "routing" | "shared">): PackedLayout {
  const { dModel: d, dHidden: h } = spec;
  const slices = spec.shared?.slices ?? 0;
  const n = spec.numExperts + slices;
  const hp = roundUp(h, PANEL);
  const dp = roundUp(d, PANEL);
  const hw = spec.expert === "swiglu" ? 2 * hp : hp;
  const routedCols = spec.noisyGating ? 2 * spec.numExperts : spec.numExperts;
  const sharedGateCol = spec.shared?.gated ? routedCols : -1;
  const gateCols = routedCols + (sharedGateCol >= 0 ? 1 : 0);
  const ldl = roundUp(gateCols, PANEL);
  const bias = spec.expert !== "swiglu";
  let at = 0;
  const region = (bytes: number) => {
    const offset = roundUp(at, ALIGN_BYTES);
    at = offset + bytes;
    return offset;
  };
  const offsets = {
    gate: region(4 * d * ldl),
    w1: region(4 * n * d * hw),
    b1: bias ? region(4 * n * hp) : -1,
    w2: region(4 * n * hp * dp),
    b2: bias ? region(4 * n * dp) : -1,
    choiceBias: spec.routing.choiceBias ? region(4 * spec.numExperts) : -1,
  };
  return { hp, dp, hw, experts: n, slots: spec.k + slices, gateCols, ldl, sharedGateCol, w1Bytes: 4 * d * hw, w2Bytes: 4 * hp * dp, panelBytes: 4 * PANEL * d, offsets, bytes: roundUp(at, ALIGN_BYTES) };
}

/**
 * One call's buffers, as byte offsets from the arena's start, for a capacity of `capacity` rows:
 * the gating state (read by the losses and by backward), the plan, the expert pass's activations,
 * y, and the backward pass's per-batch buffers.
 */
export interface ArenaLayout {
  capacity: number;
  x: number;
  logits: number; noise: number; std: number; h: number;
  topkIdx: number; topkGates: number; nextIdx: number; topkScratch: number;
  importance: number; load: number; losses: number; lossAcc: number;
  expertOffsets: number; pairOf: number; posOf: number;
  gathered: number; pre: number; act: number; out: number; y: number;
  dy: number; dx: number; dLogits: number; dGates: number;
  bytes: number;
}

export function arenaLayout(spec: Pick<LayerSpec, "dModel" | "numExperts" | "k">, packed: PackedLayout, capacity: number): ArenaLayout {
  const { dModel: d, numExperts: n } = spec;
  const { slots: k, experts } = packed;
  const pairs = capacity * k;
  let at = 0;
  const bytes = (count: number) => {
    const offset = roundUp(at, ALIGN_BYTES);
    at = offset + count;
    return offset;
  };
  const f = (count: number) => bytes(4 * count);
  const layout: ArenaLayout = {
    capacity,
    x: f(capacity * d),
    logits: f(capacity * packed.ldl), noise: f(roundUp(capacity * n, 4)), std: f(capacity * n), h: f(capacity * n),
    topkIdx: f(pairs), topkGates: f(pairs), nextIdx: f(capacity), topkScratch: f(5 * n + 2 * (k + 2) + PANEL),
    importance: f(n), load: f(n), losses: bytes(16), lossAcc: bytes(16 * n),
    expertOffsets: f(experts + 1), pairOf: f(pairs), posOf: f(pairs),
    gathered: f(pairs * d), pre: f(pairs * packed.hw), act: f(pairs * packed.hp), out: f(pairs * packed.dp),
    y: f(capacity * d),
    dy: f(capacity * d), dx: f(capacity * d), dLogits: f(capacity * packed.ldl), dGates: f(pairs),
    bytes: 0,
  };
  layout.bytes = roundUp(at, ALIGN_BYTES);
  return layout;
}
