// Bad input: every MoEError code the CPU layer and its loader can raise, each with a message that
// names the problem; a rejected call leaves the layer working and earlier results untouched.
// Also: results belong to the caller; `out` buffers are written in place.
import { describe, expect, it } from "vitest";
import { createMoE, MoEError, type ForwardOptions, type ForwardResult, type MoEConfig, type MoELayer, type MoEWeights } from "edge-moe";
import { configOf, randomWeights, Rng, sameBits, type LayerShape } from "./helpers.ts";

/** The error a call throws or rejects with (fails the test when there is none). */
async function caught(call: () => unknown): Promise<unknown> {
  try {
    await call();
  } catch (error) {
    return error;
  }
  throw new Error("expected the call to fail, and it succeeded");
}

async function expectMoEError(call: () => unknown, code: string, message: RegExp): Promise<MoEError> {
  const error = await caught(call);
  expect(error).toBeInstanceOf(MoEError);
  expect(error).toBeInstanceOf(Error);
  const e = error as MoEError;
  expect(e.name).toBe("MoEError");
  expect(e.code).toBe(code);
  expect(e.message).toMatch(message);
  return e;
}

const relu: LayerShape = { expert: "relu", d: 6, h: 5, n: 5, k: 2, noisy: true };
const swiglu: LayerShape = { expert: "swiglu", d: 6, h: 5, n: 5, k: 2, noisy: true };

function goodConfig(shape: LayerShape = relu, seed = 1): MoEConfig {
  return configOf(shape, randomWeights(new Rng(seed), shape));
}

function withWeights(config: MoEConfig, change: (w: MoEWeights) => void): MoEConfig {
  const weights = { ...config.weights };
  change(weights);
  return { ...config, weights };
}

// ---- createMoE -------------------------------------------------------------------------------

describe("createMoE: sizes must be positive integers and 1 ≤ k ≤ numExperts (INVALID_CONFIG)", () => {
  const sizes = ["dModel", "dHidden", "numExperts", "k"] as const;
  const badValues: unknown[] = [0, -1, 1.5, Number.NaN, Infinity, "8", undefined, null];
  for (const size of sizes) {
    it.each(badValues.map((v) => [String(v), v]))(`${size} = %s`, async (_label, value) => {
      await expectMoEError(() => createMoE({ ...goodConfig(), [size]: value }), "INVALID_CONFIG", new RegExp(size === "k" ? "\\bk must" : size));
    });
  }
  it("k > numExperts", async () => {
    await expectMoEError(() => createMoE({ ...goodConfig(), k: 6 }), "INVALID_CONFIG", /k must .*1 ≤ k ≤ numExperts \(5\).*got 6/);
  });
  it("a layer whose weights cannot fit in 32-bit wasm memory", async () => {
    await expectMoEError(() => createMoE({ ...goodConfig(), dModel: 8192, dHidden: 8192, numExperts: 16 }), "INVALID_CONFIG", /numExperts·dModel·dHidden/);
  });
  it("no configuration object", async () => {
    await expectMoEError(() => createMoE(null as unknown as MoEConfig), "INVALID_CONFIG", /configuration object/);
  });
});

describe("createMoE: option values (INVALID_CONFIG)", () => {
  const cases: Array<[string, unknown, RegExp]> = [
    ["noiseEpsilon", -1, /noiseEpsilon/],
    ["noiseEpsilon", Number.NaN, /noiseEpsilon/],
    ["noiseEpsilon", "0.01", /noiseEpsilon/],
    ["wImportance", Infinity, /wImportance/],
    ["wLoad", -0.5, /wLoad/],
    ["backend", "tpu", /backend must be/],
    ["noisyGating", "yes", /noisyGating must be a boolean/],
    ["checkFinite", 1, /checkFinite must be a boolean/],
    ["seed", -1, /seed must be an integer/],
    ["seed", 1.5, /seed must be an integer/],
    ["seed", 2 ** 53, /seed must be an integer/],
    ["seed", "3", /seed must be an integer/],
    ["init", 5, /init must be an object/],
    ["init", { seed: -1 }, /init\.seed must be an integer/],
    ["wasmBuild", "sse", /wasmBuild must be "auto" or one of/],
    ["crossover", 0, /crossover must be a number ≥ 1/],
    ["onWarning", "log", /onWarning must be a function/],
    ["gpu", 5, /gpu must be a GPUDevice/],
  ];
  it.each(cases.map(([o, v, m]) => [`${o} = ${JSON.stringify(v) ?? String(v)}`, o, v, m] as const))("%s", async (_l, option, value, message) => {
    await expectMoEError(() => createMoE({ ...goodConfig(), [option]: value }), "INVALID_CONFIG", message);
  });
});

