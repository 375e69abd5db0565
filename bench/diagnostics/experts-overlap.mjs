// Diagnostic: the real expert pass (expertsForward of dist/edge-moe.<build>.wasm, relu,
// d = h = 1024, 64 experts: 512 MiB of packed weights) with m rows routed to every expert, on cold
// weights, against T_mem (reading 512 MiB: the better of bench/assembly/machine.ts's one-stream and
// four-stream reads, as the bench's roofline) and T_L3 (the same pass with every expert's call on
// expert 0's 8 MiB, L3-resident: the arithmetic with the least memory cost), interleaved per sample.
//   node --no-liftoff --experimental-wasm-relaxed-simd bench/diagnostics/experts-overlap.mjs [--build=simd] [--m=1,2,4,5,8] [--samples=5]
//        [--d=1024 --h=1024 --n=64 --assign=256 (multinomial: B·k)]
// Needs `npm run build` (dist/) and the machine probes (build/bench/machine-<build>.wasm, bench/run.mjs builds them).
import { readFileSync } from "node:fs";
import { join } from "node:path";

const root = new URL("../../", import.meta.url).pathname;
const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const [k, v] = a.replace(/^--/, "").split("=");
    return [k, v ?? true];
  }),
);
const SAMPLES = Number(args.samples ?? 5);
// m: rows per expert, every expert the same; "multinomial": B = 64, k = 4 routed uniformly at random
// (seeded), the balanced benchmark case (rows per expert ~ Binomial(256, 1/64))
const MS = String(args.m ?? "1,2,3,4,5,6,7,8,12,multinomial")
  .split(",")
  .map((m) => (m === "multinomial" ? m : Number(m)));
function multinomialRows(assignments, experts, seed) {
  const rows = new Array(experts).fill(0);
  let s = seed >>> 0;
  for (let i = 0; i < assignments; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    rows[Math.floor((s / 2 ** 32) * experts)]++;
  }
  return rows;
}
const builds = String(args.build ?? "simd,relaxed").split(",");
const D = Number(args.d ?? 1024),
  H = Number(args.h ?? 1024),
  N = Number(args.n ?? 64); // --d, --h, --n: another shape
const ASSIGN = Number(args.assign ?? 256); // multinomial: B·k rows over the N experts
const median = (xs) => [...xs].sort((x, y) => x - y)[xs.length >> 1];

