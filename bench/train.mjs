// The training step, timed: forward (train) + backward + Adam step of edge-moe at 1 and 2 threads,
// against edge-moe's inference forward alone and against the same layer trained through TF.js's
// autograd (tfjs-core + its wasm backend, tf.variableGrads over the same J = Σ y·dy + L_importance
// + L_load, tf.train.adam). One process, the engines interleaved round by round; medians; every
// ratio is of medians from the same run.
//
//   node bench/train.mjs [--batch 64] [--rounds 7] [--cases relu,swiglu d512…] [--no-tfjs] [--check]
//
// --check first compares the TF.js gradients with edge-moe's on a small layer (the peer computes
// the same J). Results print as a Markdown table; --out FILE also writes them as JSON.
import { writeFile } from "node:fs/promises";
import { bestWasmBuild, createMoE } from "../dist/index.js";
import { BATCHES, caseName, EXPERTS, fillUniform, makeInput, makeWeights, SHAPES } from "./cases.mjs";

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const batch = Number(option("--batch", 64));
const rounds = Number(option("--rounds", 7));
const only = option("--cases", undefined)
  ?.split(",")
  .map((s) => s.trim());
const useTf = !flag("--no-tfjs");
const build = `${bestWasmBuild()}-threads`;
const W_IMPORTANCE = 0.1;
const W_LOAD = 0.1;
const NOISE_EPSILON = 1e-2;
const CV_EPSILON = 1e-10; // as assembly/losses.ts
const ADAM = { lr: 1e-4, optimizer: "adam" };
void BATCHES;

/**
 * tfjs-core's Node build registers no gradient functions (the @tensorflow/tfjs union package
 * imports them). Its ESM register_all_gradients, bundled: the gradient registry and the engine
 * live in a global namespace that both copies share.
 */
async function registerGradients() {
  const { build } = await import("esbuild");
  const entry = new URL("../node_modules/@tensorflow/tfjs-core/dist/register_all_gradients.js", import.meta.url).pathname;
  const bundle = await build({ entryPoints: [entry], bundle: true, write: false, format: "esm", platform: "node", logLevel: "error" });
  await import(`data:text/javascript;base64,${Buffer.from(bundle.outputFiles[0].text).toString("base64")}`);
}

let tf;
if (useTf || flag("--check")) {
  tf = await import("@tensorflow/tfjs-core");
  await registerGradients();
  await import("@tensorflow/tfjs-backend-wasm");
  await tf.setBackend("wasm");
  await tf.ready();
}

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/**
 * The layer trained by TF.js's autograd: variables for x and every weight; routing (top-k + 1
 * indices) read back to JS and turned into constant one-hot masks; the gates a softmax over the
 * selected H; the experts per routed group (rows picked by one-hot matMuls, matMul, activation),
 * summed back into y the same way; importance and the smooth load estimator Φ((clean − threshold)/std) as the
 * package defines them (docs/training.md). Returns step(x, dy, noise) → dx (Float32Array).
 */
