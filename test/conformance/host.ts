// What every entry shares: the variants to run on this host, and the build-selection checks.
import { bestWasmBuild, createMoE, MoEError } from "edge-moe";
import type { Report, Variant } from "./suite.ts";

/**
 * "simd" (forced: its hash must be the same in every runtime) and "auto-<build>" (the default
 * path, which picks the best build this host validates).
 */
export function hostVariants(): Variant[] {
  return [
    { name: "simd", config: { wasmBuild: "simd" } },
    { name: `auto-${bestWasmBuild() ?? "none"}`, config: {} },
  ];
}

/** bestWasmBuild() names a build, and forcing one the host cannot run fails with WASM_LOAD. */
export async function buildSelectionChecks(report: Report): Promise<void> {
  const best = bestWasmBuild();
  report.lines.push(`# best build here: ${best}`);
  await report.check("build selection: bestWasmBuild() names a build", () => {
    if (best !== "simd" && best !== "relaxed") throw new Error(`bestWasmBuild() = ${best}`);
  });
  await report.check("build selection: an unknown wasmBuild is INVALID_CONFIG; a build the host lacks is WASM_LOAD", async () => {
    const tiny = {
      dModel: 1,
      dHidden: 1,
      numExperts: 2,
      k: 1,
      expert: "relu" as const,
      noisyGating: false,
      weights: { wGate: new Float32Array(2), w1: new Float32Array(2), b1: new Float32Array(2), w2: new Float32Array(2), b2: new Float32Array(2) },
    };
    const codeOf = async (config: object) => {
      try {
        (await createMoE({ ...tiny, ...config })).dispose();
        return "ok";
      } catch (error) {
        return error instanceof MoEError ? error.code : String(error);
      }
    };
    const unknown = await codeOf({ wasmBuild: "sse" });
    if (unknown !== "INVALID_CONFIG") throw new Error(`wasmBuild "sse" gave ${unknown}`);
    const relaxed = await codeOf({ wasmBuild: "relaxed" });
    const expected = best === "relaxed" ? "ok" : "WASM_LOAD";
    if (relaxed !== expected) throw new Error(`wasmBuild "relaxed" gave ${relaxed}, expected ${expected} (best build ${best})`);
  });
}
