// The worker pool of a threaded layer: T−1 workers, made once at creation, each instantiating the
// layer's kernel module on the layer's shared memory. A forward's gating GEMM (large batches) and
// its expert pass are one run each: the caller writes the run's parameters into a control block in that memory, bumps its generation
// counter (which wakes the workers) and runs thread 0's share itself; the kernels
// (assembly/experts.ts, poolThread) split the work and meet at barriers in shared memory. A run
// posts no message and allocates nothing.
//
// Workers: Node's worker_threads wherever the runtime has them (Node, Deno and Bun, told apart from
// browsers by process.versions.node, never by globalThis.Worker, which libraries replace), Web
// Workers from a blob: URL otherwise; both run the one source below, so no extra file has to be
// found next to the bundle. A pool never keeps the process alive (its workers are unref'd once they
// are ready), and a layer that is garbage-collected without dispose() ends its workers
// (FinalizationRegistry, see ThreadPool).
import { MoEError } from "../errors.ts";
import type { KernelExports } from "./wasm.ts";
import {
  CTL_CALLER_MAY_BLOCK,
  CTL_FAILED,
  CTL_GENERATION,
  CTL_JOB,
  CTL_RUN,
  CTL_SLOTS,
  CTL_THREADS,
  JOB_BACKWARD,
  JOB_EXIT,
  JOB_EXPERTS,
  JOB_GATING,
  JOB_STEP,
} from "../abi.ts";

/** What a worker is told at start. */
interface WorkerStart {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  ctl: number;
  thread: number;
}

// The worker's whole program. Plain JavaScript (it is not bundled): it instantiates the module on
// the shared memory, says "ready", then loops: wait for the generation to move, run its share.
// After a run, or a wake() (sent when a forward starts its gating), it spins up to SPIN_MS for the
// next run before it sleeps: the wake-up of a sleeping thread costs tens of µs to a millisecond.
const WORKER_SOURCE = `
"use strict";
// worker_threads (an eval'd CommonJS worker: require exists) or a Web Worker
const port = typeof require === "function" ? require("node:worker_threads").parentPort : null;
const web = port === null;
const post = (m) => (web ? self.postMessage(m) : port.postMessage(m));
const SPIN_MS = 2;
async function main({ module, memory, ctl, thread }) {
  let instance;
  try {
    instance = await WebAssembly.instantiate(module, { env: { memory } });
  } catch (error) {
    post({ error: String(error && error.message || error) });
    return;
  }
  const c = new Int32Array(memory.buffer, ctl, ${CTL_SLOTS});
  let seen = Atomics.load(c, ${CTL_GENERATION});
  post({ ready: true });
  for (;;) {
    let g = Atomics.load(c, ${CTL_GENERATION});
    const until = performance.now() + SPIN_MS;
    for (let i = 1; g === seen; i++) {
      g = Atomics.load(c, ${CTL_GENERATION});
      if ((i & 1023) === 0 && performance.now() > until) break;
    }
    if (g === seen) {
      Atomics.wait(c, ${CTL_GENERATION}, seen);
      continue;
    }
    seen = g;
    if (Atomics.load(c, ${CTL_JOB}) === ${JOB_EXIT}) break;
    try {
      instance.exports.poolThread(ctl, thread);
    } catch (error) {
      Atomics.store(c, ${CTL_FAILED}, 1);
      post({ error: String(error && error.message || error) });
    }
  }
  if (web) self.close(); else port.close();
}
if (web) self.onmessage = (e) => main(e.data);
else port.once("message", main);
`;

/** A browser page's main thread may not block on Atomics.wait (workers, Node, Deno and Bun may). */
const CALLER_MAY_BLOCK = typeof (globalThis as { document?: unknown }).document === "undefined" ? 1 : 0;

interface PoolWorker {
  post(message: WorkerStart): void;
  /** The one handler of the worker's messages and errors (replaced, not added to). */
  onMessage(handler: (message: { ready?: boolean; error?: string }) => void): void;
  /** Lets the process exit while the worker runs (no-op where the runtime cannot). */
  unref(): void;
  terminate(): void;
}

/** Whether this host can run a threaded build: shared memory, atomics and workers. */
export function threadsAvailable(): boolean {
  const g = globalThis as { SharedArrayBuffer?: unknown; crossOriginIsolated?: boolean; Worker?: unknown; process?: { versions?: { node?: string } } };
  if (typeof g.SharedArrayBuffer !== "function" || typeof Atomics !== "object") return false;
  if (g.crossOriginIsolated === false) return false; // a browser page without COOP/COEP
  return typeof g.Worker === "function" || Boolean(g.process?.versions?.node);
}

