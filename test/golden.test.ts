// Conformance with the golden vectors (test/fixtures/vectors, README there): every case, on the
// CPU path, training mode with the file's noise, at the README's tolerances; eval mode against the
// float64 reference; and the float64 reference itself against the vectors.
import { beforeAll, describe, expect, it } from "vitest";
import { createMoE, type ForwardResult } from "edge-moe";
import { listCases, loadCase, relErr, sameBits, TOL, type GoldenCase } from "./helpers.ts";
import { erf, erfBranches, erfc, normalCdf, referenceForward, refLayer, type RefResult } from "./reference.ts";

const cases = listCases();
const names = cases.map((c) => c.name);

interface CaseRun {
  golden: GoldenCase;
  train: ForwardResult;
  eval: ForwardResult;
  /** float64 reference, training mode with the file's noise */
  refTrain: RefResult;
  /** float64 reference, eval mode */
  refEval: RefResult;
}
const runs = new Map<string, CaseRun>();

beforeAll(async () => {
  for (const info of cases) {
    const golden = loadCase(info);
    const layer = await createMoE(golden.config);
    const train = await layer.forward(golden.x, { train: true, noise: golden.noise });
    const evalResult = await layer.forward(golden.x, { train: false });
    layer.dispose();
    const ref = refLayer(golden.config);
    runs.set(info.name, {
      golden,
      train,
      eval: evalResult,
      refTrain: referenceForward(ref, golden.x, { train: true, noise: golden.noise }),
      refEval: referenceForward(ref, golden.x, { train: false }),
    });
  }
});

const run = (name: string): CaseRun => {
  const r = runs.get(name);
  if (!r) throw new Error(`case ${name} did not run`);
  return r;
};

describe("golden vectors: the index lists every file, and the files match it", () => {
  it("has the 19 public cases", () => {
    expect(cases.length).toBe(19);
    expect(new Set(names).size).toBe(cases.length);
  });
  it.each(names)("%s: metadata agrees with index.json", (name) => {
    const { golden } = run(name);
    const m = golden.file.metadata;
    const info = golden.info;
    expect([m.case, m.expert, m.noisy, m.load_mode]).toEqual([info.name, info.expert, String(info.noisy), info.load_mode]);
    expect([Number(m.B), Number(m.d), Number(m.h), Number(m.n), Number(m.k)]).toEqual([info.B, info.d, info.h, info.n, info.k]);
  });
});

describe("training mode with the file's noise, CPU path", () => {
  it.each(names)("%s: topk_indices are exact (each row by descending H)", (name) => {
    const { golden, train } = run(name);
    expect(train.topkIndices).toBeInstanceOf(Int32Array);
    expect(Array.from(train.topkIndices)).toEqual(Array.from(golden.tensor("topk_indices")));
  });

  const tensors: Array<[string, string, (r: ForwardResult) => Float32Array | number | undefined]> = [
    ["y", "y", (r) => r.y],
    ["topk gates (softmax over the k)", "topk_gates", (r) => r.topkGates],
    ["importance", "importance", (r) => r.importance],
    ["load (P(x,i) or counts, as the case's load_mode)", "load", (r) => r.load],
    ["loss_importance", "loss_importance", (r) => r.lossImportance],
    ["loss_load", "loss_load", (r) => r.lossLoad],
  ];
  for (const [behaviour, fileName, pick] of tensors) {
    describe(behaviour, () => {
      it.each(names)(`%s: ${fileName} within ${TOL} (max|cand−ref|/max|ref|)`, (name) => {
        const { golden, train } = run(name);
        const value = pick(train);
        expect(value).toBeDefined();
        expect(relErr(value!, golden.f32(fileName))).toBeLessThan(TOL);
      });
    });
  }

  it.each(names)("%s: reports the CPU backend and fresh arrays of the right types and lengths", (name) => {
    const { golden, train } = run(name);
    const { B, d, k, n } = golden.info;
    expect(train.backend).toBe("cpu");
    expect(train.y).toBeInstanceOf(Float32Array);
    expect(train.y.length).toBe(B * d);
    expect(train.topkIndices.length).toBe(B * k);
    expect(train.topkGates.length).toBe(B * k);
    expect(train.importance!.length).toBe(n);
    expect(train.load!.length).toBe(n);
  });
});

