// W8A8 (activations "int8" with dtype "int8", assembly/quant-dot.ts): the integer GEMM against a
// scalar integer reference bit for bit (every tile path, both builds), the golden vectors' y
// against the float64 reference (and against weight-only int8), routing identical to f32, the same
// bits from 1 and 2 threads, the relaxed build next to the simd one, the weights unchanged from
// dtype "int8", and the typed errors of the option.
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMoE, MoEError, type ForwardResult, type MoEConfig } from "edge-moe";
import { configOf, listCases, loadCase, randomWeights, Rng, sameBits, type LayerShape } from "./helpers.ts";
import { referenceForward, refLayer } from "./reference.ts";

/** ‖cand − ref‖₂ / ‖ref‖₂. */
function relRms(cand: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (cand[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  const r = den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
  return Number.isNaN(r) || cand.length !== ref.length ? Infinity : r;
}

// ---- the kernels against a scalar integer reference ---------------------------------------------

interface GemmCase {
  k: number;
  n: number;
  m: number;
  bias: boolean;
  seed: number;
}
interface GemmResult {
  c: number[];
  q: number[];
  sx: number[];
  unpacked: number[];
}

/**
 * Runs packPanelsQ(W8A8) + quantizeRowsW8A8 + gemmW8A8 on one build's raw exports (no imports
 * beyond env.abort) and returns C's bits, the quantized A bytes, the row scales' bits and the
 * unpacked weights' bits. Self-contained (its source also runs in the relaxed child process).
 */
function runGemm(exports: unknown, cs: GemmCase): GemmResult {
  const K = exports as {
    memory: WebAssembly.Memory;
    heapBase(): number;
    packPanelsQ(dtype: number, src: number, k: number, n: number, ldSrc: number, dst: number, kPad: number, panelStep: number): number;
    unpackPanelsQ(dtype: number, src: number, k: number, n: number, dst: number, ldDst: number, kPad: number, panelStep: number): void;
    quantizeRowsW8A8(a: number, lda: number, m: number, k: number, dst: number, ldq: number, scales: number): void;
    gemmW8A8(a: number, lda: number, sx: number, m: number, kPad: number, bp: number, panels: number, c: number, ldc: number, bias: number): void;
  };
  let s = cs.seed >>> 0;
  const rand = (): number => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
  const { k, n, m } = cs;
  const kq = Math.ceil(k / 16) * 16;
  const panels = Math.ceil(n / 8);
  const np = panels * 8;
  const lda = k + 3; // A rows with a stride wider than k
  const ldq = kq + 16;
  const align = (v: number): number => Math.ceil(v / 64) * 64;
  let at = align(K.heapBase());
  const take = (bytes: number): number => {
    const p = at;
    at = align(at + bytes);
    return p;
  };
  const w = take(4 * k * n),
    panel = take(panels * (8 * kq + 64)),
    a = take(4 * m * lda),
    qa = take(m * ldq);
  const sx = take(4 * m),
    c = take(4 * m * np),
    bias = take(4 * np),
    un = take(4 * k * n);
  if (at > K.memory.buffer.byteLength) K.memory.grow(Math.ceil((at - K.memory.buffer.byteLength) / 65536));
  const f32 = new Float32Array(K.memory.buffer);
  for (let i = 0; i < k * n; i++) f32[w / 4 + i] = rand() * (i % 11 === 0 ? 4 : 1);
  for (let j = 0; j < n; j++) if (j % 7 === 5) for (let r = 0; r < k; r++) f32[w / 4 + r * n + j] = 0; // zero columns
  for (let i = 0; i < m * lda; i++) f32[a / 4 + i] = rand() * 3;
  if (m > 2) for (let r = 0; r < k; r++) f32[a / 4 + 2 * lda + r] = 0; // a zero row
  for (let i = 0; i < np; i++) f32[bias / 4 + i] = rand();
  K.packPanelsQ(5, w, k, n, n, panel, k, 1);
  K.unpackPanelsQ(5, panel, k, n, un, n, k, 1);
  K.quantizeRowsW8A8(a, lda, m, k, qa, ldq, sx);
  K.gemmW8A8(qa, ldq, sx, m, k, panel, panels, c, np, cs.bias ? bias : 0);
  const u32 = new Uint32Array(K.memory.buffer);
  const u8 = new Uint8Array(K.memory.buffer);
  const q: number[] = [];
  for (let r = 0; r < m; r++) for (let i = 0; i < kq; i++) q.push(u8[qa + r * ldq + i]);
  return {
    c: Array.from(u32.subarray(c / 4, c / 4 + m * np)),
    q,
    sx: Array.from(u32.subarray(sx / 4, sx / 4 + m)),
    unpacked: Array.from(u32.subarray(un / 4, un / 4 + k * n)),
  };
}

/** Round half to even (wasm's `nearest`). */
const rne = (v: number): number => (Math.abs(v % 1) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v));
const f32bits = (v: number): number => new Uint32Array(Float32Array.of(v).buffer)[0];

/** The scalar reference of runGemm: integer sums in JavaScript numbers (exact), the f32 steps by Math.fround. */
function referenceGemm(cs: GemmCase): GemmResult {
  let s = cs.seed >>> 0;
  const rand = (): number => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
  const fr = Math.fround;
  const { k, n, m } = cs;
  const kq = Math.ceil(k / 16) * 16;
  const np = Math.ceil(n / 8) * 8;
  const lda = k + 3;
  const w = new Float32Array(k * n),
    a = new Float32Array(m * lda),
    bias = new Float32Array(np);
  for (let i = 0; i < k * n; i++) w[i] = rand() * (i % 11 === 0 ? 4 : 1);
  for (let j = 0; j < n; j++) if (j % 7 === 5) for (let r = 0; r < k; r++) w[r * n + j] = 0;
  for (let i = 0; i < m * lda; i++) a[i] = rand() * 3;
  if (m > 2) for (let r = 0; r < k; r++) a[2 * lda + r] = 0;
  for (let i = 0; i < np; i++) bias[i] = rand();
  // weights: the int8 dtype's quantization
  const sw = new Float32Array(n),
    wq = new Int32Array(k * n);
  const unpacked: number[] = new Array(k * n);
  for (let j = 0; j < n; j++) {
    let top = 0;
    for (let r = 0; r < k; r++) top = Math.max(top, Math.abs(w[r * n + j]));
    sw[j] = fr(top / 127);
    for (let r = 0; r < k; r++) {
      wq[r * n + j] = sw[j] === 0 ? 0 : Math.min(127, Math.max(-127, rne(fr(w[r * n + j] / sw[j]))));
      unpacked[r * n + j] = f32bits(fr(wq[r * n + j] * sw[j]));
    }
  }
  // activations: per row, 7 bits, stored + 64
  const q: number[] = [],
    sx: number[] = [],
    c: number[] = [];
  for (let r = 0; r < m; r++) {
    let top = 0;
    for (let i = 0; i < k; i++) top = Math.max(top, Math.abs(a[r * lda + i]));
    const inv = top > 0 ? fr(63 / top) : 0;
    const scale = fr(top / 63);
    sx.push(f32bits(scale));
    const aq = new Int32Array(k);
    for (let i = 0; i < kq; i++) {
      if (i < k) aq[i] = Math.min(63, Math.max(-63, rne(fr(a[r * lda + i] * inv))));
      q.push(i < k ? aq[i] + 64 : 64);
    }
    for (let j = 0; j < np; j++) {
      let acc = 0;
      if (j < n) for (let i = 0; i < k; i++) acc += aq[i] * wq[i * n + j];
      const y = fr(fr(fr(acc) * (j < n ? sw[j] : 0)) * scale);
      c.push(f32bits(cs.bias ? fr(y + bias[j]) : y));
    }
  }
  return { c, q, sx, unpacked };
}

/** Every tile path: M = 1 over groups of four panels and the rest (relaxed), 4-row tiles and 3/2/1-row tails, 2-row tiles and a 1-row tail (simd), K short of a 16 multiple. */
const GEMM_CASES: GemmCase[] = [
  { k: 37, n: 21, m: 1, bias: true, seed: 1 },
  { k: 64, n: 40, m: 1, bias: false, seed: 2 },
  { k: 5, n: 8, m: 3, bias: true, seed: 3 },
  { k: 100, n: 45, m: 7, bias: true, seed: 4 },
  { k: 48, n: 64, m: 9, bias: false, seed: 5 },
  { k: 130, n: 16, m: 6, bias: true, seed: 6 },
  { k: 1024, n: 40, m: 5, bias: true, seed: 7 },
];

const SIMD_WASM = new URL("../dist/edge-moe.simd.wasm", import.meta.url);
const RELAXED_WASM = new URL("../dist/edge-moe.relaxed.wasm", import.meta.url);

async function simdGemm(cs: GemmCase): Promise<GemmResult> {
  const { instance } = await WebAssembly.instantiate(readFileSync(SIMD_WASM), { env: { abort: () => undefined } });
  return runGemm(instance.exports, cs);
}

describe("kernels: the integer GEMM against a scalar integer reference, bit for bit", () => {
  for (const cs of GEMM_CASES) {
    it(`simd: K ${cs.k}, N ${cs.n}, M ${cs.m}${cs.bias ? ", bias" : ""}`, async () => {
      const got = await simdGemm(cs);
      const want = referenceGemm(cs);
      expect(got.q, "quantized activations (q + 64)").toEqual(want.q);
      expect(got.sx, "row scales").toEqual(want.sx);
      expect(got.unpacked, "dequantized weights").toEqual(want.unpacked);
      expect(got.c, "C").toEqual(want.c);
    });
  }
});

// ---- layers -------------------------------------------------------------------------------------

async function expectCode(run: () => Promise<unknown>, code: string): Promise<void> {
  let error: unknown;
  try {
    await run();
  } catch (e) {
    error = e;
  }
  expect(error, `expected ${code}`).toBeInstanceOf(MoEError);
  expect((error as MoEError).code).toBe(code);
}

describe("the option", () => {
  const shape: LayerShape = { d: 8, h: 8, n: 2, k: 1, expert: "relu", noisy: false };
  const config = configOf(shape, randomWeights(new Rng(1), shape));
  it('activations "int8" needs dtype "int8"; anything but "f32"/"int8" is INVALID_CONFIG', async () => {
    await expectCode(() => createMoE({ ...config, activations: "int8" }), "INVALID_CONFIG");
    await expectCode(() => createMoE({ ...config, dtype: "int4", activations: "int8" }), "INVALID_CONFIG");
    await expectCode(() => createMoE({ ...config, dtype: "int8", activations: "int4" as "int8" }), "INVALID_CONFIG");
    const layer = await createMoE({ ...config, dtype: "int8", activations: "f32" });
    layer.dispose();
  });
  it('training a W8A8 layer is UNSUPPORTED, as for dtype "int8"', async () => {
    const layer = await createMoE({ ...config, dtype: "int8", activations: "int8" });
    try {
      const x = new Rng(2).normals(3 * shape.d);
      await layer.forward(x, { train: true });
      await expectCode(async () => layer.backward(new Float32Array(3 * shape.d)), "UNSUPPORTED");
    } finally {
      layer.dispose();
    }
  });
});

/** Relative RMS errors of y against float64 measured on the golden vectors (printed at the end). */
const measured = { w8a8: [] as number[], int8: [] as number[] };
const cases = listCases();
const golden = new Map<string, { ref: Float64Array; f32: ForwardResult; int8: ForwardResult; w8a8: ForwardResult }>();

beforeAll(async () => {
  for (const info of cases) {
    const g = loadCase(info);
    const forward = async (config: MoEConfig): Promise<ForwardResult> => {
      const layer = await createMoE(config);
      try {
        return await layer.forward(g.x, { train: true, noise: g.noise });
      } finally {
        layer.dispose();
      }
    };
    golden.set(info.name, {
      ref: referenceForward(refLayer(g.config), g.x, { train: true, noise: g.noise }).y,
      f32: await forward(g.config),
      int8: await forward({ ...g.config, dtype: "int8" }),
      w8a8: await forward({ ...g.config, dtype: "int8", activations: "int8" }),
    });
  }
}, 120_000);

afterAll(() => {
  const line = (name: string, errors: number[]): string => {
    const sorted = [...errors].sort((a, b) => a - b);
    return `${name.padEnd(5)} max ${sorted[sorted.length - 1].toExponential(2)}  median ${sorted[Math.floor(sorted.length / 2)].toExponential(2)}  (${sorted.length} cases)`;
  };
  if (measured.w8a8.length > 0) {
    console.log(`relative RMS error of y against the float64 reference, golden vectors:\n${line("w8a8", measured.w8a8)}\n${line("int8", measured.int8)}`);
  }
});

/** Bound on W8A8's relative RMS error of y (7-bit activations: up to ~4× weight-only int8's; measured max 4.5e-2). */
const W8A8_BOUND = 5e-2;

describe("golden vectors", () => {
  it.each(cases.map((c) => c.name))("%s: y within the W8A8 bound of float64, routing exactly the f32 layer's", (name) => {
    const run = golden.get(name)!;
    const err = relRms(run.w8a8.y, run.ref);
    measured.w8a8.push(err);
    measured.int8.push(relRms(run.int8.y, run.ref));
    expect(err).toBeLessThanOrEqual(W8A8_BOUND);
    expect(sameBits(run.w8a8.topkIndices, run.f32.topkIndices), "topkIndices").toBe(true);
    expect(sameBits(run.w8a8.topkGates, run.f32.topkGates), "topkGates").toBe(true);
    expect(sameBits(run.w8a8.load!, run.f32.load!), "load").toBe(true);
  });
});

const SHAPES: LayerShape[] = [
  { d: 40, h: 72, n: 4, k: 2, expert: "gelu", noisy: true },
  { d: 37, h: 45, n: 3, k: 2, expert: "relu", noisy: false },
  { d: 16, h: 40, n: 3, k: 3, expert: "swiglu", noisy: false },
];

describe("threads and weights", () => {
  for (const shape of SHAPES) {
    it(`${shape.expert} d ${shape.d} h ${shape.h}: simd 1 thread = simd-threads 2 threads bit for bit; getWeights() = dtype "int8"'s`, async () => {
      const rng = new Rng(31);
      const config = { ...configOf(shape, randomWeights(rng, shape)), dtype: "int8" as const };
      const x = rng.normals(70 * shape.d);
      const one = await createMoE({ ...config, activations: "int8", wasmBuild: "simd" });
      const two = await createMoE({ ...config, activations: "int8", wasmBuild: "simd-threads", threads: 2 });
      const int8 = await createMoE({ ...config, wasmBuild: "simd" });
      try {
        for (const batch of [1, 2, 11, 70]) {
          const rows = x.subarray(0, batch * shape.d);
          const a = one.forwardSync(rows, { train: true, seed: 5 });
          const b = two.forwardSync(rows, { train: true, seed: 5 });
          expect(sameBits(a.y, b.y), `B=${batch}: y`).toBe(true);
          expect(sameBits(a.topkIndices, b.topkIndices), `B=${batch}: topkIndices`).toBe(true);
          const c = await two.forward(rows, { train: true, seed: 5 });
          expect(sameBits(a.y, c.y), `B=${batch}: y of the async forward`).toBe(true);
          // not int8's y: the activations were quantized
          expect(sameBits(a.y, int8.forwardSync(rows, { train: true, seed: 5 }).y), `B=${batch}: differs from int8`).toBe(false);
        }
        const wa = await one.getWeights(),
          wb = await int8.getWeights();
        for (const name of ["w1", "w2", "wGateProj", "wUp", "wDown"] as const) {
          if (wa[name]) expect(sameBits(wa[name]!, wb[name]!), name).toBe(true);
        }
      } finally {
        one.dispose();
        two.dispose();
        int8.dispose();
      }
    });
  }
});

describe("the relaxed build (child process with --experimental-wasm-relaxed-simd)", () => {
  it("the relaxed i8 dot product: the reference's bits on every GEMM case; relaxed layers: 1 thread = 2 threads bit for bit, close to simd, same routing", () => {
    const script = `
      const { readFileSync } = await import("node:fs");
      const { createMoE } = await import(${JSON.stringify(new URL("../dist/index.js", import.meta.url).href)});
      const runGemm = ${runGemm.toString()};
      const cases = ${JSON.stringify(GEMM_CASES)};
      const { instance } = await WebAssembly.instantiate(readFileSync(new URL(${JSON.stringify(RELAXED_WASM.href)})), { env: { abort: () => undefined } });
      const gemm = cases.map((cs) => runGemm(instance.exports, cs));
      const shapes = ${JSON.stringify(SHAPES)};
      let s = 12345;
      const r = () => { s = (Math.imul(s, 1103515245) + 12345) >>> 0; return s / 2 ** 32 - 0.5; };
      const arr = (n, scale) => Float32Array.from({ length: n }, () => r() * scale);
      const layers = [];
      for (const { d, h, n, k, expert } of shapes) {
        const weights = expert === "swiglu"
          ? { wGate: arr(d * n, 1), wGateProj: arr(n * d * h, 0.5), wUp: arr(n * d * h, 0.5), wDown: arr(n * h * d, 0.3) }
          : { wGate: arr(d * n, 1), w1: arr(n * d * h, 0.5), b1: arr(n * h, 0.1), w2: arr(n * h * d, 0.3), b2: arr(n * d, 0.1) };
        const config = { dModel: d, dHidden: h, numExperts: n, k, expert, noisyGating: false, weights, dtype: "int8", activations: "int8" };
        const simd = await createMoE({ ...config, wasmBuild: "simd" });
        const relaxed = await createMoE({ ...config, wasmBuild: "relaxed" });
        const threads = await createMoE({ ...config, wasmBuild: "relaxed-threads", threads: 2 });
        const x = arr(70 * d, 2);
        let same = true, routing = true, err = 0;
        for (const batch of [1, 2, 11, 70]) {
          const rows = x.subarray(0, batch * d);
          const a = simd.forwardSync(rows), b = relaxed.forwardSync(rows), c = threads.forwardSync(rows);
          const bits = (v) => JSON.stringify(Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length)));
          same &&= bits(b.y) === bits(c.y);
          routing &&= a.topkIndices.every((v, i) => v === b.topkIndices[i]);
          let num = 0, den = 0;
          for (let i = 0; i < a.y.length; i++) { num += (a.y[i] - b.y[i]) ** 2; den += a.y[i] ** 2; }
          err = Math.max(err, Number.isNaN(num) ? Infinity : Math.sqrt(num / den));
        }
        simd.dispose(); relaxed.dispose(); threads.dispose();
        layers.push({ same, routing, err });
      }
      console.log(JSON.stringify({ gemm, layers }));
    `;
    // a file, not -e: the thread pool's workers load the script that started them
    const file = join(tmpdir(), `edge-moe-w8a8-relaxed-${process.pid}.mjs`);
    writeFileSync(file, script);
    let stdout: string;
    try {
      stdout = execFileSync(process.execPath, ["--experimental-wasm-relaxed-simd", file], { encoding: "utf8" });
    } finally {
      rmSync(file, { force: true });
    }
    const out = JSON.parse(stdout.trim().split("\n").pop()!) as { gemm: GemmResult[]; layers: Array<{ same: boolean; routing: boolean; err: number }> };
    GEMM_CASES.forEach((cs, i) => {
      const want = referenceGemm(cs);
      expect(out.gemm[i].q, `K ${cs.k} M ${cs.m}: quantized activations`).toEqual(want.q);
      expect(out.gemm[i].c, `K ${cs.k} N ${cs.n} M ${cs.m}: C`).toEqual(want.c);
    });
    SHAPES.forEach((shape, i) => {
      // the f32 parts (gating GEMM, gelu/silu) fuse their multiply-adds in the relaxed build: an
      // activation next to a rounding boundary of its 7-bit grid may then land one step away
      expect(out.layers[i].same, `${shape.expert}: relaxed 1 thread = relaxed-threads 2 threads`).toBe(true);
      expect(out.layers[i].routing, `${shape.expert}: routing`).toBe(true);
      expect(out.layers[i].err, `${shape.expert}: relaxed y against simd y`).toBeLessThanOrEqual(2e-3);
    });
  }, 60_000);
});
