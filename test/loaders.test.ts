// The loaders (src/loaders/): every family fixture (scripts/make-family-fixtures.mjs) loads to the
// normalized description and edge-moe's layout; a float32 forward computed from that description
// alone (generic routing: score, choice bias, groups, renormalisation, scale; shared expert)
// matches the float64 golden from the modeling code's rules (test/reference-families.ts).
// Byte sources: paths, bytes, Blob, Response, http(s) with and without range support; only the
// headers and the layer's tensors are read; progress; abort; typed errors.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MoEError } from "../src/errors.ts";
import { loadMoELayer, describeFamily, openSource, type ConvertedLayer, type FileValue, type LoadProgress } from "../src/loaders/index.ts";
import { readSafetensors, writeSafetensors } from "../src/safetensors.ts";

const fixtures = new URL("./fixtures/families/", import.meta.url).pathname;
const FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "switch_transformers"] as const;

interface Fixture {
  family: string;
  dir: string;
  // biome-ignore lint/suspicious/noExplicitAny: a parsed config.json
  config: Record<string, any>;
  layer: number;
  files: string[];
  x: Float32Array;
  y: Float64Array;
  topkIndices: Int32Array;
  topkGates: Float64Array;
  batch: number;
}

function fixture(family: string): Fixture {
  const dir = `${fixtures}${family}/`;
  const golden = readSafetensors(readFileSync(`${dir}golden.safetensors`));
  const f64 = (name: string) => new Float64Array(golden.others[name].bytes.slice().buffer);
  return {
    family,
    dir,
    config: JSON.parse(readFileSync(`${dir}config.json`, "utf8")),
    layer: Number(golden.metadata.layer),
    files: readdirSync(dir).filter((f) => f.startsWith("model")),
    x: golden.tensors.x.data as Float32Array,
    y: f64("y"),
    topkIndices: golden.tensors.topk_indices.data as Int32Array,
    topkGates: f64("topk_gates"),
    batch: golden.tensors.x.shape[0],
  };
}

const pathFiles = (f: Fixture): Record<string, FileValue> => Object.fromEntries(f.files.map((n) => [n, `${f.dir}${n}`]));
const byteFiles = (f: Fixture): Record<string, FileValue> => Object.fromEntries(f.files.map((n) => [n, new Uint8Array(readFileSync(`${f.dir}${n}`))]));

async function expectCode(promise: Promise<unknown> | (() => unknown), code: string, message?: RegExp): Promise<MoEError> {
  let error: unknown;
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (e) {
    error = e;
  }
  expect(error, `expected ${code}`).toBeInstanceOf(MoEError);
  expect((error as MoEError).code).toBe(code);
  if (message) expect((error as MoEError).message).toMatch(message);
  return error as MoEError;
}

// ---- a float32 forward from the normalized description alone ---------------------------------

