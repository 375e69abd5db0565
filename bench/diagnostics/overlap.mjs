// Diagnostic (balanced batches): can ONE wasm thread overlap a cold DRAM stream with SIMD
// arithmetic (time ≈ max(T_mem, T_comp)), or is it ≈ T_mem + T_comp?
//   node --no-liftoff --experimental-wasm-relaxed-simd bench/diagnostics/overlap.mjs [--samples=7]
//        [--f=0,1,2,4,8,16] [--only=s4,d,tile] [--build=simd|relaxed] [--burst] [--k=1024] [--json=prefix]
//   ... bench/diagnostics/overlap.mjs --hot-tiles=21     only the tiles' arithmetic rate on L2-resident panels
// (--no-liftoff: every sample runs optimized code; with lazy tier-up the first calls are Liftoff's.)
//
// Generates the probe's AssemblyScript into build/bench/overlap.ts (every variant from the
// templates here: F, the madds per loaded vector, must be a constant of each loop), builds it with
// bench/run.mjs's probe options (--runtime stub --noAssert --use abort= -O3, simd and
// simd,relaxed-simd), and times each variant on a cold 256 MiB buffer (a 64 MiB buffer is read
// before every sample: the L3 is 32 MiB) and on a 16 KiB L1-resident buffer read as many times
// (same bytes, same work). T_mem is the same loop with F = 0 on the cold buffer, measured in the
// same rounds (interleaved: this VM's bandwidth drifts ±30%); T_comp the loop on the hot buffer.
// Table: best of the samples, the median in brackets; overlap = (sum − measured) / min(T_mem,
// T_comp): 100% is time = max, 0% is time = sum.
//
// Stream variants, per 16 bytes loaded: F f32x4 mul+add (relaxed build: relaxed_madd) on 8
// rotating accumulators, the loaded vector times one of four constants (a weight vector times
// four broadcast activations, as in the GEMM's 4 × 8 tile); F = 0 only sums the loads. Past F = 4
// the products repeat and V8 computes each distinct product once (simd build: F adds and 4 muls
// per vector), so F = 4 is the tile's exact mix (2 flops per byte) and larger F adds arithmetic
// time rather than distinct flops ("flop/B" is nominal there).
//   sU    one stream, U = 1, 2, 4 vectors per iteration (unrolled ×U)
//   d     two streams (the buffer's halves), 2 vectors of each per iteration
//   pN    one stream, loads issued N iterations (32 bytes each) ahead of their use, in registers
//   t     sU=4 plus a scalar load 1 KiB ahead per 64 bytes (prefetch by touching)
//   b2    (--burst) sU=4 plus, per 1 KiB, 16 scalar loads touching the 16 lines 2 KiB ahead
// Tile variants: gemm.ts's 4 × 8 tile (the tileRx8 loop: kk order, 8 madds per 32 bytes of panel)
// over cold packed panels of K rows (32 KiB at K = 1024), 4 rows of A (L1); T_mem is s4's F = 0
// (tile2x16: d's, two streams):
//   tile      the kernel's loop
//   tilepipe  the panel row of kk + 1 loaded before the madds of kk
//   tile8     8 rows: two 4 × 8 tiles per panel (the second reads the panel from L1/L2)
//   tile2x16  rows 0–1 then rows 2–3 over a PAIR of panels with gemm.ts's 2 × 16 tile
//   tileb2    tile plus, every 32 kk, 16 scalar loads touching the panel's lines 2 KiB ahead
//   tileuU    kk unrolled ×U, A through four bumped row pointers, constant load offsets
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const root = new URL("../../", import.meta.url).pathname;
const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const [k, v] = a.replace(/^--/, "").split("=");
    return [k, v ?? true];
  }),
);
const SAMPLES = Number(args.samples ?? 7);
const FS = String(args.f ?? "0,1,2,3,4,5,6,8,12,16")
  .split(",")
  .map(Number);
const COLD = 256 * 2 ** 20;
const FLUSH = 64 * 2 ** 20;
const HOT = 16 * 2 ** 10;
const K = Number(args.k ?? 1024); // tile variants: panel rows (32 KiB panels at 1024, as d = 1024)

