// Types of scripts/train-demo.mjs, for the tests that run a short version of it.
export interface TrainResult {
  wImportance: number;
  wLoad: number;
  steps: number;
  seconds: number;
  /** Mean squared error on the held-out batch (eval mode). */
  taskLoss: number;
  /** Experts in the top k of at least 1% of the held-out rows (eval mode). */
  expertsUsed: number;
  cvImportance: number;
  cvLoad: number;
  maxOverMeanLoad: number;
}
export interface TrainOptions {
  wImportance?: number;
  wLoad?: number;
  steps?: number;
  heldOut?: number;
  [option: string]: unknown;
}
export declare const DEMO: Record<string, number | string>;
export declare function trainOnce(options: TrainOptions): Promise<TrainResult>;
export declare function trainDemo(options?: TrainOptions): Promise<[TrainResult, TrainResult]>;
