// Shared experts: every row goes through them, beside its k routed experts (Qwen2-MoE's
// shared_expert, DeepSeek-V3's shared_experts). A shared MLP of hidden width m·h is run as m extra
// experts of width h (an MLP is a sum over its hidden units, so its slices add up to it), which
// every row routes to: the plan gets k + m slots per row, and both expert back ends run it
// unchanged.

/**
 * Widens the routed top-k [B, k] (topkIdx, topkGates, packed at stride k) to [B, k + m] in place:
 * each row keeps its k routed slots, then slots for the experts n .. n + m − 1 with the shared
 * gate: sigmoid(logits[r, gateCol]) (Qwen2-MoE's shared_expert_gate), or 1 when gateCol < 0.
 */
export function appendSharedSlots(topkIdx: usize, topkGates: usize, b: i32, k: i32, m: i32, n: i32, logits: usize, ldl: i32, gateCol: i32): void {
  const kAll = k + m;
  // rows from the last: a row's wider slots never overlap the narrower slots of rows before it
  for (let r = b - 1; r >= 0; r--) {
    const from = <usize>r * <usize>k;
    const to = <usize>r * <usize>kAll;
    for (let s = k - 1; s >= 0; s--) {
      store<i32>(topkIdx + ((to + <usize>s) << 2), load<i32>(topkIdx + ((from + <usize>s) << 2)));
      store<f32>(topkGates + ((to + <usize>s) << 2), load<f32>(topkGates + ((from + <usize>s) << 2)));
    }
    let gate: f32 = 1;
    if (gateCol >= 0) {
      const z = <f64>load<f32>(logits + ((<usize>r * <usize>ldl + <usize>gateCol) << 2));
      gate = <f32>(1.0 / (1.0 + Math.exp(-z)));
    }
    for (let j = 0; j < m; j++) {
      store<i32>(topkIdx + ((to + <usize>(k + j)) << 2), n + j);
      store<f32>(topkGates + ((to + <usize>(k + j)) << 2), gate);
    }
  }
}
