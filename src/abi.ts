// The layouts that TypeScript (src/), AssemblyScript (assembly/) and WGSL (through src/gpu/) share,
// in one file. It holds only integer constants, so that it is valid TypeScript and valid
// AssemblyScript at once: both sides import it, and nothing is mirrored by hand.

// ---- expert kinds ------------------------------------------------------------------------------
// The activation of the up-projection: the kernels' `kind` argument and the WGSL template's
// ACTIVATION. 0 is "none" (the GPU's down-projection pass).
export const KIND_NONE = 0;
export const KIND_RELU = 1;
export const KIND_GELU = 2;
export const KIND_SWIGLU = 3;

// ---- packed weights ----------------------------------------------------------------------------
// Matrices are packed in column panels of PANEL floats (packPanelsB); widths are padded to it:
// hp = ⌈h/PANEL⌉·PANEL, dp = ⌈d/PANEL⌉·PANEL. Per expert e: w1 [d × hw] panels (hw = hp, or 2·hp
// for swiglu: gate and up panels interleaved), b1 [hp], w2 [hp × dp] panels, b2 [dp].
// src/cpu/layout.ts computes every offset from these.
export const PANEL = 8;
/** Byte alignment of every region of the arena (one cache line). */
export const ALIGN_BYTES = 64;

// ---- expert weight storage (src/cpu/layout.ts, assembly/quant.ts) -------------------------------
export const DTYPE_F32 = 0;
export const DTYPE_F16 = 1;
export const DTYPE_BF16 = 2;
export const DTYPE_INT8 = 3;
export const DTYPE_INT4 = 4;
/** Rows (input dimension) of one int4 scale block. */
export const Q4_BLOCK = 32;

// ---- the thread pool's control block (src/cpu/threads.ts, assembly/experts.ts poolThread) --------
// i32 slots at `ctl`; counters sit in their own 64-byte lines.
export const CTL_GENERATION = 0; // bumped by the caller to start a run; idle workers wait on it
export const CTL_CLAIMED = 16; // 16..20: chunks claimed, per phase
export const CTL_FINISHED = 24; // 24..28: chunks finished, per phase
export const CTL_FAILED = 33; // set by a worker whose share threw: nobody waits for it any more
export const CTL_CALLER_MAY_BLOCK = 34; // 0 on a browser's main thread, where atomic waits trap
export const CTL_JOB = 48; // what the run does: JOB_EXPERTS, JOB_GATING, or JOB_EXIT
export const CTL_THREADS = 49;
export const CTL_KIND = 50;
export const CTL_D = 51;
export const CTL_H = 52;
export const CTL_N = 53;
export const CTL_K = 54;
export const CTL_BATCH = 55;
export const CTL_X = 56; // pointers from here on
export const CTL_W1 = 57;
export const CTL_B1 = 58;
export const CTL_W2 = 59;
export const CTL_B2 = 60;
export const CTL_EXPERT_OFFSETS = 61;
export const CTL_PAIR_OF = 62;
export const CTL_POS_OF = 63;
export const CTL_TOPK_GATES = 64;
export const CTL_GATHERED = 65;
export const CTL_PRE = 66;
export const CTL_ACT = 67;
export const CTL_OUT = 68;
export const CTL_Y = 69;
export const CTL_RUN = 70; // index of this run among its job's runs (0, 1, 2, …)
export const CTL_GATE_W = 71; // JOB_GATING: the packed gate panels, their count, the logits and their stride
export const CTL_PANELS = 72;
export const CTL_LOGITS = 73;
export const CTL_LDL = 74;
export const CTL_SLOTS = 80; // size of the block in i32 (five cache lines)

export const JOB_EXPERTS = 1;
export const JOB_EXIT = 2;
export const JOB_GATING = 3;

// ---- training on the pool (assembly/backward-threads.ts, src/train/trainer.ts) ------------------
export const JOB_BACKWARD = 4;
export const JOB_STEP = 5;
// Each of the two jobs counts its chunks in one pair of counters, its phases numbered one after
// another: claim(ctl, COUNTER_*, …) in assembly/experts.ts reads slot CTL_CLAIMED + COUNTER_* (21,
// 22) and finish() CTL_FINISHED + COUNTER_* (29, 30).
export const COUNTER_BACKWARD = 5;
export const COUNTER_STEP = 6;
// JOB_BACKWARD reads the forward's slots (CTL_KIND … CTL_OUT, CTL_GATE_W, CTL_LOGITS, CTL_LDL) and:
export const CTL_DY = 35; // pointers into the forward's arena
export const CTL_DX = 36;
export const CTL_DGATES = 37;
export const CTL_DLOGITS = 38;
export const CTL_STD = 39;
export const CTL_NOISY_H = 40;
export const CTL_NOISE = 41;
export const CTL_TOPK_IDX = 42;
export const CTL_NEXT_IDX = 43;
export const CTL_IMPORTANCE_GRAD = 44; // f64 [n] each, from cvSquaredGrad
export const CTL_LOAD_GRAD = 45;
export const CTL_GATING_MODE = 46; // bit 0: prob mode, bit 1: noisy, bits 6+: the routing block's address (assembly/routing-backward.ts), 0 for the paper's router without a shared expert
export const CTL_GRAD_OFFSET = 47; // bytes from a packed weight to its gradient (also JOB_STEP)
// JOB_STEP: w ← step(w, g = w + CTL_GRAD_OFFSET) over CTL_STEP_LEN floats from CTL_STEP_W.
export const CTL_STEP_W = 75;
export const CTL_STEP_LEN = 76;
export const CTL_ADAM_M = 77; // Adam's moments (CTL_OPTIMIZER 1); SGD is 0
export const CTL_ADAM_V = 78;
export const CTL_OPTIMIZER = 79;
export const CTL_LR = 1; // f32 bits, from here to CTL_BC2
export const CTL_BETA1 = 2;
export const CTL_BETA2 = 3;
export const CTL_EPS = 4;
export const CTL_BC1 = 5; // 1 − β₁ᵗ
export const CTL_BC2 = 6; // 1 − β₂ᵗ
// The expert pass's weight storage (DTYPE_*): poolThread runs quantized panels too.
export const CTL_DTYPE = 7;
// W8A8 (assembly/quant-dot.ts): the int8 weights in dot-product panels, int8 activations. The
// storage code of a layer created with dtype "int8" and activations "int8".
export const DTYPE_W8A8 = 5;
// Its expert pass's scratch: the quantized A rows and their f32 scales (pointers into the arena).
export const CTL_QA = 8;
export const CTL_QA_SCALES = 9;
