// Diagnostic (odd row counts): gemmPanels' rate per row count m on warm packed weights,
// K = 1024, several wasm files interleaved per sample (this VM drifts ±30%), best of the samples.
//   node --no-liftoff [--experimental-wasm-relaxed-simd] bench/diagnostics/gemm-rows.mjs a.wasm b.wasm ...
//        [--m=1,2,3,4,5,6,7,8,9,11,12] [--n=1024] [--samples=7] [--ms=25]
// --n: output columns (weights K × n: 1024 → 4 MiB, L3-resident; 64 → 256 KiB, L2-resident).
// --ldcpad: floats added to C's row stride (8·⌈n/8⌉ by default).
// Also checks that every file gives the same output bits as the first.
import { readFileSync } from "node:fs";

const args = Object.fromEntries(
  process.argv
    .slice(2)
    .filter((a) => a.startsWith("--"))
    .map((a) => {
      const [k, v] = a.replace(/^--/, "").split("=");
      return [k, v ?? true];
    }),
);
const files = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const MS = String(args.m ?? "1,2,3,4,5,6,7,8,9,11,12")
  .split(",")
  .map(Number);
const K = Number(args.k ?? 1024),
  N = Number(args.n ?? 1024),
  LDC_PAD = Number(args.ldcpad ?? 0),
  SAMPLES = Number(args.samples ?? 7),
  TARGET_MS = Number(args.ms ?? 25);
const MAXM = Math.max(...MS);
const panels = Math.ceil(N / 8),
  NP = panels * 8,
  LDC = NP + LDC_PAD;

const inst = files.map((file) => {
  const k = new WebAssembly.Instance(new WebAssembly.Module(readFileSync(file)), {}).exports;
  let at = (k.heapBase() + 4095) & ~4095;
  const alloc = (bytes) => {
    const p = at;
    at += (bytes + 4095) & ~4095;
    return p;
  };
  const src = alloc(K * N * 4),
    bp = alloc(panels * K * 32),
    a = alloc(MAXM * K * 4),
    c = alloc(MAXM * LDC * 4),
    bias = alloc(NP * 4);
  k.memory.grow(Math.max(0, Math.ceil((at - k.memory.buffer.byteLength) / 65536)));
  const f32 = new Float32Array(k.memory.buffer);
  let s = 12345;
  const rnd = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
  for (let i = 0; i < K * N; i++) f32[(src >> 2) + i] = rnd() * 0.06;
  for (let i = 0; i < MAXM * K; i++) f32[(a >> 2) + i] = rnd();
  for (let i = 0; i < NP; i++) f32[(bias >> 2) + i] = rnd();
  k.packPanelsB(src, K, N, N, bp, K, 1);
  return { file, k, run: (m) => k.gemmPanels(a, K, m, K, bp, panels, K, c, LDC, bias), out: (m) => new Uint32Array(k.memory.buffer, c, m * LDC).slice() };
});

console.log(
  `gemmPanels K = ${K}, n = ${N} (${((K * NP * 4) / 2 ** 20).toFixed(2)} MiB of panels), ${SAMPLES} samples, best GFLOP/s (median), ${args.wall ? "wall" : "CPU"} time`,
);
console.log(`| m | ${files.map((f) => f.split("/").pop()).join(" | ")} |`);
console.log(`|---:|${files.map(() => "---:").join("|")}|`);
// every sample runs every (m, file) once, so the VM's drift falls on all of them alike
const med = (xs) => [...xs].sort((p, q) => p - q)[xs.length >> 1];
const plan = MS.map((m) => {
  const flop = 2 * m * K * NP;
  // reps per sample: about TARGET_MS of work at ~25 GFLOP/s
  const reps = Math.max(1, Math.round((TARGET_MS * 1e-3 * 25e9) / flop));
  for (const x of inst) x.run(m);
  const ref = inst[0].out(m);
  for (const x of inst.slice(1)) {
    const o = x.out(m);
    for (let i = 0; i < o.length; i++)
      if (o[i] !== ref[i]) {
        console.log(`BITS DIFFER: ${x.file} m=${m} at ${i}`);
        break;
      }
  }
  return { m, flop, reps, rates: inst.map(() => []) };
});
for (let s = 0; s < SAMPLES; s++) {
  for (const { m, flop, reps, rates } of plan) {
    inst.forEach((x, j) => {
      // CPU time of this thread (process.cpuUsage): on this shared VM, time sliced away to other
      // processes is not counted (wall time is, with --wall)
      const u0 = process.cpuUsage(),
        t0 = performance.now();
      for (let r = 0; r < reps; r++) x.run(m);
      const u = process.cpuUsage(u0);
      const ms = args.wall ? performance.now() - t0 : (u.user + u.system) / 1e3;
      rates[j].push((flop * reps) / (ms * 1e6));
    });
  }
}
for (const { m, rates } of plan) console.log(`| ${m} | ${rates.map((r) => `${Math.max(...r).toFixed(1)} (${med(r).toFixed(1)})`).join(" | ")} |`);
