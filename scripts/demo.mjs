// npm run demo: a forward pass of a built-in layer (d=512, h=1024, n=16, k=2, relu, seeded random
// weights), in inference and training mode, with the chosen experts, the losses and the time per call;
// then a layer loaded from a small checkpoint in DeepSeek-V3's layout, written here (no download).
import { createMoE, loadMoE, saveMoE, writeSafetensors } from "../dist/index.js";
import { normalStream } from "./normals.mjs";

const d = 512,
  h = 1024,
  n = 16,
  k = 2;

const stream = normalStream(2017);
const draw = (length, scale) => stream.array(length, scale);
const weights = {
  wGate: draw(d * n, 1 / Math.sqrt(d)),
  wNoise: draw(d * n, 0.5 / Math.sqrt(d)),
  w1: draw(n * d * h, 1 / Math.sqrt(d)),
  b1: draw(n * h, 0.1),
  w2: draw(n * h * d, 1 / Math.sqrt(h)),
  b2: draw(n * d, 0.1),
};

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

async function time(layer, x, options, calls, warmup = 3) {
  // warm-up: V8 runs a wasm function's first calls in its baseline compiler, then tiers it up
  for (let i = 0; i < warmup; i++) await layer.forward(x, options);
  const samples = [];
  for (let i = 0; i < calls; i++) {
    const t0 = performance.now();
    await layer.forward(x, options);
    samples.push(performance.now() - t0);
  }
  return median(samples);
}

// backend "auto": experts on the GPU when there is a WebGPU adapter and the batch is large enough.
const layer = await createMoE({
  dModel: d,
  dHidden: h,
  numExperts: n,
  k,
  expert: "relu",
  weights,
  backend: "auto",
  onWarning: (w) => console.log(`warning: ${w.code}: ${w.message}`),
});
console.log(`edge-moe demo: d=${d} h=${h} n=${n} k=${k} relu, noisy top-${k} gating, seeded random weights`);

const batch = 8;
const x = draw(batch * d, 1);
const evalOut = await layer.forward(x);
console.log(`\ninference, B=${batch} (backend: ${evalOut.backend})`);
for (let r = 0; r < batch; r++) {
  const experts = Array.from(evalOut.topkIndices.subarray(r * k, r * k + k));
  const gates = Array.from(evalOut.topkGates.subarray(r * k, r * k + k), (g) => g.toFixed(3));
  const y = Array.from(evalOut.y.subarray(r * d, r * d + 3), (v) => v.toFixed(4));
  console.log(`  row ${r}: experts [${experts.join(", ")}] gates [${gates.join(", ")}]  y[0..3] = [${y.join(", ")}]`);
}

const trainBatch = 64;
const xTrain = draw(trainBatch * d, 1);
const train = await layer.forward(xTrain, { train: true, seed: 42 });
console.log(`\ntraining mode, B=${trainBatch}, noise seed 42`);
console.log(`  importance  [${Array.from(train.importance, (v) => v.toFixed(2)).join(" ")}]`);
console.log(`  load        [${Array.from(train.load, (v) => v.toFixed(2)).join(" ")}]`);
console.log(`  lossImportance = ${train.lossImportance.toFixed(6)}   lossLoad = ${train.lossLoad.toFixed(6)}`);

const gpu = layer.gpuStatus;
if (gpu.available) {
  const onGpu = await layer.forward(x, { backend: "gpu" });
  let diff = 0;
  for (let i = 0; i < onGpu.y.length; i++) diff = Math.max(diff, Math.abs(onGpu.y[i] - evalOut.y[i]));
  const ms = await time(layer, x, { backend: "gpu" }, 3);
  console.log(`\nGPU: ${gpu.adapter}${gpu.software ? " (a software driver: correct, not fast)" : ""}`);
  console.log(
    `  the same B=${batch} batch on the GPU (backend: ${onGpu.backend}): max |y_gpu − y_cpu| = ${diff.toExponential(2)}, ${ms.toFixed(2)} ms per call`,
  );
} else {
  console.log(`\nGPU: none here (${gpu.reason ?? "no WebGPU adapter"}); the experts ran on the CPU`);
}

console.log("\ntime per forward call (median), CPU:");
for (const b of [1, 8, 64]) {
  const xb = draw(b * d, 1);
  const ms = await time(layer, xb, { backend: "cpu" }, b >= 64 ? 10 : 30);
  const flops = 2 * b * d * n + b * k * 4 * d * h;
  console.log(`  B=${String(b).padStart(3)}  ${ms.toFixed(3).padStart(8)} ms   ${(flops / ms / 1e6).toFixed(1).padStart(6)} GFLOP/s useful`);
}

