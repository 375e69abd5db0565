// Unknown keys are INVALID_CONFIG errors that name the key and the nearest valid one: createMoE's
// configuration, weights and init through the built package; the per-call checkers (forward,
// backward, step, calibrate) through src/options.ts itself.
import { describe, expect, it } from "vitest";
import { createMoE, MoEError, type MoEConfig } from "edge-moe";
import {
  BACKWARD_KEYS,
  CALIBRATE_KEYS,
  checkBackwardOptions,
  checkCalibrateOptions,
  checkForwardOptions,
  checkKeys,
  checkStepOptions,
  CONFIG_KEYS,
  editDistance,
  FORWARD_KEYS,
  nearestKey,
  STEP_KEYS,
  WEIGHT_KEYS,
} from "../src/options.ts";
import { MoEError as SourceMoEError } from "../src/errors.ts";
import { configOf, randomWeights, Rng, type LayerShape } from "./helpers.ts";

const shape: LayerShape = { expert: "relu", d: 6, h: 5, n: 4, k: 2, noisy: true };
const good = (): MoEConfig => configOf(shape, randomWeights(new Rng(3), shape));

async function rejection(call: () => unknown): Promise<MoEError> {
  try {
    await call();
  } catch (error) {
    expect(error).toBeInstanceOf(MoEError);
    return error as MoEError;
  }
  throw new Error("expected the call to fail, and it succeeded");
}

/** The error a synchronous checker from src/ throws (its MoEError class is the source one). */
function thrown(call: () => void): SourceMoEError {
  try {
    call();
  } catch (error) {
    expect(error).toBeInstanceOf(SourceMoEError);
    return error as SourceMoEError;
  }
  throw new Error("expected the call to throw, and it returned");
}

describe("edit distance and the nearest key", () => {
  it("counts insertions, deletions, substitutions and adjacent transpositions as one edit each", () => {
    expect(editDistance("train", "train")).toBe(0);
    expect(editDistance("trian", "train")).toBe(1);
    expect(editDistance("numExpert", "numExperts")).toBe(1);
    expect(editDistance("seeds", "seed")).toBe(1);
    expect(editDistance("lr", "rate")).toBe(4);
    expect(editDistance("", "abc")).toBe(3);
    expect(editDistance("kitten", "sitting")).toBe(3);
  });
  it("suggests the closest key, ignores case, and suggests nothing for a far-off name", () => {
    expect(nearestKey("trian", FORWARD_KEYS)).toBe("train");
    expect(nearestKey("numExpert", CONFIG_KEYS)).toBe("numExperts");
    expect(nearestKey("dmodel", CONFIG_KEYS)).toBe("dModel");
    expect(nearestKey("learningRate", STEP_KEYS)).toBeUndefined();
    expect(nearestKey("zzz", FORWARD_KEYS)).toBeUndefined();
  });
  it("checkKeys accepts the allowed keys and names the first unknown one", () => {
    expect(() => checkKeys({ a: 1, b: undefined }, ["a", "b"], "f")).not.toThrow();
    const error = thrown(() => checkKeys({ a: 1, bb: 2 }, ["a", "b"], "f", "opts."));
    expect(error.code).toBe("INVALID_CONFIG");
    expect(error.message).toBe('opts.bb is not an option of f; did you mean "b"?');
    expect(thrown(() => checkKeys({ qqqq: 1 }, ["a", "b"], "f")).message).toBe('qqqq is not an option of f; the options are "a", "b"');
  });
});

describe("createMoE: unknown keys in the config, weights and init (INVALID_CONFIG)", () => {
  it('numExpert → did you mean "numExperts"?, before the missing numExperts is reported', async () => {
    const { numExperts, ...rest } = good();
    const error = await rejection(() => createMoE({ ...rest, numExpert: numExperts } as unknown as MoEConfig));
    expect(error.code).toBe("INVALID_CONFIG");
    expect(error.message).toBe('numExpert is not an option of createMoE; did you mean "numExperts"?');
  });
  it.each([
    ["noisygating", "noisyGating"],
    ["wImportanc", "wImportance"],
    ["treads", "threads"],
    ["wasmbuild", "wasmBuild"],
    ["chekFinite", "checkFinite"],
  ])("%s → %s", async (typo, meant) => {
    const error = await rejection(() => createMoE({ ...good(), [typo]: 1 } as MoEConfig));
    expect(error.code).toBe("INVALID_CONFIG");
    expect(error.message).toContain(`${typo} is not an option of createMoE; did you mean "${meant}"?`);
  });
  it("a far-off key lists the options", async () => {
    const error = await rejection(() => createMoE({ ...good(), verbose: true } as MoEConfig));
    expect(error.message).toMatch(/^verbose is not an option of createMoE; the options are "dModel", .*"threads", "routing", "shared", "dtype"$/);
  });
  it("weights: wgate → wGate, w3 → w1 or w2", async () => {
    const config = good();
    const { wGate, ...others } = config.weights!;
    const error = await rejection(() => createMoE({ ...config, weights: { ...others, wgate: wGate } as MoEConfig["weights"] }));
    expect(error.code).toBe("INVALID_CONFIG");
    expect(error.message).toBe('weights.wgate is not an option of weights; did you mean "wGate"?');
    const w3 = await rejection(() => createMoE({ ...config, weights: { ...config.weights, w3: wGate } as MoEConfig["weights"] }));
    expect(w3.message).toMatch(/^weights\.w3 is not an option of weights; did you mean "w[12]"\?$/);
  });
  it("init: { sed } → seed", async () => {
    const { weights, ...config } = good();
    const error = await rejection(() => createMoE({ ...config, weights: { wGate: weights!.wGate }, init: { sed: 1 } as unknown as { seed: number } }));
    expect(error.code).toBe("INVALID_CONFIG");
    expect(error.message).toBe('init.sed is not an option of init; did you mean "seed"?');
  });
  it("every documented key is accepted", async () => {
    const layer = await createMoE({
      ...good(),
      noiseEpsilon: 1e-2,
      wImportance: 0.1,
      wLoad: 0.1,
      seed: 1,
      checkFinite: true,
      threads: 1,
      wasmBuild: "simd",
      onWarning: () => undefined,
      crossover: Infinity,
    });
    layer.dispose();
    const { weights, ...config } = good();
    (await createMoE({ ...config, weights: { wGate: weights!.wGate }, init: { seed: 2 } })).dispose();
  });
});

