// Where everything lies in a layer's wasm memory: the packed weights (once per layer) and one call's
// arena (once per batch capacity). Every offset the TypeScript side uses comes from here; the
// kernels derive the same strides from d, h and PANEL (src/abi.ts).
import {
  ALIGN_BYTES,
  DTYPE_BF16,
  DTYPE_F16,
  DTYPE_F32,
  DTYPE_INT4,
  DTYPE_INT8,
  DTYPE_W8A8,
  KIND_GELU,
  KIND_RELU,
  KIND_SWIGLU,
  PANEL,
  Q4_BLOCK,
} from "../abi.ts";
import type { LayerSpec } from "../config.ts";
import type { WeightDtype } from "../types.ts";

export const roundUp = (v: number, m: number): number => Math.ceil(v / m) * m;

export const KIND_CODE = { relu: KIND_RELU, gelu: KIND_GELU, swiglu: KIND_SWIGLU } as const;

/** The kernels' codes of the expert weights' storage (assembly/quant.ts DTYPE_*). */
export const DTYPE_CODE = { f32: DTYPE_F32, f16: DTYPE_F16, bf16: DTYPE_BF16, int8: DTYPE_INT8, int4: DTYPE_INT4 } as const;

/**
 * Bytes of one panel (PANEL columns × kPad rows) of a dtype (assembly/quant.ts qPanelBytes):
 * f32 4 bytes a weight; f16, bf16 2; int8 1, plus PANEL f32 column scales; int4 blocks of
 * Q4_BLOCK rows, each half a byte a weight plus PANEL f32 scales.
 */
export function panelBytesOf(dtype: WeightDtype, kPad: number): number {
  switch (dtype) {
    case "f16":
    case "bf16":
      return 2 * PANEL * kPad;
    case "int8":
      return PANEL * kPad + 4 * PANEL;
    case "int4":
      return Math.ceil(kPad / Q4_BLOCK) * ((Q4_BLOCK * PANEL) / 2 + 4 * PANEL);
    default:
      return 4 * PANEL * kPad;
  }
}

/**
 * Bytes of one W8A8 panel (assembly/quant-dot.ts w8a8PanelBytes): kPad rounded up to 16 rows of
 * 8 int8, then 8 f32 column scales and 8 i32 column sums.
 */
export function w8a8PanelBytes(kPad: number): number {
  return PANEL * roundUp(kPad, 16) + 8 * PANEL;
}

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
  /** Storage of the expert weights (w1, w2), and its kernel code (DTYPE_CODE; DTYPE_W8A8 with int8 activations). */
  dtype: WeightDtype;
  dtypeCode: number;
  /**
   * Bytes of one expert's w1 panels, of its w2 panels, of one up-projection panel (d × PANEL) and
   * of one down-projection panel (hp × PANEL), in the dtype's layout.
   */
  w1Bytes: number;
  w2Bytes: number;
  panelBytes: number;
  downPanelBytes: number;
  /** Byte offsets from the start of the region (b1, b2: -1 for swiglu, which has no biases). */
  offsets: { gate: number; w1: number; b1: number; w2: number; b2: number; choiceBias: number };
  bytes: number;
}