// ---- the AssemblyScript source, generated ----------------------------------------------------------
const madd = (v, m, c) => `${c} = madd(${v}, ${m}, ${c});`;
/** F madds of vector v on the accumulators from `first` (mod 8), multipliers alternating. */
function work(v, F, first) {
  if (F === 0) return [`c${first % 8} = f32x4.add(c${first % 8}, ${v});`];
  return Array.from({ length: F }, (_, j) => madd(v, `m${j % 4}`, `c${(first + j) % 8}`));
}
const prologue = `
  let c0 = f32x4.splat(0), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
  const m0 = f32x4.splat(0.5), m1 = f32x4.splat(-0.25), m2 = f32x4.splat(0.75), m3 = f32x4.splat(-1.5);`;
const epilogue = `
  const s = f32x4.add(f32x4.add(f32x4.add(c0, c1), f32x4.add(c2, c3)), f32x4.add(f32x4.add(c4, c5), f32x4.add(c6, c7)));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);`;

function streamU(U, F) {
  const body = [];
  for (let u = 0; u < U; u++) body.push(`const v${u} = v128.load(q, ${16 * u});`, ...work(`v${u}`, F, u * Math.max(F, 1)));
  return `export function s${U}_${F}(p: usize, len: usize, reps: i32): f32 {${prologue}
  for (let r = 0; r < reps; r++) {
    for (let q = p, end = p + len; q < end; q += ${16 * U}) {
      ${body.join("\n      ")}
    }
  }${epilogue}
}`;
}
function twoStreams(F) {
  const body = [];
  const step = Math.max(F, 1);
  ["q", "h"].forEach((base, s) => {
    for (let u = 0; u < 2; u++) {
      const i = 2 * s + u;
      body.push(`const v${i} = v128.load(${base}, ${16 * u});`, ...work(`v${i}`, F, i * step));
    }
  });
  return `export function d_${F}(p: usize, len: usize, reps: i32): f32 {${prologue}
  const half = len >> 1;
  for (let r = 0; r < reps; r++) {
    for (let q = p, end = p + half; q < end; q += 32) {
      const h = q + half;
      ${body.join("\n      ")}
    }
  }${epilogue}
}`;
}
// loads `ahead` iterations (32 bytes each) before use: a queue of 2·ahead vectors in registers
function pipelined(ahead, F) {
  const step = Math.max(F, 1);
  const n = 2 * ahead; // vectors in flight
  const init = Array.from({ length: n }, (_, i) => `let w${i} = v128.load(p, ${16 * i});`);
  const body = [
    `const v0 = w0, v1 = w1;`,
    ...Array.from({ length: n - 2 }, (_, i) => `w${i} = w${i + 2};`),
    `w${n - 2} = v128.load(q, ${32 * ahead}); w${n - 1} = v128.load(q, ${32 * ahead + 16});`,
    ...work("v0", F, 0),
    ...work("v1", F, step),
  ];
  return `export function p${ahead}_${F}(p: usize, len: usize, reps: i32): f32 {${prologue}
  for (let r = 0; r < reps; r++) {
    ${init.join(" ")}
    for (let q = p, end = p + len; q < end; q += 32) {
      ${body.join("\n      ")}
    }
  }${epilogue}
}`;
}
function touchAhead(F) {
  const body = [`t |= load<u32>(q, 1024);`];
  for (let u = 0; u < 4; u++) body.push(`const v${u} = v128.load(q, ${16 * u});`, ...work(`v${u}`, F, u * Math.max(F, 1)));
  return `export function t_${F}(p: usize, len: usize, reps: i32): f32 {${prologue}
  let t: u32 = 0;
  for (let r = 0; r < reps; r++) {
    for (let q = p, end = p + len; q < end; q += 64) {
      ${body.join("\n      ")}
    }
  }${epilogue.replace("return ", "return <f32>(t & 1) + ")}
}`;
}

// one stream ×4, and at each 1 KiB block a burst of 16 scalar loads touching the 16 lines of the
// block `dist` bytes ahead: 16 misses issued together (memory-level parallelism that does not wait
// for the out-of-order window to reach them)
function burstTouch(dist, F) {
  const touches = Array.from({ length: 16 }, (_, i) => `t |= load<u32>(q, ${dist + 64 * i});`);
  const body = [];
  for (let u = 0; u < 4; u++) body.push(`const v${u} = v128.load(e, ${16 * u});`, ...work(`v${u}`, F, u * Math.max(F, 1)));
  return `export function b${dist >> 10}_${F}(p: usize, len: usize, reps: i32): f32 {${prologue}
  let t: u32 = 0;
  for (let r = 0; r < reps; r++) {
    for (let q = p, end = p + len; q < end; q += 1024) {
      ${touches.join(" ")}
      for (let e = q; e < q + 1024; e += 64) {
        ${body.join("\n        ")}
      }
    }
  }${epilogue.replace("return ", "return <f32>(t & 1) + ")}
}`;
}