describe("eval mode (train: false): no noise, top-k of the clean logits, no losses", () => {
  it.each(names)("%s: importance, load and both losses are undefined", (name) => {
    const { eval: e } = run(name);
    expect(e.importance).toBeUndefined();
    expect(e.load).toBeUndefined();
    expect(e.lossImportance).toBeUndefined();
    expect(e.lossLoad).toBeUndefined();
  });

  /**
   * Rows whose top k+1 clean logits (the file's, float64) hold two values closer than 1e-4: their
   * choice or order of experts cannot be decided in float32, so they are left out of the
   * comparisons below (and must be rare).
   */
  function ambiguousRows(name: string): Set<number> {
    const { golden } = run(name);
    const { B, n, k } = golden.info;
    const clean = golden.f32("clean_logits");
    const rows = new Set<number>();
    for (let b = 0; b < B; b++) {
      const row = Array.from(clean.subarray(b * n, b * n + n)).sort((p, q) => q - p);
      for (let j = 1; j < Math.min(k + 1, n); j++) if (row[j - 1] - row[j] < 1e-4) rows.add(b);
    }
    return rows;
  }
  /** The entries of rows not in `skip`, of a [B, width] tensor. */
  function keepRows<T extends ArrayLike<number>>(t: T, width: number, skip: Set<number>): number[] {
    const out: number[] = [];
    for (let j = 0; j < t.length; j++) if (!skip.has(Math.floor(j / width))) out.push(t[j]);
    return out;
  }

  it.each(names)("%s: few rows are too close to call (< 2%)", (name) => {
    expect(ambiguousRows(name).size).toBeLessThanOrEqual(Math.floor(run(name).golden.info.B / 50));
  });

  it.each(names)("%s: topk_indices are the top k of the file's clean_logits", (name) => {
    const { golden, eval: e } = run(name);
    const { B, n, k } = golden.info;
    const clean = golden.f32("clean_logits");
    const skip = ambiguousRows(name);
    for (let b = 0; b < B; b++) {
      if (skip.has(b)) continue;
      const row = Array.from(clean.subarray(b * n, b * n + n));
      const sorted = row.map((_, i) => i).sort((i, j) => row[j] - row[i]);
      expect(Array.from(e.topkIndices.subarray(b * k, b * k + k)), `row ${b}`).toEqual(sorted.slice(0, k));
    }
  });

  it.each(names)("%s: y and topk gates match the float64 reference in eval mode", (name) => {
    const { golden, eval: e, refEval } = run(name);
    const { d, k } = golden.info;
    const skip = ambiguousRows(name);
    expect(keepRows(e.topkIndices, k, skip)).toEqual(keepRows(refEval.topkIndices, k, skip));
    expect(relErr(keepRows(e.topkGates, k, skip), keepRows(refEval.topkGates, k, skip))).toBeLessThan(TOL);
    expect(relErr(keepRows(e.y, d, skip), keepRows(refEval.y, d, skip))).toBeLessThan(TOL);
  });

  it.each(cases.filter((c) => !c.noisy).map((c) => c.name))("%s (noisy gating off): eval and training give bit-identical y and gates", (name) => {
    const { train, eval: e } = run(name);
    expect(sameBits(e.y, train.y)).toBe(true);
    expect(sameBits(e.topkIndices, train.topkIndices)).toBe(true);
    expect(sameBits(e.topkGates, train.topkGates)).toBe(true);
  });

  it("noisy cases: the noise changes the choice of experts somewhere, so eval mode really drops it", () => {
    // Proof that the comparison above can fail: with the noise, some rows pick other experts.
    let differing = 0;
    for (const c of cases.filter((c) => c.noisy)) {
      const { train, eval: e } = run(c.name);
      for (let j = 0; j < train.topkIndices.length; j++) if (train.topkIndices[j] !== e.topkIndices[j]) differing++;
    }
    expect(differing).toBeGreaterThan(100);
  });
});

