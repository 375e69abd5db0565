// The messages between createMoEWorker (src/worker-client.ts, the calling thread) and
// edge-moe/worker (src/worker.ts). Each layer gets its own MessageChannel: the create message
// carries one port to the worker, and every later request and reply of that layer uses it.
import type { MoEErrorCode } from "./errors.ts";
import type { BackwardOptions, ForwardOptions, ForwardResult, MoEConfig, MoELayer, MoEWeights, StepOptions } from "./types.ts";

/** Tag of this protocol's create message, so other messages to the same worker are left alone. */
export const PROTOCOL = "edge-moe/1";

/**
 * To the worker's global scope, with the layer's port transferred alongside (and also in `port`:
 * Node's worker_threads hand a listener the message alone, without its transferred ports).
 */
export interface CreateRequest {
  protocol: typeof PROTOCOL;
  op: "create";
  config: MoEConfig;
  port?: MessagePort;
}

/** On the layer's port. Buffers in `options` are copied (structured clone), never taken. */
export type LayerRequest = { id: number; op: "forward"; x: Float32Array; options: ForwardOptions } | TrainingRequest | { id: number; op: "dispose" };

/** Training (src/train/): backward, step, getWeights. */
export type TrainingRequest =
  | { id: number; op: "backward"; dy: Float32Array; options: BackwardOptions }
  | { id: number; op: "step"; options: StepOptions }
  | { id: number; op: "getWeights" };

/**
 * On the layer's port; `id` 0 answers the create message: first `{ id: 0, ok: true, accepted: true }`
 * as soon as the worker reads it (the handshake: an edge-moe worker is alive at the other end), then
 * the created layer's config or the error. Result buffers are transferred.
 */
export type LayerReply =
  | { id: number; ok: true; accepted?: true; config?: MoELayer["config"]; result?: ForwardResult; tensors?: MoEWeights & { x?: Float32Array } }
  | { id: number; ok: false; error: { code: MoEErrorCode; message: string } };

export function isCreateRequest(value: unknown): value is CreateRequest {
  return typeof value === "object" && value !== null && (value as CreateRequest).protocol === PROTOCOL && (value as CreateRequest).op === "create";
}

/** The buffers of a result, to transfer rather than copy. */
export function resultBuffers(result: ForwardResult): ArrayBuffer[] {
  const views = [result.y, result.topkIndices, result.topkGates, result.importance, result.load];
  return views.filter((v) => v !== undefined).map((v) => v.buffer as ArrayBuffer);
}
