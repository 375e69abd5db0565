// The backward pass (layer.backward): the golden vectors' gradients, finite differences on random
// layers of each expert kind (along the gradient, and in random directions at a tolerance that a
// gradient 10% off fails), exact zeros for unchosen experts, the errors, and the rule that a
// rejected call leaves the state of the last training forward intact.
import { describe, expect, it } from "vitest";
import { createMoE, MoEError, type Gradients, type MoEWeights } from "edge-moe";
import { configOf, listCases, loadCase, randomWeights, relErr, Rng, TOL, WEIGHT_NAMES, type GoldenCase, type LayerShape } from "./helpers.ts";

const cases = listCases();
const names = cases.map((c) => c.name);
const caseNamed = (name: string): GoldenCase => loadCase(cases.find((c) => c.name === name)!);

/** The gradient tensors a case's file holds, as [file name, Gradients key]. */
function gradientNames(golden: GoldenCase): Array<[string, keyof Gradients]> {
  const out: Array<[string, keyof Gradients]> = [["grad_x", "x"]];
  for (const [file, option] of WEIGHT_NAMES) {
    if (golden.file.tensors[`grad_${file}`]) out.push([`grad_${file}`, option]);
  }
  return out;
}

async function goldenBackward(golden: GoldenCase, dy: Float32Array): Promise<Gradients> {
  const layer = await createMoE(golden.config);
  await layer.forward(golden.x, { train: true, noise: golden.noise });
  const grads = await layer.backward(dy);
  layer.dispose();
  return grads;
}

async function expectMoEError(promise: Promise<unknown> | (() => unknown), code: string): Promise<MoEError> {
  let error: unknown;
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(MoEError);
  expect((error as MoEError).code).toBe(code);
  return error as MoEError;
}

describe("golden vectors: every gradient of J = Σ y·dy + L_importance + L_load", () => {
  it.each(names)("%s: grad_* match at 1e-4", async (name) => {
    const golden = caseNamed(name);
    const grads = await goldenBackward(golden, golden.f32("dy"));
    const expected = gradientNames(golden);
    expect(Object.keys(grads).sort()).toEqual(expected.map(([, key]) => key).sort());
    for (const [file, key] of expected) {
      expect(relErr(grads[key]!, golden.f32(file)), file).toBeLessThan(TOL);
    }
  });

  it.each(names)("%s: grad_aux_* (dy = 0: the balancing losses alone) match at 1e-4", async (name) => {
    const golden = caseNamed(name);
    const grads = await goldenBackward(golden, new Float32Array(golden.x.length));
    const aux: Array<[string, keyof Gradients]> = [
      ["grad_aux_x", "x"],
      ["grad_aux_w_gate", "wGate"],
    ];
    if (golden.noise) aux.push(["grad_aux_w_noise", "wNoise"]);
    for (const [file, key] of aux) expect(relErr(grads[key]!, golden.f32(file)), file).toBeLessThan(TOL);
    // with dy = 0 nothing reaches the experts
    for (const key of ["w1", "b1", "w2", "b2", "wGateProj", "wUp", "wDown"] as const) {
      if (grads[key])
        expect(
          grads[key]!.every((v) => v === 0),
          key,
        ).toBe(true);
    }
  });

  it("experts that no row chose get exact zeros (case 8: about 20 of 64 unchosen)", async () => {
    const golden = caseNamed("gelu_clean_k4_n64_b17");
    const { d, h, n } = golden.info;
    const grads = await goldenBackward(golden, golden.f32("dy"));
    const chosen = new Set(golden.tensor("topk_indices"));
    expect(n - chosen.size).toBeGreaterThan(10);
    for (let e = 0; e < n; e++) {
      const parts = [
        grads.w1!.subarray(e * d * h, (e + 1) * d * h),
        grads.b1!.subarray(e * h, (e + 1) * h),
        grads.w2!.subarray(e * h * d, (e + 1) * h * d),
        grads.b2!.subarray(e * d, (e + 1) * d),
      ];
      const allZero = parts.every((part) => part.every((v) => v === 0));
      expect(allZero, `expert ${e}`).toBe(!chosen.has(e));
    }
  });
});

// ---- finite differences ---------------------------------------------------------------------

/** J = Σ y·dy + lossImportance + lossLoad of one training forward, in float64 from the outputs. */
async function objective(shape: LayerShape, weights: MoEWeights, x: Float32Array, noise: Float32Array | undefined, dy: Float32Array): Promise<number> {
  const layer = await createMoE(configOf(shape, weights));
  const r = await layer.forward(x, { train: true, noise });
  layer.dispose();
  let j = 0;
  for (let i = 0; i < dy.length; i++) j += r.y[i] * dy[i];
  return j + r.lossImportance! + r.lossLoad!;
}