// The same weights stored quantized: the routing is the f32 layer's, y within the dtype's error.
console.log("\nquantized expert weights (the same layer, B=1 on the CPU):");
const x1 = draw(d, 1);
const f32Y = (await layer.forward(x1, { backend: "cpu" })).y;
for (const dtype of ["bf16", "int8", "int4"]) {
  const q = await createMoE({ dModel: d, dHidden: h, numExperts: n, k, expert: "relu", weights, dtype });
  const r = await q.forward(x1);
  let num = 0;
  let den = 0;
  for (let i = 0; i < d; i++) {
    num += (r.y[i] - f32Y[i]) ** 2;
    den += f32Y[i] ** 2;
  }
  const ms = await time(q, x1, {}, 30, 100);
  console.log(`  ${dtype.padEnd(5)} ${ms.toFixed(3).padStart(8)} ms   y within ${Math.sqrt(num / den).toExponential(1)} (relative RMS) of f32's`);
  q.dispose();
}
layer.dispose();

// ---- a checkpoint in a real family's layout ---------------------------------------------------
// A small DeepSeek-V3 MoE block, written here as the Hugging Face checkpoint would hold it
// (config.json + model.safetensors, [out, in] weights named as the modeling code names them), then
// loaded with loadMoE: sigmoid router with a choice bias, 4 groups of which 2 are kept, top-4,
// renormalised and scaled, and a shared expert.
{
  const config = {
    model_type: "deepseek_v3",
    hidden_size: 128,
    moe_intermediate_size: 64,
    n_routed_experts: 16,
    num_experts_per_tok: 4,
    n_group: 4,
    topk_group: 2,
    n_shared_experts: 1,
    first_k_dense_replace: 1,
    routed_scaling_factor: 2.5,
    norm_topk_prob: true,
    hidden_act: "silu",
    num_hidden_layers: 2,
  };
  const { hidden_size: dm, moe_intermediate_size: hm, n_routed_experts: nm } = config;
  const p = "model.layers.1.mlp";
  const tensors = {
    [`${p}.gate.weight`]: { dtype: "F32", shape: [nm, dm], data: draw(nm * dm, 1 / Math.sqrt(dm)) },
    [`${p}.gate.e_score_correction_bias`]: { dtype: "F32", shape: [nm], data: draw(nm, 0.05) },
  };
  const mlp = (prefix, width) => {
    tensors[`${prefix}.gate_proj.weight`] = { dtype: "BF16", shape: [width, dm], data: draw(width * dm, 1 / Math.sqrt(dm)) };
    tensors[`${prefix}.up_proj.weight`] = { dtype: "BF16", shape: [width, dm], data: draw(width * dm, 1 / Math.sqrt(dm)) };
    tensors[`${prefix}.down_proj.weight`] = { dtype: "BF16", shape: [dm, width], data: draw(dm * width, 1 / Math.sqrt(width)) };
  };
  for (let e = 0; e < nm; e++) mlp(`${p}.experts.${e}`, hm);
  mlp(`${p}.shared_experts`, hm);
  const checkpoint = writeSafetensors(tensors);

  const loaded = await loadMoE({ config, files: { "model.safetensors": checkpoint }, layer: 1 });
  const { description } = loaded;
  console.log(`\nloaded: ${description.family} ${description.prefix} from a ${(checkpoint.length / 1024).toFixed(0)} KiB checkpoint (bf16 weights)`);
  console.log(
    `  d=${description.dModel} h=${description.dHidden} n=${description.numExperts} k=${description.k}, ${description.routing.score} router, ` +
      `groups ${description.routing.groups.topkGroup} of ${description.routing.groups.nGroup}, scale ${description.routing.scale}, shared expert of width ${description.shared.dHidden}`,
  );
  const xs = draw(4 * dm, 1);
  const out = await loaded.forward(xs);
  for (let r = 0; r < 4; r++) {
    const experts = Array.from(out.topkIndices.subarray(r * 4, r * 4 + 4));
    const gates = Array.from(out.topkGates.subarray(r * 4, r * 4 + 4), (g) => g.toFixed(3));
    console.log(`  row ${r}: experts [${experts.join(", ")}] gates [${gates.join(", ")}]`);
  }
  // one training step through the router and the shared expert, then saved in the family's layout
  await loaded.forward(xs, { train: true });
  await loaded.backward(draw(4 * dm, 0.1));
  await loaded.step({ lr: 1e-3, optimizer: "adam" });
  const saved = await saveMoE(loaded);
  const reloaded = await loadMoE({ config: saved.config, files: saved.files, layer: 1 });
  const [a, b] = [loaded.forwardSync(xs).y, reloaded.forwardSync(xs).y];
  const same = a.every((v, i) => Object.is(v, b[i]));
  console.log(
    `  after one Adam step, saved (saveMoE: ${(saved.files["model.safetensors"].length / 1024).toFixed(0)} KiB, f32) and loaded back: ${same ? "the same outputs, bit for bit" : "DIFFERENT outputs"}`,
  );
  reloaded.dispose();
  loaded.dispose();
  if (!same) process.exitCode = 1;
}
