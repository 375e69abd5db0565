// Types of bench/onnx-moe.mjs for the TypeScript that imports it (test/ort-moe.test.ts, test/ort-qmoe.test.ts).
import type { BenchShape } from "./cases.d.mts";

export interface MoEModelSpec {
  batch: number | string;
  d: number;
  h: number;
  n: number;
  k: number;
  activation: "relu" | "swiglu";
  fc1: Float32Array;
  fc2: Float32Array;
  fc1Bias?: Float32Array;
  fc2Bias?: Float32Array;
  wGate?: Float32Array;
  normalize?: 0 | 1;
}
export function moeModel(spec: MoEModelSpec): Uint8Array;
export function interleaveSwiglu(gate: ArrayLike<number>, up: ArrayLike<number>, n: number, h: number, d: number): Float32Array;
export function transposeExperts(a: Float32Array, n: number, rows: number, cols: number): Float32Array;
export function caseModel(shape: BenchShape, expert: "relu" | "swiglu", w: Record<string, Float32Array>, batch?: number | string): Uint8Array;

export function quantizeExperts(
  w: Float32Array,
  n: number,
  out: number,
  inDim: number,
  bits: 8 | 4,
  blockSize?: number,
): { q: Uint8Array; scales: Float32Array; dequantized: Float32Array };
export interface QMoEModelSpec {
  batch: number | string;
  d: number;
  h: number;
  n: number;
  k: number;
  activation: "relu" | "swiglu";
  bits: 8 | 4;
  fc1: Uint8Array;
  fc1Scales: Float32Array;
  fc2: Uint8Array;
  fc2Scales: Float32Array;
  blockSize?: number;
  fc1Bias?: Float32Array;
  fc2Bias?: Float32Array;
  wGate?: Float32Array;
  normalize?: 0 | 1;
}
export function qmoeModel(spec: QMoEModelSpec): Uint8Array;
export function qcaseModel(
  shape: BenchShape,
  expert: "relu" | "swiglu",
  w: Record<string, Float32Array>,
  bits: 8 | 4,
  blockSize?: number,
  batch?: number | string,
): Uint8Array;