/**
 * Draws x and noise row by row, redrawing a row until the step of the test cannot flip a discrete
 * choice: the top min(k+2, n) values of H differ by ≥ 0.05 (the experts and the thresholds stay),
 * and (relu) the chosen experts' pre-activations have |a| ≥ 0.02. H in float64, from the
 * definitions (test/fixtures/vectors/README.md).
 */
function wellConditionedInputs(rng: Rng, shape: LayerShape, weights: MoEWeights, rows: number): { x: Float32Array; noise?: Float32Array } {
  const { d, h, n, k } = shape;
  const eps = shape.noiseEpsilon ?? 1e-2;
  const x = new Float32Array(rows * d);
  const noise = shape.noisy ? new Float32Array(rows * n) : undefined;
  for (let r = 0; r < rows; r++) {
    for (;;) {
      const xr = rng.normals(d);
      const nr = rng.normals(n);
      const H = Array.from({ length: n }, (_, i) => {
        let clean = 0;
        let raw = 0;
        for (let j = 0; j < d; j++) {
          clean += xr[j] * weights.wGate![j * n + i];
          if (shape.noisy) raw += xr[j] * weights.wNoise![j * n + i];
        }
        return shape.noisy ? clean + nr[i] * (Math.log1p(Math.exp(raw)) + eps) : clean;
      });
      const order = H.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]);
      const top = order.slice(0, Math.min(k + 2, n));
      let ok = top.every((v, i) => i === 0 || top[i - 1][0] - v[0] >= 0.05);
      if (ok && shape.expert === "relu") {
        for (const [, e] of order.slice(0, k)) {
          for (let c = 0; c < h && ok; c++) {
            let a = weights.b1![e * h + c];
            for (let j = 0; j < d; j++) a += xr[j] * weights.w1![(e * d + j) * h + c];
            ok = Math.abs(a) >= 0.02;
          }
        }
      }
      if (!ok) continue;
      x.set(xr, r * d);
      noise?.set(nr, r * n);
      break;
    }
  }
  return { x, noise };
}

/** θ ± ε·ĝ rounded to float32, ĝ = g/|g|: the step along the gradient, both ways. */
function along(theta: Float32Array, g: Float32Array, eps: number): [Float32Array, Float32Array] {
  const norm = Math.hypot(...g);
  const plus = theta.map((v, i) => v + (eps * g[i]) / norm);
  const minus = theta.map((v, i) => v - (eps * g[i]) / norm);
  return [plus, minus];
}

const FD_SHAPES: Array<LayerShape & { label: string; dyScale: number }> = [];
for (const expert of ["relu", "gelu", "swiglu"] as const) {
  FD_SHAPES.push(
    { label: `${expert}, noisy, k=2 of 6 (smooth load)`, expert, noisy: true, d: 7, h: 12, n: 6, k: 2, wImportance: 0.7, wLoad: 0.9, dyScale: 1 },
    { label: `${expert}, clean, k=2 of 5 (count load)`, expert, noisy: false, d: 9, h: 10, n: 5, k: 2, wImportance: 0.7, wLoad: 0.9, dyScale: 1 },
    {
      label: `${expert}, noisy, k=3 of 5, dy = 0 (balancing losses only)`,
      expert,
      noisy: true,
      d: 6,
      h: 8,
      n: 5,
      k: 3,
      wImportance: 0.8,
      wLoad: 1.1,
      dyScale: 0,
    },
  );
}

describe("finite differences: J(θ + εĝ) − J(θ − εĝ) = ⟨g, Δθ⟩ for every tensor, on random layers", () => {
  it.each(FD_SHAPES.map((s, i) => [s.label, i] as const))("%s", async (_label, index) => {
    const shape = FD_SHAPES[index];
    const rng = new Rng(1000 + index);
    const B = 9;
    const weights = randomWeights(rng, shape);
    const { x, noise } = wellConditionedInputs(rng, shape, weights, B);
    const dy = rng.normals(B * shape.d, shape.dyScale);

    const layer = await createMoE(configOf(shape, weights));
    await layer.forward(x, { train: true, noise });
    const grads = await layer.backward(dy);
    layer.dispose();

    const eps = 1e-3;
    const tensors: Array<keyof Gradients> = ["x", ...(Object.keys(weights) as Array<keyof MoEWeights>)];
    let checked = 0;
    for (const key of tensors) {
      const g = grads[key]!;
      if (g.every((v) => v === 0)) {
        // dy = 0 leaves the experts without gradient; nothing else may be all zero here
        expect(shape.dyScale === 0 && key !== "x" && key !== "wGate" && key !== "wNoise", `${key} is all zero`).toBe(true);
        continue;
      }
      const theta = key === "x" ? x : weights[key as keyof MoEWeights]!;
      const [plus, minus] = along(theta, g, eps);
      const with_ = (t: Float32Array) => (key === "x" ? { w: weights, x: t } : { w: { ...weights, [key]: t }, x });
      const a = with_(plus);
      const b = with_(minus);
      const dj = (await objective(shape, a.w, a.x, noise, dy)) - (await objective(shape, b.w, b.x, noise, dy));
      let predicted = 0;
      for (let i = 0; i < g.length; i++) predicted += g[i] * (plus[i] - minus[i]);
      // predicted ≈ 2ε·|g|; float32 forward passes leave ~1e-6 of noise in J (seen: ≤ 1e-4 relative)
      expect(Math.abs(dj - predicted), `${key}: ΔJ ${dj} vs ⟨g, Δθ⟩ ${predicted}`).toBeLessThan(2e-3 * Math.abs(predicted) + 2e-6);
      checked++;
    }
    expect(checked).toBe(shape.dyScale === 0 ? 3 : tensors.length);
  });
});

