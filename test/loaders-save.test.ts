// saveMoE: every family fixture loaded, saved in its family's layout and loaded back gives the same
// weights, router and outputs bit for bit — also after training steps (the current weights are
// saved) — and a layer made by createMoE saves under a family it fits, with INVALID_CONFIG for one
// it does not.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { createMoE, loadMoE, readSafetensors, saveMoE, type MoEError, type MoEWeights } from "edge-moe";
import { Rng, sameBits } from "./helpers.ts";

const fixtures = new URL("./fixtures/families/", import.meta.url).pathname;
const FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "switch_transformers"] as const;

function fixture(family: string) {
  const dir = `${fixtures}${family}/`;
  const golden = readSafetensors(readFileSync(`${dir}golden.safetensors`));
  const config = JSON.parse(readFileSync(`${dir}config.json`, "utf8"));
  const files =
    family === "qwen2_moe"
      ? Object.fromEntries(
          ["model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"].map((f) => [f, `${dir}${f}`]),
        )
      : { "model.safetensors": `${dir}model.safetensors` };
  return { config, files, layer: Number(golden.metadata.layer), x: golden.tensors.x.data as Float32Array };
}

function expectSameWeights(a: MoEWeights, b: MoEWeights): void {
  expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
  for (const key of Object.keys(a) as Array<keyof MoEWeights>) expect(sameBits(a[key]!, b[key]!), key).toBe(true);
}

async function code(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (e) {
    return (e as MoEError).code;
  }
  return "resolved";
}

describe("saveMoE → loadMoE: the same layer, bit for bit, in each family's layout", () => {
  it.each(FAMILIES.map((f) => [f]))("%s", async (family) => {
    const fx = fixture(family);
    const layer = await loadMoE({ config: fx.config, files: fx.files, layer: fx.layer });
    // train it a little first: the saved weights are the current ones, not the loaded ones
    // (switch_transformers' experts have no biases, which training would move: saved as loaded)
    if (family !== "switch_transformers") {
      await layer.forward(fx.x, { train: true });
      await layer.backward(Float32Array.from(fx.x, (v, i) => Math.sin(i) * 0.1));
      await layer.step({ lr: 1e-2 });
    }
    const saved = await saveMoE(layer);
    expect(saved.config.model_type).toBe(family);
    // JSON round trip, as a config.json file would go; the checkpoint from bytes
    const config = JSON.parse(JSON.stringify(saved.config));
    const file = readSafetensors(saved.files["model.safetensors"]);
    for (const t of layer.description.tensors) expect(file.tensors[t.name]?.shape, t.name).toEqual(t.shape);
    const back = await loadMoE({ config, files: saved.files, layer: fx.layer });
    try {
      expect(back.description.prefix).toBe(layer.description.prefix);
      expect(back.description.routing).toEqual(layer.description.routing);
      expect(back.description.shared).toEqual(layer.description.shared);
      expectSameWeights(await back.getWeights(), await layer.getWeights());
      const [a, b] = [layer.forwardSync(fx.x), back.forwardSync(fx.x)];
      expect(sameBits(a.y, b.y)).toBe(true);
      expect(Array.from(a.topkIndices)).toEqual(Array.from(b.topkIndices));
      if (family === "switch_transformers") {
        await layer.forward(fx.x, { train: true });
        await layer.backward(Float32Array.from(fx.x, (v, i) => Math.sin(i) * 0.1));
        await layer.step({ lr: 1e-2 });
        expect(await code(saveMoE(layer))).toBe("INVALID_CONFIG");
      }
    } finally {
      back.dispose();
      layer.dispose();
    }
  });
});

describe("saveMoE of a layer made by createMoE", () => {
  const [d, h, n] = [6, 4, 4];
  const rng = new Rng(11);
  const swiglu = () => ({ wGate: rng.normals(d * n), wGateProj: rng.normals(n * d * h), wUp: rng.normals(n * d * h), wDown: rng.normals(n * h * d) });

  it("under a family it fits (mixtral: softmax, renormalised, top-2): loaded back the same", async () => {
    const layer = await createMoE({
      dModel: d,
      dHidden: h,
      numExperts: n,
      k: 2,
      expert: "swiglu",
      noisyGating: false,
      routing: { score: "softmax", renormalize: true },
      weights: swiglu(),
    });
    const saved = await saveMoE(layer, { family: "mixtral", routing: { score: "softmax", renormalize: true }, layer: 3 });
    expect(Object.keys(readSafetensors(saved.files["model.safetensors"]).tensors)).toContain("model.layers.3.block_sparse_moe.experts.3.w2.weight");
    const back = await loadMoE({ config: saved.config, files: saved.files, layer: 3 });
    expectSameWeights(await back.getWeights(), await layer.getWeights());
    const x = rng.normals(5 * d);
    expect(sameBits(back.forwardSync(x).y, layer.forwardSync(x).y)).toBe(true);
    back.dispose();
    layer.dispose();
  });

  it("INVALID_CONFIG without a family, for a router or experts the family does not have, or noisy gating", async () => {
    const layer = await createMoE({
      dModel: d,
      dHidden: h,
      numExperts: n,
      k: 2,
      expert: "swiglu",
      noisyGating: false,
      routing: { score: "softmax" },
      weights: swiglu(),
    });
    expect(await code(saveMoE(layer))).toBe("INVALID_CONFIG");
    // mixtral renormalises; this router does not
    expect(await code(saveMoE(layer, { family: "mixtral", routing: { score: "softmax" } }))).toBe("INVALID_CONFIG");
    // qwen2_moe has a gated shared expert; switch_transformers relu top-1 experts
    expect(await code(saveMoE(layer, { family: "qwen2_moe", routing: { score: "softmax" } }))).toBe("INVALID_CONFIG");
    expect(await code(saveMoE(layer, { family: "switch_transformers", routing: { score: "softmax" } }))).toBe("INVALID_CONFIG");
    expect(await code(saveMoE(layer, { family: "gpt2" as never }))).toBe("INVALID_CONFIG");
    // qwen3_moe without renormalisation fits
    expect((await saveMoE(layer, { family: "qwen3_moe", routing: { score: "softmax" } })).config.norm_topk_prob).toBe(false);
    layer.dispose();
    const noisy = await createMoE({ dModel: d, dHidden: h, numExperts: n, k: 2, expert: "swiglu", weights: { ...swiglu(), wNoise: rng.normals(d * n) } });
    expect(await code(saveMoE(noisy, { family: "mixtral" }))).toBe("INVALID_CONFIG");
    noisy.dispose();
  });
});
