// createMoEWorker: a layer that lives in edge-moe/worker (src/worker.ts) and is used from the calling
// thread through the same interface as a local one. Protocol: src/worker-protocol.ts.
//
// Every call settles, with a typed MoEError, in bounded time whatever happens to the worker: a
// handshake with a timeout finds a worker that is not edge-moe's or never loads; the worker's
// "error" / "messageerror" / "exit" events, the layer port's "close" event and the worker's own
// terminate() (watched) find one that goes away; a per-call `signal` or `timeoutMs` bounds the rest.
import { fail, MoEError } from "./errors.ts";
import { isResponseLike } from "./cpu/wasm.ts";
import type { BackwardOptions, ForwardOptions, ForwardResult, Gradients, MoEConfig, MoELayer, MoEWeights, StepOptions } from "./types.ts";
import { PROTOCOL, type CreateRequest, type LayerReply, type LayerRequest } from "./worker-protocol.ts";

/**
 * What createMoEWorker needs of a worker: a Web Worker (browsers, Deno, Bun) or a Node
 * `worker_threads` Worker (events through `on` / `off`) running edge-moe/worker.
 */
export interface MoEWorkerLike {
  // `any`: the DOM's Transferable[] and Node's readonly TransferListItem[] accept each other in no
  // direction; both take the one MessagePort createMoEWorker transfers.
  // biome-ignore lint/suspicious/noExplicitAny: see above
  postMessage(message: unknown, transfer: any): void;
  addEventListener?(type: string, listener: (event: Event) => void): void;
  removeEventListener?(type: string, listener: (event: Event) => void): void;
  on?(type: string, listener: (...args: never[]) => void): unknown;
  off?(type: string, listener: (...args: never[]) => void): unknown;
  terminate?(): unknown;
}

/** Options of createMoEWorker. */
export interface MoEWorkerOptions {
  /**
   * Milliseconds the worker has to acknowledge the create request (its script loaded, edge-moe's
   * protocol understood). Default 10 000. Creating the layer after that is not timed: it is
   * bounded by the worker's liveness, `signal` and `callTimeoutMs`.
   */
  timeoutMs?: number;
  /** Default per-call time limit in milliseconds, creation included (default: none). */
  callTimeoutMs?: number;
  /** Aborts the creation: it rejects with WORKER_ERROR. */
  signal?: AbortSignal;
}

/** Per-call options of a worker layer, beside the call's own. */
export interface MoEWorkerCallOptions {
  /** Rejects the call with WORKER_ERROR when aborted (the worker may still finish it). */
  signal?: AbortSignal;
  /** Rejects the call with WORKER_ERROR after this many milliseconds (overrides `callTimeoutMs`). */
  timeoutMs?: number;
}

/** A layer hosted in a worker: MoELayer's calls, each with optional `signal` / `timeoutMs`. */
export interface MoEWorkerLayer extends MoELayer {
  forward(x: Float32Array, options?: ForwardOptions & MoEWorkerCallOptions): Promise<ForwardResult>;
  backward(dy: Float32Array, options?: BackwardOptions & MoEWorkerCallOptions): Promise<Gradients>;
  step(options: StepOptions & MoEWorkerCallOptions): Promise<void>;
  getWeights(options?: MoEWorkerCallOptions): Promise<MoEWeights>;
  /** Releases the layer in the worker (as dispose) and resolves once the worker confirmed it, or is gone. */
  disposeAsync(): Promise<void>;
}

const DEFAULT_HANDSHAKE_MS = 10_000;

type Timer = ReturnType<typeof setTimeout>;
/** A timer that never keeps the process alive by itself (Node, Deno, Bun). */
function timer(ms: number, fire: () => void): Timer | undefined {
  if (!Number.isFinite(ms)) return undefined;
  const t = setTimeout(fire, ms);
  (t as { unref?: () => void }).unref?.();
  const g = globalThis as { Deno?: { unrefTimer?: (id: number) => void } };
  if (typeof t === "number") g.Deno?.unrefTimer?.(t);
  return t;
}

function checkTimeout(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !(value > 0))
    fail("INVALID_CONFIG", `${name} must be a positive number of milliseconds (or Infinity), got ${String(value)}`);
  return value;
}

function checkSignal(value: unknown, name: string): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null || typeof (value as AbortSignal).addEventListener !== "function" || !("aborted" in value)) {
    fail("INVALID_CONFIG", `${name} must be an AbortSignal (e.g. AbortSignal.timeout(ms) or an AbortController's signal)`);
  }
  return value as AbortSignal;
}

