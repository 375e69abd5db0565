// Quantized expert weights against f32 on cold caches: one layer per dtype (relu, d 1024, h 1024,
// n 64, k 4, the same weights), B = 1, one thread, the SIMD build. Each sample flushes the caches
// (a 64 MiB buffer written, untimed), then times one forwardSync; dtypes take turns, call by call,
// so that drift of the host's speed hits them alike. Prints the median per dtype and its ratio to
// f32's median in the same run. Memory: about 1.3 GiB (the five layers' weights).
//   node --no-liftoff bench/quant.mjs [--calls=15] [--build=simd] [--dtypes=f32,f16,bf16,int8,int4]
//        [--d=1024] [--h=1024] [--n=64] [--warm (no flush, a sample is 10 calls in a row: with --d=512
//        --h=512 --n=4 the weights stay in L2/L3, which times the kernels' arithmetic, not the memory)]
// (--no-liftoff: every call runs optimized code; with lazy tier-up the first calls are Liftoff's.)
// Needs `npm run build` (dist/).
import { createMoE } from "../dist/index.js";
import { makeInput, makeWeights } from "./cases.mjs";

const args = Object.fromEntries(process.argv.slice(2).map((a) => {
  const [k, v] = a.replace(/^--/, "").split("=");
  return [k, v ?? true];
}));
const CALLS = Number(args.calls ?? 15);
const BUILD = String(args.build ?? "simd");
const DTYPES = String(args.dtypes ?? "f32,f16,bf16,int8,int4").split(",");
if (!DTYPES.includes("f32")) DTYPES.unshift("f32");

const shape = { d: Number(args.d ?? 1024), h: Number(args.h ?? 1024), n: Number(args.n ?? 64), k: 4 };
const WARM = args.warm === true;
const FLUSH_BYTES = 64 * 2 ** 20;
const flushBuffer = new Uint8Array(FLUSH_BYTES);
let flushes = 0;
/** Writes every byte of a 64 MiB buffer: what the caches held before is gone. */
const flush = () => flushBuffer.fill(++flushes & 255);

const layers = [];
{
  const weights = makeWeights(shape, "relu");
  for (const dtype of DTYPES) {
    const layer = await createMoE({
      dModel: shape.d, dHidden: shape.h, numExperts: shape.n, k: shape.k, expert: "relu",
      weights, dtype, wasmBuild: BUILD, threads: 1, backend: "cpu",
    });
    layers.push({ dtype, layer, ms: [] });
  }
}
// a few inputs, taken in turn: their experts differ, as in a stream of tokens
const inputs = [0, 1, 2, 3].map((seed) => makeInput(1, shape.d, 1000 + seed));

// warm-up: compile tiers, arenas
for (const entry of layers) for (const x of inputs) entry.layer.forwardSync(x);

for (let call = 0; call < CALLS; call++) {
  const x = inputs[call % inputs.length];
  for (const entry of layers) {
    if (!WARM) flush();
    // warm: a sample is the mean of 10 calls in a row (one call is too short to time alone)
    const repeats = WARM ? 10 : 1;
    const t0 = performance.now();
    for (let r = 0; r < repeats; r++) entry.layer.forwardSync(x);
    entry.ms.push((performance.now() - t0) / repeats);
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = median(layers[0].ms);
const bytesOf = { f32: 4, f16: 2, bf16: 2, int8: 1 + 4 / 1024, int4: 0.5 + 4 / 32 };
const macs = shape.k * 2 * shape.d * shape.h;
console.log(`relu d${shape.d} h${shape.h} n${shape.n} k${shape.k}, B = 1, build ${BUILD}, 1 thread, ${WARM ? "warm" : "cold"} caches, median of ${CALLS} calls`);
console.log("dtype  median ms  ratio to f32  fastest ms  weight MACs/ns  weight bytes/f32");
for (const { dtype, ms } of layers) {
  const m = median(ms);
  const fastest = Math.min(...ms);
  console.log(`${dtype.padEnd(6)} ${m.toFixed(3).padStart(9)}  ${(m / base).toFixed(3).padStart(12)}  ${fastest.toFixed(3).padStart(10)}  ${(macs / m / 1e6).toFixed(2).padStart(14)}  ${(bytesOf[dtype] / 4).toFixed(3).padStart(16)}`);
}
for (const { layer } of layers) layer.dispose();
