// f16Weights() of shaders/grouped_gemm.wgsl without the `shader-f16` feature: the halves' bits
// unpacked with integer operations, exact for subnormal halves too. f16_native.wgsl is the same
// with f16 values.

// The four f16 weights in the two 32-bit words from word `at` (even) of the weight buffer, as f32.
fn f16Weights(at: u32) -> vec4<f32> {
  let h = halfBits(at);
  // normal halves by moving exponent and mantissa, subnormal ones as mantissa · 2^−24
  let e = (h >> vec4<u32>(10u)) & vec4<u32>(0x1fu);
  let m = h & vec4<u32>(0x3ffu);
  let normal = bitcast<vec4<f32>>(((e + vec4<u32>(112u)) << vec4<u32>(23u)) | (m << vec4<u32>(13u)));
  let mag = select(vec4<f32>(m) * 5.9604644775390625e-8, normal, e != vec4<u32>(0u));
  return select(mag, -mag, (h & vec4<u32>(0x8000u)) != vec4<u32>(0u));
}
