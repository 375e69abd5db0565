// Types of bench/peer-ort.mjs for the TypeScript that imports it (test/ort-moe.test.ts).
import type { BenchShape } from "./cases.d.mts";

export const ORT_EXPERTS: ("relu" | "swiglu")[];
export interface OrtPeer {
  threads: number;
  forward(x: Float32Array, batch: number): Promise<Float32Array>;
  dispose(): Promise<void>;
}
export function createOrtPeer(
  ort: unknown,
  shape: BenchShape,
  expert: "relu" | "swiglu",
  weights: Record<string, Float32Array>,
  config: { ep: "wasm" | "cpu"; threads: number; bits?: 8 | 4 },
): Promise<OrtPeer>;
export function startOrtWeb(load: () => Promise<unknown>, threads: number): Promise<unknown>;
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number;
