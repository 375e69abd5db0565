// edge-moe/worker: runs layers off the calling thread. Start it as a module worker and drive it with
// createMoEWorker (src/worker-client.ts):
//   const worker = new Worker(new URL("edge-moe/worker", import.meta.url), { type: "module" });
//   const layer = await createMoEWorker(worker, config);      // same forward() as a local layer
// Protocol: src/worker-protocol.ts. Errors go back as { code, message } and become MoEErrors again.
import { MoEError, type MoEErrorCode } from "./errors.ts";
import { createMoE } from "./layer.ts";
import type { MoELayer } from "./types.ts";
import { isCreateRequest, resultBuffers, type LayerReply, type LayerRequest, type TrainingRequest } from "./worker-protocol.ts";

/**
 * Where create messages arrive: a worker's global scope, or any MessagePort-like target (Node's
 * worker_threads parentPort included).
 */
export interface MoEMessageScope {
  addEventListener(type: "message", listener: (event: MessageEvent) => void): void;
}

function errorReply(id: number, error: unknown): LayerReply {
  const known = error instanceof MoEError;
  const code: MoEErrorCode = known ? error.code : "WORKER_ERROR";
  const message = known ? error.message : `unexpected error in the edge-moe worker: ${(error as Error)?.message ?? String(error)}`;
  return { id, ok: false, error: { code, message } };
}

/** Serves one layer on its own port until it is disposed. */
function serveLayer(layer: MoELayer, port: MessagePort): void {
  port.onmessage = (event: MessageEvent<LayerRequest>) => {
    const request = event.data;
    if (request.op === "dispose") {
      layer.dispose();
      port.postMessage({ id: request.id, ok: true } satisfies LayerReply);
      port.close();
      return;
    }
    if (request.op !== "forward") return serveTraining(layer, port, request);
    layer.forward(request.x, request.options).then(
      (result) => port.postMessage({ id: request.id, ok: true, result } satisfies LayerReply, resultBuffers(result)),
      (error: unknown) => port.postMessage(errorReply(request.id, error)),
    );
  };
}

/** backward, step and getWeights; the returned tensors' buffers are transferred. */
function serveTraining(layer: MoELayer, port: MessagePort, request: TrainingRequest): void {
  const work = async (): Promise<LayerReply & { ok: true }> => {
    if (request.op === "backward") return { id: request.id, ok: true, tensors: await layer.backward(request.dy, request.options) };
    if (request.op === "step") return (await layer.step(request.options), { id: request.id, ok: true });
    return { id: request.id, ok: true, tensors: await layer.getWeights() };
  };
  work().then(
    (reply) =>
      port.postMessage(
        reply,
        Object.values(reply.tensors ?? {}).map((t: Float32Array) => t.buffer as ArrayBuffer),
      ),
    (error: unknown) => port.postMessage(errorReply(request.id, error)),
  );
}

/** Answers createMoEWorker's create messages arriving on `scope` (the worker's global scope by default). */
export function serveMoE(scope: MoEMessageScope): void {
  scope.addEventListener("message", (event: MessageEvent) => {
    if (!isCreateRequest(event.data)) return;
    const port = event.ports?.[0] ?? event.data.port;
    if (!port) return;
    port.postMessage({ id: 0, ok: true, accepted: true } satisfies LayerReply);
    createMoE(event.data.config).then(
      (layer) => {
        port.postMessage({ id: 0, ok: true, config: layer.config } satisfies LayerReply);
        serveLayer(layer, port);
      },
      (error: unknown) => {
        port.postMessage(errorReply(0, error));
        port.close();
      },
    );
  });
}

// Loaded as a worker, serve right away: Node's worker_threads (Node, and Deno and Bun when started
// from node:worker_threads) through parentPort; a Web Worker through its global scope (one that
// receives messages and has no document).
const nodePort = workerThreadsParentPort();
const scope = globalThis as unknown as Partial<MoEMessageScope> & { postMessage?: unknown; document?: unknown };
if (nodePort) {
  serveMoE(nodePort);
} else if (typeof scope.addEventListener === "function" && typeof scope.postMessage === "function" && scope.document === undefined) {
  serveMoE(scope as MoEMessageScope);
}

/** The parentPort of a worker_threads worker; undefined on the main thread and in Web Workers. */
function workerThreadsParentPort(): MoEMessageScope | undefined {
  // process.getBuiltinModule (Node 20.16+, Deno, Bun): no import of node: modules in this bundle,
  // which browsers and their bundlers load too.
  const g = globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } };
  try {
    const threads = g.process?.getBuiltinModule?.("node:worker_threads") as { isMainThread?: boolean; parentPort?: MoEMessageScope | null } | undefined;
    return threads && !threads.isMainThread && threads.parentPort ? threads.parentPort : undefined;
  } catch {
    return undefined;
  }
}