// gemm.ts's tileRx8 loop (rows = 4), panels after one another; `pipe` loads row kk + 1 first
function tile(name, rows, pipe, burst = 0) {
  // `rows` rows of A: tiles of up to 4 rows (the kernel's largest), or one R × 8 tile with R ≤ 6
  // when name starts with "r" (R × 8 with R accumulator pairs: 5 × 8 still fits 16 registers)
  const single = name.startsWith("r");
  const tiles = single ? [rows] : Array.from({ length: Math.ceil(rows / 4) }, (_, t) => Math.min(4, rows - 4 * t));
  const one = (R, t) => {
    const a = `a + ${t * 4 * K * 4}`;
    const loop = pipe
      ? `let n0 = v128.load(b), n1 = v128.load(b, 16);
      for (let kk = 0; kk < k; kk++) {
        const off = <usize>kk << 2;
        const b0 = n0, b1 = n1;
        n0 = v128.load(b, 32); n1 = v128.load(b, 48);`
      : burst
        ? `for (let kk = 0; kk < k; kk++) {
        if ((kk & 31) == 0) { ${Array.from({ length: 16 }, (_, i) => `t |= load<u32>(b, ${burst + 64 * i});`).join(" ")} }
        const off = <usize>kk << 2;
        const b0 = v128.load(b);
        const b1 = v128.load(b, 16);`
        : `for (let kk = 0; kk < k; kk++) {
        const off = <usize>kk << 2;
        const b0 = v128.load(b);
        const b1 = v128.load(b, 16);`;
    const rs = Array.from({ length: R }, (_, i) => i);
    return `{
      const a0 = ${a};${rs
        .slice(1)
        .map((i) => ` const a${i} = a${i - 1} + rowA;`)
        .join("")}
      let c00 = f32x4.splat(0), c01 = c00${rs
        .slice(1)
        .map((i) => `, c${i}0 = c00, c${i}1 = c00`)
        .join("")};
      let b = panel;
      ${loop}
        ${rs.map((i) => `const x${i} = v128.load32_splat(a${i} + off); c${i}0 = madd(x${i}, b0, c${i}0); c${i}1 = madd(x${i}, b1, c${i}1);`).join("\n        ")}
        b += 32;
      }
      const cc = c + ${t * 128};
      ${rs.map((i) => `v128.store(cc, c${i}0, ${32 * i}); v128.store(cc, c${i}1, ${32 * i + 16});`).join(" ")}
    }`;
  };
  return `export function ${name}(p: usize, len: usize, reps: i32, a: usize, c: usize): f32 {
  const k = ${K};
  const rowA: usize = ${K * 4};
  const panelBytes: usize = ${K * 32};
  let t: u32 = 0;
  for (let r = 0; r < reps; r++) {
    for (let panel = p, end = p + len; panel < end; panel += panelBytes) {
      ${tiles.map((R, i) => one(R, i)).join("\n      ")}
    }
  }
  return load<f32>(c) + <f32>(t & 1);
}`;
}

// rows 0–1 then rows 2–3 over a PAIR of panels with gemm.ts's 2 × 16 tile: two read streams, the
// second pass reads the pair (64 KiB) from L2; each output's kk order is unchanged
function tile2x16x2(name) {
  const one = (t) => `{
      const a0 = a + ${t * 2 * K * 4}, a1 = a0 + rowA;
      let c00 = f32x4.splat(0), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
      let b = panel;
      for (let kk = 0; kk < k; kk++) {
        const off = <usize>kk << 2;
        const x0 = v128.load32_splat(a0 + off);
        const x1 = v128.load32_splat(a1 + off);
        const b0 = v128.load(b);
        const b1 = v128.load(b, 16);
        c00 = madd(x0, b0, c00); c01 = madd(x0, b1, c01);
        c10 = madd(x1, b0, c10); c11 = madd(x1, b1, c11);
        const b2 = v128.load(b + panelBytes);
        const b3 = v128.load(b + panelBytes, 16);
        c02 = madd(x0, b2, c02); c03 = madd(x0, b3, c03);
        c12 = madd(x1, b2, c12); c13 = madd(x1, b3, c13);
        b += 32;
      }
      const cc = c + ${t * 128};
      v128.store(cc, c00); v128.store(cc, c01, 16); v128.store(cc, c02, 32); v128.store(cc, c03, 48);
      v128.store(cc, c10, 64); v128.store(cc, c11, 80); v128.store(cc, c12, 96); v128.store(cc, c13, 112);
    }`;
  return `export function ${name}(p: usize, len: usize, reps: i32, a: usize, c: usize): f32 {
  const k = ${K};
  const rowA: usize = ${K * 4};
  const panelBytes: usize = ${K * 32};
  for (let r = 0; r < reps; r++) {
    for (let panel = p, end = p + len; panel < end; panel += 2 * panelBytes) {
      ${one(0)}
      ${one(1)}
    }
  }
  return load<f32>(c);
}`;
}