describe("createMoE: unknown expert kind (UNKNOWN_EXPERT)", () => {
  it.each([["tanh"], ["RELU"], [undefined], [3]])("expert = %s", async (expert) => {
    await expectMoEError(() => createMoE({ ...goodConfig(), expert: expert as never }), "UNKNOWN_EXPERT", /expert must be one of "relu", "gelu", "swiglu"/);
  });
});

describe("createMoE: weights present, Float32Array, right length (MISSING_WEIGHT, WEIGHT_SHAPE)", () => {
  const expected = (shape: LayerShape): Array<[keyof MoEWeights, number]> => {
    const { d, h, n } = shape;
    const common: Array<[keyof MoEWeights, number]> = [
      ["wGate", d * n],
      ["wNoise", d * n],
    ];
    return shape.expert === "swiglu"
      ? [...common, ["wGateProj", n * d * h], ["wUp", n * d * h], ["wDown", n * h * d]]
      : [...common, ["w1", n * d * h], ["b1", n * h], ["w2", n * h * d], ["b2", n * d]];
  };
  const all = [...expected(relu).map((e) => [relu, ...e] as const), ...expected(swiglu).map((e) => [swiglu, ...e] as const)];
  const rows = all.map(([shape, name, length]) => [`${shape.expert} ${name}`, shape, name, length] as const);

  it("no weights at all", async () => {
    await expectMoEError(() => createMoE({ ...goodConfig(), weights: undefined as never }), "MISSING_WEIGHT", /weights is required/);
  });
  const expertRows = rows.filter(([, , name]) => name !== "wGate" && name !== "wNoise");
  it.each(expertRows)("%s missing", async (_l, shape, name) => {
    const config = withWeights(goodConfig(shape), (w) => delete w[name]);
    await expectMoEError(() => createMoE(config), "MISSING_WEIGHT", new RegExp(`weights\\.${name} .* is required`));
  });
  it.each(rows)("%s one float short / one too many", async (_l, shape, name, length) => {
    for (const wrong of [length - 1, length + 1]) {
      const config = withWeights(goodConfig(shape), (w) => (w[name] = new Float32Array(wrong)));
      await expectMoEError(() => createMoE(config), "WEIGHT_SHAPE", new RegExp(`weights\\.${name} must hold ${length} floats .*got ${wrong}`));
    }
  });
  it.each(rows)("%s of the wrong type (Float64Array, Array)", async (_l, shape, name, length) => {
    for (const wrong of [new Float64Array(length), Array.from({ length }, () => 0)]) {
      const config = withWeights(goodConfig(shape), (w) => (w[name] = wrong as unknown as Float32Array));
      await expectMoEError(() => createMoE(config), "WEIGHT_SHAPE", new RegExp(`weights\\.${name} must be a Float32Array`));
    }
  });
  it("wGate and wNoise may be left out: they start at zero (same bits as explicit zeros)", async () => {
    const config = goodConfig(relu);
    const omitted = await createMoE(withWeights(config, (w) => (delete w.wGate, delete w.wNoise)));
    const zeros = await createMoE(withWeights(config, (w) => ((w.wGate = new Float32Array(relu.d * relu.n)), (w.wNoise = new Float32Array(relu.d * relu.n)))));
    const x = new Rng(4).normals(3 * relu.d);
    for (const options of [{}, { train: true, seed: 3 }]) {
      const [a, b] = [await omitted.forward(x, options), await zeros.forward(x, options)];
      expect(sameBits(a.y, b.y) && sameBits(a.topkGates, b.topkGates) && sameBits(a.topkIndices, b.topkIndices)).toBe(true);
    }
    omitted.dispose();
    zeros.dispose();
  });
  it("wNoise is not needed when noisyGating is off", async () => {
    const shape = { ...relu, noisy: false };
    const layer = await createMoE(goodConfig(shape));
    expect((await layer.forward(new Float32Array(relu.d).fill(1), { train: true })).y.length).toBe(relu.d);
    layer.dispose();
  });
});

