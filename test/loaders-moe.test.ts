/// <reference path="../src/wgsl.d.ts" />
// loadMoE (src/loaders/load-moe.ts): every family fixture as a working block on the wasm engine
// (createMoE), against the float64 golden of the modeling code's rules: same experts in the same
// order, same gates, y within 1e-5 of max |y|; shared experts included.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MoEError } from "../src/errors.ts";
import type { loadMoE as LoadMoE } from "../src/loaders/load-moe.ts";
import { readSafetensors } from "../src/safetensors.ts";

// src/loaders/load-moe.ts bundled as scripts/build.mjs bundles the package (WGSL as text).
let loadMoE: typeof LoadMoE;
const out = mkdtempSync(`${tmpdir()}/edge-moe-loadmoe-`);
beforeAll(async () => {
  await build({
    entryPoints: [new URL("../src/loaders/load-moe.ts", import.meta.url).pathname],
    outfile: `${out}/load-moe.mjs`,
    bundle: true,
    format: "esm",
    platform: "neutral",
    loader: { ".wgsl": "text" },
    external: ["node:*", "webgpu"],
    logLevel: "warning",
  });
  ({ loadMoE } = await import(`${out}/load-moe.mjs`));
});
afterAll(() => rmSync(out, { recursive: true, force: true }));

const fixtures = new URL("./fixtures/families/", import.meta.url).pathname;
const wasm = readFileSync(new URL("../dist/edge-moe.simd.wasm", import.meta.url));
const FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "switch_transformers"] as const;

function fixture(family: string) {
  const dir = `${fixtures}${family}/`;
  const golden = readSafetensors(readFileSync(`${dir}golden.safetensors`));
  const config = JSON.parse(readFileSync(`${dir}config.json`, "utf8"));
  const files = family === "qwen2_moe"
    ? Object.fromEntries(["model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"].map((f) => [f, `${dir}${f}`]))
    : { "model.safetensors": `${dir}model.safetensors` };
  return {
    config, files,
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
      expect((error as MoEError).message).toMatch(/B × 16 values \(hidden_size 16\), got 15 values/);
    } finally {
      layer.dispose();
    }
  });
});
