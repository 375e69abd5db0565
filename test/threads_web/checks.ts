// The thread pool's checks, shared by a Chromium page, a module Web Worker in that page
// (test/threads_web.test.ts) and Deno and Bun (test/deno/threads.ts): layers with threads: 2 and 3
// against threads: 1 of the same threaded build and against the single-threaded build, bit for
// bit: forwards in eval and training mode at several batch sizes (from the large ones on, the
// gating GEMM is split across the threads), backward after a threaded forward, and an Adam step.
// The Web Workers constructed meanwhile are counted, so that the caller can tell which path the
// pool took. No runtime import of the package: each host passes its own createMoE.
import type { createMoE as CreateMoE, ForwardResult, MoEConfig, MoEWeights } from "edge-moe";

export interface ThreadReport {
  /** Where the checks ran (runtime and version, or "chromium page" / "chromium worker"). */
  host: string;
  crossOriginIsolated: boolean | undefined;
  hardwareConcurrency: number | undefined;
  /** Whether Atomics.wait may block this thread (not on a browser page's main thread). */
  mayBlock: boolean;
  /** Web Workers (globalThis.Worker) constructed while the checks ran. */
  webWorkersStarted: number;
  /** How those workers were made: "<URL scheme> <type>" (e.g. "blob: module"), each kind once. */
  webWorkerKinds: string[];
  /** Workers the pools need: threads − 1 for each threaded layer. */
  expectedWorkers: number;
  checks: number;
  /** Forward checks whose batch is large enough for the gating GEMM to be split across threads. */
  splitGatingChecks: number;
  mismatches: string[];
  error?: string;
}

/**
 * Wraps globalThis.Worker (where there is one) to count the workers constructed from now on;
 * returns the counter. Call it once, before the layers are made.
 */
export function countWebWorkers(): WorkerCounter {
  const counter = { started: 0, kinds: new Set<string>() };
  const WebWorker = (globalThis as { Worker?: typeof Worker }).Worker;
  if (typeof WebWorker === "function") {
    globalThis.Worker = class extends WebWorker {
      constructor(url: string | URL, options?: WorkerOptions) {
        super(url, options);
        counter.started++;
        counter.kinds.add(`${new URL(url, "http://base.invalid/").protocol} ${options?.type ?? "classic"}`);
      }
    } as typeof Worker;
  }
  return counter;
}

export interface WorkerCounter {
  started: number;
  kinds: Set<string>;
}

/** Whether Atomics.wait may block here: a browser page's main thread throws instead. */
function mayBlock(): boolean {
  try {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0); // value differs: returns at once
    return true;
  } catch {
    return false;
  }
}

/** xorshift32 → Box–Muller normals: the same weights in every host. */
function normals(seed: number, length: number, std: number): Float32Array {
  let s = seed >>> 0 || 1;
  const uniform = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = std * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return out;
}

function sameBits(a: Float32Array | Int32Array | undefined, b: Float32Array | Int32Array | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.length !== b.length) return false;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return ua.every((v, i) => v === ub[i]);
}

function sameResult(a: ForwardResult, b: ForwardResult): boolean {
  return (
    (["y", "topkIndices", "topkGates", "importance", "load"] as const).every((key) => sameBits(a[key], b[key])) &&
    Object.is(a.lossImportance, b.lossImportance) &&
    Object.is(a.lossLoad, b.lossLoad)
  );
}

const BATCHES = [1, 3, 8, 64, 300];
const SHAPES: Array<{ expert: MoEConfig["expert"]; d: number; h: number; n: number; k: number; noisy: boolean; batches: number[] }> = [
  { expert: "relu", d: 33, h: 65, n: 17, k: 3, noisy: true, batches: BATCHES },
  { expert: "swiglu", d: 64, h: 48, n: 6, k: 2, noisy: true, batches: BATCHES },
  { expert: "gelu", d: 130, h: 24, n: 64, k: 4, noisy: false, batches: BATCHES },
  // chunks of milliseconds (a 4096-row gating GEMM of d = 1024 in 2 chunks per thread): the caller
  // outlasts its spin waiting for the workers, where a page's main thread must not sleep
  { expert: "relu", d: 1024, h: 8, n: 64, k: 1, noisy: false, batches: [4096] },
];
/** Thread counts of the pools compared with threads: 1. */
export const POOL_THREADS = [2, 3];
/** Workers the checks' pools start: threads − 1 per pool, per shape. */
export const EXPECTED_WORKERS = SHAPES.length * POOL_THREADS.reduce((sum, t) => sum + t - 1, 0);

// The engine splits the gating GEMM across threads from batch·d·(columns rounded up to the 8-wide
// panel) ≥ 2^17 multiply-adds (src/cpu/engine.ts); eval mode has the fewest columns, so a batch
// that passes this bound is split in both modes.
const splitsGating = (batch: number, d: number, n: number) => batch * d * Math.ceil(n / 8) * 8 >= 2 ** 17;