// the 4 × 8 tile with kk unrolled ×U: A read through four row pointers bumped by 4·U bytes, the
// splats and panel loads at constant offsets (each output still sums in kk order)
function tileUnrolled(name, U) {
  const step = (u) => `
        { const b0 = v128.load(b, ${32 * u}), b1 = v128.load(b, ${32 * u + 16});
          const x0 = v128.load32_splat(p0, ${4 * u}); c00 = madd(x0, b0, c00); c01 = madd(x0, b1, c01);
          const x1 = v128.load32_splat(p1, ${4 * u}); c10 = madd(x1, b0, c10); c11 = madd(x1, b1, c11);
          const x2 = v128.load32_splat(p2, ${4 * u}); c20 = madd(x2, b0, c20); c21 = madd(x2, b1, c21);
          const x3 = v128.load32_splat(p3, ${4 * u}); c30 = madd(x3, b0, c30); c31 = madd(x3, b1, c31); }`;
  return `export function ${name}(p: usize, len: usize, reps: i32, a: usize, c: usize): f32 {
  const k = ${K};
  const rowA: usize = ${K * 4};
  const panelBytes: usize = ${K * 32};
  for (let r = 0; r < reps; r++) {
    for (let panel = p, end = p + len; panel < end; panel += panelBytes) {
      let p0 = a, p1 = a + rowA, p2 = a + 2 * rowA, p3 = a + 3 * rowA;
      let c00 = f32x4.splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
      let b = panel;
      for (let kk = 0; kk < k; kk += ${U}) {${Array.from({ length: U }, (_, u) => step(u)).join("")}
        b += ${32 * U}; p0 += ${4 * U}; p1 += ${4 * U}; p2 += ${4 * U}; p3 += ${4 * U};
      }
      v128.store(c, c00); v128.store(c, c01, 16); v128.store(c, c10, 32); v128.store(c, c11, 48);
      v128.store(c, c20, 64); v128.store(c, c21, 80); v128.store(c, c30, 96); v128.store(c, c31, 112);
    }
  }
  return load<f32>(c);
}`;
}

function source() {
  const parts = [
    `// Generated by bench/diagnostics/overlap.mjs: do not edit.
// @ts-ignore: decorator
@inline
function madd(a: v128, b: v128, acc: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, acc);
  return f32x4.add(acc, f32x4.mul(a, b));
}
export function fillBytes(p: usize, len: usize): void {
  const v = f32x4.splat(1e-6);
  for (let q = p; q < p + len; q += 16) v128.store(q, v);
}
export function readBytes(p: usize, len: usize): f32 {
  let s = f32x4.splat(0);
  for (let q = p; q < p + len; q += 64) s = f32x4.add(s, f32x4.add(f32x4.add(v128.load(q), v128.load(q, 16)), f32x4.add(v128.load(q, 32), v128.load(q, 48))));
  return f32x4.extract_lane(s, 0);
}
export function heapBase(): usize { return __heap_base; }`,
  ];
  for (const F of FS) {
    for (const U of [1, 2, 4]) parts.push(streamU(U, F));
    parts.push(twoStreams(F), pipelined(1, F), pipelined(2, F), touchAhead(F), burstTouch(2048, F), burstTouch(4096, F));
  }
  parts.push(
    tile("tile", 4, false),
    tile("tilepipe", 4, true),
    tile("tile8", 8, false),
    tile2x16x2("tile2x16"),
    tile("tileb2", 4, false, 2048),
    tileUnrolled("tileu1", 1),
    tileUnrolled("tileu2", 2),
    tileUnrolled("tileu4", 4),
    ...[1, 2, 3, 5, 6].map((R) => tile(`r${R}x8`, R, false)),
    tile("t5", 5, false),
    tile("t3", 3, false),
  );
  return parts.join("\n\n") + "\n";
}