for (const build of builds) {
  const k = new WebAssembly.Instance(
    new WebAssembly.Module(readFileSync(args.wasm ? String(args.wasm).replace("BUILD", build) : join(root, `dist/edge-moe.${build}.wasm`))),
    {},
  ).exports;
  const probe = new WebAssembly.Instance(new WebAssembly.Module(readFileSync(join(root, `build/bench/machine-${build}.wasm`))), {}).exports;
  const COLD = N * 2 * D * H * 4,
    FLUSH = 64 * 2 ** 20;
  const pBase = (probe.heapBase() + 4095) & ~4095;
  probe.memory.grow(Math.ceil((pBase + COLD + FLUSH + 65536 - probe.memory.buffer.byteLength) / 65536));
  probe.fillBytes(pBase, COLD + FLUSH + 16384);
  const cold = pBase,
    flush = pBase + COLD + 16384;

  const maxRows = N * Math.max(...MS.map((m) => (typeof m === "number" ? m : 16)));
  let at = (k.heapBase() + 4095) & ~4095;
  const alloc = (bytes) => {
    const p = at;
    at += (bytes + 4095) & ~4095;
    return p;
  };
  const w1 = alloc(N * D * H * 4),
    w2 = alloc(N * H * D * 4),
    b1 = alloc(N * H * 4),
    b2 = alloc(N * D * 4);
  const offsets = alloc((N + 1) * 4),
    gathered = alloc(maxRows * D * 4),
    pre = alloc(maxRows * H * 4),
    act = alloc(maxRows * H * 4),
    out = alloc(maxRows * D * 4);
  k.memory.grow(Math.ceil((at - k.memory.buffer.byteLength) / 65536));
  const f32 = new Float32Array(k.memory.buffer);
  // small values, so nothing overflows or goes subnormal in a way that changes the timing
  for (let i = w1 >> 2; i < (w2 >> 2) + N * H * D; i += 1) f32[i] = ((i * 2654435761) % 1000) * 1e-6 - 5e-4;
  for (let i = gathered >> 2; i < (gathered >> 2) + maxRows * D; i++) f32[i] = ((i * 40503) % 1000) * 1e-3 - 0.5;
  const i32 = new Int32Array(k.memory.buffer);
  // rows[e] rows for expert e (cold pass), or every call on expert 0's weights (L3 pass)
  const setRows = (rows) => {
    let at = 0;
    for (let e = 0; e <= N; e++) {
      i32[(offsets >> 2) + e] = at;
      at += rows[e] ?? 0;
    }
  };
  const pass = () => k.expertsForward(0, D, H, 0, N, w1, b1, w2, b2, offsets, gathered, pre, act, out);
  const passL3 = (rows) => {
    for (let r = 0; r < N; r++) {
      i32[offsets >> 2] = 0;
      i32[(offsets >> 2) + 1] = rows[r];
      k.expertsForward(0, D, H, 0, 1, w1, b1, w2, b2, offsets, gathered, pre, act, out);
    }
  };
  console.log(`\n=== ${build}: expertsForward relu d = ${D}, h = ${H}, ${N} experts × m rows, ${SAMPLES} samples, best (median) ms ===`);
  console.log("| m | GFLOP | T_mem | T_L3 | measured | max | sum | meas/max | overlap | GFLOP/s L3 |");
  console.log("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const m of MS) {
    const rows = typeof m === "number" ? new Array(N).fill(m) : multinomialRows(ASSIGN, N, 12345);
    const ts = [];
    for (let s = 0; s <= SAMPLES; s++) {
      probe.readBytes(flush, FLUSH);
      let t0 = performance.now();
      probe.readBytes(cold, COLD); // 512 MiB, as the weights
      const tMem1 = performance.now() - t0;
      probe.readBytes(flush, FLUSH);
      t0 = performance.now();
      probe.readStreams(cold, COLD);
      const tMem = Math.min(tMem1, performance.now() - t0);
      setRows(rows);
      probe.readBytes(flush, FLUSH);
      t0 = performance.now();
      pass();
      const measured = performance.now() - t0;
      t0 = performance.now();
      passL3(rows);
      const tL3 = performance.now() - t0;
      if (s > 0) ts.push([tMem, tL3, measured]); // sample 0 warms up
    }
    const gflop = (4 * rows.reduce((x, y) => x + y, 0) * D * H) / 1e9;
    if (typeof m !== "number") console.log(`(multinomial rows per expert, sorted: ${[...rows].sort((x, y) => x - y).join(" ")})`);
    const row = (pick) => {
      const [a, b, c] = [0, 1, 2].map((i) => pick(ts.map((t) => t[i])));
      return { tMem: a, tL3: b, measured: c, mx: Math.max(a, b), sum: a + b };
    };
    const b = row((xs) => Math.min(...xs)),
      md = row(median);
    const f1 = (x) => x.toFixed(1);
    console.log(
      `| ${m} | ${gflop.toFixed(2)} | ${f1(b.tMem)} (${f1(md.tMem)}) | ${f1(b.tL3)} (${f1(md.tL3)}) | ${f1(b.measured)} (${f1(md.measured)}) | ${f1(b.mx)} | ${f1(b.sum)} | ${(b.measured / b.mx).toFixed(2)} (${(md.measured / md.mx).toFixed(2)}) | ${((100 * (b.sum - b.measured)) / Math.min(b.tMem, b.tL3)).toFixed(0)}% | ${((gflop / b.tL3) * 1e3).toFixed(1)} |`,
    );
  }
}
