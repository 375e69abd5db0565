// Seeded standard normals for the demos (SplitMix32 + Box–Muller): every run sees the same data.
export function normalStream(seed) {
  let state = seed >>> 0;
  const u32 = () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  const uniform = () => (u32() + 0.5) / 2 ** 32;
  const normal = () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return {
    normal,
    /** A uniform integer in [0, n). */
    index: (n) => Math.floor(uniform() * n),
    /** A Float32Array of `length` normals times `scale`. */
    array: (length, scale = 1) => Float32Array.from({ length }, () => normal() * scale),
  };
}
