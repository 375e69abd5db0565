// Loading the wasm kernels in any host: an injected module/bytes/Response, a file next to this
// module (Node, Bun, Deno), or fetch (browsers, workers, Deno).
import { MoEError } from "../errors.ts";
import type { MoEConfig } from "../types.ts";

/** The kernels' exports (assembly/index.ts). Pointers are byte offsets into `memory`. */
export interface KernelExports {
  memory: WebAssembly.Memory;
  heapBase(): number;
  packPanelsB(src: number, k: number, n: number, ldSrc: number, dst: number, kPad: number, panelStep: number): void;
  unpackPanelsB(src: number, k: number, n: number, dst: number, ldDst: number, kPad: number, panelStep: number): void;
  gemmPanels(a: number, lda: number, m: number, k: number, bp: number, panels: number, kPad: number, c: number, ldc: number, bias: number): void;
  noisyLogits(logits: number, ldl: number, b: number, n: number, noise: number, eps: number, std: number, h: number): void;
  cleanLogits(logits: number, ldl: number, b: number, n: number, h: number): void;
  firstNonFinite(p: number, len: number): number;
  normalNoise(dst: number, count: number, first: number, stream: number, seedLo: number, seedHi: number): void;
  topkSoftmax(h: number, b: number, n: number, k: number, topkIdx: number, topkGates: number, nextIdx: number, scratch: number): void;
  balanceLosses(
    probMode: number, b: number, n: number, k: number,
    logits: number, ldl: number, std: number, h: number,
    topkIdx: number, topkGates: number, nextIdx: number,
    wImportance: number, wLoad: number,
    importance: number, load: number, losses: number, loadProb: number, acc: number,
  ): void;
  buildPlan(topkIdx: number, b: number, k: number, n: number, expertOffsets: number, pairOf: number, posOf: number): void;
  gatherRows(x: number, d: number, k: number, pairOf: number, first: number, count: number, dst: number): void;
  activate(kind: number, pre: number, m: number, hp: number, act: number): void;
  expertsForward(
    kind: number, d: number, h: number, eBegin: number, eEnd: number,
    w1: number, b1: number, w2: number, b2: number,
    expertOffsets: number, gathered: number, pre: number, act: number, out: number,
  ): void;
  combine(out: number, d: number, b: number, k: number, posOf: number, topkGates: number, y: number): void;
}

export type WasmSource = NonNullable<MoEConfig["wasm"]>;

const WASM_FILE = "edge-moe.simd.wasm";

/** A Module from any realm (instanceof fails across realms, e.g. Vercel edge's injected module). */
// (Not a type predicate: WebAssembly.Module is an empty interface, so narrowing by it would
// narrow the other branch to never.)
function isWasmModule(value: unknown): boolean {
  return Object.prototype.toString.call(value) === "[object WebAssembly.Module]";
}

function isResponseLike(value: unknown): value is Response {
  return typeof value === "object" && value !== null && typeof (value as Response).arrayBuffer === "function" && "ok" in value;
}

async function compileResponse(response: Response): Promise<WebAssembly.Module> {
  if (!response.ok) throw new Error(`HTTP ${response.status} fetching ${response.url || WASM_FILE}`);
  const type = response.headers?.get?.("content-type") ?? "";
  if (typeof WebAssembly.compileStreaming === "function" && type.startsWith("application/wasm")) {
    return WebAssembly.compileStreaming(response);
  }
  return WebAssembly.compile(await response.arrayBuffer());
}

async function compileSource(source: WasmSource): Promise<WebAssembly.Module> {
  const value: unknown = await source;
  if (isWasmModule(value)) return value as WebAssembly.Module;
  if (isResponseLike(value)) return compileResponse(value);
  if (value instanceof ArrayBuffer) return WebAssembly.compile(value);
  if (ArrayBuffer.isView(value)) {
    return WebAssembly.compile(new Uint8Array(value.buffer, value.byteOffset, value.byteLength).slice());
  }
  throw new TypeError("wasm must be a WebAssembly.Module, a Response, or the module's bytes");
}

/** Reads the .wasm next to this module: the file system where there is one, else fetch. */
async function compileDefault(): Promise<WebAssembly.Module> {
  const url = new URL(`./${WASM_FILE}`, import.meta.url);
  const g = globalThis as { process?: { versions?: { node?: string } }; Deno?: unknown };
  if (url.protocol === "file:" && (g.process?.versions?.node || g.Deno)) {
    if (g.Deno) {
      const deno = g.Deno as { readFile(u: URL): Promise<Uint8Array> };
      return WebAssembly.compile((await deno.readFile(url)) as Uint8Array<ArrayBuffer>);
    }
    const fs = await import("node:fs/promises");
    return WebAssembly.compile(await fs.readFile(url));
  }
  return compileResponse(await fetch(url));
}

let defaultModule: Promise<WebAssembly.Module> | undefined;

/** Compiles (once per process for the default file) and instantiates a fresh kernel instance. */
export async function instantiateKernels(source?: WasmSource): Promise<KernelExports> {
  try {
    let module: WebAssembly.Module;
    if (source !== undefined) {
      module = await compileSource(source);
    } else {
      defaultModule ??= compileDefault();
      try {
        module = await defaultModule;
      } catch (error) {
        defaultModule = undefined; // let a later call try again
        throw error;
      }
    }
    const instance = await WebAssembly.instantiate(module, {});
    return instance.exports as unknown as KernelExports;
  } catch (error) {
    throw new MoEError(
      "WASM_LOAD",
      `could not load the edge-moe kernels (${(error as Error)?.message ?? error}); ` +
        `pass the module yourself with createMoE({ ..., wasm }) where the host cannot read or fetch ${WASM_FILE}`,
      { cause: error },
    );
  }
}