// ---- build ---------------------------------------------------------------------------------------------
const out = join(root, "build/bench");
mkdirSync(out, { recursive: true });
// generated into build/ (ignored); asc runs there, away from the package's asconfig.json
if (!args["no-build"]) writeFileSync(join(out, "overlap.ts"), source());
const asc = join(root, "node_modules/.bin/asc");
const common = ["--runtime", "stub", "--noAssert", "--use", "abort=", "-O3", "--initialMemory", "1"];
const cwd = out;
const builds = args.build === "simd" ? ["simd"] : args.build === "relaxed" ? ["relaxed"] : ["simd", "relaxed"];
const modules = {};
for (const b of builds) {
  const file = join(out, `overlap-${b}.wasm`);
  if (!args["no-build"])
    execFileSync(asc, ["overlap.ts", "--enable", b === "simd" ? "simd" : "simd,relaxed-simd", ...common, "--outFile", file], { cwd, stdio: "inherit" });
  modules[b] = new WebAssembly.Module(readFileSync(file));
}

// ---- measure -------------------------------------------------------------------------------------------
const median = (xs) => [...xs].sort((x, y) => x - y)[xs.length >> 1];
const only = args.only ? String(args.only).split(",") : null;
const want = (v) => !only || only.includes(v);

// --hot-tiles=R: only the tiles' arithmetic rate (4 panels, 128 KiB, L2-resident), R interleaved rounds
if (args["hot-tiles"]) {
  const R = Number(args["hot-tiles"]);
  // R × 8 tiles alone (rRx8), and the kernel's way for 3 and 5 rows (t3: one 3 × 8; t5: 4 × 8 + 1 × 8)
  const names = ["r1x8", "r2x8", "r3x8", "tile", "r5x8", "t5", "r6x8", "tile8", "tile2x16", "tileu4", "s4_16"];
  const rowsOf = { r1x8: 1, r2x8: 2, r3x8: 3, tile: 4, r5x8: 5, t5: 5, r6x8: 6, tile8: 8, tile2x16: 4, tileu4: 4, s4_16: 32 };
  for (const b of builds) {
    const w = new WebAssembly.Instance(modules[b], {}).exports;
    const base = (w.heapBase() + 4095) & ~4095;
    w.memory.grow(Math.ceil((base + (1 << 20) - w.memory.buffer.byteLength) / 65536));
    w.fillBytes(base, 1 << 20);
    const panels = base,
      aRows = base + 4 * K * 32,
      cOut = aRows + 8 * K * 4;
    const BYTES = 64 << 20,
      reps = BYTES / (4 * K * 32);
    const times = Object.fromEntries(names.map((n) => [n, []]));
    for (let r = 0; r <= R; r++) {
      for (const n of names) {
        const t0 = performance.now();
        if (n === "s4_16") w.s4_16(panels, 16384, BYTES / 16384);
        else w[n](panels, 4 * K * 32, reps, aRows, cOut);
        if (r > 0) times[n].push(performance.now() - t0);
      }
    }
    const flopsPerByte = Object.fromEntries(names.map((n) => [n, rowsOf[n] / 2]));
    console.log(`${b}: GFLOP/s, best / median of ${R} interleaved rounds (64 MiB of panel reads each)`);
    for (const n of names) {
      const ts = times[n].sort((x, y) => x - y);
      const g = (t) => ((flopsPerByte[n] * BYTES) / t / 1e6).toFixed(1);
      console.log(`  ${n.padEnd(9)} ${g(ts[0])} / ${g(ts[ts.length >> 1])}`);
    }
  }
  process.exit(0);
}