// ---- the worker's events and its terminate() ------------------------------------------------------

/** Subscribes to a worker event, Web (addEventListener) or Node (on/off) style; returns the unsubscribe. */
function listen(target: MoEWorkerLike, type: string, listener: (event: unknown) => void): () => void {
  if (typeof target.addEventListener === "function") {
    target.addEventListener(type, listener as (event: Event) => void);
    return () => target.removeEventListener?.(type, listener as (event: Event) => void);
  }
  if (typeof target.on === "function") {
    target.on(type, listener as (...args: never[]) => void);
    return () => void target.off?.(type, listener as (...args: never[]) => void);
  }
  return () => {};
}

/**
 * Callbacks run just before a worker's terminate(): a Web Worker sends no event when terminated,
 * so the worker's own method is wrapped (once per worker; the wrapper calls the original).
 */
const terminateWatchers = new WeakMap<object, Set<() => void>>();
function onTerminate(worker: MoEWorkerLike, callback: () => void): () => void {
  let watchers = terminateWatchers.get(worker);
  if (!watchers) {
    const original = worker.terminate;
    if (typeof original !== "function") return () => {};
    const set = new Set<() => void>();
    watchers = set;
    terminateWatchers.set(worker, set);
    try {
      Object.defineProperty(worker, "terminate", {
        configurable: true,
        writable: true,
        value: function terminate(this: unknown, ...args: unknown[]) {
          for (const watcher of [...set]) watcher();
          return (original as (...a: unknown[]) => unknown).apply(this, args);
        },
      });
    } catch {
      // a frozen worker object: the other liveness signals remain
    }
  }
  const set = watchers;
  set.add(callback);
  return () => set.delete(callback);
}

/** A Node worker_threads Worker that has already exited (its threadId becomes −1). */
function exited(worker: MoEWorkerLike): boolean {
  return typeof worker.on === "function" && (worker as { threadId?: number }).threadId === -1;
}

// ---- createMoEWorker ----------------------------------------------------------------------------

/**
 * Creates a layer inside `worker` (running edge-moe/worker) and returns a handle with the same
 * `forward`, `backward`, `step`, `getWeights` and `dispose` as a local layer. Weights, x and noise
 * are copied to the worker; the results are transferred back (no copy). Errors arrive as MoEError
 * with the worker's code; a worker that does not answer the handshake within `timeoutMs`, fails,
 * exits or is terminated gives WORKER_ERROR to every call, pending or later. `dispose()` releases
 * the layer in the worker; the worker itself stays the caller's to terminate.
 */
