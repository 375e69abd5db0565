// The conformance suite: one script, bundled once and run unchanged in every runtime
// (test/runtimes.test.ts): golden cases (every expert kind, noisy and clean, odd sizes), the same in
// every quantized dtype, seeded-noise reproducibility, errors with their codes, and a SHA-256 of
// every output, which must be the same in every runtime for the same kernel build. Uses the
// public API only.
import { loadMoE, MoEError, readSafetensors, type ForwardResult, type MoEConfig, type MoELayer, type MoEWeights } from "edge-moe";
import { CONFORMANCE_CASES, DEEPSEEK_V3_CONFIG, deepseekGolden, deepseekModel } from "./cases.ts";

/** One way to run the suite: options added to every layer's config (e.g. { wasmBuild: "simd" }). */
export interface Variant {
  name: string;
  config: Partial<MoEConfig>;
}

/** How layers are made: createMoE, or a layer inside edge-moe/worker. */
export type CreateLayer = (config: MoEConfig) => Promise<MoELayer>;

/** Tolerance of the golden vectors (test/fixtures/vectors/README.md): max|c − r| / max|r|. */
const TOLERANCE = 1e-4;

export class Report {
  readonly lines: string[] = [];
  readonly hashes: Record<string, string> = {};
  passed = 0;
  failed = 0;

  async check(name: string, body: () => unknown): Promise<void> {
    try {
      await body();
      this.passed++;
      this.lines.push(`ok   ${name}`);
    } catch (error) {
      this.failed++;
      const code = error instanceof MoEError ? `${error.code}: ` : "";
      this.lines.push(`FAIL ${name}: ${code}${(error as Error)?.message ?? String(error)}`);
    }
  }

  /** The printed report; its last line is `N passed, N failed`. */
  get text(): string {
    const hashes = Object.entries(this.hashes).map(([variant, hex]) => `hash ${variant} ${hex}`);
    return [...this.lines, ...hashes, `${this.passed} passed, ${this.failed} failed`].join("\n");
  }
}

// ---- golden cases --------------------------------------------------------------------------------

const WEIGHT_NAMES: ReadonlyArray<[string, keyof MoEWeights]> = [
  ["w_gate", "wGate"],
  ["w_noise", "wNoise"],
  ["w1", "w1"],
  ["b1", "b1"],
  ["w2", "w2"],
  ["b2", "b2"],
  ["w_gate_proj", "wGateProj"],
  ["w_up", "wUp"],
  ["w_down", "wDown"],
];

interface GoldenCase {
  name: string;
  config: MoEConfig;
  x: Float32Array;
  noise?: Float32Array;
  ref(tensor: string): Float32Array | Int32Array;
}

function loadCase(name: string, bytes: Uint8Array): GoldenCase {
  const file = readSafetensors(bytes);
  const m = file.metadata;
  const data = (tensor: string) => {
    const t = file.tensors[tensor];
    if (!t) throw new Error(`${name} has no tensor ${tensor}`);
    return t.data as Float32Array | Int32Array;
  };
  const weights: MoEWeights = {};
  for (const [fileName, option] of WEIGHT_NAMES) {
    if (file.tensors[fileName]) weights[option] = data(fileName) as Float32Array;
  }
  const noisy = m.noisy === "true";
  return {
    name,
    config: {
      dModel: Number(m.d),
      dHidden: Number(m.h),
      numExperts: Number(m.n),
      k: Number(m.k),
      expert: m.expert as MoEConfig["expert"],
      noisyGating: noisy,
      noiseEpsilon: Number(m.noise_epsilon),
      wImportance: Number(m.w_importance),
      wLoad: Number(m.w_load),
      weights,
    },
    x: data("x") as Float32Array,
    noise: noisy ? (data("noise") as Float32Array) : undefined,
    ref: data,
  };
}

function expectClose(what: string, actual: ArrayLike<number> | undefined, expected: ArrayLike<number>): void {
  if (!actual || actual.length !== expected.length) throw new Error(`${what}: length ${actual?.length} ≠ ${expected.length}`);
  let maxRef = 0;
  let maxDiff = 0;
  for (let i = 0; i < expected.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
    const diff = Math.abs(actual[i] - expected[i]);
    maxDiff = Number.isNaN(diff) ? Infinity : Math.max(maxDiff, diff);
  }
  const error = maxRef > 0 ? maxDiff / maxRef : maxDiff;
  if (!(error <= TOLERANCE)) throw new Error(`${what}: error ${error.toExponential(2)} > ${TOLERANCE}`);
}