function forwardF32(layer: ConvertedLayer, x: Float32Array, batch: number) {
  const { dModel: d, dHidden: h, numExperts: n, k, expert, weights } = layer.config;
  const r = layer.routing;
  const y = new Float32Array(batch * d);
  const idx = new Int32Array(batch * k);
  const gates = new Float32Array(batch * k);
  const f = Math.fround;
  const silu = (v: number) => v / (1 + Math.exp(-v));
  // x [d] · W [in, out] at offset
  const mm = (w: Float32Array, off: number, inp: number, out: number, v: Float32Array): Float32Array => {
    const o = new Float32Array(out);
    for (let i = 0; i < inp; i++) for (let j = 0; j < out; j++) o[j] = f(o[j] + f(v[i] * w[off + i * out + j]));
    return o;
  };
  for (let b = 0; b < batch; b++) {
    const xr = x.subarray(b * d, (b + 1) * d);
    const logits = mm(weights.wGate, 0, d, n, xr);
    let scores: Float32Array;
    if (r.score === "sigmoid") scores = logits.map((v) => 1 / (1 + Math.exp(-v)));
    else {
      const m = Math.max(...logits);
      const e = logits.map((v) => Math.exp(v - m));
      const s = e.reduce((a, c) => a + c, 0);
      scores = e.map((v) => v / s);
    }
    let choice = r.choiceBias ? scores.map((v, i) => v + r.choiceBias![i]) : scores.slice();
    const order = (v: ArrayLike<number>) => Array.from({ length: v.length }, (_, i) => i).sort((p, q) => v[q] - v[p] || p - q);
    if (r.groups) {
      const size = n / r.groups.nGroup;
      const gs = Array.from({ length: r.groups.nGroup }, (_, g) =>
        order(choice.subarray(g * size, (g + 1) * size))
          .slice(0, 2)
          .reduce((a, i) => a + choice[g * size + i], 0),
      );
      const kept = new Set(order(gs).slice(0, r.groups.topkGroup));
      choice = choice.map((v, i) => (kept.has(Math.floor(i / size)) ? v : 0));
    }
    const chosen = order(choice).slice(0, k);
    let w = chosen.map((i) => scores[i]);
    if (r.renormalize) {
      const s = w.reduce((a, c) => a + c, 0) + r.renormEpsilon;
      w = w.map((v) => v / s);
    }
    w = w.map((v) => v * r.scale);
    const out = new Float32Array(d);
    chosen.forEach((e, s) => {
      let eo: Float32Array;
      if (expert === "swiglu") {
        const g = mm(weights.wGateProj!, e * d * h, d, h, xr),
          u = mm(weights.wUp!, e * d * h, d, h, xr);
        eo = mm(
          weights.wDown!,
          e * h * d,
          h,
          d,
          g.map((v, i) => silu(v) * u[i]),
        );
      } else {
        const a = mm(weights.w1!, e * d * h, d, h, xr).map((v, i) => Math.max(0, v + weights.b1![e * h + i]));
        eo = mm(weights.w2!, e * h * d, h, d, a).map((v, i) => v + weights.b2![e * d + i]);
      }
      for (let i = 0; i < d; i++) out[i] += w[s] * eo[i];
      idx[b * k + s] = e;
      gates[b * k + s] = w[s];
    });
    if (layer.shared) {
      const { dHidden: hs, wGateProj, wUp, wDown, gate } = layer.shared;
      const g = mm(wGateProj, 0, d, hs, xr),
        u = mm(wUp, 0, d, hs, xr);
      const so = mm(
        wDown,
        0,
        hs,
        d,
        g.map((v, i) => silu(v) * u[i]),
      );
      const factor = gate ? 1 / (1 + Math.exp(-xr.reduce((a, v, i) => a + v * gate[i], 0))) : 1;
      for (let i = 0; i < d; i++) out[i] += factor * so[i];
    }
    y.set(out, b * d);
  }
  return { y, idx, gates };
}

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

// ---- every family ----------------------------------------------------------------------------