describe("createMoE: NaN/Inf in any weight, checked at creation (NON_FINITE_WEIGHT)", () => {
  const names = (shape: LayerShape) => Object.keys(goodConfig(shape).weights!) as Array<keyof MoEWeights>;
  const rows = [...names(relu).map((n) => [relu, n] as const), ...names(swiglu).map((n) => [swiglu, n] as const)].flatMap(([shape, name]) =>
    [Number.NaN, Infinity, -Infinity].map((bad) => [`${shape.expert} ${name} holds ${bad}`, shape, name, bad] as const),
  );
  it.each(rows)("%s", async (_l, shape, name, bad) => {
    const config = goodConfig(shape);
    const length = config.weights![name]!.length;
    for (const at of new Set([0, Math.floor(length / 2) + 1, length - 1])) {
      const poisoned = withWeights(config, (w) => {
        w[name] = w[name]!.slice();
        w[name]![at] = bad;
      });
      await expectMoEError(() => createMoE(poisoned), "NON_FINITE_WEIGHT", new RegExp(`weights\\.${name}\\[${at}\\] is ${bad}`));
    }
  });
});

describe("createMoE: kernels that cannot be loaded (WASM_LOAD)", () => {
  it.each([
    ["bytes that are not wasm", new Uint8Array([0, 1, 2, 3])],
    ["an object that is no module, Response or bytes", { not: "wasm" }],
  ])("%s", async (_l, wasm) => {
    await expectMoEError(() => createMoE({ ...goodConfig(), wasm: wasm as never }), "WASM_LOAD", /could not load the edge-moe kernels.*pass the module/);
  });
});

// ---- forward -----------------------------------------------------------------------------------

const B = 4;

interface Fixture {
  layer: MoELayer;
  x: Float32Array;
  noise: Float32Array;
  /** The reference calls and their results before any bad call, with copies of their arrays. */
  before: ForwardResult[];
  copies: ForwardResult[];
}

const calls = (f: Pick<Fixture, "x" | "noise">): ForwardOptions[] => [{ train: true, noise: f.noise }, { train: true, seed: 9 }, { train: false }];

function copy(r: ForwardResult): ForwardResult {
  return {
    ...r,
    y: r.y.slice(),
    topkIndices: r.topkIndices.slice(),
    topkGates: r.topkGates.slice(),
    importance: r.importance?.slice(),
    load: r.load?.slice(),
  };
}

function expectSame(a: ForwardResult, b: ForwardResult, where: string): void {
  expect(sameBits(a.y, b.y), `${where}: y`).toBe(true);
  expect(sameBits(a.topkIndices, b.topkIndices), `${where}: topkIndices`).toBe(true);
  expect(sameBits(a.topkGates, b.topkGates), `${where}: topkGates`).toBe(true);
  expect(a.importance === undefined, where).toBe(b.importance === undefined);
  if (a.importance) {
    expect(sameBits(a.importance, b.importance!), `${where}: importance`).toBe(true);
    expect(sameBits(a.load!, b.load!), `${where}: load`).toBe(true);
    expect(Object.is(a.lossImportance, b.lossImportance) && Object.is(a.lossLoad, b.lossLoad), `${where}: losses`).toBe(true);
  }
}