/** A random unit direction (standard normals, normalised in float64). */
function randomDirection(rng: Rng, length: number): Float64Array {
  const u = Float64Array.from(rng.normals(length));
  const norm = Math.hypot(...u);
  return u.map((v) => v / norm);
}

/**
 * The tolerance of the random-direction check for a gradient of norm |g| at step ε: the float32
 * forward passes leave ≤ 4e-5·2ε|g| of noise in ΔJ on these layers (seen), a correct gradient
 * passes with a margin of 10; a gradient 10% off in a random direction, or in the wrong layout,
 * misses it (the second test below).
 */
const RANDOM_DIRECTION_TOL = 5e-4;

/** Whether ΔJ over ±εu matches 2ε⟨g, u⟩ within the tolerance. */
function agrees(dj: number, g: Float32Array | Float64Array, u: Float64Array, eps: number, gnorm: number): boolean {
  let predicted = 0;
  for (let i = 0; i < g.length; i++) predicted += 2 * eps * g[i] * u[i];
  return Math.abs(dj - predicted) <= RANDOM_DIRECTION_TOL * 2 * eps * gnorm + 1e-7;
}

describe("finite differences in random directions: J(θ + εu) − J(θ − εu) = 2ε⟨g, u⟩ for random unit u", () => {
  it.each(FD_SHAPES.map((s, i) => [s.label, i] as const))("%s", async (_label, index) => {
    const shape = FD_SHAPES[index];
    const rng = new Rng(5000 + index);
    const B = 9;
    const weights = randomWeights(rng, shape);
    const { x, noise } = wellConditionedInputs(rng, shape, weights, B);
    const dy = rng.normals(B * shape.d, shape.dyScale);

    const layer = await createMoE(configOf(shape, weights));
    await layer.forward(x, { train: true, noise });
    const grads = await layer.backward(dy);
    layer.dispose();

    // ε = 1e-2 moves H by less than half the 0.05 gap between the top choices (and relu
    // pre-activations by less than their 0.02 margin): the step crosses no kink.
    const eps = 1e-2;
    const tensors: Array<keyof Gradients> = ["x", ...(Object.keys(weights) as Array<keyof MoEWeights>)];
    let corruptionsCaught = 0;
    let corruptionsTried = 0;
    for (const key of tensors) {
      const g = grads[key]!;
      const theta = key === "x" ? x : weights[key as keyof MoEWeights]!;
      const gnorm = Math.hypot(...g);
      // A gradient 10% off in a random direction, and one read in reverse order (a layout bug).
      const perturbation = randomDirection(rng, g.length);
      const corrupted = [g.map((v, i) => v + 0.1 * gnorm * perturbation[i]), g.slice().reverse()];
      const missed = corrupted.map(() => 0);
      for (let direction = 0; direction < 3; direction++) {
        const u = randomDirection(rng, g.length);
        const with_ = (t: Float32Array) => (key === "x" ? { w: weights, x: t } : { w: { ...weights, [key]: t }, x });
        const a = with_(theta.map((v, i) => v + eps * u[i]));
        const b = with_(theta.map((v, i) => v - eps * u[i]));
        const dj = (await objective(shape, a.w, a.x, noise, dy)) - (await objective(shape, b.w, b.x, noise, dy));
        expect(agrees(dj, g, u, eps, gnorm), `${key}, direction ${direction}: ΔJ ${dj}, |g| ${gnorm}`).toBe(true);
        corrupted.forEach((wrong, c) => {
          if (agrees(dj, wrong, u, eps, gnorm)) missed[c]++;
        });
      }
      if (gnorm === 0) continue; // dy = 0: no expert gradient to corrupt
      corruptionsTried += corrupted.length;
      corruptionsCaught += missed.filter((m) => m < 3).length;
    }
    // the check has teeth: every corrupted gradient fails in at least one of its three directions
    expect(corruptionsTried).toBeGreaterThanOrEqual(shape.dyScale === 0 ? 6 : 2 * tensors.length);
    expect(corruptionsCaught).toBe(corruptionsTried);
  });
});

