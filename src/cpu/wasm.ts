// Loading the wasm kernels in any host: an injected module/bytes/Response, or the package's own
// build that this host can run (feature detection by WebAssembly.validate), obtained by the
// per-runtime ./wasm-source.ts (scripts/build.mjs swaps in wasm-source.browser.ts or
// wasm-source.workerd.ts for those export conditions).
import { fail, MoEError } from "../errors.ts";
import type { MoEConfig, WasmBuild } from "../types.ts";
import { readWasmFile, type WasmFileContents } from "./wasm-source.ts";
import { threadsAvailable } from "./threads.ts";

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
  topkSoftmaxAll(
    logits: number,
    b: number,
    n: number,
    k: number,
    renormalize: number,
    scale: number,
    topkIdx: number,
    topkGates: number,
    scratch: number,
  ): void;
  topkSigmoidGrouped(
    logits: number,
    b: number,
    n: number,
    k: number,
    bias: number,
    nGroup: number,
    topkGroup: number,
    renormalize: number,
    eps: number,
    scale: number,
    topkIdx: number,
    topkGates: number,
    scratch: number,
  ): void;
  appendSharedSlots(topkIdx: number, topkGates: number, b: number, k: number, m: number, n: number, logits: number, ldl: number, gateCol: number): void;
  balanceLosses(
    probMode: number,
    b: number,
    n: number,
    k: number,
    logits: number,
    ldl: number,
    std: number,
    h: number,
    topkIdx: number,
    topkGates: number,
    nextIdx: number,
    wImportance: number,
    wLoad: number,
    importance: number,
    load: number,
    losses: number,
    loadProb: number,
    acc: number,
  ): void;
  buildPlan(topkIdx: number, b: number, k: number, n: number, expertOffsets: number, pairOf: number, posOf: number): void;
  gatherRows(x: number, d: number, k: number, pairOf: number, first: number, count: number, dst: number): void;
  expertsForward(
    kind: number,
    d: number,
    h: number,
    eBegin: number,
    eEnd: number,
    w1: number,
    b1: number,
    w2: number,
    b2: number,
    expertOffsets: number,
    gathered: number,
    pre: number,
    act: number,
    out: number,
  ): void;
  combine(out: number, d: number, b: number, k: number, posOf: number, topkGates: number, y: number): void;
  /** Quantized expert weights (assembly/quant.ts); dtype: layout.ts DTYPE_CODE. packPanelsQ: −1, or the index of a value out of the dtype's range. */
  packPanelsQ(dtype: number, src: number, k: number, n: number, ldSrc: number, dst: number, kPad: number, panelStep: number): number;
  unpackPanelsQ(dtype: number, src: number, k: number, n: number, dst: number, ldDst: number, kPad: number, panelStep: number): void;
  expertsForwardQ(
    kind: number,
    dtype: number,
    d: number,
    h: number,
    eBegin: number,
    eEnd: number,
    w1: number,
    b1: number,
    w2: number,
    b2: number,
    expertOffsets: number,
    gathered: number,
    pre: number,
    act: number,
    out: number,
    qa: number,
    qaScales: number,
  ): void;
  /**
   * W8A8 (assembly/quant-dot.ts; packPanelsQ/unpackPanelsQ take its code DTYPE_W8A8 too): rows of
   * A quantized to bytes q + 64 (stride ldq) and f32 scales; the integer GEMM over them; the expert pass.
   */
  quantizeRowsW8A8(a: number, lda: number, m: number, k: number, dst: number, ldq: number, scales: number): void;
  gemmW8A8(a: number, lda: number, sx: number, m: number, kPad: number, bp: number, panels: number, c: number, ldc: number, bias: number): void;
  expertsForwardW8A8(
    kind: number,
    d: number,
    h: number,
    eBegin: number,
    eEnd: number,
    w1: number,
    b1: number,
    w2: number,
    b2: number,
    expertOffsets: number,
    gathered: number,
    pre: number,
    act: number,
    out: number,
    qa: number,
    qaScales: number,
  ): void;
  /** Thread `thread`'s share of the expert pass described by the control block at ctl (src/cpu/threads.ts). */
  poolThread(ctl: number, thread: number): void;
}

export type WasmSource = NonNullable<MoEConfig["wasm"]>;

// ---- builds and feature detection ------------------------------------------------------------

/** A WebAssembly feature some kernel build needs. */
export type WasmFeature = "simd" | "relaxed-simd" | "threads";

/**
 * A module of one function whose body is `body` (type () → (), no locals): the smallest thing
 * `WebAssembly.validate` can say yes or no to for one instruction family. Section sizes are single
 * LEB128 bytes, so a body stays under 120 bytes.
 */
