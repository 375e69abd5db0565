// The layer between two other WebGPU ops, timed as a whole chain:
//
//   x0 ──► layer norm (WGSL) ──► x ──► layer.forward ──► y ──► y·W_out (WGSL) ──► z, read back
//
// resident:  x and y stay GPUBuffers (layer.forward(xBuffer, { out: { y } })): one readback, of z
// readback:  the same chain with Float32Array I/O, as a caller without the resident path writes
//            it: x read back after the layer norm, y uploaded again for the matmul
//
// onnxruntime:  where onnxruntime-web is installed, the same chain with ONNX Runtime's WebGPU
//            execution provider in place of the layer (MatMul for the router logits, then
//            com.microsoft::MoE), Float32Array I/O; on its own device, as ONNX Runtime makes one
//
// The chains end with z read back, and their z are compared. Runs on whatever adapter exists
// (navigator.gpu in Deno and browsers; in Node, Dawn from the `webgpu` package, on the SwiftShader
// Vulkan driver where there is no GPU). On a software adapter the times say nothing about GPUs.
//   node bench/gpu-chain.mjs [--d=256] [--h=512] [--n=16] [--k=2] [--batch=64] [--samples=20] [--expert=relu]
//   deno run -A bench/gpu-chain.mjs …
// Needs `npm run build` (dist/).
import { createMoE } from "../dist/index.js";
import { makeInput, makeWeights } from "./cases.mjs";

const argv = globalThis.Deno ? globalThis.Deno.args : process.argv.slice(2);
const args = Object.fromEntries(
  argv.map((a) => {
    const [k, v] = a.replace(/^--/, "").split("=");
    return [k, v ?? true];
  }),
);
const shape = { d: Number(args.d ?? 256), h: Number(args.h ?? 512), n: Number(args.n ?? 16), k: Number(args.k ?? 2) };
const expert = String(args.expert ?? "relu");
const B = Number(args.batch ?? 64);
const SAMPLES = Number(args.samples ?? 20);
const WARMUP = 3;

// GPUBufferUsage / GPUMapMode bits (Dawn installs no globals)
const MAP_READ = 0x1;
const COPY_SRC = 0x4;
const COPY_DST = 0x8;
const UNIFORM = 0x40;
const STORAGE = 0x80;

async function getGpu() {
  if (globalThis.navigator?.gpu) return globalThis.navigator.gpu;
  const { existsSync, readdirSync } = await import("node:fs");
  const hardware = (existsSync("/dev/dri") && readdirSync("/dev/dri").some((f) => f.startsWith("renderD"))) || existsSync("/dev/nvidia0");
  const swiftshader = "/usr/lib/chromium/vk_swiftshader_icd.json";
  if (!process.env.VK_ICD_FILENAMES && !hardware && existsSync(swiftshader)) process.env.VK_ICD_FILENAMES = swiftshader;
  const { create } = await import("webgpu");
  return create([]);
}

const gpu = await getGpu();
const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
if (!adapter) {
  console.log("gpu-chain: no WebGPU adapter here; nothing to time");
  globalThis.Deno ? globalThis.Deno.exit(0) : process.exit(0);
}
const features = adapter.features.has("subgroups") ? ["subgroups"] : [];
const device = await adapter.requestDevice({
  requiredFeatures: features,
  requiredLimits: { maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize, maxBufferSize: adapter.limits.maxBufferSize },
});
const info = adapter.info ?? {};
const adapterName = info.description || [info.vendor, info.architecture, info.device].filter(Boolean).join(" ") || "unknown adapter";
const software = adapter.isFallbackAdapter || info.isFallbackAdapter || /swiftshader|llvmpipe|lavapipe|software|warp/i.test(adapterName);

// ---- the two ops around the layer ---------------------------------------------------------------