export async function createMoEWorker(worker: MoEWorkerLike, config: MoEConfig, options: MoEWorkerOptions = {}): Promise<MoEWorkerLayer> {
  if (typeof worker?.postMessage !== "function" || (typeof worker.addEventListener !== "function" && typeof worker.on !== "function")) {
    fail("INVALID_CONFIG", 'createMoEWorker needs a Worker running edge-moe/worker: new Worker(url, { type: "module" }), or a node:worker_threads Worker');
  }
  if (typeof options !== "object" || options === null)
    fail("INVALID_CONFIG", "createMoEWorker's options must be an object ({ timeoutMs, callTimeoutMs, signal })");
  const handshakeMs = checkTimeout(options.timeoutMs, "timeoutMs") ?? DEFAULT_HANDSHAKE_MS;
  const callTimeoutMs = checkTimeout(options.callTimeoutMs, "callTimeoutMs");
  const createSignal = checkSignal(options.signal, "signal");
  if (exited(worker)) fail("WORKER_ERROR", "the worker has already exited; start a new one running edge-moe/worker");
  // A Response cannot cross to a worker; its bytes can (a WebAssembly.Module can, as it is).
  if (config?.wasm !== undefined) {
    const wasm = await config.wasm;
    config = { ...config, wasm: isResponseLike(wasm) ? await wasm.arrayBuffer() : wasm };
  }

  const channel = new MessageChannel();
  const port = channel.port1 as MessagePort & { ref?: () => void; unref?: () => void };
  interface Waiting {
    resolve(reply: LayerReply & { ok: true }): void;
    reject(error: MoEError): void;
    /** The handshake: called on the create request's first (accepted) reply. */
    accepted?: () => void;
  }
  const pending = new Map<number, Waiting>();
  let nextId = 1;
  let broken: MoEError | undefined;
  let detached = false;

  // Node: a port with a listener keeps the process alive. Only pending calls should (each is
  // bounded), not an idle layer.
  const holdProcess = () => (pending.size > 0 ? port.ref?.() : port.unref?.());

  const unsubscribe: Array<() => void> = [];
  let stopErrors = () => {};
  /**
   * Lets go of the channel and the worker's events. A failed worker keeps the "error" listener:
   * a second error event from it must not end a Deno program either.
   */
  const detach = (keepErrorListener = false) => {
    if (!keepErrorListener) stopErrors();
    if (detached) return;
    detached = true;
    for (const off of unsubscribe) off();
    port.onmessage = null;
    port.close();
  };
  const failAll = (error: MoEError) => {
    broken ??= error;
    const waiting = [...pending.values()];
    pending.clear();
    for (const w of waiting) w.reject(error);
    detach(true);
  };
  const gone = (why: string) => () =>
    failAll(new MoEError("WORKER_ERROR", `the edge-moe worker ${why}; start a new worker (and layer) running edge-moe/worker`));

  stopErrors = listen(worker, "error", (event) => {
    // Deno ends the whole program on a worker error nobody prevents: the rejected calls report it.
    (event as Event).preventDefault?.();
    const detail = (event as ErrorEvent)?.message ?? (event as Error)?.message;
    failAll(
      new MoEError(
        "WORKER_ERROR",
        `the edge-moe worker failed${detail ? `: ${detail}` : " (it did not load or it crashed)"}; ` +
          'check that it runs edge-moe/worker (a module worker: { type: "module" }) and can load the package\'s .wasm files',
      ),
    );
  });
  unsubscribe.push(
    listen(worker, "messageerror", () =>
      failAll(new MoEError("WORKER_ERROR", "a message could not be exchanged with the edge-moe worker (it could not be deserialized)")),
    ),
  );
  unsubscribe.push(listen(worker, "exit", gone("exited")));
  unsubscribe.push(onTerminate(worker, gone("was terminated")));
  // the other end of the layer's port went away (Node; browsers that have the event)
  port.addEventListener?.("close", gone("closed the layer's channel (it exited or was terminated)"));

  port.onmessage = (event: MessageEvent<LayerReply>) => {
    const reply = event.data;
    const waiting = pending.get(reply?.id);
    if (!waiting) return;
    if (reply.ok && reply.accepted) return void waiting.accepted?.();
    pending.delete(reply.id);
    holdProcess();
    if (reply.ok) waiting.resolve(reply);
    else waiting.reject(new MoEError(reply.error.code, reply.error.message));
  };

  /**
   * Sends one request and waits for its reply, bounded by `signal`, `timeoutMs`, and (for the
   * create request) the handshake.
   */
  const send = (id: number, what: string, post: () => void, limits: { signal?: AbortSignal; timeoutMs?: number; handshakeMs?: number }) =>
    new Promise<LayerReply & { ok: true }>((resolve, reject) => {
      if (broken) return reject(broken);
      const { signal } = limits;
      if (signal?.aborted) return reject(new MoEError("WORKER_ERROR", `${what} was aborted before it was sent`, { cause: signal.reason }));
      const timers: Array<Timer | undefined> = [];
      const onAbort = () => settle(new MoEError("WORKER_ERROR", `${what} was aborted (the worker may still finish it)`, { cause: signal!.reason }));
      const settle = (error: MoEError | undefined, reply?: LayerReply & { ok: true }) => {
        if (pending.get(id) === waiting) pending.delete(id);
        for (const t of timers) if (t !== undefined) clearTimeout(t);
        signal?.removeEventListener("abort", onAbort);
        holdProcess();
        if (error) reject(error);
        else resolve(reply!);
      };
      const waiting: Waiting = { resolve: (reply) => settle(undefined, reply), reject: (error) => settle(error) };
      pending.set(id, waiting);
      holdProcess();
      signal?.addEventListener("abort", onAbort, { once: true });
      if (limits.timeoutMs !== undefined) {
        timers.push(
          timer(limits.timeoutMs, () =>
            settle(new MoEError("WORKER_ERROR", `${what} took longer than ${limits.timeoutMs} ms (the worker may still finish it)`)),
          ),
        );
      }
      if (limits.handshakeMs !== undefined) {
        const t = timer(limits.handshakeMs, () => {
          settle(
            new MoEError(
              "WORKER_ERROR",
              `the worker did not answer within ${limits.handshakeMs} ms: it is not running edge-moe/worker, ` +
                'failed to load (start it with { type: "module" }), or is busy; pass a larger timeoutMs to createMoEWorker if it is only slow',
            ),
          );
          detach(true); // nothing edge-moe's at the other end: let go of the channel
        });
        timers.push(t);
        waiting.accepted = () => {
          if (t !== undefined) clearTimeout(t);
        };
      }
      try {
        post();
      } catch (error) {
        settle(
          new MoEError(
            "WORKER_ERROR",
            `could not send to the edge-moe worker (${(error as Error)?.message ?? error}); ` +
              "weights, x, noise and out must be typed arrays and wasm a WebAssembly.Module, a Response or bytes",
            { cause: error },
          ),
        );
      }
    });

  const call = (message: LayerRequest, callOptions: MoEWorkerCallOptions | undefined): Promise<LayerReply & { ok: true }> => {
    const signal = checkSignal(callOptions?.signal, "signal");
    const timeoutMs = checkTimeout(callOptions?.timeoutMs, "timeoutMs") ?? callTimeoutMs;
    return send(message.id, message.op, () => port.postMessage(message), { signal, timeoutMs });
  };
  /** The call's own options, without the ones that stay on this side (an AbortSignal cannot be cloned). */
  const own = <T extends object>(o: T & MoEWorkerCallOptions): T => {
    const { signal: _signal, timeoutMs: _timeoutMs, ...rest } = o;
    return rest as T;
  };

  let created: LayerReply & { ok: true };
  try {
    const request: CreateRequest = { protocol: PROTOCOL, op: "create", config, port: channel.port2 };
    created = await send(0, "createMoEWorker", () => worker.postMessage(request, [channel.port2]), {
      signal: createSignal,
      timeoutMs: callTimeoutMs,
      handshakeMs,
    });
  } catch (error) {
    detach(true);
    throw error;
  }

  let disposed = false;
  let released: Promise<void> | undefined;
  const live = () => {
    if (disposed) fail("DISPOSED", "this layer was disposed; create a new one with createMoEWorker");
  };
  const dispose = (): Promise<void> => {
    if (!released) {
      disposed = true;
      // bounded like the handshake: a worker that is gone or hung does not hold the channel open
      const id = nextId++;
      released = send(id, "dispose", () => port.postMessage({ id, op: "dispose" } satisfies LayerRequest), { timeoutMs: handshakeMs })
        .then(
          () => undefined,
          () => undefined,
        )
        .finally(() => detach());
    }
    return released;
  };
  const layer: MoEWorkerLayer = {
    config: created.config!,
    async forward(x: Float32Array, options: ForwardOptions & MoEWorkerCallOptions = {}): Promise<ForwardResult> {
      live();
      // The worker checks everything (out included, on its copies); the caller's out buffers are
      // filled here once the result is back, so a rejected call leaves them untouched.
      const { result } = await call({ id: nextId++, op: "forward", x, options: own(options ?? {}) }, options);
      const out = options?.out;
      if (out?.y) result!.y = (out.y.set(result!.y), out.y);
      if (out?.topkIndices) result!.topkIndices = (out.topkIndices.set(result!.topkIndices), out.topkIndices);
      if (out?.topkGates) result!.topkGates = (out.topkGates.set(result!.topkGates), out.topkGates);
      return result!;
    },
    async backward(dy: Float32Array, options: BackwardOptions & MoEWorkerCallOptions = {}): Promise<Gradients> {
      live();
      return (await call({ id: nextId++, op: "backward", dy, options: own(options ?? {}) }, options)).tensors as Gradients;
    },
    async step(options: StepOptions & MoEWorkerCallOptions): Promise<void> {
      live();
      await call({ id: nextId++, op: "step", options: own(options ?? ({} as StepOptions)) }, options);
    },
    async getWeights(options?: MoEWorkerCallOptions): Promise<MoEWeights> {
      live();
      return (await call({ id: nextId++, op: "getWeights" }, options)).tensors as MoEWeights;
    },
    dispose(): void {
      void dispose();
    },
    disposeAsync: dispose,
  };
  // `await using layer = await createMoEWorker(...)` (where the runtime has explicit resource management)
  const asyncDispose = (Symbol as { asyncDispose?: symbol }).asyncDispose;
  if (asyncDispose) Object.defineProperty(layer, asyncDispose, { value: dispose });
  holdProcess();
  return layer;
}
