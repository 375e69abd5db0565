// Optimizer steps over the layer's packed weights and their gradients, elementwise. The weights,
// the gradients and the optimizer state share one layout (src/train/trainer.ts), so a step is one
// pass over the whole region: the zero padding of the panels has zero gradient and stays zero.
// len is a multiple of 4 (every packed tensor is a multiple of 8 floats).

/** Plain gradient descent: w ← w − lr·g. */
export function sgdStep(w: usize, g: usize, len: i32, lr: f32): void {
  const lrV = f32x4.splat(lr);
  for (let i = 0; i < len; i += 4) {
    const o = <usize>i << 2;
    v128.store(w + o, f32x4.sub(v128.load(w + o), f32x4.mul(lrV, v128.load(g + o))));
  }
}

/**
 * Adam (Kingma & Ba 2015, "Adam: A method for stochastic optimization", algorithm 1):
 *   m ← β₁·m + (1 − β₁)·g,  v ← β₂·v + (1 − β₂)·g²,
 *   w ← w − lr·m̂/(√v̂ + ε)  with m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ).
 * bc1 = 1 − β₁ᵗ and bc2 = 1 − β₂ᵗ are passed in (t counts the steps, from 1).
 */
export function adamStep(w: usize, g: usize, m: usize, v: usize, len: i32, lr: f32, beta1: f32, beta2: f32, eps: f32, bc1: f32, bc2: f32): void {
  const b1 = f32x4.splat(beta1);
  const c1 = f32x4.splat(1 - beta1);
  const b2 = f32x4.splat(beta2);
  const c2 = f32x4.splat(1 - beta2);
  const inv1 = f32x4.splat(1 / bc1);
  const inv2 = f32x4.splat(1 / bc2);
  const lrV = f32x4.splat(lr);
  const epsV = f32x4.splat(eps);
  for (let i = 0; i < len; i += 4) {
    const o = <usize>i << 2;
    const gv = v128.load(g + o);
    const mv = f32x4.add(f32x4.mul(b1, v128.load(m + o)), f32x4.mul(c1, gv));
    const vv = f32x4.add(f32x4.mul(b2, v128.load(v + o)), f32x4.mul(c2, f32x4.mul(gv, gv)));
    v128.store(m + o, mv);
    v128.store(v + o, vv);
    const step = f32x4.div(f32x4.mul(mv, inv1), f32x4.add(f32x4.sqrt(f32x4.mul(vv, inv2)), epsV));
    v128.store(w + o, f32x4.sub(v128.load(w + o), f32x4.mul(lrV, step)));
  }
}