function createTfjsTrainer({ d, h, n, k }, expert, w, batchRows) {
  const swiglu = expert === "swiglu";
  const v = (values, shape, name) => tf.variable(tf.tensor(values, shape), true, name);
  const x = tf.variable(tf.zeros([batchRows, d]), true, "x");
  const wGate = v(w.wGate, [d, n], "wGate");
  const wNoise = v(w.wNoise, [d, n], "wNoise");
  const slice = (a, e, size) => a.subarray(e * size, (e + 1) * size);
  const experts = [];
  for (let e = 0; e < n; e++) {
    experts.push(
      swiglu
        ? {
            wg: v(slice(w.wGateProj, e, d * h), [d, h], `wg${e}`),
            wu: v(slice(w.wUp, e, d * h), [d, h], `wu${e}`),
            wd: v(slice(w.wDown, e, h * d), [h, d], `wd${e}`),
          }
        : {
            w1: v(slice(w.w1, e, d * h), [d, h], `w1_${e}`),
            b1: v(slice(w.b1, e, h), [h], `b1_${e}`),
            w2: v(slice(w.w2, e, h * d), [h, d], `w2_${e}`),
            b2: v(slice(w.b2, e, d), [d], `b2_${e}`),
          },
    );
  }
  const optimizer = tf.train.adam(ADAM.lr);
  const cv2 = (t) => {
    const mean = tf.mean(t);
    return tf.div(tf.mean(tf.square(tf.sub(t, mean))), tf.add(tf.square(mean), CV_EPSILON));
  };

  function loss(dy, noise) {
    const B = batchRows;
    const clean = tf.matMul(x, wGate);
    const std = tf.add(tf.softplus(tf.matMul(x, wNoise)), NOISE_EPSILON);
    const H = tf.add(clean, tf.mul(noise, std));
    const idx = tf.topk(H, k + 1).indices.dataSync(); // [B, k + 1], routing is piecewise constant
    const top = new Float32Array(B * k * n);
    const next = new Float32Array(B * n);
    const kth = new Float32Array(B * n);
    const inTop = new Float32Array(B * n);
    const rowsOf = Array.from({ length: n }, () => []);
    for (let r = 0; r < B; r++) {
      for (let s = 0; s < k; s++) {
        const e = idx[r * (k + 1) + s];
        top[(r * k + s) * n + e] = 1;
        inTop[r * n + e] = 1;
        rowsOf[e].push(r);
      }
      next[r * n + idx[r * (k + 1) + k]] = 1;
      kth[r * n + idx[r * (k + 1) + k - 1]] = 1;
    }
    const topMask = tf.tensor3d(top, [B, k, n]);
    const gates = tf.softmax(tf.sum(tf.mul(tf.expandDims(H, 1), topMask), 2)); // [B, k]
    const inTopT = tf.tensor2d(inTop, [B, n]);
    const thrIn = tf.sum(tf.mul(H, tf.tensor2d(next, [B, n])), 1, true);
    const thrOut = tf.sum(tf.mul(H, tf.tensor2d(kth, [B, n])), 1, true);
    const thr = tf.add(tf.mul(inTopT, thrIn), tf.mul(tf.sub(1, inTopT), thrOut));
    const z = tf.div(tf.sub(clean, thr), std);
    const load = tf.sum(tf.mul(0.5, tf.add(1, tf.erf(tf.mul(z, Math.SQRT1_2)))), 0);

    const gatesFull = tf.sum(tf.mul(tf.expandDims(gates, 2), topMask), 1); // [B, n]
    const importance = tf.sum(gatesFull, 0);
    // Rows to experts and back by one-hot matMuls: the gradient of tf.gather needs
    // UnsortedSegmentSum, which the wasm backend does not have (it costs B/(2h) of the experts' work).
    const ys = [];
    for (let e = 0; e < n; e++) {
      const m = rowsOf[e].length;
      if (m === 0) continue;
      const select = new Float32Array(m * B);
      rowsOf[e].forEach((r, i) => {
        select[i * B + r] = 1;
      });
      const S = tf.tensor2d(select, [m, B]);
      const xe = tf.matMul(S, x);
      const W = experts[e];
      let oe;
      if (swiglu) {
        const gp = tf.matMul(xe, W.wg);
        oe = tf.matMul(tf.mul(tf.mul(gp, tf.sigmoid(gp)), tf.matMul(xe, W.wu)), W.wd);
      } else {
        const he = tf.fused.matMul({ a: xe, b: W.w1, bias: W.b1, activation: "relu" });
        oe = tf.fused.matMul({ a: he, b: W.w2, bias: W.b2 });
      }
      const ge = tf.matMul(S, tf.slice(gatesFull, [0, e], [B, 1])); // [m, 1]
      ys.push(tf.matMul(S, tf.mul(oe, ge), true, false));
    }
    const y = ys.length === 1 ? ys[0] : tf.addN(ys);
    return tf.addN([tf.sum(tf.mul(y, dy)), tf.mul(W_IMPORTANCE, cv2(importance)), tf.mul(W_LOAD, cv2(load))]);
  }

  /** One training step; `apply` false computes the gradients only. Returns dx and the gradients (when kept). */
  function step(xValues, dyValues, noiseValues, { apply = true, keep = false } = {}) {
    x.assign(tf.tensor2d(xValues, [batchRows, d]));
    let kept;
    tf.tidy(() => {
      const dy = tf.tensor2d(dyValues, [batchRows, d]);
      const noise = tf.tensor2d(noiseValues, [batchRows, n]);
      const { value, grads } = tf.variableGrads(() => loss(dy, noise));
      value.dispose();
      const dx = grads.x.dataSync();
      if (keep) kept = { x: dx, wGate: grads.wGate.dataSync(), wNoise: grads.wNoise.dataSync(), first: grads[swiglu ? "wg0" : "w1_0"].dataSync() };
      delete grads.x;
      if (apply) optimizer.applyGradients(grads);
      for (const g of Object.values(grads)) g.dispose();
    });
    return kept;
  }

  function dispose() {
    x.dispose();
    wGate.dispose();
    wNoise.dispose();
    for (const W of experts) for (const t of Object.values(W)) t.dispose();
    optimizer.dispose();
  }
  return { step, dispose };
}

