// Byte sources with ranged reads, one per kind of `files` value, so that loading one layer of a
// large checkpoint reads the safetensors headers and that layer's tensors, not whole files.
//   Uint8Array / ArrayBuffer: views (no copy).
//   Blob: blob.slice(a, b).arrayBuffer().
//   Response: its body can be read once, so it is read whole, once, on first use.
//   URL / "http(s)://…": fetch with `Range: bytes=a-b`; a server that answers 200 instead of 206
//     sends the whole file: that body is kept and every later read of that file slices it (one
//     note through onNote per file).
//   other strings, file: URLs: a path; Node and Bun read at offsets through node:fs/promises
//     (imported when first needed), Deno through Deno.open + seek + read.
import { MoEError } from "../errors.ts";
import { loadError } from "./errors.ts";

export type FileValue = Uint8Array | ArrayBuffer | Blob | Response | URL | string;

export interface LoadProgress {
  loadedBytes: number;
  totalBytes: number;
  file: string;
}

export interface SourceOptions {
  signal?: AbortSignal;
  /** Things worth knowing that do not fail the load (a server without range requests). */
  onNote?: (note: string) => void;
  /** Called with each piece of bytes as it arrives. */
  onBytes?: (file: string, bytes: number) => void;
  /** Replaces globalThis.fetch (tests, proxies). */
  fetch?: typeof fetch;
}

