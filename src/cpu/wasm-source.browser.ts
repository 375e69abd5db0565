// The package's own .wasm files in browsers, workers and other fetch-only hosts: fetched from next
// to the bundle (compiled while streaming when served as application/wasm). A file: URL (this
// bundle run by Node's worker_threads, whose fetch cannot read files) is read from disk instead.
import type { WasmBuild } from "../types.ts";
import { wasmFileUrl } from "./wasm-files.ts";
import type { WasmFileContents } from "./wasm-source.ts";

export async function readWasmFile(build: WasmBuild): Promise<WasmFileContents> {
  const url = wasmFileUrl(build);
  if (url.protocol === "file:") {
    // process.getBuiltinModule (Node 20.16+, Deno, Bun): no import of node: modules in this bundle
    const g = globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } };
    const fs = g.process?.getBuiltinModule?.("node:fs") as { promises: { readFile(url: URL): Promise<Uint8Array> } } | undefined;
    if (fs) return fs.promises.readFile(url);
  }
  return fetch(url);
}