const configOf = (shape, expert, weights) => ({
  dModel: shape.d,
  dHidden: shape.h,
  numExperts: shape.n,
  k: shape.k,
  expert,
  weights,
  noisyGating: true,
  noiseEpsilon: NOISE_EPSILON,
  wImportance: W_IMPORTANCE,
  wLoad: W_LOAD,
  backend: "cpu",
  wasmBuild: build,
});

const relErr = (a, b) => {
  let num = 0,
    den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
};

/** The TF.js peer's gradients against edge-moe's, on a small layer: the two compute the same J. */
async function check() {
  const shape = { d: 24, h: 40, n: 6, k: 2 };
  for (const expert of EXPERTS) {
    const weights = makeWeights(shape, expert, 3);
    const B = 16;
    const x = makeInput(B, shape.d);
    const dy = fillUniform(new Float32Array(B * shape.d), 5, 1);
    const noise = fillUniform(new Float32Array(B * shape.n), 6, 1.5);
    const layer = await createMoE({ ...configOf(shape, expert, weights), threads: 2 });
    layer.forwardSync(x, { train: true, noise });
    const ours = await layer.backward(dy);
    layer.dispose();
    const peer = createTfjsTrainer(shape, expert, weights, B);
    const theirs = peer.step(x, dy, noise, { apply: false, keep: true });
    peer.dispose();
    const first = expert === "swiglu" ? ours.wGateProj.subarray(0, shape.d * shape.h) : ours.w1.subarray(0, shape.d * shape.h);
    const errs = {
      x: relErr(ours.x, theirs.x),
      wGate: relErr(ours.wGate, theirs.wGate),
      wNoise: relErr(ours.wNoise, theirs.wNoise),
      expert0: relErr(first, theirs.first),
    };
    console.log(
      `check ${expert}: relative error of the TF.js gradients against edge-moe's: ${Object.entries(errs)
        .map(([k, e]) => `${k} ${e.toExponential(1)}`)
        .join(", ")}`,
    );
    if (Object.values(errs).some((e) => !(e < 1e-3))) throw new Error(`the TF.js peer's gradients differ from edge-moe's (${expert})`);
  }
}