export interface ByteSource {
  readonly file: string;
  /** The file's size in bytes. */
  size(): Promise<number>;
  /** Bytes [begin, end) of the file; the result may be a view of the source's memory. */
  read(begin: number, end: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** Throws ABORTED when the signal has fired. */
export function checkAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw loadError("ABORTED", `${what} was aborted (${String(signal.reason ?? "AbortSignal")})`, signal.reason);
}

function rangeCheck(file: string, begin: number, end: number, size: number): void {
  if (!(Number.isSafeInteger(begin) && Number.isSafeInteger(end) && 0 <= begin && begin <= end && end <= size)) {
    throw loadError("SOURCE_ERROR", `${file}: bytes [${begin}, ${end}) are outside the ${size}-byte file`);
  }
}

/** Reads a body as a stream, reporting each chunk, into one buffer. */
async function readBody(response: Response, file: string, options: SourceOptions): Promise<Uint8Array> {
  const reader = response.body?.getReader();
  if (!reader) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      checkAborted(options.signal, `reading ${file}`);
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      total += value.byteLength;
      options.onBytes?.(file, value.byteLength);
    }
  } catch (error) {
    checkAborted(options.signal, `reading ${file}`);
    if (error instanceof MoEError) throw error;
    throw loadError("SOURCE_ERROR", `${file}: reading the body failed after ${total} bytes (${(error as Error).message})`, error);
  } finally {
    if (options.signal?.aborted) reader.cancel().catch(() => {});
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

class MemorySource implements ByteSource {
  constructor(
    readonly file: string,
    private bytes: Uint8Array,
    private options: SourceOptions,
  ) {}
  async size() {
    return this.bytes.byteLength;
  }
  async read(begin: number, end: number) {
    checkAborted(this.options.signal, `reading ${this.file}`);
    rangeCheck(this.file, begin, end, this.bytes.byteLength);
    this.options.onBytes?.(this.file, end - begin);
    return this.bytes.subarray(begin, end);
  }
  async close() {}
}

class BlobSource implements ByteSource {
  constructor(
    readonly file: string,
    private blob: Blob,
    private options: SourceOptions,
  ) {}
  async size() {
    return this.blob.size;
  }
  async read(begin: number, end: number) {
    checkAborted(this.options.signal, `reading ${this.file}`);
    rangeCheck(this.file, begin, end, this.blob.size);
    const bytes = new Uint8Array(await this.blob.slice(begin, end).arrayBuffer());
    checkAborted(this.options.signal, `reading ${this.file}`);
    this.options.onBytes?.(this.file, bytes.byteLength);
    return bytes;
  }
  async close() {}
}

/** A Response: the whole body, read once, on first use. */
class ResponseSource implements ByteSource {
  private body: Promise<Uint8Array> | undefined;
  constructor(
    readonly file: string,
    private response: Response,
    private options: SourceOptions,
  ) {}
  private whole(): Promise<Uint8Array> {
    if (!this.body) {
      if (!this.response.ok) throw loadError("SOURCE_ERROR", `${this.file}: the Response has HTTP status ${this.response.status}`);
      if (this.response.bodyUsed)
        throw loadError("SOURCE_ERROR", `${this.file}: the Response's body was already read; pass a fresh Response, its bytes, or its URL`);
      this.body = readBody(this.response, this.file, this.options);
    }
    return this.body;
  }
  async size() {
    return (await this.whole()).byteLength;
  }
  async read(begin: number, end: number) {
    const bytes = await this.whole();
    checkAborted(this.options.signal, `reading ${this.file}`);
    rangeCheck(this.file, begin, end, bytes.byteLength);
    return bytes.subarray(begin, end);
  }
  async close() {}
}

/** http(s): ranged GETs; the whole body once when the server ignores Range. */
class UrlSource implements ByteSource {
  private total: number | undefined;
  private full: Uint8Array | undefined;
  private head: Uint8Array | undefined;
  constructor(
    readonly file: string,
    private url: string,
    private options: SourceOptions,
  ) {}

  private async get(begin: number, end: number): Promise<Uint8Array> {
    const fetchFn = this.options.fetch ?? globalThis.fetch;
    let response: Response;
    try {
      response = await fetchFn(this.url, { headers: { Range: `bytes=${begin}-${end - 1}` }, signal: this.options.signal });
    } catch (error) {
      checkAborted(this.options.signal, `fetching ${this.file}`);
      throw loadError("SOURCE_ERROR", `${this.file}: fetch ${this.url} failed (${(error as Error).message})`, error);
    }
    if (response.status === 206) {
      const range = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(response.headers.get("content-range") ?? "");
      if (range && range[3] !== "*") this.total = Number(range[3]);
      const bytes = await readBody(response, this.file, this.options);
      if (range && (Number(range[1]) !== begin || Number(range[2]) !== end - 1)) {
        throw loadError("SOURCE_ERROR", `${this.file}: asked ${this.url} for bytes ${begin}-${end - 1}, the server sent ${range[1]}-${range[2]}`);
      }
      if (bytes.byteLength !== end - begin) {
        throw loadError("SOURCE_ERROR", `${this.file}: asked ${this.url} for ${end - begin} bytes, got ${bytes.byteLength}`);
      }
      return bytes;
    }
    if (response.status === 200) {
      this.options.onNote?.(
        `${this.url} does not answer range requests (status 200 instead of 206): its whole body (${response.headers.get("content-length") ?? "unknown size"} bytes) is downloaded once to read ${this.file}`,
      );
      this.full = await readBody(response, this.file, this.options);
      this.total = this.full.byteLength;
      rangeCheck(this.file, begin, end, this.total);
      return this.full.subarray(begin, end);
    }
    if (response.status === 416 && begin === end) return new Uint8Array(0);
    response.body?.cancel().catch(() => {});
    throw loadError(
      "SOURCE_ERROR",
      `${this.file}: ${this.url} answered HTTP ${response.status} ${response.statusText} to a request for bytes ${begin}-${end - 1}`,
    );
  }

  async size() {
    // The first 8 bytes (the header length, read next anyway) tell the size through Content-Range.
    if (this.total === undefined) this.head = await this.read(0, 8);
    if (this.total === undefined) {
      // Content-Range hidden (a cross-origin server that does not expose it) or "*": ask HEAD.
      const fetchFn = this.options.fetch ?? globalThis.fetch;
      let length: string | null = null;
      try {
        const response = await fetchFn(this.url, { method: "HEAD", signal: this.options.signal });
        if (response.ok) length = response.headers.get("content-length");
      } catch {
        checkAborted(this.options.signal, `fetching ${this.file}`);
      }
      if (length === null || !/^\d+$/.test(length)) {
        throw loadError(
          "SOURCE_ERROR",
          `${this.file}: ${this.url} tells neither its size in Content-Range (bytes a-b/size; cross-origin servers must expose it) nor in a HEAD request's Content-Length`,
        );
      }
      this.total = Number(length);
    }
    return this.total;
  }
  async read(begin: number, end: number) {
    checkAborted(this.options.signal, `reading ${this.file}`);
    if (this.full) {
      rangeCheck(this.file, begin, end, this.full.byteLength);
      return this.full.subarray(begin, end);
    }
    if (this.head && begin === 0 && end <= this.head.byteLength) return this.head.subarray(0, end);
    if (this.total !== undefined) rangeCheck(this.file, begin, end, this.total);
    if (begin === end) return new Uint8Array(0);
    return this.get(begin, end);
  }
  async close() {}
}

interface FileHandleLike {
  size(): Promise<number>;
  readAt(buffer: Uint8Array, position: number): Promise<number>;
  close(): Promise<void>;
}

interface DenoLike {
  open(
    path: string,
    options: { read: boolean },
  ): Promise<{
    stat(): Promise<{ size: number }>;
    seek(offset: number, whence: number): Promise<number>;
    read(p: Uint8Array): Promise<number | null>;
    close(): void;
  }>;
  SeekMode: { Start: number };
}

async function openPath(path: string): Promise<FileHandleLike> {
  const deno = (globalThis as { Deno?: DenoLike }).Deno;
  if (deno) {
    const f = await deno.open(path, { read: true });
    return {
      size: async () => (await f.stat()).size,
      readAt: async (buffer, position) => {
        await f.seek(position, deno.SeekMode.Start);
        return (await f.read(buffer)) ?? 0;
      },
      close: async () => f.close(),
    };
  }
  // Node and Bun. A variable specifier keeps bundlers for other targets from resolving it.
  const specifier = "node:fs/promises";
  const fs = (await import(/* @vite-ignore */ specifier)) as typeof import("node:fs/promises");
  const handle = await fs.open(path, "r");
  return {
    size: async () => (await handle.stat()).size,
    readAt: async (buffer, position) => (await handle.read(buffer, 0, buffer.byteLength, position)).bytesRead,
    close: () => handle.close(),
  };
}

/** A path: reads at offsets, in pieces of at most 16 MiB so progress and abort are timely. */
class PathSource implements ByteSource {
  private handle: Promise<FileHandleLike> | undefined;
  private total: number | undefined;
  constructor(
    readonly file: string,
    private path: string,
    private options: SourceOptions,
  ) {}
  private open(): Promise<FileHandleLike> {
    this.handle ??= openPath(this.path).catch((error: Error) => {
      throw loadError(
        "SOURCE_ERROR",
        `${this.file}: cannot open ${this.path} (${error.message}); paths are read in Node, Bun and Deno — elsewhere pass bytes, a Blob, a Response or a URL`,
        error,
      );
    });
    return this.handle;
  }
  async size() {
    this.total ??= await (await this.open()).size();
    return this.total;
  }
  async read(begin: number, end: number) {
    checkAborted(this.options.signal, `reading ${this.file}`);
    rangeCheck(this.file, begin, end, await this.size());
    const handle = await this.open();
    const out = new Uint8Array(end - begin);
    const PIECE = 16 << 20;
    let at = 0;
    while (at < out.byteLength) {
      checkAborted(this.options.signal, `reading ${this.file}`);
      const view = out.subarray(at, Math.min(out.byteLength, at + PIECE));
      let got: number;
      try {
        got = await handle.readAt(view, begin + at);
      } catch (error) {
        throw loadError("SOURCE_ERROR", `${this.file}: reading ${this.path} at byte ${begin + at} failed (${(error as Error).message})`, error);
      }
      if (got <= 0) throw loadError("SOURCE_ERROR", `${this.file}: ${this.path} ended at byte ${begin + at}, before byte ${end}`);
      at += got;
      this.options.onBytes?.(this.file, got);
    }
    return out;
  }
  async close() {
    const handle = this.handle;
    this.handle = undefined;
    if (handle) await (await handle.catch(() => undefined))?.close();
  }
}

/** A ranged-read source for one `files` value. */
export function openSource(file: string, value: FileValue, options: SourceOptions = {}): ByteSource {
  if (value instanceof Uint8Array) return new MemorySource(file, value, options);
  if (value instanceof ArrayBuffer) return new MemorySource(file, new Uint8Array(value), options);
  if (ArrayBuffer.isView(value)) {
    const v = value as ArrayBufferView;
    return new MemorySource(file, new Uint8Array(v.buffer, v.byteOffset, v.byteLength), options);
  }
  if (typeof Blob !== "undefined" && value instanceof Blob) return new BlobSource(file, value, options);
  if (typeof Response !== "undefined" && value instanceof Response) return new ResponseSource(file, value, options);
  if (value instanceof URL || typeof value === "string") {
    const text = String(value);
    if (/^https?:\/\//i.test(text)) return new UrlSource(file, text, options);
    if (/^file:\/\//i.test(text)) return new PathSource(file, decodeURIComponent(new URL(text).pathname), options);
    if (value instanceof URL) throw loadError("SOURCE_ERROR", `${file}: URL ${text} has protocol ${value.protocol}; http:, https: and file: are read`);
    return new PathSource(file, text, options);
  }
  throw loadError(
    "SOURCE_ERROR",
    `${file}: got ${value === null ? "null" : typeof value === "object" ? ((value as object).constructor?.name ?? "an object") : typeof value}; give a Uint8Array, ArrayBuffer, Blob, Response, URL or a path/URL string`,
  );
}

/** Whole contents of a small file (config or index JSON). */
export async function readWhole(source: ByteSource): Promise<Uint8Array> {
  return source.read(0, await source.size());
}