describe("family fixtures load to the normalized description and match the float64 golden", () => {
  it.each(FAMILIES.map((f) => [f]))("%s", async (family) => {
    const fx = fixture(family);
    const c = fx.config;
    const layer = await loadMoELayer({ config: c, files: pathFiles(fx), layer: fx.layer });
    const desc = layer.description;
    const expected = {
      mixtral: {
        d: c.hidden_size,
        h: c.intermediate_size,
        n: c.num_local_experts,
        k: c.num_experts_per_tok,
        expert: "swiglu",
        score: "softmax",
        renorm: true,
        scale: 1,
        shared: undefined,
      },
      qwen2_moe: {
        d: c.hidden_size,
        h: c.moe_intermediate_size,
        n: c.num_experts,
        k: c.num_experts_per_tok,
        expert: "swiglu",
        score: "softmax",
        renorm: false,
        scale: 1,
        shared: { dHidden: c.shared_expert_intermediate_size, gated: true },
      },
      qwen3_moe: {
        d: c.hidden_size,
        h: c.moe_intermediate_size,
        n: c.num_experts,
        k: c.num_experts_per_tok,
        expert: "swiglu",
        score: "softmax",
        renorm: true,
        scale: 1,
        shared: undefined,
      },
      olmoe: {
        d: c.hidden_size,
        h: c.intermediate_size,
        n: c.num_experts,
        k: c.num_experts_per_tok,
        expert: "swiglu",
        score: "softmax",
        renorm: false,
        scale: 1,
        shared: undefined,
      },
      deepseek_v3: {
        d: c.hidden_size,
        h: c.moe_intermediate_size,
        n: c.n_routed_experts,
        k: c.num_experts_per_tok,
        expert: "swiglu",
        score: "sigmoid",
        renorm: true,
        scale: 2.5,
        shared: { dHidden: c.moe_intermediate_size * c.n_shared_experts, gated: false },
      },
      switch_transformers: { d: c.d_model, h: c.d_ff, n: c.num_experts, k: 1, expert: "relu", score: "softmax", renorm: false, scale: 1, shared: undefined },
    }[family];
    expect([desc.family, desc.dModel, desc.dHidden, desc.numExperts, desc.k, desc.expert]).toEqual([
      family,
      expected.d,
      expected.h,
      expected.n,
      expected.k,
      expected.expert,
    ]);
    expect([desc.routing.score, desc.routing.renormalize, desc.routing.scale]).toEqual([expected.score, expected.renorm, expected.scale]);
    expect(desc.shared).toEqual(expected.shared);
    expect(desc.layer).toBe(fx.layer);
    if (family === "deepseek_v3") {
      expect(desc.routing.groups).toEqual({ nGroup: 4, topkGroup: 2 });
      expect(desc.routing.renormEpsilon).toBe(1e-20);
      expect(Array.from(desc.routing.choiceBias!)).toEqual(Array.from(Float32Array.from([0.1, -0.6, 0.05, -0.9, 0.2, -0.3, -1.2, 0.0])));
    } else {
      expect(desc.routing.groups).toBeUndefined();
      expect(desc.routing.choiceBias).toBeUndefined();
    }
    if (family === "switch_transformers") expect(desc.notes.join(" ")).toMatch(/expert_capacity \(64\) is ignored: every token goes to its expert/);

    // the layout: router [n, d] → wGate [d, n]; expert 1's first projection [h, d] → [d, h] at 1·d·h
    const { d, h, n } = expected;
    const raw = new Map<string, Float32Array>();
    for (const file of fx.files.filter((f) => f.endsWith(".safetensors"))) {
      const st = readSafetensors(readFileSync(`${fx.dir}${file}`));
      for (const name of Object.keys(st.tensors)) raw.set(name, st.tensors[name].data as Float32Array);
    }
    const router = raw.get(desc.tensors[0].name)!;
    const w = layer.config.weights;
    for (const [i, j] of [
      [0, 0],
      [d - 1, n - 1],
      [3, 1],
    ])
      expect(w.wGate[i * n + j]).toBe(router[j * d + i]);
    const upName = desc.tensors.find((t) => t.expert === 1 && t.role === (expected.expert === "relu" ? "up" : "gate"))!.name;
    const downName = desc.tensors.find((t) => t.expert === 1 && t.role === "down")!.name;
    const first = expected.expert === "relu" ? w.w1! : w.wGateProj!;
    const down = expected.expert === "relu" ? w.w2! : w.wDown!;
    for (const [i, j] of [
      [0, 0],
      [d - 1, h - 1],
      [2, 5],
    ]) {
      expect(first[d * h + i * h + j]).toBe(raw.get(upName)![j * d + i]);
      expect(down[h * d + j * d + i]).toBe(raw.get(downName)![i * h + j]);
    }
    expect(layer.config.noisyGating).toBe(false);

    // the float32 forward from the description vs the float64 golden
    const got = forwardF32(layer, fx.x, fx.batch);
    expect(Array.from(got.idx)).toEqual(Array.from(fx.topkIndices));
    expect(maxDiff(got.gates, fx.topkGates)).toBeLessThan(1e-5 * Math.max(1, expected.scale));
    expect(maxDiff(got.y, fx.y) / maxAbs(fx.y)).toBeLessThan(1e-5);
  });

  it("deepseek_v3's golden has rows where a dropped group's expert (masked to 0.0) is chosen", () => {
    // The fixture's negative correction biases make this happen; it is what the modeling code does.
    const fx = fixture("deepseek_v3");
    const k = fx.config.num_experts_per_tok;
    expect(fx.topkIndices.length).toBe(fx.batch * k);
    const groupsPerRow = Array.from({ length: fx.batch }, (_, b) => new Set(Array.from(fx.topkIndices.subarray(b * k, (b + 1) * k), (e) => e >> 1)).size);
    expect(Math.max(...groupsPerRow)).toBeGreaterThan(fx.config.topk_group);
  });
});