async function timeCase(shape, expert) {
  const weights = makeWeights(shape, expert);
  const x = makeInput(batch, shape.d);
  const dy = fillUniform(new Float32Array(batch * shape.d), 7 + batch, 1 / Math.sqrt(batch * shape.d));
  const noise = fillUniform(new Float32Array(batch * shape.n), 11 + batch, 1.7);
  const engines = [];
  const layers = [];
  for (const threads of [1, 2]) {
    const layer = await createMoE({ ...configOf(shape, expert, weights), threads });
    layers.push(layer);
    engines.push({ name: `forward ${threads}T`, run: () => layer.forwardSync(x) });
    const parts = { forward: [], backward: [], step: [] };
    engines.push({
      name: `train ${threads}T`,
      parts,
      run: async () => {
        const t0 = performance.now();
        layer.forwardSync(x, { train: true, noise });
        const t1 = performance.now();
        await layer.backward(dy, { weights: false });
        const t2 = performance.now();
        await layer.step(ADAM);
        parts.forward.push(t1 - t0);
        parts.backward.push(t2 - t1);
        parts.step.push(performance.now() - t2);
      },
    });
  }
  let peer;
  let tfjsError;
  if (useTf && tfjsBroken) tfjsError = "not run: TF.js failed on an earlier case of this run";
  if (useTf && !tfjsBroken) {
    try {
      peer = createTfjsTrainer(shape, expert, weights, batch);
      peer.step(x, dy, noise); // warm-up: XNNPACK's packing, Adam's moments
      engines.push({ name: "train tfjs", run: () => peer.step(x, dy, noise) });
    } catch (error) {
      // e.g. its wasm heap cannot hold the weights, their gradients and Adam's moments; the
      // backend is not usable after that, so TF.js is left out of the rest of the run
      tfjsError = String(error?.message ?? error);
      tfjsBroken = true;
      peer = undefined;
    }
  }
  const times = new Map(engines.map((e) => [e.name, []]));
  for (const e of engines) if (e.name !== "train tfjs") await e.run(); // warm-up: first calls, Adam's moments
  for (const e of engines) if (e.parts) for (const v of Object.values(e.parts)) v.length = 0;
  for (let r = 0; r < rounds; r++) {
    // interleaved, the order rotating each round
    for (let i = 0; i < engines.length; i++) {
      const e = engines[(i + r) % engines.length];
      const t0 = performance.now();
      await e.run();
      times.get(e.name).push(performance.now() - t0);
    }
  }
  for (const layer of layers) layer.dispose();
  peer?.dispose();
  const ms = Object.fromEntries([...times].map(([name, t]) => [name, median(t)]));
  const parts = Object.fromEntries(
    engines.filter((e) => e.parts).map((e) => [e.name, Object.fromEntries(Object.entries(e.parts).map(([k, v]) => [k, median(v)]))]),
  );
  return { case: caseName(shape, expert), batch, rounds, ms, parts, tfjsError, raw: Object.fromEntries(times) };
}

if (flag("--check")) await check();
const results = [];
const splits = [];
let tfjsBroken = false;
console.log(`edge-moe ${build}, B = ${batch}, ${rounds} interleaved rounds, medians (ms)${useTf ? "; TF.js wasm backend, one thread" : ""}`);
console.log(
  "| case | forward 1T | forward 2T | train 1T | train 2T | train/forward 1T | train/forward 2T | train 1T/2T | tfjs train | tfjs/edge-moe 1T | tfjs/edge-moe 2T |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|---|");
for (const shape of SHAPES) {
  for (const expert of EXPERTS) {
    if (only && !only.some((s) => caseName(shape, expert).includes(s))) continue;
    const r = await timeCase(shape, expert);
    results.push(r);
    const m = r.ms;
    const f = (v) => (v === undefined ? "–" : v.toFixed(v < 10 ? 2 : 1));
    const ratio = (a, b) => (a === undefined || b === undefined ? "–" : `${(a / b).toFixed(2)}×`);
    r.ratios = {
      trainOverForward1T: m["train 1T"] / m["forward 1T"],
      trainOverForward2T: m["train 2T"] / m["forward 2T"],
      speedup2T: m["train 1T"] / m["train 2T"],
      tfjsOver1T: m["train tfjs"] / m["train 1T"],
      tfjsOver2T: m["train tfjs"] / m["train 2T"],
    };
    const split = Object.entries(r.parts).map(([name, p]) => `${name}: forward ${f(p.forward)} + backward ${f(p.backward)} + Adam ${f(p.step)}`);
    splits.push(`${r.case}: ${split.join("; ")}${r.tfjsError ? `; TF.js failed: ${r.tfjsError}` : ""}`);
    console.log(
      `| ${r.case} | ${f(m["forward 1T"])} | ${f(m["forward 2T"])} | ${f(m["train 1T"])} | ${f(m["train 2T"])} | ${ratio(m["train 1T"], m["forward 1T"])} | ${ratio(m["train 2T"], m["forward 2T"])} | ${ratio(m["train 1T"], m["train 2T"])} | ${f(m["train tfjs"])} | ${ratio(m["train tfjs"], m["train 1T"])} | ${ratio(m["train tfjs"], m["train 2T"])} |`,
    );
  }
}
console.log("\nmedians of the parts (ms):");
for (const line of splits) console.log(`- ${line}`);
const out = option("--out", undefined);
if (out) await writeFile(out, JSON.stringify({ build, batch, rounds, node: process.versions.node, results }, null, 1));
process.exit(0); // TF.js must not keep the process alive
