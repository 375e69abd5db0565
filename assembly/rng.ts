// Counter-based standard normals: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random
// numbers: as easy as 1, 2, 3", SC 2011) followed by Box–Muller. Normal number i of a seed comes
// from counter block i/4 alone, so the values are the same in every runtime, for any batch split,
// and need no state. The math (log, cos, sin) is AssemblyScript's own wasm code, not the host's,
// so the results are bit-identical everywhere.

const PHILOX_M0: u64 = 0xd2511f53;
const PHILOX_M1: u64 = 0xcd9e8d57;
const PHILOX_W0: u32 = 0x9e3779b9;
const PHILOX_W1: u32 = 0xbb67ae85;

let out0: u32 = 0, out1: u32 = 0, out2: u32 = 0, out3: u32 = 0;

// @ts-ignore: decorator
@inline
function philox4x32(c0: u32, c1: u32, c2: u32, c3: u32, k0: u32, k1: u32): void {
  for (let round = 0; round < 10; round++) {
    const p0 = PHILOX_M0 * <u64>c0;
    const p1 = PHILOX_M1 * <u64>c2;
    const n0 = (<u32>(p1 >> 32)) ^ c1 ^ k0;
    const n1 = <u32>p1;
    const n2 = (<u32>(p0 >> 32)) ^ c3 ^ k1;
    const n3 = <u32>p0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  out0 = c0; out1 = c1; out2 = c2; out3 = c3;
}

// (u + ½)·2⁻³² ∈ (0, 1): never 0, so log is finite.
// @ts-ignore: decorator
@inline
function unit(u: u32): f64 {
  return (<f64>u + 0.5) * 2.3283064365386963e-10;
}

/**
 * Writes normals [first, first + count) of stream `stream` of the key (seedLo, seedHi) to dst
 * (f32). Counter block c = (first + i)/4 gives normals 4c..4c+3. first must be a multiple of 4.
 */
export function normalNoise(dst: usize, count: i32, first: u32, stream: u32, seedLo: u32, seedHi: u32): void {
  const TWO_PI: f64 = 6.283185307179586;
  for (let i = 0; i < count; i += 4) {
    const block = (first + <u32>i) >> 2;
    philox4x32(block, stream, 0, 0, seedLo, seedHi);
    const r0 = Math.sqrt(-2.0 * Math.log(unit(out0)));
    const t0 = TWO_PI * unit(out1);
    const r1 = Math.sqrt(-2.0 * Math.log(unit(out2)));
    const t1 = TWO_PI * unit(out3);
    const z0 = <f32>(r0 * Math.cos(t0));
    const z1 = <f32>(r0 * Math.sin(t0));
    const z2 = <f32>(r1 * Math.cos(t1));
    const z3 = <f32>(r1 * Math.sin(t1));
    const o = dst + (<usize>i << 2);
    store<f32>(o, z0);
    if (i + 1 < count) store<f32>(o, z1, 4);
    if (i + 2 < count) store<f32>(o, z2, 8);
    if (i + 3 < count) store<f32>(o, z3, 12);
  }
}

/**
 * One Philox4x32-10 block, its four words written to dst: exported only so that the tests can check
 * the generator against the published known-answer vectors.
 */
export function philoxBlock(dst: usize, c0: u32, c1: u32, c2: u32, c3: u32, k0: u32, k1: u32): void {
  philox4x32(c0, c1, c2, c3, k0, k1);
  store<u32>(dst, out0);
  store<u32>(dst, out1, 4);
  store<u32>(dst, out2, 8);
  store<u32>(dst, out3, 12);
}