const { d, k } = shape;
// Layer norm per row (no affine): one workgroup per row, a tree sum in workgroup memory.
const layerNormCode = `
struct P { rows: u32, d: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
var<workgroup> part: array<vec2<f32>, 64>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let row = wid.x;
  var s = vec2<f32>(0.0);
  for (var j = li; j < p.d; j += 64u) {
    let v = x[row * p.d + j];
    s += vec2<f32>(v, v * v);
  }
  part[li] = s;
  workgroupBarrier();
  for (var half = 32u; half > 0u; half /= 2u) {
    if (li < half) { part[li] += part[li + half]; }
    workgroupBarrier();
  }
  let mean = part[0].x / f32(p.d);
  let inv = inverseSqrt(max(part[0].y / f32(p.d) - mean * mean, 0.0) + 1e-5);
  for (var j = li; j < p.d; j += 64u) {
    y[row * p.d + j] = (x[row * p.d + j] - mean) * inv;
  }
}`;
// z = y · W_out, [B, d] · [d, d]: one invocation per output.
const matmulCode = `
struct P { rows: u32, d: u32 }
@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> z: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * 65535u * 64u;
  if (i >= p.rows * p.d) { return; }
  let r = i / p.d;
  let c = i % p.d;
  var acc = 0.0;
  for (var j = 0u; j < p.d; j++) { acc += y[r * p.d + j] * w[j * p.d + c]; }
  z[i] = acc;
}`;
const layerNorm = device.createComputePipeline({ layout: "auto", compute: { module: device.createShaderModule({ code: layerNormCode }), entryPoint: "main" } });
const matmul = device.createComputePipeline({ layout: "auto", compute: { module: device.createShaderModule({ code: matmulCode }), entryPoint: "main" } });

const buffer = (bytes, usage = STORAGE | COPY_SRC | COPY_DST) => device.createBuffer({ size: bytes, usage });
const x0 = buffer(4 * B * d);
device.queue.writeBuffer(x0, 0, makeInput(B, d));
const wOut = buffer(4 * d * d);
device.queue.writeBuffer(
  wOut,
  0,
  makeInput(d, d, 7).map((v) => v / Math.sqrt(d)),
);
const params = buffer(16, UNIFORM | COPY_DST);
device.queue.writeBuffer(params, 0, Uint32Array.from([B, d, 0, 0]));
const xBuf = buffer(4 * B * d);
const yBuf = buffer(4 * B * d);
const zBuf = buffer(4 * B * d);
const normGroup = device.createBindGroup({
  layout: layerNorm.getBindGroupLayout(0),
  entries: [x0, xBuf, params].map((b, binding) => ({ binding, resource: { buffer: b } })),
});
const mmGroup = device.createBindGroup({
  layout: matmul.getBindGroupLayout(0),
  entries: [yBuf, wOut, zBuf, params].map((b, binding) => ({ binding, resource: { buffer: b } })),
});

function runPass(pipeline, group, workgroups) {
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(Math.min(workgroups, 65535), Math.ceil(workgroups / 65535));
  pass.end();
  device.queue.submit([encoder.finish()]);
}

async function readBack(source, bytes) {
  const staging = device.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(source, 0, staging, 0, bytes);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(1);
  const out = new Float32Array(staging.getMappedRange().slice(0));
  staging.destroy();
  return out;
}

// ---- ONNX Runtime's com.microsoft::MoE on its WebGPU execution provider (where installed) ----------

// A minimal protobuf (proto3 wire format) writer for one ModelProto.
class Pb {
  parts = [];
  varint(v) {
    let x = BigInt.asUintN(64, BigInt(v));
    do {
      const byte = Number(x & 0x7fn);
      x >>= 7n;
      this.parts.push(x ? byte | 0x80 : byte);
    } while (x);
  }
  key(field, wire) {
    this.varint((field << 3) | wire);
  }
  int(field, v) {
    this.key(field, 0);
    this.varint(v);
    return this;
  }
  bytes(field, v) {
    this.key(field, 2);
    this.varint(v.length);
    for (const b of v) this.parts.push(b);
    return this;
  }
  string(field, v) {
    return this.bytes(field, new TextEncoder().encode(v));
  }
  message(field, m) {
    return this.bytes(field, m.done());
  }
  done() {
    return Uint8Array.from(this.parts);
  }
}

