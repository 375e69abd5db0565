// Quantized expert weights against f32 on cold caches: one layer per dtype (relu, d 1024, h 1024,
// n 64, k 4, the same weights), B = 1, one thread, the SIMD build. Each sample flushes the caches
// (a 64 MiB buffer written, untimed), then times one forwardSync; dtypes take turns, call by call,
// so that drift of the host's speed hits them alike. Prints the median per dtype and its ratio to
// f32's median in the same run. Memory: about 1.3 GiB (the five layers' weights).
//   node --no-liftoff bench/quant.mjs [--calls=15] [--build=simd] [--dtypes=f32,f16,bf16,int8,int4]
//        [--d=1024] [--h=1024] [--n=64] [--warm (no flush, a sample is 10 calls in a row: with --d=512
//        --h=512 --n=4 the weights stay in L2/L3, which times the kernels' arithmetic, not the memory)]
// (--no-liftoff: every call runs optimized code; with lazy tier-up the first calls are Liftoff's.)
// W8A8 (activations "int8") against f32 and weight-only int8 at B = 1, 64, 512, warm caches, the
// two shapes relu d1024 h1024 n64 k4 and d512 h2048 n8 k2, builds simd and relaxed, 1 and 2 threads:
//   node --no-liftoff --experimental-wasm-relaxed-simd bench/quant.mjs --w8a8 [--calls=5]
//        [--batches=1,64,512] [--builds=simd,relaxed] [--threads=1,2] [--shapes=0,1]
// (the relaxed build needs --experimental-wasm-relaxed-simd on Node 20; 2 threads the -threads builds).
// Needs `npm run build` (dist/).
import { createMoE } from "../dist/index.js";
import { makeInput, makeWeights } from "./cases.mjs";

const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const [k, v] = a.replace(/^--/, "").split("=");
    return [k, v ?? true];
  }),
);
if (args.w8a8) {
  await benchW8A8();
  process.exit(0);
}
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
      dModel: shape.d,
      dHidden: shape.h,
      numExperts: shape.n,
      k: shape.k,
      expert: "relu",
      weights,
      dtype,
      wasmBuild: BUILD,
      threads: 1,
      backend: "cpu",
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
console.log(
  `relu d${shape.d} h${shape.h} n${shape.n} k${shape.k}, B = 1, build ${BUILD}, 1 thread, ${WARM ? "warm" : "cold"} caches, median of ${CALLS} calls`,
);
console.log("dtype  median ms  ratio to f32  fastest ms  weight MACs/ns  weight bytes/f32");
for (const { dtype, ms } of layers) {
  const m = median(ms);
  const fastest = Math.min(...ms);
  console.log(
    `${dtype.padEnd(6)} ${m.toFixed(3).padStart(9)}  ${(m / base).toFixed(3).padStart(12)}  ${fastest.toFixed(3).padStart(10)}  ${(macs / m / 1e6).toFixed(2).padStart(14)}  ${(bytesOf[dtype] / 4).toFixed(3).padStart(16)}`,
  );
}
for (const { layer } of layers) layer.dispose();

/**
 * Medians of forwardSync per (shape, build, threads, B) for f32, int8 and W8A8 layers on the same
 * weights, taking turns call by call; ratios to f32 in the same run.
 */
async function benchW8A8() {
  const calls = Number(args.calls ?? 5);
  const batches = String(args.batches ?? "1,64,512")
    .split(",")
    .map(Number);
  const builds = String(args.builds ?? "simd,relaxed").split(",");
  const threadCounts = String(args.threads ?? "1,2")
    .split(",")
    .map(Number);
  const allShapes = [
    { d: 1024, h: 1024, n: 64, k: 4 },
    { d: 512, h: 2048, n: 8, k: 2 },
  ];
  const shapes = String(args.shapes ?? "0,1")
    .split(",")
    .map((i) => allShapes[Number(i)]);
  const kinds = [
    { name: "f32", options: {} },
    { name: "int8", options: { dtype: "int8" } },
    { name: "w8a8", options: { dtype: "int8", activations: "int8" } },
  ];
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(`W8A8: median ms of ${calls} calls (warm caches); ratio = f32 ms / this ms (above 1: faster than f32)`);
  console.log("shape                   build    thr     B   f32 ms   int8 ms  w8a8 ms  int8×f32  w8a8×f32  w8a8×int8");
  for (const shape of shapes) {
    const weights = makeWeights(shape, "relu");
    for (const build of builds) {
      for (const threads of threadCounts) {
        const wasmBuild = threads > 1 ? `${build}-threads` : build;
        const layers = [];
        for (const { name, options } of kinds) {
          layers.push({
            name,
            layer: await createMoE({
              dModel: shape.d,
              dHidden: shape.h,
              numExperts: shape.n,
              k: shape.k,
              expert: "relu",
              weights,
              wasmBuild,
              threads,
              backend: "cpu",
              ...options,
            }),
          });
        }
        for (const b of batches) {
          const inputs = [0, 1].map((seed) => makeInput(b, shape.d, 2000 + seed));
          for (const { layer } of layers) for (const x of inputs) layer.forwardSync(x); // warm-up
          // B = 1 is too short to time alone: a sample is the mean of 20 calls in a row
          const repeats = b === 1 ? 20 : 1;
          const ms = layers.map(() => []);
          for (let call = 0; call < calls; call++) {
            const x = inputs[call % inputs.length];
            layers.forEach(({ layer }, i) => {
              const t0 = performance.now();
              for (let r = 0; r < repeats; r++) layer.forwardSync(x);
              ms[i].push((performance.now() - t0) / repeats);
            });
          }
          const [f32, int8, w8a8] = ms.map(median);
          const label = `relu d${shape.d} h${shape.h} n${shape.n} k${shape.k}`;
          console.log(
            `${label.padEnd(23)} ${build.padEnd(8)} ${String(threads).padStart(3)} ${String(b).padStart(5)} ${f32.toFixed(3).padStart(8)} ${int8.toFixed(3).padStart(9)} ${w8a8.toFixed(3).padStart(8)} ${(f32 / int8).toFixed(2).padStart(9)} ${(f32 / w8a8).toFixed(2).padStart(9)} ${(int8 / w8a8).toFixed(2).padStart(10)}`,
          );
        }
        for (const { layer } of layers) layer.dispose();
      }
    }
  }
}
