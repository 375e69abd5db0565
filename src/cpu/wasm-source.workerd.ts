// The package's own .wasm files in Cloudflare workerd, which refuses to compile wasm from bytes:
// imported as compiled modules, which wrangler (and esbuild with --loader:.wasm=copy plus a
// CompiledWasm module rule) upload next to the worker. Both builds are imported; the loader picks.
import relaxedModule from "./edge-moe.relaxed.wasm";
import simdModule from "./edge-moe.simd.wasm";
import type { WasmBuild } from "../types.ts";
import type { WasmFileContents } from "./wasm-source.ts";

// (No threaded builds: workerd has no workers to run them, so wasm.ts never asks for one here.)
const MODULES: Partial<Record<WasmBuild, WebAssembly.Module>> = { relaxed: relaxedModule, simd: simdModule };

export async function readWasmFile(build: WasmBuild): Promise<WasmFileContents> {
  const module = MODULES[build];
  if (!module) throw new Error(`the workerd bundle has no ${build} build`);
  return module;
}