// ---- errors and state -----------------------------------------------------------------------

describe("errors: backward needs the state of a training forward and a dy of y's shape", () => {
  const golden = caseNamed("odd_relu_noisy_k2_n8_d13_h37");
  const dy = golden.f32("dy");

  it("NO_FORWARD_STATE before any forward, after an eval forward, after a step, and for a second backward", async () => {
    const layer = await createMoE(golden.config);
    await expectMoEError(layer.backward(dy), "NO_FORWARD_STATE");
    await layer.forward(golden.x);
    await expectMoEError(layer.backward(dy), "NO_FORWARD_STATE");
    await layer.forward(golden.x, { train: true, noise: golden.noise });
    await layer.forward(golden.x, { train: false });
    await expectMoEError(layer.backward(dy), "NO_FORWARD_STATE");
    await layer.forward(golden.x, { train: true, noise: golden.noise });
    await layer.backward(dy);
    await expectMoEError(layer.backward(dy), "NO_FORWARD_STATE");
    await layer.forward(golden.x, { train: true, noise: golden.noise });
    await layer.step({ lr: 1e-3 });
    await expectMoEError(layer.backward(dy), "NO_FORWARD_STATE");
    layer.dispose();
    await expectMoEError(layer.backward(dy), "DISPOSED");
  });

  it("GRAD_SHAPE for a dy of the wrong length, type or with NaN/Inf; the state survives", async () => {
    const layer = await createMoE(golden.config);
    await layer.forward(golden.x, { train: true, noise: golden.noise });
    const error = await expectMoEError(layer.backward(dy.subarray(1)), "GRAD_SHAPE");
    expect(error.message).toMatch(/\[17, 13\]/);
    await expectMoEError(layer.backward(Array.from(dy) as unknown as Float32Array), "GRAD_SHAPE");
    await expectMoEError(layer.backward(new Float64Array(dy) as unknown as Float32Array), "GRAD_SHAPE");
    const bad = dy.slice();
    bad[40] = Number.NaN;
    await expectMoEError(layer.backward(bad), "GRAD_SHAPE");
    bad[40] = Number.POSITIVE_INFINITY;
    await expectMoEError(layer.backward(bad), "GRAD_SHAPE");
    await expectMoEError(layer.backward(dy, { weights: "yes" as unknown as boolean }), "INVALID_CONFIG");
    const grads = await layer.backward(dy);
    expect(relErr(grads.x, golden.f32("grad_x"))).toBeLessThan(TOL);
    expect(relErr(grads.w1!, golden.f32("grad_w1"))).toBeLessThan(TOL);
    layer.dispose();
  });
});

describe("a rejected forward leaves the last training forward's state for backward", () => {
  const golden = caseNamed("odd_swiglu_noisy_k4_n7_d31_h19");
  const { d, n } = golden.info;

  it.each([
    ["x with a NaN, same batch", (x: Float32Array) => ({ x: x.map((v, i) => (i === 5 ? Number.NaN : v)), options: { train: true } })],
    ["x with a NaN, larger batch (the scratch would be laid out anew)", () => ({ x: new Float32Array(64 * d).fill(Number.NaN), options: { train: true } })],
    ["x of the wrong length", () => ({ x: new Float32Array(d + 1), options: {} })],
    ["noise of the wrong length", (x: Float32Array) => ({ x, options: { train: true, noise: new Float32Array(n) } })],
  ] as const)("%s", async (_label, make) => {
    const layer = await createMoE(golden.config);
    await layer.forward(golden.x, { train: true, noise: golden.noise });
    const { x, options } = make(golden.x);
    await expect(layer.forward(x, options)).rejects.toBeInstanceOf(MoEError);
    const grads = await layer.backward(golden.f32("dy"));
    for (const [file, key] of gradientNames(golden)) expect(relErr(grads[key]!, golden.f32(file)), file).toBeLessThan(TOL);
    layer.dispose();
  });
});

describe("backward({ weights: false })", () => {
  it("returns only x, the same x, and step() still applies the full weight gradients", async () => {
    const golden = caseNamed("relu_noisy_k2_n8");
    const full = await createMoE(golden.config);
    const lean = await createMoE(golden.config);
    for (const layer of [full, lean]) await layer.forward(golden.x, { train: true, noise: golden.noise });
    const all = await full.backward(golden.f32("dy"));
    const onlyX = await lean.backward(golden.f32("dy"), { weights: false });
    expect(Object.keys(onlyX)).toEqual(["x"]);
    expect(onlyX.x).toEqual(all.x);
    await full.step({ lr: 0.05 });
    await lean.step({ lr: 0.05 });
    expect(await lean.getWeights()).toEqual(await full.getWeights());
    full.dispose();
    lean.dispose();
  });
});
