// Types of bench/cases.mjs for the TypeScript that imports it (test/device/gpu-check.ts).
import type { ExpertKind, MoEWeights } from "edge-moe";

export interface BenchShape {
  d: number;
  h: number;
  n: number;
  k: number;
}
export const SHAPES: BenchShape[];
export const EXPERTS: ExpertKind[];
export const BATCHES: number[];
export function caseName(shape: BenchShape, expert: ExpertKind): string;
export function fillUniform(array: Float32Array, seed: number, scale: number): Float32Array;
export function makeWeights(shape: BenchShape, expert: ExpertKind, seed?: number): MoEWeights;
export function makeInput(batch: number, d: number, seed?: number): Float32Array;
export function forwardFlops(shape: BenchShape, expert: ExpertKind, batch: number): number;
export function expertBytes(shape: Pick<BenchShape, "d" | "h">, expert: ExpertKind): number;
export function forwardBytes(shape: BenchShape, expert: ExpertKind, expertsTouched: number): number;
export function rooflineMs(bytes: number, flops: number, bandwidthGBs: number, peakGflops: number): number;

export type QuantDtype = "int8" | "int4" | "w8a8";
export const QUANT_DTYPES: Record<QuantDtype, { dtype: "int8" | "int4"; activations?: "int8"; bits: 8 | 4 }>;
export const QUANT_BOUND: Record<QuantDtype, number>;
export const QUANT_CASES: (BenchShape & { expert: "relu" | "swiglu" })[];
export function isQuantCase(shape: BenchShape, expert: ExpertKind): boolean;
export function matrixBytes(rows: number, cols: number, dtype: QuantDtype | "f32"): number;
export function expertBytesOf(shape: Pick<BenchShape, "d" | "h">, expert: ExpertKind, dtype?: QuantDtype | "f32"): number;
export function forwardBytesOf(shape: BenchShape, expert: ExpertKind, expertsTouched: number, dtype?: QuantDtype | "f32"): number;
export function relativeRms(a: ArrayLike<number>, b: ArrayLike<number>): number;