for (const b of builds) {
  const w = new WebAssembly.Instance(modules[b], {}).exports;
  const base = (w.heapBase() + 4095) & ~4095;
  const cold = base,
    flush = cold + COLD + 16384,
    hot = flush + FLUSH,
    aRows = hot + 256 * 1024,
    cOut = aRows + 8 * K * 4;
  const end = cOut + 4096 + 16384;
  w.memory.grow(Math.ceil((end - w.memory.buffer.byteLength) / 65536));
  w.fillBytes(cold, COLD + 16384);
  w.fillBytes(flush, FLUSH);
  w.fillBytes(hot, 256 * 1024);
  w.fillBytes(aRows, 8 * K * 4);
  // One sample of each: the cold run of fn, the cold run of its F = 0 twin (same access pattern, no
  // arithmetic: T_mem), the hot run (T_comp), interleaved so the three see the same neighbours.
  const sample = (fn, memFn, hotFn) => {
    const t = [];
    for (const f of [memFn, fn]) {
      w.readBytes(flush, FLUSH);
      const t0 = performance.now();
      f();
      t.push(performance.now() - t0);
    }
    const t0 = performance.now();
    hotFn();
    t.push(performance.now() - t0);
    return t;
  };
  const measure = (v, F, fn, memFn, hotFn) => {
    sample(fn, memFn, hotFn); // warm-up (compiles the tiers)
    const ts = Array.from({ length: SAMPLES }, () => sample(fn, memFn, hotFn));
    const col = (i, pick) => pick(ts.map((t) => t[i]));
    const row = (pick) => {
      const tMem = col(0, pick),
        measured = col(1, pick),
        tComp = col(2, pick);
      const mx = Math.max(tMem, tComp),
        sum = tMem + tComp;
      return { tMem, tComp, measured, mx, sum, ratio: measured / mx, overlap: (sum - measured) / Math.min(tMem, tComp) };
    };
    const gflop = (F * 8 * COLD) / 16 / 1e6;
    return { v, F, fpb: F / 2, best: row((xs) => Math.min(...xs)), med: row(median), gflopsHot: gflop / col(2, (xs) => Math.min(...xs)) };
  };
  console.log(`\n=== ${b} build: cold ${COLD >> 20} MiB, hot ${HOT >> 10} KiB × ${COLD / HOT}, ${SAMPLES} samples (ms) ===`);
  const rows = [];
  for (const v of ["s1", "s2", "s4", "d", "p1", "p2", "t", "b2"].filter((v) => v !== "b2" || args.burst).filter(want)) {
    for (const F of FS) {
      const fn = w[`${v}_${F}`],
        zero = w[`${v}_0`];
      rows.push(
        measure(
          v,
          F,
          () => fn(cold, COLD, 1),
          () => zero(cold, COLD, 1),
          () => fn(hot, HOT, COLD / HOT),
        ),
      );
    }
  }
  if (want("tile")) {
    const HOTPANELS = 4 * K * 32; // 4 panels, 128 KiB: L2
    for (const [v, F] of [
      ["tile", 4],
      ["tilepipe", 4],
      ["tile8", 8],
      ["tile2x16", 4],
      ["tileb2", 4],
      ["tileu1", 4],
      ["tileu2", 4],
      ["tileu4", 4],
    ]) {
      const fn = w[v];
      const memFn = v === "tile2x16" ? () => w.d_0(cold, COLD, 1) : () => w.s4_0(cold, COLD, 1);
      rows.push(
        measure(
          v,
          F,
          () => fn(cold, COLD, 1, aRows, cOut),
          memFn,
          () => fn(hot, HOTPANELS, COLD / HOTPANELS, aRows, cOut),
        ),
      );
    }
  }
  console.log("best of samples (median in brackets): T_mem = same loop with F = 0 on the cold buffer (tiles: s4_0; tile2x16: d_0)");
  console.log("| variant | F | flop/B | T_mem | T_comp | measured | max | sum | meas/max | overlap | GFLOP/s hot |");
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  const f1 = (x) => x.toFixed(1);
  for (const r of rows) {
    const b = r.best,
      m = r.med;
    console.log(
      `| ${r.v} | ${r.F} | ${r.fpb} | ${f1(b.tMem)} (${f1(m.tMem)}) | ${f1(b.tComp)} (${f1(m.tComp)}) | ${f1(b.measured)} (${f1(m.measured)}) | ${f1(b.mx)} | ${f1(b.sum)} | ${b.ratio.toFixed(2)} (${m.ratio.toFixed(2)}) | ${(100 * b.overlap).toFixed(0)}% (${(100 * m.overlap).toFixed(0)}%) | ${f1(r.gflopsHot)} |`,
    );
  }
  if (args.json) writeFileSync(`${args.json}-${b}.json`, JSON.stringify(rows));
}