// ---- typed errors ----------------------------------------------------------------------------

describe("typed errors name what is wrong", () => {
  it("unknown model_type, bad config values, bad layer", async () => {
    const fx = fixture("mixtral");
    await expectCode(() => describeFamily({ model_type: "llama" }, 0), "UNKNOWN_MODEL_TYPE", /"llama"; edge-moe loads mixtral, qwen2_moe/);
    await expectCode(() => describeFamily(null, 0), "INVALID_CONFIG", /config.json, parsed/);
    await expectCode(() => describeFamily({ ...fx.config, num_experts_per_tok: 9 }, 0), "INVALID_CONFIG", /num_experts_per_tok \(9\) exceeds the 4 experts/);
    await expectCode(() => describeFamily({ ...fx.config, hidden_act: "gelu" }, 0), "INVALID_CONFIG", /hidden_act is "gelu"/);
    await expectCode(() => describeFamily({ ...fx.config, hidden_size: 0 }, 0), "INVALID_CONFIG", /hidden_size must be an integer ≥ 1/);
    await expectCode(() => describeFamily(fx.config, -1), "INVALID_CONFIG", /layer must be a layer index/);
    const ds = fixture("deepseek_v3").config;
    await expectCode(() => describeFamily({ ...ds, n_group: 3 }, 1), "INVALID_CONFIG", /multiple of n_group/);
    await expectCode(() => describeFamily({ ...ds, topk_group: 5 }, 1), "INVALID_CONFIG", /topk_group \(5\) must be ≤ n_group/);
  });

  it.each([
    ["qwen2_moe", 0, /layer 0 is a dense MLP.*mlp_only_layers/],
    ["qwen3_moe", 0, /layer 0 is a dense MLP.*decoder_sparse_step/],
    ["deepseek_v3", 0, /layer 0 is a dense MLP.*first_k_dense_replace = 1/],
    ["switch_transformers", 0, /layer 0 is a dense MLP.*encoder_sparse_step 2 is not 1/],
  ] as const)("%s layer %d is dense: DENSE_LAYER from the config", async (family, layer, message) => {
    const fx = fixture(family);
    await expectCode(loadMoELayer({ config: fx.config, files: pathFiles(fx), layer }), "DENSE_LAYER", message);
  });

  it("a prefix naming a dense block: DENSE_LAYER from the tensor names; a prefix loads like the index", async () => {
    const fx = fixture("qwen3_moe");
    await expectCode(
      loadMoELayer({ config: { ...fx.config, decoder_sparse_step: 1 }, files: pathFiles(fx), layer: 0 }),
      "DENSE_LAYER",
      /holds model.layers.0.mlp.gate_proj.weight, no router/,
    );
    const byPrefix = await loadMoELayer({ config: fx.config, files: pathFiles(fx), layer: "model.layers.1" });
    const byIndex = await loadMoELayer({ config: fx.config, files: pathFiles(fx), layer: 1 });
    expect(byPrefix.description.prefix).toBe("model.layers.1.mlp");
    expect(byPrefix.config.weights.wDown).toEqual(byIndex.config.weights.wDown);
    await expectCode(loadMoELayer({ config: fx.config, files: pathFiles(fx), layer: 6 }), "DENSE_LAYER", /\(layer \+ 1\) % decoder_sparse_step = 1/);
    await expectCode(loadMoELayer({ config: fx.config, files: pathFiles(fx), layer: 9 }), "MISSING_WEIGHT", /no router model.layers.9.mlp.gate.weight/);
  });

  it("a missing expert tensor, a wrong shape, an unusable dtype", async () => {
    const fx = fixture("olmoe");
    const st = readSafetensors(readFileSync(`${fx.dir}model.safetensors`));
    const without = new Map(
      Object.keys(st.tensors)
        .filter((n) => n !== "model.layers.0.mlp.experts.5.up_proj.weight")
        .map((n) => [n, st.tensors[n]]),
    );
    await expectCode(
      loadMoELayer({ config: fx.config, files: { "model.safetensors": writeSafetensors(without) }, layer: 0 }),
      "MISSING_WEIGHT",
      /tensor model.layers.0.mlp.experts.5.up_proj.weight \(up of expert 5, shape \[8,16\]\) is not in the checkpoint/,
    );
    await expectCode(
      loadMoELayer({ config: { ...fx.config, intermediate_size: 9 }, files: pathFiles(fx), layer: 0 }),
      "WEIGHT_SHAPE",
      /tensor model.layers.0.mlp.experts.0.gate_proj.weight has shape \[8,16\]; the config gives \[9,16\]/,
    );
    const quantized = new Map(
      Object.keys(st.tensors).map((n) => [n, st.tensors[n] as { dtype: string; shape: number[]; data: Float32Array | Int32Array | Uint8Array }]),
    );
    quantized.set("model.layers.0.mlp.experts.2.down_proj.weight", { dtype: "I8", shape: [16, 8], data: new Uint8Array(128) });
    await expectCode(
      loadMoELayer({ config: fx.config, files: { "model.safetensors": writeSafetensors(quantized) }, layer: 0 }),
      "WEIGHT_SHAPE",
      /experts.2.down_proj.weight in model.safetensors has dtype I8; edge-moe reads F32, F16 and BF16/,
    );
  });

  it("a shard the index names is missing; no safetensors at all; a bad value", async () => {
    const fx = fixture("qwen2_moe");
    const files = pathFiles(fx);
    delete files["model-00002-of-00002.safetensors"];
    await expectCode(
      loadMoELayer({ config: fx.config, files, layer: 1 }),
      "MISSING_FILE",
      /names shards that are not in files: model-00002-of-00002.safetensors/,
    );
    await expectCode(loadMoELayer({ config: fx.config, files: { "config.json": "x" }, layer: 1 }), "MISSING_FILE", /no \*.safetensors file/);
    await expectCode(
      loadMoELayer({ config: fx.config, files: { "model.safetensors": 42 as never }, layer: 1 }),
      "SOURCE_ERROR",
      /got number; give a Uint8Array/,
    );
    await expectCode(
      loadMoELayer({ config: fixture("olmoe").config, files: { "model.safetensors": `${fx.dir}nope.safetensors` }, layer: 0 }),
      "SOURCE_ERROR",
      /cannot open .*nope.safetensors/,
    );
    const bad = byteFiles(fixture("olmoe"));
    (bad["model.safetensors"] as Uint8Array)[8] = 0x20;
    await expectCode(loadMoELayer({ config: fixture("olmoe").config, files: bad, layer: 0 }), "BAD_SAFETENSORS", /must start with "\{"/);
  });
});