async function fixture(): Promise<Fixture> {
  const rng = new Rng(21);
  const layer = await createMoE(goodConfig(relu, 2));
  const x = rng.normals(B * relu.d);
  const noise = rng.normals(B * relu.n);
  const before: ForwardResult[] = [];
  for (const options of calls({ x, noise })) before.push(await layer.forward(x, options));
  return { layer, x, noise, before, copies: before.map(copy) };
}

/** After a rejected call: the layer gives exactly what it gave before, and old results are intact. */
async function expectUntouched(f: Fixture): Promise<void> {
  const options = calls(f);
  for (let i = 0; i < options.length; i++) {
    expectSame(await f.layer.forward(f.x, options[i]), f.copies[i], `call ${i} after the rejection`);
    expectSame(f.before[i], f.copies[i], `result ${i} returned before the rejection`);
  }
}

const { d, n, k } = relu;
const nanAt = (length: number, at: number, value: number) => {
  const x = new Rng(3).normals(length);
  x[at] = value;
  return x;
};

const badCalls: Array<[string, string, RegExp, (f: Fixture) => Promise<unknown>]> = [
  [
    "x length not a multiple of dModel",
    "INPUT_SHAPE",
    /x\.length \(13\) must be a positive multiple of dModel \(6\)/,
    (f) => f.layer.forward(new Float32Array(2 * d + 1)),
  ],
  ["x shorter than one row", "INPUT_SHAPE", /x\.length \(5\) must be a positive multiple of dModel \(6\)/, (f) => f.layer.forward(new Float32Array(d - 1))],
  ["empty x", "INPUT_SHAPE", /x\.length \(0\) must be a positive multiple/, (f) => f.layer.forward(new Float32Array(0))],
  ["x a Float64Array", "INPUT_SHAPE", /x must be a Float32Array.*Float64Array/, (f) => f.layer.forward(new Float64Array(d) as never)],
  ["x a plain Array", "INPUT_SHAPE", /x must be a Float32Array.*Array/, (f) => f.layer.forward(Array.from(f.x) as never)],
  ["x undefined", "INPUT_SHAPE", /x must be a Float32Array/, (f) => f.layer.forward(undefined as never)],
  ["NaN in x (eval)", "NON_FINITE_INPUT", /x\[15\] \(row 2, column 3\) is NaN/, (f) => f.layer.forward(nanAt(B * d, 15, Number.NaN))],
  [
    "Infinity in x (training)",
    "NON_FINITE_INPUT",
    /x\[0\] \(row 0, column 0\) is Infinity/,
    (f) => f.layer.forward(nanAt(B * d, 0, Infinity), { train: true, seed: 1 }),
  ],
  [
    "-Infinity in the last element of x, in a batch larger than any before",
    "NON_FINITE_INPUT",
    /x\[299\] \(row 49, column 5\) is -Infinity/,
    (f) => f.layer.forward(nanAt(50 * d, 299, -Infinity), { train: true, noise: new Rng(1).normals(50 * n) }),
  ],
  [
    "noise one value short",
    "NOISE_SHAPE",
    /noise must be a Float32Array of B·n = 4·5 = 20 standard normals, got length 19/,
    (f) => f.layer.forward(f.x, { train: true, noise: f.noise.subarray(1) }),
  ],
  ["noise one value too many", "NOISE_SHAPE", /B·n = 4·5 = 20 .*got length 21/, (f) => f.layer.forward(f.x, { train: true, noise: new Float32Array(21) })],
  [
    "noise a Float64Array",
    "NOISE_SHAPE",
    /noise must be a Float32Array.*Float64Array/,
    (f) => f.layer.forward(f.x, { train: true, noise: new Float64Array(20) as never }),
  ],
  ["NaN in noise", "NOISE_SHAPE", /noise\[7\] is NaN; noise must be finite/, (f) => f.layer.forward(f.x, { train: true, noise: nanAt(20, 7, Number.NaN) })],
  ["Infinity in noise", "NOISE_SHAPE", /noise\[19\] is Infinity/, (f) => f.layer.forward(f.x, { train: true, noise: nanAt(20, 19, Infinity) })],
  [
    "out.y of the wrong length",
    "OUTPUT_SHAPE",
    /out\.y must be a Float32Array of length 24/,
    (f) => f.layer.forward(f.x, { out: { y: new Float32Array(B * d - 1) } }),
  ],
  [
    "out.y a Float64Array",
    "OUTPUT_SHAPE",
    /out\.y must be a Float32Array of length 24/,
    (f) => f.layer.forward(f.x, { out: { y: new Float64Array(B * d) as never } }),
  ],
  [
    "out.topkIndices a Float32Array",
    "OUTPUT_SHAPE",
    /out\.topkIndices must be a Int32Array of length 8/,
    (f) => f.layer.forward(f.x, { out: { topkIndices: new Float32Array(B * k) as never } }),
  ],
  [
    "out.topkGates too long",
    "OUTPUT_SHAPE",
    /out\.topkGates must be a Float32Array of length 8/,
    (f) => f.layer.forward(f.x, { out: { topkGates: new Float32Array(B * k + 1) } }),
  ],
  [
    "options.seed negative",
    "INVALID_CONFIG",
    /options\.seed must be an integer in \[0, 2\^53\), got -1/,
    (f) => f.layer.forward(f.x, { train: true, seed: -1 }),
  ],
  ["options.seed not an integer", "INVALID_CONFIG", /options\.seed .* got 0\.5/, (f) => f.layer.forward(f.x, { train: true, seed: 0.5 })],
  ["options.seed 2^53", "INVALID_CONFIG", /options\.seed/, (f) => f.layer.forward(f.x, { train: true, seed: 2 ** 53 })],
  ["options.seed NaN", "INVALID_CONFIG", /options\.seed .* got NaN/, (f) => f.layer.forward(f.x, { train: true, seed: Number.NaN })],
  ["options.seed a string", "INVALID_CONFIG", /options\.seed/, (f) => f.layer.forward(f.x, { train: true, seed: "1" as never })],
  ["a malformed seed in eval mode (unused, still rejected)", "INVALID_CONFIG", /options\.seed/, (f) => f.layer.forward(f.x, { seed: -1 })],
  [
    "noise of the wrong length in eval mode (unused, still rejected)",
    "NOISE_SHAPE",
    /got length 19/,
    (f) => f.layer.forward(f.x, { noise: f.noise.subarray(1) }),
  ],
  ["options null", "INVALID_CONFIG", /forward options must be an object .* got null/, (f) => f.layer.forward(f.x, null as never)],
  ["options a string", "INVALID_CONFIG", /forward options must be an object .* got train/, (f) => f.layer.forward(f.x, "train" as never)],
  ["options.out a number", "OUTPUT_SHAPE", /options\.out must be an object/, (f) => f.layer.forward(f.x, { out: 5 as never })],
  ["options.train not a boolean", "INVALID_CONFIG", /options\.train must be a boolean/, (f) => f.layer.forward(f.x, { train: "yes" as never })],
];
describe("forward: bad input is rejected with a typed error, and the layer is untouched", () => {
  it.each(badCalls)("%s → %s", async (_l, code, message, call) => {
    const f = await fixture();
    await expectMoEError(() => call(f), code, message);
    await expectUntouched(f);
    f.layer.dispose();
  });

  it("a rejected out buffer set writes none of the buffers", async () => {
    const f = await fixture();
    const y = new Float32Array(B * d).fill(-7);
    const topkIndices = new Int32Array(B * k).fill(-7);
    await expectMoEError(() => f.layer.forward(f.x, { out: { y, topkIndices, topkGates: new Float32Array(1) } }), "OUTPUT_SHAPE", /out\.topkGates/);
    expect(y.every((v) => v === -7) && topkIndices.every((v) => v === -7)).toBe(true);
    await expectUntouched(f);
    f.layer.dispose();
  });

  it("a rejected training call does not advance the layer's own noise stream", async () => {
    const a = await fixture();
    const b = await fixture();
    await expectMoEError(() => a.layer.forward(nanAt(B * d, 3, Number.NaN), { train: true }), "NON_FINITE_INPUT", /x\[3\]/);
    await expectMoEError(() => a.layer.forward(a.x, { train: true, noise: new Float32Array(3) }), "NOISE_SHAPE", /noise/);
    expectSame(await a.layer.forward(a.x, { train: true }), await b.layer.forward(b.x, { train: true }), "first stream call");
    a.layer.dispose();
    b.layer.dispose();
  });

  it("checkFinite: false skips the x check (documented policy): no error, experts still in range", async () => {
    const layer = await createMoE({ ...goodConfig(), checkFinite: false });
    const out = await layer.forward(nanAt(B * d, 2, Number.NaN));
    expect(out.topkIndices.every((e) => e >= 0 && e < n)).toBe(true);
    expect(out.y.length).toBe(B * d);
    layer.dispose();
  });
});