/**
 * The thread count for the `threads` option. "auto" is one per hardware thread where threads are
 * available and the package picks the build (no injected `wasm`, `wasmBuild` "auto" or a threaded
 * one); 1 otherwise.
 */
export async function resolveThreads(option: number | "auto", wasmBuild: unknown, injected: boolean): Promise<number> {
  if (option !== "auto") return option;
  const threadedBuild = wasmBuild === undefined || wasmBuild === "auto" || (typeof wasmBuild === "string" && wasmBuild.endsWith("-threads"));
  return !injected && threadedBuild && threadsAvailable() ? hardwareThreads() : 1;
}

/** The number of hardware threads. */
async function hardwareThreads(): Promise<number> {
  const g = globalThis as { navigator?: { hardwareConcurrency?: number } };
  const n = g.navigator?.hardwareConcurrency;
  if (typeof n === "number" && n >= 1) return n;
  try {
    const os = await import("node:os");
    return os.availableParallelism?.() ?? os.cpus().length;
  } catch {
    return 1;
  }
}

/** Node, Deno and Bun: they have worker_threads (with unref), whatever globalThis.Worker is. */
function hasWorkerThreads(): boolean {
  const g = globalThis as { process?: { versions?: { node?: unknown } } };
  return typeof g.process?.versions?.node === "string";
}

async function spawnWorker(): Promise<PoolWorker> {
  if (hasWorkerThreads()) {
    let NodeWorker: typeof import("node:worker_threads").Worker | undefined;
    try {
      // process.getBuiltinModule (Node 20.16+, Deno, Bun) also works in the bundles without node:
      // imports (dist/worker.js, dist/browser.js); import() is for older Node 20.
      const g = globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } };
      const builtin = g.process?.getBuiltinModule?.("node:worker_threads") as typeof import("node:worker_threads") | undefined;
      NodeWorker = (builtin ?? (await import("node:worker_threads"))).Worker;
    } catch {
      // a bundle without node: modules on an older runtime: the Web Worker below
    }
    if (NodeWorker) return nodeWorker(NodeWorker);
  }
  return webWorker();
}

function nodeWorker(NodeWorker: typeof import("node:worker_threads").Worker): PoolWorker {
  const worker = new NodeWorker(WORKER_SOURCE, { eval: true });
  let handler: (message: { ready?: boolean; error?: string }) => void = () => {};
  // One listener each, attached now: Node refs the worker again whenever a "message" listener is
  // added, so the unref() that follows start-up must come after every listener.
  worker.on("message", (m) => handler(m));
  worker.on("error", (e: Error) => handler({ error: e.message }));
  return {
    post: (m) => worker.postMessage(m),
    onMessage: (h) => void (handler = h),
    unref: () => worker.unref(),
    terminate: () => void worker.terminate(),
  };
}

function webWorker(): PoolWorker {
  const g = globalThis as { Worker?: typeof Worker };
  if (typeof g.Worker !== "function") throw new Error("this runtime has no Worker");
  const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
  const worker = new g.Worker(url, { type: "module" }) as Worker & { unref?: () => void };
  let handler: (message: { ready?: boolean; error?: string }) => void = () => {};
  worker.onmessage = (e: MessageEvent) => {
    if (e.data?.ready) URL.revokeObjectURL(url); // loaded: (Bun reads the URL after the constructor returns)
    handler(e.data);
  };
  worker.onerror = (e: ErrorEvent) => {
    e.preventDefault?.(); // Deno ends the program on an unhandled worker error
    handler({ error: e.message });
  };
  return {
    post: (m) => worker.postMessage(m),
    onMessage: (h) => void (handler = h),
    unref: () => worker.unref?.(),
    terminate: () => worker.terminate(),
  };
}

/**
 * What ending a pool needs, held apart from the pool: the registry below keeps it for a pool that
 * is collected without terminate(), and nothing in it (the workers' handlers included) leads back
 * to the pool, which could otherwise never be collected.
 */
interface Lifeline {
  workers: PoolWorker[];
  control: Int32Array;
  /** The last error a worker reported. */
  error: string | undefined;
}

function endWorkers(line: Lifeline): void {
  const c = line.control;
  c[CTL_JOB] = JOB_EXIT;
  Atomics.add(c, CTL_GENERATION, 1);
  Atomics.notify(c, CTL_GENERATION);
  for (const w of line.workers) w.terminate();
  line.workers = [];
}

/** Ends the workers of pools (and so of layers) collected without dispose(). */
const abandoned = typeof FinalizationRegistry === "function" ? new FinalizationRegistry<Lifeline>(endWorkers) : undefined;

