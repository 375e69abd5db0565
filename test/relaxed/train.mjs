// Run by test/relaxed-train.test.ts as `node --experimental-wasm-relaxed-simd test/relaxed/train.mjs`
// (Node 20 compiles relaxed SIMD only behind that flag): the training path of the relaxed builds on
// every golden case (forward, backward, an SGD and an Adam step), next to the simd build, and the
// Philox known-answer vectors in the relaxed kernels. Prints one JSON report on its last line.
import { readFileSync } from "node:fs";
import { bestWasmBuild, createMoE, readSafetensors } from "../../dist/index.js";

const VECTORS = new URL("../fixtures/vectors/", import.meta.url);
const WEIGHTS = [
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

/** The golden vectors' metric: max|a − b| / max|b| (absolute where b is all zero); Infinity on NaN or a length mismatch. */
function relErr(a, b) {
  if (a.length !== b.length) return Infinity;
  let diff = 0;
  let ref = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= diff)) diff = Number.isNaN(d) ? Infinity : d;
    ref = Math.max(ref, Math.abs(b[i]));
  }
  return ref === 0 ? diff : diff / ref;
}

function sameBits(a, b) {
  if (a.length !== b.length) return false;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return ua.every((v, i) => v === ub[i]);
}

function loadCase(info) {
  const file = readSafetensors(readFileSync(new URL(info.file, VECTORS)));
  const m = file.metadata;
  const t = (name) => file.tensors[name]?.data;
  const weights = {};
  for (const [name, option] of WEIGHTS) if (t(name)) weights[option] = t(name);
  const config = {
    dModel: Number(m.d),
    dHidden: Number(m.h),
    numExperts: Number(m.n),
    k: Number(m.k),
    expert: m.expert,
    noisyGating: m.noisy === "true",
    noiseEpsilon: Number(m.noise_epsilon),
    wImportance: Number(m.w_importance),
    wLoad: Number(m.w_load),
    weights,
    backend: "cpu",
  };
  const grads = { x: t("grad_x") };
  for (const [name, option] of WEIGHTS) if (t(`grad_${name}`)) grads[option] = t(`grad_${name}`);
  return { config, x: t("x"), noise: m.noisy === "true" ? t("noise") : undefined, dy: t("dy"), y: t("y"), grads };
}

const SGD_LR = 0.01;
const ADAM_LR = 0.01;

/** Forward (train), backward, then an SGD step and an Adam step with new forwards and backwards. */
async function train(golden, wasmBuild, threads = 1) {
  const layer = await createMoE({ ...golden.config, wasmBuild, threads });
  try {
    const options = { train: true, noise: golden.noise };
    const forward = await layer.forward(golden.x, options);
    const grads = await layer.backward(golden.dy);
    await layer.step({ lr: SGD_LR });
    const sgd = await layer.getWeights();
    await layer.forward(golden.x, options);
    await layer.backward(golden.dy);
    await layer.step({ lr: ADAM_LR, optimizer: "adam" });
    return { forward, grads, sgd, adam: await layer.getWeights() };
  } finally {
    layer.dispose();
  }
}

const KAT = [
  [
    [0, 0, 0, 0],
    [0, 0],
    [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
  ],
  [
    [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
    [0xffffffff, 0xffffffff],
    [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
  ],
  [
    [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
    [0xa4093822, 0x299f31d0],
    [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
  ],
];

function philoxKat(build) {
  const bytes = readFileSync(new URL(`../../dist/edge-moe.${build}.wasm`, import.meta.url));
  const imports = build.endsWith("-threads") ? { env: { memory: new WebAssembly.Memory({ initial: 17, maximum: 65536, shared: true }) } } : {};
  const { exports } = new WebAssembly.Instance(new WebAssembly.Module(bytes), imports);
  const at = exports.heapBase();
  return KAT.every(([ctr, key, out]) => {
    exports.philoxBlock(at, ...ctr, ...key);
    return Array.from(new Uint32Array(exports.memory.buffer, at, 4)).every((w, i) => w === out[i]);
  });
}

const report = { best: bestWasmBuild(), philox: {}, cases: [] };
for (const build of ["relaxed", "relaxed-threads"]) report.philox[build] = philoxKat(build);
const index = JSON.parse(readFileSync(new URL("index.json", VECTORS), "utf8"));
for (const info of index.cases) {
  const golden = loadCase(info);
  const simd = await train(golden, "simd");
  const relaxed = await train(golden, "relaxed");
  const threaded = await train(golden, "relaxed-threads", 2);
  const entry = {
    name: info.name,
    yGolden: relErr(relaxed.forward.y, golden.y),
    gradGolden: {},
    gradVsSimd: {},
    sgdVsSimd: {},
    adamMaxDiff: 0,
    adamLr: ADAM_LR,
    threadsSameBits: true,
    identicalToSimd: true,
  };
  for (const [key, want] of Object.entries(golden.grads)) entry.gradGolden[key] = relErr(relaxed.grads[key], want);
  for (const [key, grad] of Object.entries(simd.grads)) {
    entry.gradVsSimd[key] = relErr(relaxed.grads[key], grad);
    if (!sameBits(relaxed.grads[key], grad)) entry.identicalToSimd = false;
    if (!sameBits(threaded.grads[key], relaxed.grads[key])) entry.threadsSameBits = false;
  }
  for (const [key, w] of Object.entries(simd.sgd)) {
    entry.sgdVsSimd[key] = relErr(relaxed.sgd[key], w);
    for (let i = 0; i < w.length; i++) entry.adamMaxDiff = Math.max(entry.adamMaxDiff, Math.abs(relaxed.adam[key][i] - simd.adam[key][i]));
    if (!sameBits(threaded.sgd[key], relaxed.sgd[key]) || !sameBits(threaded.adam[key], relaxed.adam[key])) entry.threadsSameBits = false;
  }
  report.cases.push(entry);
}
console.log(JSON.stringify(report));
