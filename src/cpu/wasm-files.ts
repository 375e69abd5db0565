// Where the package's kernel builds lie: next to the bundle that imports this module (dist/).
// Literal `new URL("./file", import.meta.url)` so that bundlers (Vite, webpack 5) see the assets.
import type { WasmBuild } from "../types.ts";

export function wasmFileUrl(build: WasmBuild): URL {
  switch (build) {
    case "relaxed":
      return new URL("./edge-moe.relaxed.wasm", import.meta.url);
    case "simd":
      return new URL("./edge-moe.simd.wasm", import.meta.url);
    case "relaxed-threads":
      return new URL("./edge-moe.relaxed-threads.wasm", import.meta.url);
    case "simd-threads":
      return new URL("./edge-moe.simd-threads.wasm", import.meta.url);
  }
}