/** Runs every check with `createMoE`; never throws (an exception ends up in `error`). */
export async function runThreadChecks(createMoE: typeof CreateMoE, host: string, webWorkers: WorkerCounter): Promise<ThreadReport> {
  const g = globalThis as { crossOriginIsolated?: boolean; navigator?: { hardwareConcurrency?: number } };
  const report: ThreadReport = {
    host,
    crossOriginIsolated: g.crossOriginIsolated,
    hardwareConcurrency: g.navigator?.hardwareConcurrency,
    mayBlock: mayBlock(),
    webWorkersStarted: 0,
    webWorkerKinds: [],
    expectedWorkers: 0,
    checks: 0,
    splitGatingChecks: 0,
    mismatches: [],
  };
  const before = webWorkers.started;
  webWorkers.kinds.clear();
  try {
    for (const [s, shape] of SHAPES.entries()) {
      const { d, h, n, expert } = shape;
      const weights: MoEWeights = { wGate: normals(10 * s + 1, d * n, Math.sqrt(1 / d)) };
      if (shape.noisy) weights.wNoise = normals(10 * s + 2, d * n, Math.sqrt(0.25 / d));
      if (expert === "swiglu") {
        weights.wGateProj = normals(10 * s + 3, n * d * h, Math.sqrt(1 / d));
        weights.wUp = normals(10 * s + 4, n * d * h, Math.sqrt(1 / d));
        weights.wDown = normals(10 * s + 5, n * h * d, Math.sqrt(1 / h));
      } else {
        weights.w1 = normals(10 * s + 3, n * d * h, Math.sqrt(1 / d));
        weights.b1 = normals(10 * s + 4, n * h, 0.1);
        weights.w2 = normals(10 * s + 5, n * h * d, Math.sqrt(1 / h));
        weights.b2 = normals(10 * s + 6, n * d, 0.1);
      }
      const config: MoEConfig = { dModel: d, dHidden: h, numExperts: n, k: shape.k, expert, noisyGating: shape.noisy, weights, backend: "cpu" };
      const single = await createMoE({ ...config, wasmBuild: "simd" });
      const one = await createMoE({ ...config, wasmBuild: "simd-threads", threads: 1 });
      const pools: Awaited<ReturnType<typeof CreateMoE>>[] = [];
      try {
        for (const threads of POOL_THREADS) {
          pools.push(await createMoE({ ...config, wasmBuild: "simd-threads", threads }));
          report.expectedWorkers += threads - 1;
        }
        for (const batch of shape.batches) {
          const x = normals(1000 * s + batch, batch * d, 1);
          for (const train of [false, true]) {
            const options = { train, seed: batch };
            const want = one.forwardSync(x, options);
            report.checks++;
            if (!sameResult(single.forwardSync(x, options), want))
              report.mismatches.push(`${expert} B=${batch} train=${train}: simd vs simd-threads with 1 thread`);
            for (const [p, pool] of pools.entries()) {
              report.checks++;
              if (splitsGating(batch, d, n)) report.splitGatingChecks++;
              if (!sameResult(await pool.forward(x, options), want))
                report.mismatches.push(`${expert} B=${batch} train=${train}: ${POOL_THREADS[p]} threads vs 1`);
            }
          }
        }
        // backward after a threaded forward
        const x = normals(77 + s, 37 * d, 1);
        const dy = normals(78 + s, 37 * d, 1);
        await one.forward(x, { train: true, seed: 5 });
        const want = await one.backward(dy);
        for (const [p, pool] of pools.entries()) {
          await pool.forward(x, { train: true, seed: 5 });
          const got = await pool.backward(dy);
          for (const [key, grad] of Object.entries(want)) {
            report.checks++;
            if (!sameBits(got[key as keyof typeof got], grad)) report.mismatches.push(`${expert}: gradient ${key}, ${POOL_THREADS[p]} threads vs 1`);
          }
        }
        // an Adam step after that backward (large enough to run on the pool too), then the weights
        await one.step({ lr: 1e-3, optimizer: "adam" });
        const stepped = await one.getWeights();
        for (const [p, pool] of pools.entries()) {
          await pool.step({ lr: 1e-3, optimizer: "adam" });
          const got = await pool.getWeights();
          for (const [key, weight] of Object.entries(stepped)) {
            report.checks++;
            if (!sameBits(got[key as keyof MoEWeights], weight))
              report.mismatches.push(`${expert}: weights ${key} after a step, ${POOL_THREADS[p]} threads vs 1`);
          }
        }
      } finally {
        single.dispose();
        one.dispose();
        for (const pool of pools) pool.dispose();
      }
    }
  } catch (error) {
    report.error = `${(error as Error)?.stack ?? error}`;
  }
  report.webWorkersStarted = webWorkers.started - before;
  report.webWorkerKinds = [...webWorkers.kinds];
  return report;
}