describe("dispose: later calls fail with DISPOSED", () => {
  it("forward after dispose is rejected; results returned before stay readable", async () => {
    const f = await fixture();
    f.layer.dispose();
    await expectMoEError(() => f.layer.forward(f.x), "DISPOSED", /disposed.*createMoE/);
    await expectMoEError(() => f.layer.forward(f.x, { train: true, seed: 1 }), "DISPOSED", /disposed/);
    for (let i = 0; i < f.before.length; i++) expectSame(f.before[i], f.copies[i], `result ${i}`);
    expect(() => f.layer.dispose()).not.toThrow();
  });
});

// ---- ownership of results ------------------------------------------------------------------------

describe("results belong to the caller", () => {
  it("every call returns fresh arrays that the next call does not overwrite (and that the caller may write)", async () => {
    const f = await fixture();
    const first = await f.layer.forward(f.x, { train: true, noise: f.noise });
    const kept = copy(first);
    const second = await f.layer.forward(new Rng(99).normals(7 * d), { train: true, seed: 4 });
    for (const key of ["y", "topkIndices", "topkGates", "importance", "load"] as const) {
      expect(second[key], key).not.toBe(first[key]);
      expect(second[key]!.buffer, key).not.toBe(first[key]!.buffer);
    }
    expectSame(first, kept, "first result after a second call");
    // scribbling on a result does not reach the layer
    first.y.fill(123);
    first.topkIndices.fill(-1);
    first.topkGates.fill(5);
    expectSame(await f.layer.forward(f.x, { train: true, noise: f.noise }), kept, "the same call again");
    f.layer.dispose();
  });

  it("out buffers are written in place and returned; the others are fresh", async () => {
    const f = await fixture();
    const fresh = f.copies[0];
    const out = { y: new Float32Array(B * d), topkIndices: new Int32Array(B * k), topkGates: new Float32Array(B * k) };
    const result = await f.layer.forward(f.x, { train: true, noise: f.noise, out });
    expect(result.y).toBe(out.y);
    expect(result.topkIndices).toBe(out.topkIndices);
    expect(result.topkGates).toBe(out.topkGates);
    expectSame(result, fresh, "in-place result");

    const onlyY = { y: new Float32Array(B * d) };
    const partial = await f.layer.forward(f.x, { train: true, noise: f.noise, out: onlyY });
    expect(partial.y).toBe(onlyY.y);
    expect(partial.topkGates).not.toBe(out.topkGates);
    expectSame(partial, fresh, "partly in-place result");

    // the next call writes the same buffers again, and only when it is given them
    await f.layer.forward(new Rng(5).normals(B * d), { train: true, seed: 2, out });
    expect(sameBits(out.y, fresh.y)).toBe(false);
    expect(sameBits(onlyY.y, fresh.y)).toBe(true);
    f.layer.dispose();
  });
});
