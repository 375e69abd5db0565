// loadMoE: every family fixture as a layer of the package (the family's router in the gating
// kernels, the shared expert as extra experts), against the float64 golden of the modeling code's
// rules: same experts in the same order, same gates, y within 1e-5 of max |y|; shared experts included;
// and on the GPU back end (a software adapter) within 1e-4.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { loadMoE, readSafetensors, type MoEError } from "edge-moe";
import { gpuSuite, probeGpu } from "./gpu_support.ts";

const probe = await probeGpu();

const fixtures = new URL("./fixtures/families/", import.meta.url).pathname;
const wasm = readFileSync(new URL("../dist/edge-moe.simd.wasm", import.meta.url));
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
  return {
    config,
    files,
    layer: Number(golden.metadata.layer),
    x: golden.tensors.x.data as Float32Array,
    y: new Float64Array(golden.others.y.bytes.slice().buffer),
    topkIndices: golden.tensors.topk_indices.data as Int32Array,
    topkGates: new Float64Array(golden.others.topk_gates.bytes.slice().buffer),
  };
}

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

describe("loadMoE: each family on the wasm engine matches the float64 golden", () => {
  it.each(FAMILIES.map((f) => [f]))("%s", async (family) => {
    const fx = fixture(family);
    const layer = await loadMoE({ config: fx.config, files: fx.files, layer: fx.layer, wasm, wasmBuild: "simd" });
    try {
      const got = await layer.forward(fx.x);
      expect(Array.from(got.topkIndices)).toEqual(Array.from(fx.topkIndices));
      expect(maxDiff(got.topkGates, fx.topkGates)).toBeLessThan(1e-5 * Math.max(1, maxAbs(fx.topkGates)));
      expect(maxDiff(got.y, fx.y) / maxAbs(fx.y)).toBeLessThan(1e-5);
      const sync = layer.forwardSync(fx.x);
      expect(Array.from(sync.y)).toEqual(Array.from(got.y));
      // one row alone gives that row of the batch (rows do not interact)
      const d = fx.x.length / (fx.topkIndices.length / layer.description.k);
      const one = layer.forwardSync(fx.x.subarray(2 * d, 3 * d));
      expect(maxDiff(one.y, got.y.subarray(2 * d, 3 * d))).toBeLessThan(1e-6 * maxAbs(fx.y));
    } finally {
      layer.dispose();
    }
  });

  it("x of the wrong width is INPUT_SHAPE naming hidden_size", async () => {
    const fx = fixture("olmoe");
    const layer = await loadMoE({ config: fx.config, files: fx.files, layer: fx.layer, wasm, wasmBuild: "simd" });
    try {
      let error: unknown;
      try {
        layer.forwardSync(new Float32Array(15));
      } catch (e) {
        error = e;
      }
      expect((error as Error).name).toBe("MoEError");
      expect((error as MoEError).code).toBe("INPUT_SHAPE");
      expect((error as MoEError).message).toMatch(/x.length \(15\) must be a positive multiple of dModel \(16\)/);
    } finally {
      layer.dispose();
    }
  });
});

gpuSuite("loadMoE: each family on the GPU back end (software adapter)", probe, () => {
  it.each(FAMILIES.map((f) => [f]))("%s: the same routing as the golden, y within 1e-4 of max |y|", async (family) => {
    const fx = fixture(family);
    const layer = await loadMoE({ config: fx.config, files: fx.files, layer: fx.layer, wasm, wasmBuild: "simd", backend: "gpu" });
    try {
      const got = await layer.forward(fx.x);
      expect(got.backend).toBe("gpu");
      expect(Array.from(got.topkIndices)).toEqual(Array.from(fx.topkIndices));
      expect(maxDiff(got.y, fx.y)).toBeLessThanOrEqual(1e-4 * maxAbs(fx.y));
    } finally {
      layer.dispose();
    }
  });
});