describe("the float64 reference (test/reference.ts) reproduces the golden vectors", () => {
  // The reference computes in float64 from the same float32 inputs as the generator did; the files
  // store the outputs rounded to float32, so the two differ by that rounding (≤ 2^-24 ≈ 6e-8).
  const REF_TOL = 1e-7;
  const outputs: Array<[string, (r: RefResult) => ArrayLike<number> | number | undefined]> = [
    ["clean_logits", (r) => r.clean],
    ["noise_stddev", (r) => r.std],
    ["noisy_logits", (r) => r.h],
    ["gates", (r) => r.gates],
    ["topk_gates", (r) => r.topkGates],
    ["y", (r) => r.y],
    ["importance", (r) => r.importance],
    ["load_prob", (r) => r.loadProb],
    ["load", (r) => r.load],
    ["loss_importance", (r) => r.lossImportance],
    ["loss_load", (r) => r.lossLoad],
  ];
  it.each(names)(`%s: every forward tensor within ${REF_TOL}, topk_indices exact, load mode as the file`, (name) => {
    const { golden, refTrain } = run(name);
    expect(Array.from(refTrain.topkIndices)).toEqual(Array.from(golden.tensor("topk_indices")));
    expect(refTrain.loadMode).toBe(golden.info.load_mode);
    let compared = 0;
    for (const [fileName, pick] of outputs) {
      if (!golden.file.tensors[fileName]) continue;
      const value = pick(refTrain);
      expect(value, fileName).toBeDefined();
      expect(relErr(value!, golden.f32(fileName)), fileName).toBeLessThan(REF_TOL);
      compared++;
    }
    expect(compared).toBe(golden.info.noisy ? (golden.info.load_mode === "prob_in_top_k" ? 11 : 10) : 9);
  });

  it("erf and erfc match tabulated values to 1e-15 (relative)", () => {
    // Values of erf/erfc to 16 digits (A&S table 7.1 extended; also Python's math.erf).
    const erfTable: Array<[number, number]> = [
      [0.1, 0.1124629160182849],
      [0.5, 0.5204998778130465],
      [1, 0.8427007929497149],
      [1.5, 0.9661051464753108],
      [2, 0.9953222650189527],
      [2.5, 0.999593047982555],
      [3, 0.9999779095030014],
    ];
    for (const [x, v] of erfTable) {
      expect(Math.abs(erf(x) - v) / v, `erf(${x})`).toBeLessThan(1e-15);
      expect(Math.abs(erf(-x) + v) / v, `erf(${-x})`).toBeLessThan(1e-15);
    }
    const erfcTable: Array<[number, number]> = [
      [3, 2.2090496998585438e-5],
      [4, 1.541725790028002e-8],
      [5, 1.5374597944280351e-12],
      [6, 2.1519736712498916e-17],
    ];
    for (const [x, v] of erfcTable) expect(Math.abs(erfc(x) - v) / v, `erfc(${x})`).toBeLessThan(1e-13);
    expect(erf(0)).toBe(0);
    expect(Math.abs(normalCdf(1.959963984540054) - 0.975)).toBeLessThan(1e-15);
    expect(Math.abs(normalCdf(-6 / 1) - 9.865876450377012e-10) / 9.865876450377012e-10).toBeLessThan(1e-12);
  });

  it("the series and the continued fraction agree where they meet", () => {
    const { erfSeries, erfcContinuedFraction, SERIES_LIMIT } = erfBranches;
    for (const x of [SERIES_LIMIT - 0.25, SERIES_LIMIT, SERIES_LIMIT + 0.25]) {
      const viaSeries = 1 - erfSeries(x);
      const viaFraction = erfcContinuedFraction(x);
      expect(Math.abs(viaSeries - viaFraction) / viaFraction, `x = ${x}`).toBeLessThan(1e-10);
    }
  });
});