/** y = MoE(x, x·W_g): the layer's eval forward as an ONNX graph (softmax over the top k = softmax over all, renormalised over the top k). */
function ortModel(w) {
  const { d, h, n } = shape;
  // [n, in, out] → the operator's [n, out, in]
  const transpose = (src, rows, cols) => {
    const out = new Float32Array(n * rows * cols);
    for (let e = 0; e < n; e++)
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[e * rows * cols + c * rows + r] = src[e * rows * cols + r * cols + c];
    return out;
  };
  const tensor = (name, dims, data) => {
    const t = new Pb();
    for (const v of dims) t.int(1, v);
    return t
      .int(2, 1)
      .string(8, name)
      .bytes(9, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  };
  const valueInfo = (name, dims) => {
    const dimsPb = new Pb();
    for (const v of dims) dimsPb.message(1, typeof v === "string" ? new Pb().string(2, v) : new Pb().int(1, v));
    return new Pb().string(1, name).message(2, new Pb().message(1, new Pb().int(1, 1).message(2, dimsPb)));
  };
  const gate = new Pb().string(1, "input").string(1, "w_gate").string(2, "router_logits").string(3, "gate").string(4, "MatMul");
  const moe = new Pb()
    .string(1, "input")
    .string(1, "router_logits")
    .string(1, "fc1")
    .string(1, "fc1_bias")
    .string(1, "fc2")
    .string(1, "fc2_bias")
    .string(2, "output")
    .string(3, "moe")
    .string(4, "MoE")
    .string(7, "com.microsoft")
    .message(5, new Pb().string(1, "k").int(3, k).int(20, 2))
    .message(5, new Pb().string(1, "normalize_routing_weights").int(3, 1).int(20, 2))
    .message(5, new Pb().string(1, "activation_type").bytes(4, new TextEncoder().encode("relu")).int(20, 3));
  const graph = new Pb()
    .message(1, gate)
    .message(1, moe)
    .string(2, "moe")
    .message(5, tensor("w_gate", [d, n], w.wGate))
    .message(5, tensor("fc1", [n, h, d], transpose(w.w1, d, h)))
    .message(5, tensor("fc1_bias", [n, h], w.b1))
    .message(5, tensor("fc2", [n, d, h], transpose(w.w2, h, d)))
    .message(5, tensor("fc2_bias", [n, d], w.b2))
    .message(11, valueInfo("input", ["B", d]))
    .message(12, valueInfo("output", ["B", d]));
  return new Pb()
    .int(1, 8)
    .string(2, "edge-moe bench")
    .message(7, graph)
    .message(8, new Pb().string(1, "").int(2, 17))
    .message(8, new Pb().string(1, "com.microsoft").int(2, 1))
    .done();
}

/** The ONNX Runtime chain, or why there is none. */
async function ortChain() {
  if (expert !== "relu") return { reason: "the ONNX Runtime row is built for relu experts (--expert=relu)" };
  const specifier = "onnxruntime-web/webgpu";
  let ort;
  try {
    ort = await import(specifier);
  } catch (error) {
    return { reason: `onnxruntime-web is not installed (${error.message.split("\n")[0]})` };
  }
  try {
    ort.env.wasm.numThreads = 1;
    ort.env.logLevel = "error";
    const session = await ort.InferenceSession.create(ortModel(weights), { executionProviders: ["webgpu"] });
    const chain = async () => {
      runPass(layerNorm, normGroup, B);
      const x = await readBack(xBuf, 4 * B * d);
      const out = await session.run({ input: new ort.Tensor("float32", x, [B, d]) });
      device.queue.writeBuffer(yBuf, 0, out.output.data);
      runPass(matmul, mmGroup, Math.ceil((B * d) / 64));
      return readBack(zBuf, 4 * B * d);
    };
    await chain();
    return { chain, version: ort.env.versions?.web ?? "" };
  } catch (error) {
    return { reason: `onnxruntime-web's WebGPU execution provider failed here: ${String(error?.message ?? error).split("\n")[0]}` };
  }
}

// ---- the chains ---------------------------------------------------------------------------------

const weights = makeWeights(shape, expert);
const layer = await createMoE({ dModel: d, dHidden: shape.h, numExperts: shape.n, k, expert, weights, backend: "gpu", gpu: device });

async function resident() {
  runPass(layerNorm, normGroup, B);
  const out = await layer.forward(xBuf, { out: { y: yBuf } });
  out.topkIndices.destroy();
  out.topkGates.destroy();
  runPass(matmul, mmGroup, Math.ceil((B * d) / 64));
  return readBack(zBuf, 4 * B * d);
}

async function withReadback() {
  runPass(layerNorm, normGroup, B);
  const x = await readBack(xBuf, 4 * B * d);
  const { y } = await layer.forward(x);
  device.queue.writeBuffer(yBuf, 0, y);
  runPass(matmul, mmGroup, Math.ceil((B * d) / 64));
  return readBack(zBuf, 4 * B * d);
}

async function time(name, chain) {
  for (let i = 0; i < WARMUP; i++) await chain();
  const ms = [];
  for (let i = 0; i < SAMPLES; i++) {
    const t0 = performance.now();
    await chain();
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  const q = (p) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))];
  return { name, median: q(0.5), p90: q(0.9) };
}