function probeModule(body: number[]): Uint8Array {
  const code = [0x00, ...body, 0x0b]; // no locals, body, end
  return Uint8Array.of(
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00, // "\0asm", version 1
    0x01,
    0x04,
    0x01,
    0x60,
    0x00,
    0x00, // type section: one type, () → ()
    0x03,
    0x02,
    0x01,
    0x00, // function section: one function of type 0
    0x0a,
    code.length + 2,
    0x01,
    code.length,
    ...code, // code section: one body
  );
}
const V128_ZERO = [0xfd, 0x0c, ...new Array<number>(16).fill(0)]; // v128.const 0
const DROP = 0x1a;

/** Per feature, a module using one of its instructions (opcodes from the SIMD and relaxed-SIMD proposals). */
const FEATURE_PROBES: Record<WasmFeature, Uint8Array> = {
  simd: probeModule([...V128_ZERO, DROP]),
  // f32x4.relaxed_madd (0xfd 0x105), the instruction the relaxed build's GEMM uses.
  "relaxed-simd": probeModule([...V128_ZERO, ...V128_ZERO, ...V128_ZERO, 0xfd, 0x85, 0x02, DROP]),
  // A shared memory (memory section: flags 3 = shared with a maximum, 1 page) and i32.atomic.load
  // (0xfe 0x10) from it: what the threaded builds declare and use. (Whether the host can also make
  // shared memory and workers is threadsAvailable()'s question.)
  threads: Uint8Array.of(
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    0x01,
    0x04,
    0x01,
    0x60,
    0x00,
    0x00, // type section: () → ()
    0x03,
    0x02,
    0x01,
    0x00, // function section
    0x05,
    0x04,
    0x01,
    0x03,
    0x01,
    0x01, // memory section: shared, min 1, max 1
    0x0a,
    0x0b,
    0x01,
    0x09,
    0x00,
    0x41,
    0x00,
    0xfe,
    0x10,
    0x02,
    0x00,
    DROP,
    0x0b, // i32.const 0; i32.atomic.load; drop
  ),
};

/**
 * The kernel builds, best first (scripts/build.mjs makes one per asconfig.json target). The loader
 * takes the first whose features this host validates. A new build (e.g. threads) is one more row
 * here, a probe for its feature above, and its file in wasm-source*.ts.
 */
export const WASM_BUILDS: ReadonlyArray<{ name: WasmBuild; file: string; features: readonly WasmFeature[] }> = [
  { name: "relaxed", file: "edge-moe.relaxed.wasm", features: ["simd", "relaxed-simd"] },
  { name: "simd", file: "edge-moe.simd.wasm", features: ["simd"] },
  // Threaded builds (shared imported memory, src/cpu/threads.ts): taken only for threads > 1.
  { name: "relaxed-threads", file: "edge-moe.relaxed-threads.wasm", features: ["simd", "relaxed-simd", "threads"] },
  { name: "simd-threads", file: "edge-moe.simd-threads.wasm", features: ["simd", "threads"] },
];

/** Pages of the shared memory made for a threaded build (asconfig.json: initialMemory, maximumMemory). */
const SHARED_MEMORY = { initial: 16, maximum: 65536 } as const;

/** The module each kernel instance came from: a threaded layer's workers instantiate it again. */
export const kernelModules = new WeakMap<KernelExports, WebAssembly.Module>();

const featureCache = new Map<WasmFeature, boolean>();

/** Whether this host's WebAssembly has `feature` (validation only: nothing is compiled). */
export function hasWasmFeature(feature: WasmFeature): boolean {
  let known = featureCache.get(feature);
  if (known === undefined) {
    try {
      known =
        typeof WebAssembly === "object" &&
        WebAssembly.validate(FEATURE_PROBES[feature] as Uint8Array<ArrayBuffer>) &&
        (feature !== "threads" || threadsAvailable());
    } catch {
      known = false; // a host that refuses even to validate cannot run the build either
    }
    featureCache.set(feature, known);
  }
  return known;
}

/**
 * The kernel build `createMoE` picks on this host when `wasmBuild` is "auto" (the default): the
 * first of WASM_BUILDS whose features validate, among the threaded builds when `threaded`
 * (threads > 1); undefined when the host has none (no WebAssembly SIMD; no shared memory or workers).
 */
export function bestWasmBuild(threaded = false): WasmBuild | undefined {
  return WASM_BUILDS.find((build) => build.features.includes("threads") === threaded && build.features.every(hasWasmFeature))?.name;
}

