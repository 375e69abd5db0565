// The package's own .wasm files, for Node, Bun, Deno and hosts no export condition names: read from
// the file system when the bundle lies on one, fetched otherwise. (The "browser" and "workerd"
// bundles use wasm-source.browser.ts and wasm-source.workerd.ts instead: scripts/build.mjs.)
import type { WasmBuild } from "../types.ts";
import { wasmFileUrl } from "./wasm-files.ts";

/** What a source gives: a compiled module (workerd), a fetch Response, or the file's bytes. */
export type WasmFileContents = WebAssembly.Module | Response | Uint8Array;

export async function readWasmFile(build: WasmBuild): Promise<WasmFileContents> {
  const url = wasmFileUrl(build);
  const g = globalThis as { process?: { versions?: { node?: string } }; Deno?: { readFile(url: URL): Promise<Uint8Array> } };
  if (url.protocol === "file:") {
    if (g.Deno) return g.Deno.readFile(url); // needs --allow-read
    if (g.process?.versions?.node) {
      // Node and Bun
      const fs = await import("node:fs/promises");
      return fs.readFile(url);
    }
  }
  return fetch(url);
}