/** The quantized expert dtypes and their bound on the relative RMS error of y (docs/numerics.md). */
const QUANTIZED: ReadonlyArray<[NonNullable<MoEConfig["dtype"]>, number]> = [
  ["f16", 1e-3],
  ["bf16", 8e-3],
  ["int8", 2e-2],
  ["int4", 2e-1],
];

/** ‖a − r‖₂ / ‖r‖₂ (NaN: Infinity). */
function relativeRms(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    num += (actual[i] - expected[i]) ** 2;
    den += expected[i] ** 2;
  }
  const r = den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
  return Number.isNaN(r) ? Infinity : r;
}

function expectExact(what: string, actual: ArrayLike<number>, expected: ArrayLike<number>): void {
  if (actual.length !== expected.length) throw new Error(`${what}: length ${actual.length} ≠ ${expected.length}`);
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) throw new Error(`${what}[${i}] = ${actual[i]}, expected ${expected[i]}`);
  }
}

// ---- bit-level comparison and hashing ------------------------------------------------------------

/** Every output of a call as bytes, in a fixed order (losses as float64). */
function resultBytes(r: ForwardResult): Uint8Array[] {
  const parts: ArrayBufferView[] = [r.y, r.topkIndices, r.topkGates];
  if (r.importance) parts.push(r.importance);
  if (r.load) parts.push(r.load);
  if (r.lossImportance !== undefined) parts.push(Float64Array.of(r.lossImportance, r.lossLoad ?? NaN));
  return parts.map((p) => new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
}

function sameBits(a: ForwardResult, b: ForwardResult): boolean {
  const pa = resultBytes(a);
  const pb = resultBytes(b);
  return pa.length === pb.length && pa.every((p, i) => p.length === pb[i].length && p.every((v, j) => v === pb[i][j]));
}

async function sha256(parts: Uint8Array[]): Promise<string> {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function expectCode(code: string, call: () => Promise<unknown>): Promise<void> {
  let thrown: unknown;
  try {
    await call();
  } catch (error) {
    thrown = error;
  }
  if (thrown === undefined) throw new Error(`expected MoEError ${code}, the call succeeded`);
  if (!(thrown instanceof MoEError)) throw new Error(`expected MoEError ${code}, got ${String(thrown)}`);
  if (thrown.code !== code) throw new Error(`expected code ${code}, got ${thrown.code} (${thrown.message})`);
}

// ---- the suite -----------------------------------------------------------------------------------

/**
 * Runs every check for each variant into `report` (a fresh one when not given); `hash: false` for
 * variants whose bits are not expected to match the CPU path (the GPU).
 */
export async function runConformance(create: CreateLayer, variants: Array<Variant & { hash?: boolean }>, report = new Report()): Promise<Report> {
  const cases = CONFORMANCE_CASES.map((c) => loadCase(c.name, c.bytes));
  const seeded = cases.find((c) => c.name === "odd_relu_noisy_k2_n8_d13_h37")!;

  for (const variant of variants) {
    const v = variant.name;
    const make = (c: GoldenCase, extra: Partial<MoEConfig> = {}) => create({ ...c.config, ...variant.config, ...extra });
    const hashed: Uint8Array[] = [];

    for (const c of cases) {
      await report.check(`${v} golden ${c.name}`, async () => {
        const layer = await make(c);
        try {
          const r = await layer.forward(c.x, { train: true, noise: c.noise });
          const backend = variant.config.backend === "gpu" ? "gpu" : "cpu";
          if (r.backend !== backend) throw new Error(`the experts ran on ${r.backend}, expected ${backend}`);
          expectExact("topk_indices", r.topkIndices, c.ref("topk_indices"));
          expectClose("topk_gates", r.topkGates, c.ref("topk_gates"));
          expectClose("y", r.y, c.ref("y"));
          expectClose("importance", r.importance, c.ref("importance"));
          expectClose("load", r.load, c.ref("load"));
          expectClose("loss_importance", [r.lossImportance!], c.ref("loss_importance"));
          expectClose("loss_load", [r.lossLoad!], c.ref("loss_load"));
          hashed.push(...resultBytes(r));
          if (!c.config.noisyGating) {
            // Clean gating: inference mode routes and computes exactly as training mode.
            const inference = await layer.forward(c.x);
            if (inference.importance !== undefined) throw new Error("inference mode returned training outputs");
            expectExact("inference y bits", new Int32Array(inference.y.buffer), new Int32Array(r.y.buffer));
            expectExact("inference topk_indices", inference.topkIndices, r.topkIndices);
          }
        } finally {
          layer.dispose();
        }
      });
    }

    for (const [dtype, bound] of QUANTIZED) {
      await report.check(`${v} dtype ${dtype}: every golden case within ${bound} (relative RMS of y), routing exactly the f32 layer's`, async () => {
        for (const c of cases) {
          const layer = await make(c, { dtype });
          try {
            const r = await layer.forward(c.x, { train: true, noise: c.noise });
            expectExact(`${c.name} topk_indices`, r.topkIndices, c.ref("topk_indices"));
            expectClose(`${c.name} topk_gates`, r.topkGates, c.ref("topk_gates"));
            const error = relativeRms(r.y, c.ref("y"));
            if (!(error <= bound)) throw new Error(`${c.name}: relative RMS error of y ${error.toExponential(2)} > ${bound}`);
            hashed.push(...resultBytes(r));
          } finally {
            layer.dispose();
          }
        }
      });
    }

    await report.check(`${v} seeded noise: same seed, same bits (same layer and a fresh one)`, async () => {
      const a = await make(seeded);
      const b = await make(seeded);
      try {
        const first = await a.forward(seeded.x, { train: true, seed: 42 });
        const again = await a.forward(seeded.x, { train: true, seed: 42 });
        const fresh = await b.forward(seeded.x, { train: true, seed: 42 });
        if (!sameBits(first, again)) throw new Error("seed 42 twice on one layer gave different bits");
        if (!sameBits(first, fresh)) throw new Error("seed 42 on a fresh layer gave different bits");
        const other = await a.forward(seeded.x, { train: true, seed: 43 });
        if (sameBits(first, other)) throw new Error("seeds 42 and 43 gave the same outputs: the seed is not used");
        const clean = await a.forward(seeded.x, { train: true, noise: new Float32Array((seeded.x.length / seeded.config.dModel) * seeded.config.numExperts) });
        if (sameBits(first, clean)) throw new Error("seed 42 gave the outputs of zero noise: no noise was drawn");
        hashed.push(...resultBytes(first), ...resultBytes(other));
      } finally {
        a.dispose();
        b.dispose();
      }
    });

    await report.check(`${v} seeded noise: the layer's own stream (config seed) repeats across layers`, async () => {
      const a = await make(seeded, { seed: 7 });
      const b = await make(seeded, { seed: 7 });
      try {
        const a1 = await a.forward(seeded.x, { train: true });
        const a2 = await a.forward(seeded.x, { train: true });
        const b1 = await b.forward(seeded.x, { train: true });
        const b2 = await b.forward(seeded.x, { train: true });
        if (!sameBits(a1, b1) || !sameBits(a2, b2)) throw new Error("two layers with seed 7 gave different streams");
        if (sameBits(a1, a2)) throw new Error("the second call repeated the first call's noise");
        hashed.push(...resultBytes(a1), ...resultBytes(a2));
      } finally {
        a.dispose();
        b.dispose();
      }
    });

    await report.check(`${v} errors arrive as MoEError with their code; a rejected call changes nothing`, async () => {
      const c = seeded;
      const { dModel: d, numExperts: n } = c.config;
      await expectCode("INVALID_CONFIG", () => make(c, { k: n + 1 }));
      const layer = await make(c);
      try {
        const before = await layer.forward(c.x, { train: true, noise: c.noise });
        await expectCode("INPUT_SHAPE", () => layer.forward(new Float32Array(d + 1)));
        const poisoned = c.x.slice();
        poisoned[d + 2] = NaN;
        await expectCode("NON_FINITE_INPUT", () => layer.forward(poisoned, { train: true, noise: c.noise }));
        await expectCode("NOISE_SHAPE", () => layer.forward(c.x, { train: true, noise: new Float32Array(n) }));
        await expectCode("OUTPUT_SHAPE", () => layer.forward(c.x, { out: { y: new Float32Array(d) } }));
        const after = await layer.forward(c.x, { train: true, noise: c.noise });
        if (!sameBits(before, after)) throw new Error("a rejected call changed the next result");
      } finally {
        layer.dispose();
      }
      await expectCode("DISPOSED", () => layer.forward(c.x));
    });

    await report.check(`${v} out buffers are filled in place`, async () => {
      const c = seeded;
      const layer = await make(c);
      try {
        const batch = c.x.length / c.config.dModel;
        const out = { y: new Float32Array(c.x.length), topkIndices: new Int32Array(batch * c.config.k), topkGates: new Float32Array(batch * c.config.k) };
        const fresh = await layer.forward(c.x, { train: true, noise: c.noise });
        const into = await layer.forward(c.x, { train: true, noise: c.noise, out });
        if (into.y !== out.y || into.topkIndices !== out.topkIndices || into.topkGates !== out.topkGates)
          throw new Error("the result does not return the caller's buffers");
        if (!sameBits(fresh, into)) throw new Error("out buffers hold other values than a fresh result");
      } finally {
        layer.dispose();
      }
    });

    if (variant.hash !== false) report.hashes[v] = await sha256(hashed);
  }
  return report;
}

// ---- loading a checkpoint ------------------------------------------------------------------------

/**
 * Where the runtime can read the deepseek_v3 family fixture (the richest router: sigmoid, choice
 * bias, groups, renormalisation, scale, a shared expert) besides its bundled bytes.
 */
export interface LoaderPlaces {
  /** A path to its model.safetensors (runtimes with files: Node, Deno, Bun). */
  path?: string;
  /** Its model.safetensors on a local server that answers Range requests, and on one that ignores them. */
  urls?: { range: string; whole: string };
  /** Runtime options for loadMoE (wasmBuild, wasm). */
  config?: Partial<MoEConfig>;
}

function goldenOfFamily() {
  const file = readSafetensors(deepseekGolden);
  const f64 = (name: string) => new Float64Array(file.others[name].bytes.slice().buffer);
  return {
    layer: Number(file.metadata.layer),
    x: file.tensors.x.data as Float32Array,
    y: f64("y"),
    topkIndices: file.tensors.topk_indices.data as Int32Array,
    topkGates: f64("topk_gates"),
  };
}

/**
 * loadMoE in this runtime: from bytes always; from a path and from URLs where `places` has them.
 * Each must match the float64 golden, and every source must give the bits of the bytes.
 */
export async function runLoaderChecks(report: Report, places: LoaderPlaces): Promise<void> {
  const golden = goldenOfFamily();
  let reference: ForwardResult | undefined;
  const load = async (what: string, model: Uint8Array | string, expectNote: boolean) => {
    const notes: string[] = [];
    const layer = await loadMoE({
      ...places.config,
      config: DEEPSEEK_V3_CONFIG,
      files: { "model.safetensors": model },
      layer: golden.layer,
      onNote: (note) => notes.push(note),
    });
    try {
      const r = await layer.forward(golden.x);
      expectExact(`${what}: topk_indices`, r.topkIndices, golden.topkIndices);
      expectClose(`${what}: topk_gates`, r.topkGates, golden.topkGates);
      expectClose(`${what}: y`, r.y, golden.y);
      if (expectNote !== notes.length > 0)
        throw new Error(`${what}: notes ${JSON.stringify(notes)}, expected ${expectNote ? "one about the missing Range support" : "none"}`);
      if (reference && !sameBits(r, reference)) throw new Error(`${what}: other bits than the same checkpoint from bytes`);
      reference ??= r;
    } finally {
      layer.dispose();
    }
  };
  await report.check("loader: loadMoE(deepseek_v3) from bytes matches the golden", () => load("bytes", deepseekModel, false));
  if (reference) report.hashes.loader = await sha256(resultBytes(reference));
  if (places.path !== undefined) {
    const path = places.path;
    await report.check("loader: loadMoE from a path gives the same bits", () => load("path", path, false));
  }
  if (places.urls) {
    const { range, whole } = places.urls;
    await report.check("loader: loadMoE from a URL (server with Range) gives the same bits", () => load("url with Range", range, false));
    await report.check("loader: loadMoE from a URL (server without Range: a note, the whole file once) gives the same bits", () =>
      load("url without Range", whole, true),
    );
  }
}