export function packedLayout(
  spec: Pick<LayerSpec, "dModel" | "dHidden" | "numExperts" | "k" | "expert" | "noisyGating" | "routing" | "shared"> & {
    dtype?: WeightDtype;
    activations?: "f32" | "int8";
  },
): PackedLayout {
  const { dModel: d, dHidden: h } = spec;
  const slices = spec.shared?.slices ?? 0;
  const n = spec.numExperts + slices;
  const dtype = spec.dtype ?? "f32";
  const hp = roundUp(h, PANEL);
  const dp = roundUp(d, PANEL);
  const hw = spec.expert === "swiglu" ? 2 * hp : hp;
  const routedCols = spec.noisyGating ? 2 * spec.numExperts : spec.numExperts;
  const sharedGateCol = spec.shared?.gated ? routedCols : -1;
  const gateCols = routedCols + (sharedGateCol >= 0 ? 1 : 0);
  const ldl = roundUp(gateCols, PANEL);
  const bias = spec.expert !== "swiglu";
  const w8a8 = spec.activations === "int8";
  const panelBytes = (kPad: number) => (w8a8 ? w8a8PanelBytes(kPad) : panelBytesOf(dtype, kPad));
  let at = 0;
  const region = (bytes: number) => {
    const offset = roundUp(at, ALIGN_BYTES);
    at = offset + bytes;
    return offset;
  };
  const offsets = {
    gate: region(4 * d * ldl),
    w1: region(n * (hw / PANEL) * panelBytes(d)),
    b1: bias ? region(4 * n * hp) : -1,
    w2: region(n * (dp / PANEL) * panelBytes(hp)),
    b2: bias ? region(4 * n * dp) : -1,
    choiceBias: spec.routing.choiceBias ? region(4 * spec.numExperts) : -1,
  };
  return {
    hp,
    dp,
    hw,
    experts: n,
    slots: spec.k + slices,
    gateCols,
    ldl,
    sharedGateCol,
    dtype,
    dtypeCode: w8a8 ? DTYPE_W8A8 : DTYPE_CODE[dtype],
    w1Bytes: (hw / PANEL) * panelBytes(d),
    w2Bytes: (dp / PANEL) * panelBytes(hp),
    panelBytes: panelBytes(d),
    downPanelBytes: panelBytes(hp),
    offsets,
    bytes: roundUp(at, ALIGN_BYTES),
  };
}

/**
 * One call's buffers, as byte offsets from the arena's start, for a capacity of `capacity` rows:
 * the gating state (read by the losses and by backward), the plan, the expert pass's activations,
 * y, and the backward pass's per-batch buffers.
 */
export interface ArenaLayout {
  capacity: number;
  x: number;
  logits: number;
  noise: number;
  std: number;
  h: number;
  topkIdx: number;
  topkGates: number;
  nextIdx: number;
  topkScratch: number;
  importance: number;
  load: number;
  losses: number;
  lossAcc: number;
  expertOffsets: number;
  pairOf: number;
  posOf: number;
  gathered: number;
  pre: number;
  act: number;
  out: number;
  y: number;
  /** int8, int4, W8A8: the expert GEMMs' quantized A rows and their f32 scales; empty otherwise. */
  qa: number;
  qaScales: number;
  dy: number;
  dx: number;
  dLogits: number;
  dGates: number;
  bytes: number;
}

/**
 * Bytes of one quantized activation row of the expert GEMMs: W8A8 bytes (assembly/quant-dot.ts),
 * int8 and int4 i16 in rows of whole 32-element blocks (assembly/quant-a16.ts); 0 for the others.
 */
function qaRowBytes(packed: PackedLayout, d: number): number {
  const k = Math.max(d, packed.hp);
  if (packed.dtypeCode === DTYPE_W8A8) return roundUp(k, 16);
  if (packed.dtype === "int8" || packed.dtype === "int4") return 2 * roundUp(k, 32);
  return 0;
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
    logits: f(capacity * packed.ldl),
    noise: f(roundUp(capacity * n, 4)),
    std: f(capacity * n),
    h: f(capacity * n),
    topkIdx: f(pairs),
    topkGates: f(pairs),
    nextIdx: f(capacity),
    topkScratch: f(5 * n + 2 * (k + 2) + PANEL),
    importance: f(n),
    load: f(n),
    losses: bytes(16),
    lossAcc: bytes(16 * n),
    expertOffsets: f(experts + 1),
    pairOf: f(pairs),
    posOf: f(pairs),
    gathered: f(pairs * d),
    pre: f(pairs * packed.hw),
    act: f(pairs * packed.hp),
    out: f(pairs * packed.dp),
    y: f(capacity * d),
    qa: bytes(qaRowBytes(packed, d) * pairs),
    qaScales: f(qaRowBytes(packed, d) > 0 ? pairs : 0),
    dy: f(capacity * d),
    dx: f(capacity * d),
    dLogits: f(capacity * packed.ldl),
    dGates: f(pairs),
    bytes: 0,
  };
  layout.bytes = roundUp(at, ALIGN_BYTES);
  return layout;
}