describe("forward options (checkForwardOptions)", () => {
  it('options.trian → did you mean "train"?', () => {
    const error = thrown(() => checkForwardOptions({ trian: true }));
    expect(error.code).toBe("INVALID_CONFIG");
    expect(error.message).toBe('options.trian is not an option of forward; did you mean "train"?');
  });
  it("options.out's keys too", () => {
    const error = thrown(() => checkForwardOptions({ out: { Y: new Float32Array(1) } }));
    expect(error.message).toBe('options.out.Y is not an option of forward\'s options.out; did you mean "y"?');
    expect(thrown(() => checkForwardOptions({ out: { topkIndex: new Int32Array(1) } })).message).toContain('did you mean "topkIndices"?');
  });
  it("accepts every documented option, and no options", () => {
    expect(() => checkForwardOptions(undefined)).not.toThrow();
    expect(() => checkForwardOptions({})).not.toThrow();
    expect(() =>
      checkForwardOptions({ train: true, noise: undefined, seed: 1, backend: "cpu", out: { y: undefined, topkIndices: undefined, topkGates: undefined } }),
    ).not.toThrow();
    expect(() => checkForwardOptions({ out: null })).not.toThrow();
  });
  it("a non-object is INVALID_CONFIG, a non-object out is OUTPUT_SHAPE", () => {
    for (const bad of [null, 1, "train", true, []]) expect(thrown(() => checkForwardOptions(bad)).code).toBe("INVALID_CONFIG");
    expect(thrown(() => checkForwardOptions({ out: 3 })).code).toBe("OUTPUT_SHAPE");
  });
});

describe("backward, step and calibrate options", () => {
  it("backward: weight → weights", () => {
    expect(() => checkBackwardOptions(undefined)).not.toThrow();
    expect(() => checkBackwardOptions({ weights: false })).not.toThrow();
    expect(thrown(() => checkBackwardOptions({ weight: false })).message).toBe('options.weight is not an option of backward; did you mean "weights"?');
    expect(thrown(() => checkBackwardOptions(7)).code).toBe("INVALID_CONFIG");
    expect(BACKWARD_KEYS).toEqual(["weights"]);
  });
  it("step: Lr → lr, beta_1 → beta1, optimiser → optimizer; options are required", () => {
    expect(() => checkStepOptions({ lr: 1, optimizer: "adam", beta1: 0.9, beta2: 0.99, eps: 1e-8 })).not.toThrow();
    expect(thrown(() => checkStepOptions({ Lr: 1 })).message).toBe('options.Lr is not an option of step; did you mean "lr"?');
    expect(thrown(() => checkStepOptions({ lr: 1, beta_1: 0.9 })).message).toContain('did you mean "beta1"?');
    expect(thrown(() => checkStepOptions({ lr: 1, optimiser: "adam" })).message).toContain('did you mean "optimizer"?');
    expect(thrown(() => checkStepOptions(undefined)).message).toMatch(/lr is required/);
    expect(thrown(() => checkStepOptions(null)).code).toBe("INVALID_CONFIG");
  });
  it("calibrate: batchSize → batchSizes, repeat → repeats", () => {
    expect(() => checkCalibrateOptions(undefined)).not.toThrow();
    expect(() => checkCalibrateOptions({ batchSizes: [1], repeats: 1 })).not.toThrow();
    expect(thrown(() => checkCalibrateOptions({ batchSize: [1] })).message).toBe('options.batchSize is not an option of calibrate; did you mean "batchSizes"?');
    expect(thrown(() => checkCalibrateOptions({ repeat: 2 })).message).toContain('did you mean "repeats"?');
    expect(CALIBRATE_KEYS).toEqual(["batchSizes", "repeats"]);
  });
  it("the weight keys are the MoEWeights names", () => {
    expect([...WEIGHT_KEYS].sort()).toEqual([
      "b1",
      "b2",
      "sharedDown",
      "sharedGate",
      "sharedGateProj",
      "sharedUp",
      "w1",
      "w2",
      "wDown",
      "wGate",
      "wGateProj",
      "wNoise",
      "wUp",
    ]);
  });
});
