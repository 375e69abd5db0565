// createMoEWorker: a layer that lives in edge-moe/worker (src/worker.ts) and is used from the calling
// thread through the same interface as a local one. Protocol: src/worker-protocol.ts.
import { fail, MoEError } from "./errors.ts";
import { isResponseLike } from "./cpu/wasm.ts";
import type { BackwardOptions, ForwardOptions, ForwardResult, Gradients, MoEConfig, MoELayer, MoEWeights, StepOptions } from "./types.ts";
import { PROTOCOL, type CreateRequest, type LayerReply, type LayerRequest } from "./worker-protocol.ts";

/** What createMoEWorker needs of a worker: a Web Worker (browsers, Deno, Bun) has it. */
export interface MoEWorkerLike {
  postMessage(message: unknown, transfer: Transferable[]): void;
  addEventListener(type: "error" | "messageerror", listener: (event: Event) => void): void;
  removeEventListener(type: "error" | "messageerror", listener: (event: Event) => void): void;
}

/**
 * Creates a layer inside `worker` (running edge-moe/worker) and returns a handle with the same
 * `forward` and `dispose` as a local layer. Weights, x and noise are copied to the worker; the
 * results are transferred back (no copy). Errors arrive as MoEError with the worker's code.
 * `dispose()` releases the layer in the worker; the worker itself stays the caller's to terminate.
 */
export async function createMoEWorker(worker: MoEWorkerLike, config: MoEConfig): Promise<MoELayer> {
  if (typeof worker?.postMessage !== "function" || typeof worker.addEventListener !== "function") {
    fail("INVALID_CONFIG", 'createMoEWorker needs a Worker running edge-moe/worker: new Worker(url, { type: "module" })');
  }
  // A Response cannot cross to a worker; its bytes can (a WebAssembly.Module can, as it is).
  if (config?.wasm !== undefined) {
    const wasm = await config.wasm;
    config = { ...config, wasm: isResponseLike(wasm) ? await wasm.arrayBuffer() : wasm };
  }

  const channel = new MessageChannel();
  const port = channel.port1;
  const pending = new Map<number, { resolve(reply: LayerReply & { ok: true }): void; reject(error: MoEError): void }>();
  let nextId = 1;
  let broken: MoEError | undefined;

  const failAll = (error: MoEError) => {
    broken ??= error;
    for (const waiting of pending.values()) waiting.reject(error);
    pending.clear();
  };
  const onError = (event: Event) => {
    const detail = (event as ErrorEvent).message;
    failAll(new MoEError("WORKER_ERROR", `the edge-moe worker failed${detail ? `: ${detail}` : " (it did not load or it crashed)"}; ` +
      'check that it runs edge-moe/worker and was started with { type: "module" }'));
  };
  const onMessageError = () => failAll(new MoEError("WORKER_ERROR", "a message from the edge-moe worker could not be read"));
  const detach = () => {
    worker.removeEventListener("error", onError);
    worker.removeEventListener("messageerror", onMessageError);
    port.onmessage = null;
    port.close();
  };
  worker.addEventListener("error", onError);
  worker.addEventListener("messageerror", onMessageError);
  port.onmessage = (event: MessageEvent<LayerReply>) => {
    const reply = event.data;
    const waiting = pending.get(reply.id);
    if (!waiting) return;
    pending.delete(reply.id);
    if (reply.ok) waiting.resolve(reply);
    else waiting.reject(new MoEError(reply.error.code, reply.error.message));
  };

  const send = (id: number, post: () => void) =>
    new Promise<LayerReply & { ok: true }>((resolve, reject) => {
      if (broken) return reject(broken);
      pending.set(id, { resolve, reject });
      try {
        post();
      } catch (error) {
        pending.delete(id);
        reject(new MoEError("WORKER_ERROR", `could not send to the edge-moe worker (${(error as Error)?.message ?? error}); ` +
          "weights, x, noise and out must be typed arrays and wasm a WebAssembly.Module, a Response or bytes"));
      }
    });
  const request = (message: LayerRequest) => send(message.id, () => port.postMessage(message));

  let created: LayerReply & { ok: true };
  try {
    created = await send(0, () => worker.postMessage({ protocol: PROTOCOL, op: "create", config } satisfies CreateRequest, [channel.port2]));
  } catch (error) {
    detach();
    throw error;
  }

  let disposed = false;
  return {
    config: created.config!,
    async forward(x: Float32Array, options: ForwardOptions = {}): Promise<ForwardResult> {
      if (disposed) fail("DISPOSED", "this layer was disposed; create a new one with createMoEWorker");
      // The worker checks everything (out included, on its copies); the caller's out buffers are
      // filled here once the result is back, so a rejected call leaves them untouched.
      const { result } = await request({ id: nextId++, op: "forward", x, options });
      const out = options.out;
      if (out?.y) result!.y = (out.y.set(result!.y), out.y);
      if (out?.topkIndices) result!.topkIndices = (out.topkIndices.set(result!.topkIndices), out.topkIndices);
      if (out?.topkGates) result!.topkGates = (out.topkGates.set(result!.topkGates), out.topkGates);
      return result!;
    },
    async backward(dy: Float32Array, options: BackwardOptions = {}): Promise<Gradients> {
      if (disposed) fail("DISPOSED", "this layer was disposed; create a new one with createMoEWorker");
      return (await request({ id: nextId++, op: "backward", dy, options })).tensors as Gradients;
    },
    async step(options: StepOptions): Promise<void> {
      if (disposed) fail("DISPOSED", "this layer was disposed; create a new one with createMoEWorker");
      await request({ id: nextId++, op: "step", options });
    },
    async getWeights(): Promise<MoEWeights> {
      if (disposed) fail("DISPOSED", "this layer was disposed; create a new one with createMoEWorker");
      return (await request({ id: nextId++, op: "getWeights" })).tensors as MoEWeights;
    },
    dispose(): void {
      if (disposed) return;
      disposed = true;
      request({ id: nextId++, op: "dispose" }).then(detach, detach);
    },
  };
}