/** The build to load for a `wasmBuild` option and a thread count: a forced one must be runnable here. */
function chooseBuild(requested: WasmBuild | "auto", threads: number): (typeof WASM_BUILDS)[number] {
  const threaded = threads > 1;
  if (requested === "auto") {
    const name = bestWasmBuild(threaded);
    const build = WASM_BUILDS.find((b) => b.name === name);
    if (!build && threaded && bestWasmBuild(false)) {
      fail(
        "WASM_LOAD",
        `threads: ${threads} needs SharedArrayBuffer, Atomics and workers (in browsers: a cross-origin isolated page, served with COOP/COEP headers); use threads: 1 here`,
      );
    }
    if (!build)
      fail("WASM_LOAD", "this host's WebAssembly has no SIMD, which every edge-moe build needs (Node 16.4+, Deno, Bun, Chrome 91+, Firefox 89+, Safari 16.4+)");
    return build;
  }
  if (threaded && !requested.endsWith("-threads")) {
    fail("INVALID_CONFIG", `wasmBuild "${requested}" is single-threaded; with threads: ${threads} use "${requested}-threads" or "auto"`);
  }
  const build = WASM_BUILDS.find((b) => b.name === requested)!;
  const missing = build.features.filter((f) => !hasWasmFeature(f));
  if (missing.length > 0) {
    fail(
      "WASM_LOAD",
      `wasmBuild "${requested}" needs WebAssembly ${missing.join(", ")}, which this host does not validate` +
        (missing.includes("relaxed-simd") ? " (Node 20 needs --experimental-wasm-relaxed-simd)" : "") +
        '; use wasmBuild "auto"',
    );
  }
  return build;
}

// ---- loading ---------------------------------------------------------------------------------

/** A Module from any realm (instanceof fails across realms, e.g. Vercel edge's injected module). */
// (Not a type predicate: WebAssembly.Module is an empty interface, so narrowing by it would
// narrow the other branch to never.)
function isWasmModule(value: unknown): boolean {
  return Object.prototype.toString.call(value) === "[object WebAssembly.Module]";
}

export function isResponseLike(value: unknown): value is Response {
  return typeof value === "object" && value !== null && typeof (value as Response).arrayBuffer === "function" && "ok" in value;
}

async function compileResponse(response: Response): Promise<WebAssembly.Module> {
  if (!response.ok) throw new Error(`HTTP ${response.status} fetching ${response.url || "the .wasm file"}`);
  const type = response.headers?.get?.("content-type") ?? "";
  if (typeof WebAssembly.compileStreaming === "function" && type.startsWith("application/wasm")) {
    return WebAssembly.compileStreaming(response);
  }
  return WebAssembly.compile(await response.arrayBuffer());
}

async function compileSource(source: WasmSource | WasmFileContents): Promise<WebAssembly.Module> {
  const value: unknown = await source;
  if (isWasmModule(value)) return value as WebAssembly.Module;
  if (isResponseLike(value)) return compileResponse(value);
  if (value instanceof ArrayBuffer) return WebAssembly.compile(value);
  if (ArrayBuffer.isView(value)) {
    return WebAssembly.compile(new Uint8Array(value.buffer, value.byteOffset, value.byteLength).slice());
  }
  throw new TypeError("wasm must be a WebAssembly.Module, a Response, or the module's bytes");
}

/** The package's own builds, compiled once per process each. */
const defaultModules = new Map<WasmBuild, Promise<WebAssembly.Module>>();

/**
 * Compiles the kernels and instantiates a fresh instance: the injected `source` when given,
 * else the package's own file of the build `wasmBuild` names ("auto": the best one here).
 */
export async function instantiateKernels(source?: WasmSource, wasmBuild: unknown = "auto", threads = 1): Promise<KernelExports> {
  if (wasmBuild !== "auto" && !WASM_BUILDS.some((b) => b.name === wasmBuild)) {
    fail("INVALID_CONFIG", `wasmBuild must be "auto" or one of ${WASM_BUILDS.map((b) => `"${b.name}"`).join(", ")}, got ${JSON.stringify(wasmBuild)}`);
  }
  let file = "its .wasm file";
  try {
    let module: WebAssembly.Module;
    if (source !== undefined) {
      module = await compileSource(source);
    } else {
      const build = chooseBuild(wasmBuild as WasmBuild | "auto", threads);
      file = build.file;
      let pending = defaultModules.get(build.name);
      if (!pending) {
        pending = compileSource(readWasmFile(build.name));
        defaultModules.set(build.name, pending);
      }
      try {
        module = await pending;
      } catch (error) {
        defaultModules.delete(build.name); // let a later call try again
        throw error;
      }
    }
    // A threaded build imports its memory: a shared one, which the workers instantiate on too.
    const importsMemory = WebAssembly.Module.imports(module).some((i) => i.kind === "memory");
    const imports: WebAssembly.Imports = importsMemory ? { env: { memory: new WebAssembly.Memory({ ...SHARED_MEMORY, shared: true }) } } : {};
    const instance = await WebAssembly.instantiate(module, imports);
    const kernels = instance.exports as unknown as KernelExports;
    kernelModules.set(kernels, module);
    return kernels;
  } catch (error) {
    if (error instanceof MoEError) throw error;
    throw new MoEError(
      "WASM_LOAD",
      `could not load the edge-moe kernels (${(error as Error)?.message ?? error}); ` +
        `pass the module yourself with createMoE({ ..., wasm }) where the host cannot read or fetch ${file}`,
      { cause: error },
    );
  }
}