export class ThreadPool {
  readonly threads: number;
  /** The control block (src/abi.ts CTL_* slots): the engine writes a run's parameters here. */
  readonly control: Int32Array;
  private readonly kernels: KernelExports;
  private readonly ctl: number;
  private readonly line: Lifeline;
  private readonly runs = { [JOB_EXPERTS]: 0, [JOB_GATING]: 0, [JOB_BACKWARD]: 0, [JOB_STEP]: 0 };

  private constructor(kernels: KernelExports, ctl: number, workers: PoolWorker[]) {
    this.kernels = kernels;
    this.ctl = ctl;
    this.threads = workers.length + 1;
    // A view made once: shared memory only grows, and the block lies below everything else.
    this.control = new Int32Array(kernels.memory.buffer, ctl, CTL_SLOTS);
    this.line = { workers, control: this.control, error: undefined };
  }

  /**
   * Starts `threads − 1` workers on `module` and the shared `kernels.memory`; `ctl` is the byte
   * offset of a zeroed, 64-byte-aligned block of CTL_SLOTS i32 in that memory. The workers end
   * at terminate(), or when the pool (or `owner`, when given: e.g. the layer that uses the pool) is
   * garbage-collected; they never keep the process alive.
   */
  static async start(module: WebAssembly.Module, kernels: KernelExports, ctl: number, threads: number, owner?: object): Promise<ThreadPool> {
    const workers: PoolWorker[] = [];
    try {
      const ready: Array<Promise<void>> = [];
      for (let t = 1; t < threads; t++) {
        const worker = await spawnWorker();
        workers.push(worker);
        ready.push(
          new Promise<void>((resolve, reject) => {
            worker.onMessage((m) => {
              if (m.ready) resolve();
              else if (m.error) reject(new Error(m.error));
            });
          }),
        );
        worker.post({ module, memory: kernels.memory, ctl, thread: t });
      }
      await Promise.all(ready);
    } catch (error) {
      for (const w of workers) w.terminate();
      throw new MoEError("WASM_LOAD", `could not start ${threads - 1} kernel worker(s) (${(error as Error)?.message ?? error}); use threads: 1`, {
        cause: error,
      });
    }
    const pool = new ThreadPool(kernels, ctl, workers);
    const line = pool.line;
    for (const w of workers) {
      w.onMessage((m) => {
        if (m.error) line.error = m.error;
      });
      w.unref(); // started: from now on they do not keep the process alive
    }
    abandoned?.register(pool, line, line);
    if (owner) abandoned?.register(owner, line, line);
    return pool;
  }

  /** Runs the expert pass whose parameters are in `control`: returns when every thread has finished its share. */
  runExperts(): void {
    this.run(JOB_EXPERTS);
  }

  /** Runs the gating GEMM whose parameters are in `control` (assembly/experts.ts gatingThread). */
  runGating(): void {
    this.run(JOB_GATING);
  }

  /**
   * Runs the training job whose parameters are in `control` (assembly/backward-threads.ts):
   * the backward pass (JOB_BACKWARD) or an optimizer step (JOB_STEP).
   */
  runTraining(job: typeof JOB_BACKWARD | typeof JOB_STEP): void {
    this.run(job);
  }

  private run(job: typeof JOB_EXPERTS | typeof JOB_GATING | typeof JOB_BACKWARD | typeof JOB_STEP): void {
    if (this.line.workers.length === 0 && this.threads > 1) throw new MoEError("DISPOSED", "the layer's workers were stopped");
    const c = this.control;
    c[CTL_JOB] = job;
    c[CTL_THREADS] = this.threads;
    c[CTL_CALLER_MAY_BLOCK] = CALLER_MAY_BLOCK;
    // each job's chunk counters (assembly/experts.ts) only grow, by its own runs: nothing to reset
    c[CTL_RUN] = this.runs[job]++;
    Atomics.add(c, CTL_GENERATION, 1);
    Atomics.notify(c, CTL_GENERATION);
    this.kernels.poolThread(this.ctl, 0);
    if (Atomics.load(c, CTL_FAILED) !== 0) {
      throw new MoEError("WASM_LOAD", `a kernel worker failed: ${this.line.error ?? "unknown error"}`);
    }
  }

  /**
   * Wakes sleeping workers without giving them work: they spin, ready for the run that follows
   * (the engine calls this when a forward starts, so the wake-up overlaps the gating).
   */
  wake(): void {
    Atomics.notify(this.control, CTL_GENERATION);
  }

  /** Ends the workers (they leave their loop at the next generation and close). */
  terminate(): void {
    abandoned?.unregister(this.line);
    if (this.line.workers.length > 0) endWorkers(this.line);
  }
}
