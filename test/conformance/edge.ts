// Conformance entry for Vercel's edge-runtime in strict mode (no code generation from strings or
// wasm bytes): the kernels arrive as a WebAssembly.Module compiled outside, in another realm, as
// `globalThis.__edgeMoEWasm` (its bytes as `__edgeMoEBytes`). Leaves the report text in
// `globalThis.__conformance` (a promise).
import { createMoE } from "edge-moe";
import { Report, runConformance, runLoaderChecks } from "./suite.ts";

const g = globalThis as unknown as {
  __edgeMoEWasm: WebAssembly.Module;
  __edgeMoEBytes: Uint8Array;
  __conformance: Promise<string>;
  /** The loader checks' URLs: a local fixture server with and without Range support. */
  __fixtureUrls?: { range: string; whole: string };
};

g.__conformance = (async () => {
  const report = new Report();
  report.lines.push("# edge-runtime (strict)");
  await report.check("strict mode: the module's bytes cannot be compiled here: WASM_LOAD", async () => {
    try {
      await createMoE({
        wasm: g.__edgeMoEBytes,
        dModel: 1,
        dHidden: 1,
        numExperts: 1,
        k: 1,
        expert: "relu",
        noisyGating: false,
        weights: { wGate: new Float32Array(1), w1: new Float32Array(1), b1: new Float32Array(1), w2: new Float32Array(1), b2: new Float32Array(1) },
      });
    } catch (error) {
      if ((error as { code?: string }).code === "WASM_LOAD") return;
      throw error;
    }
    throw new Error("the kernels compiled from bytes: the runtime is not in strict mode");
  });
  // The injected module is the simd build: its hash must equal every other runtime's "simd".
  await runConformance(createMoE, [{ name: "simd", config: { wasm: g.__edgeMoEWasm } }], report);
  await runLoaderChecks(report, { urls: g.__fixtureUrls, config: { wasm: g.__edgeMoEWasm } });
  return report.text;
})();
