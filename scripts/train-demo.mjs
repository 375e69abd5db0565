// npm run train-demo: the paper's Table 6 (Shazeer et al. 2017, appendix A), in miniature.
//
// A small MoE layer learns a task where experts can specialise: each input comes from one of
// `clusters` Gaussian clusters, and each cluster has its own linear target map. It is trained
// twice from the same start, without the balancing losses (wImportance = wLoad = 0) and with
// 0.1 / 0.1, and each run reports, on a held-out batch, the task loss and the paper's balance
// figures: CV(Importance), CV(Load) and max(Load)/mean(Load).
//
// Gating starts at zero (the paper's initialisation: createMoE without gate weights); expert
// weights are drawn by init: { seed }. Adam, batch 64, task loss = mean squared error.
import { pathToFileURL } from "node:url";
import { createMoE } from "../dist/index.js";
import { normalStream } from "./normals.mjs";

export const DEMO = {
  dModel: 16,
  dHidden: 32,
  numExperts: 32,
  k: 2,
  expert: "relu",
  clusters: 8,
  batch: 64,
  heldOut: 2048,
  steps: 3000,
  lr: 3e-3,
  seed: 7,
};

/** The task: cluster centres ~ N(0, 3²), spread N(0, 0.5²) around them, target = A_c · x. */
function makeTask(d, clusters, seed) {
  const rng = normalStream(seed);
  const centres = Array.from({ length: clusters }, () => Float64Array.from({ length: d }, () => 3 * rng.normal()));
  const maps = Array.from({ length: clusters }, () => Float64Array.from({ length: d * d }, () => rng.normal() / Math.sqrt(d)));
  /** A batch of `rows` inputs and targets, from the stream `rng`. */
  const sample = (rows, rng) => {
    const x = new Float32Array(rows * d);
    const target = new Float32Array(rows * d);
    for (let r = 0; r < rows; r++) {
      const c = rng.index(clusters);
      for (let j = 0; j < d; j++) x[r * d + j] = centres[c][j] + 0.5 * rng.normal();
      for (let i = 0; i < d; i++) {
        let sum = 0;
        for (let j = 0; j < d; j++) sum += maps[c][i * d + j] * x[r * d + j];
        target[r * d + i] = sum / 3; // targets of about unit scale
      }
    }
    return { x, target };
  };
  return { sample };
}

const meanSquaredError = (y, target) => {
  let sum = 0;
  for (let i = 0; i < y.length; i++) sum += (y[i] - target[i]) ** 2;
  return sum / y.length;
};

/** Coefficient of variation (population standard deviation / mean) and max/mean of v. */
function balance(v) {
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const variance = v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length;
  return { cv: Math.sqrt(variance) / mean, maxOverMean: Math.max(...v) / mean };
}

/**
 * Trains one layer and measures it on the held-out batch: task loss and experts used (eval mode:
 * experts in the top k of at least 1% of the rows), and the balance figures from a training-mode
 * forward (importance Σ G(x) and load Σ P(x, i), as the layer reports them).
 */
export async function trainOnce({ wImportance, wLoad, steps = DEMO.steps, ...overrides } = {}) {
  const o = { ...DEMO, ...overrides };
  const task = makeTask(o.dModel, o.clusters, o.seed);
  const layer = await createMoE({
    dModel: o.dModel,
    dHidden: o.dHidden,
    numExperts: o.numExperts,
    k: o.k,
    expert: o.expert,
    wImportance,
    wLoad,
    init: { seed: o.seed },
    seed: o.seed,
  });
  const data = normalStream(o.seed + 1);
  const started = performance.now();
  for (let step = 0; step < steps; step++) {
    const { x, target } = task.sample(o.batch, data);
    const { y } = await layer.forward(x, { train: true });
    const dy = new Float32Array(y.length);
    for (let i = 0; i < y.length; i++) dy[i] = (2 * (y[i] - target[i])) / y.length;
    await layer.backward(dy, { weights: false });
    await layer.step({ optimizer: "adam", lr: o.lr });
  }
  const seconds = (performance.now() - started) / 1000;

  const heldOut = task.sample(o.heldOut, normalStream(o.seed + 2));
  const { y, topkIndices } = await layer.forward(heldOut.x);
  const rowsPerExpert = new Array(o.numExperts).fill(0);
  for (const e of topkIndices) rowsPerExpert[e]++;
  const measured = await layer.forward(heldOut.x, { train: true, seed: o.seed });
  layer.dispose();
  const importance = balance(Array.from(measured.importance));
  const load = balance(Array.from(measured.load));
  return {
    wImportance,
    wLoad,
    steps,
    seconds,
    taskLoss: meanSquaredError(y, heldOut.target),
    expertsUsed: rowsPerExpert.filter((rows) => rows >= 0.01 * o.heldOut).length,
    cvImportance: importance.cv,
    cvLoad: load.cv,
    maxOverMeanLoad: load.maxOverMean,
  };
}

export async function trainDemo(options = {}) {
  return [await trainOnce({ ...options, wImportance: 0, wLoad: 0 }), await trainOnce({ ...options, wImportance: 0.1, wLoad: 0.1 })];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const o = DEMO;
  console.log(
    `MoE layer d=${o.dModel} h=${o.dHidden} n=${o.numExperts} k=${o.k} ${o.expert}; ${o.clusters} clusters, ` +
      `each with its own linear map; Adam lr ${o.lr}, batch ${o.batch}, ${o.steps} steps; held-out batch of ${o.heldOut}`,
  );
  const fmt = (v, digits = 2) => v.toFixed(digits).padStart(8);
  console.log(
    `${"w_imp / w_load".padEnd(16)}${"loss".padStart(8)}${"CV(Imp)".padStart(9)}${"CV(Load)".padStart(9)}${"max/mean".padStart(9)}${"used".padStart(9)}${"seconds".padStart(9)}`,
  );
  for (const r of await trainDemo()) {
    console.log(
      `${`${r.wImportance} / ${r.wLoad}`.padEnd(16)}${fmt(r.taskLoss, 4)} ${fmt(r.cvImportance)} ${fmt(r.cvLoad)} ${fmt(r.maxOverMeanLoad)} ${`${r.expertsUsed}/${o.numExperts}`.padStart(8)} ${fmt(r.seconds, 1)}`,
    );
  }
  console.log("paper (256 experts, language modelling): 0 / 0 → 3.04 / 3.01 / 17.80;  0.1 / 0.1 → 0.06 / 0.05 / 1.14");
}
