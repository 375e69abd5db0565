// The package's own .wasm files in browsers, workers and other fetch-only hosts: fetched from next
// to the bundle (compiled while streaming when served as application/wasm).
import type { WasmBuild } from "../types.ts";
import { wasmFileUrl } from "./wasm-files.ts";
import type { WasmFileContents } from "./wasm-source.ts";

export async function readWasmFile(build: WasmBuild): Promise<WasmFileContents> {
  return fetch(wasmFileUrl(build));
}
