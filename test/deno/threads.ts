// Run by test/threads_web.test.ts under Deno (and Bun): the thread pool's Web Worker path (a
// global Worker, as in browsers), where Node uses worker_threads. Layers with threads: 2 and 3
// against threads: 1 of the same threaded build and against the single-threaded build, bit for
// bit: forwards in both modes at several batch sizes (the gating GEMM is split across threads from
// a large batch on), and backward after a threaded forward. Prints one JSON report on its last line.
import { createMoE, type ForwardResult, type MoEConfig, type MoEWeights } from "../../dist/index.js";

// Counts the Web Workers the pool starts (the path under test must be this one).
let workersStarted = 0;
const WebWorker = globalThis.Worker;
globalThis.Worker = class extends WebWorker {
  constructor(url: string | URL, options?: WorkerOptions) {
    super(url, options);
    workersStarted++;
  }
} as typeof Worker;

/** xorshift32 → Box–Muller normals: the same weights in every runtime. */
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

const shapes: Array<{ expert: MoEConfig["expert"]; d: number; h: number; n: number; k: number; noisy: boolean }> = [
  { expert: "relu", d: 33, h: 65, n: 17, k: 3, noisy: true },
  { expert: "swiglu", d: 64, h: 48, n: 6, k: 2, noisy: true },
  { expert: "gelu", d: 130, h: 24, n: 64, k: 4, noisy: false },
];
const batches = [1, 3, 8, 64, 300];

const report = {
  runtime: "",
  hardwareConcurrency: navigator.hardwareConcurrency,
  workersStarted: 0,
  expectedWorkers: 0,
  checks: 0,
  mismatches: [] as string[],
  error: undefined as string | undefined,
};
const g = globalThis as { Deno?: { version: { deno: string } }; Bun?: { version: string } };
report.runtime = g.Deno ? `deno ${g.Deno.version.deno}` : g.Bun ? `bun ${g.Bun.version}` : "unknown";

try {
  for (const [s, shape] of shapes.entries()) {
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
    const pools = [
      await createMoE({ ...config, wasmBuild: "simd-threads", threads: 2 }),
      await createMoE({ ...config, wasmBuild: "simd-threads", threads: 3 }),
    ];
    report.expectedWorkers += 1 + 2;
    try {
      for (const batch of batches) {
        const x = normals(1000 * s + batch, batch * d, 1);
        for (const train of [false, true]) {
          const options = { train, seed: batch };
          const want = one.forwardSync(x, options);
          if (!sameResult(single.forwardSync(x, options), want))
            report.mismatches.push(`${expert} B=${batch} train=${train}: simd vs simd-threads with 1 thread`);
          for (const [p, pool] of pools.entries()) {
            report.checks++;
            if (!sameResult(await pool.forward(x, options), want)) report.mismatches.push(`${expert} B=${batch} train=${train}: ${p + 2} threads vs 1`);
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
          if (!sameBits(got[key as keyof typeof got], grad)) report.mismatches.push(`${expert}: gradient ${key}, ${p + 2} threads vs 1`);
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
report.workersStarted = workersStarted;
console.log(JSON.stringify(report));
// dispose() ends the workers; exit in case a runtime keeps its event loop alive a little longer
(globalThis as { Deno?: { exit(code: number): never } }).Deno?.exit(0);