const zResident = await resident();
const zReadback = await withReadback();
let maxZ = 0;
let maxDiff = 0;
for (let i = 0; i < zResident.length; i++) {
  maxZ = Math.max(maxZ, Math.abs(zReadback[i]));
  maxDiff = Math.max(maxDiff, Math.abs(zResident[i] - zReadback[i]));
}

const rows = [await time("resident (GPUBuffer in and out)", resident), await time("Float32Array I/O (readback + upload)", withReadback)];
const ort = await ortChain();
let ortDiff;
if (ort.chain) {
  const zOrt = await ort.chain();
  ortDiff = 0;
  for (let i = 0; i < zOrt.length; i++) ortDiff = Math.max(ortDiff, Math.abs(zOrt[i] - zReadback[i]));
  rows.push(await time(`onnxruntime-web ${ort.version} MoE (WebGPU EP)`, ort.chain));
}

console.log(`gpu-chain: layer norm → MoE ${expert} d=${d} h=${shape.h} n=${shape.n} k=${k} → matmul [${d}×${d}], B=${B}, ${SAMPLES} samples`);
console.log(`adapter: ${adapterName}${software ? " (software)" : ""}; subgroups: ${features.length ? "yes" : "no"}`);
if (software) {
  console.log("NOTE: a software adapter (a CPU implementation of WebGPU): these times measure that emulation, not a GPU; they only show that the chain runs.");
}
console.log(`z agrees: max |resident − readback| = ${maxDiff.toExponential(2)} (max |z| = ${maxZ.toExponential(2)})`);
for (const r of rows) console.log(`${r.name.padEnd(44)} median ${r.median.toFixed(2).padStart(9)} ms   p90 ${r.p90.toFixed(2).padStart(9)} ms`);
console.log(`resident / readback (median): ${(rows[0].median / rows[1].median).toFixed(2)}`);
if (ortDiff !== undefined) console.log(`onnxruntime z agrees: max |onnxruntime − readback| = ${ortDiff.toExponential(2)}`);
else console.log(`onnxruntime-web (com.microsoft::MoE, WebGPU EP): no row: ${ort.reason}`);

layer.dispose();
for (const b of [x0, wOut, params, xBuf, yBuf, zBuf]) b.destroy();
device.destroy();
globalThis.Deno ? globalThis.Deno.exit(0) : process.exit(0); // Dawn keeps Node alive otherwise
