// Numbers the GPU back ends share. GPUBufferUsage / GPUMapMode bits are written as numbers: the
// globals are absent where Dawn is not installed globally.
export const MAP_READ_USAGE = 0x1;
export const COPY_SRC = 0x4;
export const COPY_DST = 0x8;
export const UNIFORM = 0x40;
export const STORAGE = 0x80;
export const INDIRECT = 0x100;
export const MAP_MODE_READ = 0x1;
/** The most workgroups of one dispatch dimension every adapter allows. */
export const MAX_DISPATCH = 65535;

export const nextPow2 = (v: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, v)));
