// f16Weights() of shaders/grouped_gemm.wgsl on devices with the `shader-f16` feature: the weight
// buffer is bound a second time as vec4<f16> (binding 6, src/gpu/experts.ts) and four halves are
// read and widened to f32 (exact). The accumulation stays f32. f16_bits.wgsl is the fallback.
// Placed first in a module: `enable` must lead it.

enable f16;

@group(0) @binding(6) var<storage, read> w16: array<vec4<f16>>;

// The four f16 weights in the two 32-bit words from word `at` (even) of the weight buffer, as f32.
fn f16Weights(at: u32) -> vec4<f32> {
  return vec4<f32>(w16[at / 2u]);
}