// ---- byte sources ----------------------------------------------------------------------------

describe("byte sources: every value type, ranged reads, progress, abort", () => {
  let server: Server;
  let base = "";
  const served: Array<{ path: string; range: string | undefined; bytes: number }> = [];
  beforeAll(async () => {
    server = createServer((req, res) => {
      const url = new URL(req.url!, "http://x");
      const ignoreRange = url.pathname.startsWith("/norange/");
      const file = `${fixtures}${url.pathname.replace(/^\/(norange\/)?/, "")}`;
      let body: Buffer;
      try {
        body = readFileSync(file);
      } catch {
        res.writeHead(404).end();
        return;
      }
      const hideSize = url.searchParams.has("hide-size");
      if (req.method === "HEAD") {
        res.writeHead(200, { "content-length": body.length }).end();
        return;
      }
      const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
      if (m && !ignoreRange) {
        const a = Number(m[1]),
          b = Math.min(Number(m[2]), body.length - 1);
        const part = body.subarray(a, b + 1);
        served.push({ path: url.pathname, range: req.headers.range, bytes: part.length });
        res.writeHead(206, { "content-range": `bytes ${a}-${b}/${hideSize ? "*" : body.length}`, "content-length": part.length }).end(part);
      } else {
        served.push({ path: url.pathname, range: undefined, bytes: body.length });
        res.writeHead(200, { "content-length": body.length }).end(body);
      }
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const reference = async (family: string) => {
    const fx = fixture(family);
    return { fx, want: await loadMoELayer({ config: fx.config, files: byteFiles(fx), layer: fx.layer }) };
  };

  it("http(s) with ranges reads the headers and the layer's tensors only (mixtral layer 1 of 2)", async () => {
    const { fx, want } = await reference("mixtral");
    served.length = 0;
    const notes: string[] = [];
    const got = await loadMoELayer({
      config: fx.config,
      files: { "model.safetensors": new URL(`${base}mixtral/model.safetensors`) },
      layer: 1,
      onNote: (n) => notes.push(n),
    });
    expect(got.config.weights).toEqual(want.config.weights);
    expect(notes).toEqual([]);
    expect(served.every((s) => s.range !== undefined)).toBe(true);
    const size = statSync(`${fx.dir}model.safetensors`).size;
    const layerBytes = got.description.tensors.length === 1 + 4 * 3 ? (4 * 16 + 4 * 3 * 12 * 16) * 4 : NaN;
    const total = served.reduce((a, s) => a + s.bytes, 0);
    const headerLength = Number(new DataView(readFileSync(`${fx.dir}model.safetensors`).buffer).getBigUint64(0, true));
    expect(total).toBe(8 + headerLength + layerBytes);
    expect(total).toBeLessThan(size * 0.6);
  });

  it("a server that ignores Range: the whole file once per file, with one note each (sharded qwen2_moe)", async () => {
    const { fx, want } = await reference("qwen2_moe");
    served.length = 0;
    const notes: string[] = [];
    const files = Object.fromEntries(fx.files.map((f) => [f, `${base}norange/qwen2_moe/${f}`]));
    const got = await loadMoELayer({ config: fx.config, files, layer: 1, onNote: (n) => notes.push(n) });
    expect(got.config.weights).toEqual(want.config.weights);
    expect(got.shared).toEqual(want.shared);
    expect(served.map((s) => s.path).sort()).toEqual(fx.files.map((f) => `/norange/qwen2_moe/${f}`).sort());
    expect(notes.length).toBe(3);
    expect(notes[0]).toMatch(/does not answer range requests \(status 200 instead of 206\)/);
  });

  it("a server whose Content-Range hides the size: the size from HEAD", async () => {
    const { fx, want } = await reference("olmoe");
    const got = await loadMoELayer({ config: fx.config, files: { "model.safetensors": `${base}olmoe/model.safetensors?hide-size` }, layer: 0 });
    expect(got.config.weights).toEqual(want.config.weights);
  });

  it("HTTP errors and unreachable URLs are SOURCE_ERROR", async () => {
    const { fx } = await reference("olmoe");
    await expectCode(
      loadMoELayer({ config: fx.config, files: { "model.safetensors": `${base}olmoe/missing.safetensors` }, layer: 0 }),
      "SOURCE_ERROR",
      /answered HTTP 404/,
    );
    const closed = createServer(() => {});
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    await expectCode(
      loadMoELayer({ config: fx.config, files: { "model.safetensors": `http://127.0.0.1:${port}/model.safetensors` }, layer: 0 }),
      "SOURCE_ERROR",
      /fetch http:\/\/127.0.0.1:\d+\/model.safetensors failed/,
    );
  });

  it("Blob, Response, ArrayBuffer and file: URL give the same layer", async () => {
    const { fx, want } = await reference("switch_transformers");
    const bytes = readFileSync(`${fx.dir}model.safetensors`);
    for (const value of [
      new Blob([bytes]),
      new Response(bytes),
      bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length),
      new URL(`file://${fx.dir}model.safetensors`),
    ] as FileValue[]) {
      const got = await loadMoELayer({ config: fx.config, files: { "model.safetensors": value }, layer: 1 });
      expect(got.config.weights, value.constructor.name).toEqual(want.config.weights);
    }
    const used = new Response(bytes);
    await used.arrayBuffer();
    await expectCode(loadMoELayer({ config: fx.config, files: { "model.safetensors": used }, layer: 1 }), "SOURCE_ERROR", /body was already read/);
  });

  it("a path reads at offsets: only the header and the layer; progress is monotone and ends at its total", async () => {
    const fx = fixture("deepseek_v3");
    const progress: LoadProgress[] = [];
    await loadMoELayer({ config: fx.config, files: pathFiles(fx), layer: 1, onProgress: (p) => progress.push({ ...p }) });
    const last = progress[progress.length - 1];
    expect(last.loadedBytes).toBe(last.totalBytes);
    expect(last.file).toBe("model.safetensors");
    for (let i = 1; i < progress.length; i++) expect(progress[i].loadedBytes).toBeGreaterThan(progress[i - 1].loadedBytes);
    expect(progress.every((p) => p.loadedBytes <= p.totalBytes)).toBe(true);
    // layer 0's dense MLP (BF16, 3·32·16·2 bytes) is not read
    expect(last.loadedBytes).toBe(statSync(`${fx.dir}model.safetensors`).size - 3 * 32 * 16 * 2);
  });

  it("an aborted signal: ABORTED before any read, and when aborted mid-load", async () => {
    const fx = fixture("qwen3_moe");
    const early = new AbortController();
    early.abort(new Error("user left"));
    await expectCode(loadMoELayer({ config: fx.config, files: pathFiles(fx), layer: 1, signal: early.signal }), "ABORTED", /aborted \(Error: user left\)/);
    const mid = new AbortController();
    let calls = 0;
    await expectCode(
      loadMoELayer({
        config: fx.config,
        files: { "model.safetensors": `${base}qwen3_moe/model.safetensors` },
        layer: 1,
        signal: mid.signal,
        onProgress: () => {
          if (++calls === 2) mid.abort();
        },
      }),
      "ABORTED",
    );
    expect(calls).toBe(2);
  });

  it("openSource: ranges out of the file are refused", async () => {
    const s = openSource("a.safetensors", new Uint8Array(10));
    expect(await s.size()).toBe(10);
    expect(Array.from(await s.read(2, 4))).toEqual([0, 0]);
    await expectCode(s.read(4, 11), "SOURCE_ERROR", /bytes \[4, 11\) are outside the 10-byte file/);
  });
});

// ---- paths in Deno (Deno.open + seek + read) and Bun (node:fs/promises) ------------------------

describe("paths read at offsets in Deno and Bun as in Node", () => {
  it.each([
    ["deno", ["run", "--allow-read"]],
    ["bun", []],
  ] as const)("%s", async (runtime, args) => {
    const { execFileSync } = await import("node:child_process");
    const { mkdtempSync, writeFileSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const fx = fixture("qwen2_moe");
    const src = new URL("../src/loaders/index.ts", import.meta.url).pathname;
    const dir = mkdtempSync(`${tmpdir()}/edge-moe-load-`);
    try {
      writeFileSync(
        `${dir}/probe.ts`,
        `import { loadMoELayer } from ${JSON.stringify(src)};
const files = ${JSON.stringify(pathFiles(fx))};
let loaded = 0;
const layer = await loadMoELayer({ config: ${JSON.stringify(fx.config)}, files, layer: 1, onProgress: (p) => { loaded = p.loadedBytes; } });
console.log(JSON.stringify({ loaded, deno: typeof (globalThis as any).Deno === "object", wDown: Array.from(layer.config.weights.wDown!), gate: Array.from(layer.shared!.gate!) }));
`,
      );
      const bin = new URL(`../node_modules/.bin/${runtime}`, import.meta.url).pathname;
      const out = JSON.parse(execFileSync(bin, [...args, `${dir}/probe.ts`], { encoding: "utf8", timeout: 60_000 }));
      let loaded = 0;
      const want = await loadMoELayer({ config: fx.config, files: pathFiles(fx), layer: 1, onProgress: (p) => (loaded = p.loadedBytes) });
      expect(out.deno).toBe(runtime === "deno");
      expect(out.wDown).toEqual(Array.from(want.config.weights.wDown!));
      expect(out.gate).toEqual(Array.from(want.shared!.gate!));
      expect(out.loaded).toBe(loaded);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
