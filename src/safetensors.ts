// safetensors (https://github.com/huggingface/safetensors, format description in its README):
//   u64 little-endian header length N · N bytes of UTF-8 JSON · raw little-endian data.
// Each header entry: name → { dtype, shape, data_offsets: [begin, end] } relative to the data
// section; "__metadata__" maps strings to strings. Everything is validated before use.
//
// The rules this reader enforces (test/fuzz-safetensors.test.ts checks them independently):
// - 8 ≤ file length; 2 ≤ N ≤ 100 MB; 8 + N ≤ file length.
// - The header is well-formed UTF-8 that starts with "{" (no byte-order mark, no leading
//   whitespace: the reference implementation requires the same), is one JSON object, and nests
//   at most MAX_DEPTH levels (a valid header needs 3; the bound is checked by a linear scan before
//   JSON.parse, so a deeply nested header is refused in linear time). Trailing spaces are padding.
// - Names are unique and well-formed Unicode (no lone surrogates); "__metadata__" is an object
//   of well-formed strings. Inside an entry or __metadata__, a repeated key takes the last value
//   (as JSON.parse). Names become keys of Maps or null-prototype objects only ("__proto__" is a name
//   like any other).
// - Each entry has exactly the fields dtype, shape, data_offsets. dtype is one the format
//   defines; tensors of dtypes edge-moe cannot widen to float32 (F64, I8, …) are still parsed
//   and bounds-checked, and refused only when read (decodeTensor).
// - shape: non-negative safe integers; [begin, end]: safe integers, begin ≤ end ≤ data length,
//   end − begin = the tensor's byte size (sub-byte dtypes: a whole number of bytes).
// - Tensors with bytes may not overlap. A zero-size tensor occupies no bytes, so it overlaps
//   nothing: any begin = end within the data section is accepted, whatever the key order.
//   Gaps between tensors are accepted (the reference writer leaves none).
import { MoEError } from "./errors.ts";

/** The dtypes edge-moe reads into typed arrays. */
export type SafetensorsDType = "F32" | "F16" | "BF16" | "I32";

export interface SafetensorsTensor {
  /** The dtype stored in the file; F16 and BF16 are widened to Float32Array. */
  dtype: SafetensorsDType;
  shape: number[];
  data: Float32Array | Int32Array;
}

/** A tensor of a dtype edge-moe does not widen (F64, I8, U8, BOOL, F8_*, …): its bytes as stored. */
export interface SafetensorsRawTensor {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

export interface SafetensorsFile {
  /** Null-prototype object: every name in the file is an own key, "__proto__" included. */
  tensors: Record<string, SafetensorsTensor>;
  /** Null-prototype object of the header's __metadata__. */
  metadata: Record<string, string>;
  /** Tensors of other dtypes, undecoded (null-prototype object; empty when there are none). */
  others: Record<string, SafetensorsRawTensor>;
}

/** One header entry; offsets are relative to the data section. */
export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** Byte offsets [begin, end) in the data section. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** N, the JSON header's length in bytes. */
  headerLength: number;
  /** 8 + N: where the data section starts in the file. */
  dataStart: number;
  dataLength: number;
  /** Tensors in header order. */
  entries: Map<string, SafetensorsEntry>;
  metadata: Map<string, string>;
}

/** Bits per element of every dtype the format defines. */
const DTYPE_BITS: ReadonlyMap<string, number> = new Map([
  ["BOOL", 8],
  ["U8", 8],
  ["I8", 8],
  ["F8_E5M2", 8],
  ["F8_E4M3", 8],
  ["F8_E8M0", 8],
  ["I16", 16],
  ["U16", 16],
  ["F16", 16],
  ["BF16", 16],
  ["I32", 32],
  ["U32", 32],
  ["F32", 32],
  ["I64", 64],
  ["U64", 64],
  ["F64", 64],
  ["C64", 64],
  ["F4", 4],
  ["F6_E2M3", 6],
  ["F6_E3M2", 6],
]);
const DECODED = new Set<string>(["F32", "F16", "BF16", "I32"]);
/** Headers beyond this are refused (the reference implementation's limit is 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;
/** Deepest JSON nesting accepted in a header (a valid one has 3: header → entry → shape). */
export const MAX_DEPTH = 8;

function bad(message: string): never {
  throw new MoEError("BAD_SAFETENSORS", `not a valid safetensors file: ${message}`);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Refuses JSON nested deeper than MAX_DEPTH and returns the raw tokens of the top-level keys, in
 * one pass over the text (brackets inside strings do not count). Malformed JSON is left to
 * JSON.parse.
 */
function scanHeader(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i;
      for (i++; i < n; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) i++;
        else if (d === 0x22) break;
      }
      if (depth === 1 && expectKey) keys.push(text.slice(start, i + 1));
      expectKey = false;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > MAX_DEPTH) bad(`the header nests deeper than ${MAX_DEPTH} levels`);
      expectKey = c === 0x7b;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    } else if (c === 0x2c /* , */) {
      expectKey = depth === 1;
    }
  }
  return keys;
}

/** The header length N from the file's first 8 bytes, range-checked (not yet against the file size). */
export function safetensorsHeaderLength(first8: Uint8Array, fileLength: number): number {
  if (first8.byteLength < 8 || fileLength < 8) bad(`${Math.min(first8.byteLength, fileLength)} bytes is shorter than the 8-byte header length`);
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n < 2n || n > BigInt(MAX_HEADER_BYTES)) bad(`header length ${n} is out of range`);
  const headerLength = Number(n);
  if (8 + headerLength > fileLength) bad(`header length ${headerLength} runs past the end of the ${fileLength}-byte file`);
  return headerLength;
}

/**
 * Parses and validates a header on its own, for ranged reads: `headerBytes` are the N bytes after
 * the length prefix, `dataLength` the file's length − 8 − N. No tensor data is needed.
 */
export function parseSafetensorsHeader(headerBytes: Uint8Array, dataLength: number): SafetensorsHeader {
  if (headerBytes.byteLength === 0 || headerBytes[0] !== 0x7b) {
    const first = headerBytes.byteLength ? `byte 0x${headerBytes[0].toString(16)}` : "nothing";
    bad(
      `the header is not a JSON object: it starts with ${first}; it must start with "{"${headerBytes[0] === 0xef ? " (a UTF-8 byte-order mark is not allowed)" : ""}`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch (error) {
    bad(`the header is not UTF-8 JSON (${(error as Error).message})`);
  }
  const rawKeys = scanHeader(text);
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (error) {
    bad(`the header is not UTF-8 JSON (${(error as Error).message})`);
  }
  if (!isObject(header)) bad("the header is not a JSON object");
  const seen = new Set<string>();
  for (const raw of rawKeys) {
    const key = JSON.parse(raw) as string;
    if (seen.has(key)) bad(`the name ${raw} appears twice in the header`);
    seen.add(key);
  }

  const metadata = new Map<string, string>();
  const entries = new Map<string, SafetensorsEntry>();
  for (const name of Object.keys(header)) {
    const entry = header[name];
    if (LONE_SURROGATE.test(name)) bad(`the name ${JSON.stringify(name)} is not well-formed Unicode (a lone surrogate)`);
    if (name === "__metadata__") {
      if (!isObject(entry)) bad("__metadata__ must be an object of strings");
      for (const key of Object.keys(entry)) {
        const value = entry[key];
        if (typeof value !== "string") bad(`__metadata__.${key} is not a string`);
        if (LONE_SURROGATE.test(key) || LONE_SURROGATE.test(value)) bad(`__metadata__.${JSON.stringify(key)} is not well-formed Unicode (a lone surrogate)`);
        metadata.set(key, value);
      }
      continue;
    }
    if (!isObject(entry)) bad(`entry ${name} is not an object`);
    for (const field of Object.keys(entry)) {
      if (field !== "dtype" && field !== "shape" && field !== "data_offsets") bad(`tensor ${name} has an unexpected field ${JSON.stringify(field)}`);
    }
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== "string" || !DTYPE_BITS.has(dtype)) {
      bad(`tensor ${name} has dtype ${JSON.stringify(dtype)}; known: ${[...DTYPE_BITS.keys()].join(", ")}`);
    }
    if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s) && s >= 0)) bad(`tensor ${name} has an invalid shape`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      bad(`tensor ${name} has invalid data_offsets`);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin || end > dataLength) bad(`tensor ${name} spans bytes [${begin}, ${end}) outside the ${dataLength}-byte data section`);
    let count = 1;
    for (const s of shape as number[]) count *= s;
    if ((shape as number[]).includes(0)) count = 0; // exact even when the other dimensions overflow
    const bits = count * DTYPE_BITS.get(dtype)!;
    if (!Number.isSafeInteger(bits) || bits % 8 !== 0) bad(`tensor ${name} of shape [${shape}] and dtype ${dtype} is not a whole number of bytes`);
    if (end - begin !== bits / 8) bad(`tensor ${name} of shape [${shape}] and dtype ${dtype} needs ${bits / 8} bytes, its offsets give ${end - begin}`);
    entries.set(name, { name, dtype, shape: (shape as number[]).map((s) => s + 0), begin, end });
  }

  // Order-independent overlap check over the tensors that hold bytes.
  const spans = [...entries.values()].filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i].begin < spans[i - 1].end) bad(`tensors ${spans[i - 1].name} and ${spans[i].name} overlap`);
  }
  return { headerLength: headerBytes.byteLength, dataStart: 8 + headerBytes.byteLength, dataLength, entries, metadata };
}

let f16Table: Float32Array | undefined;
function f16Lookup(): Float32Array {
  if (f16Table) return f16Table;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    table[h] = exp === 0 ? sign * frac * 2 ** -24 : exp === 31 ? (frac ? NaN : sign * Infinity) : sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return (f16Table = table);
}

/**
 * Decodes one tensor from its bytes (`raw`: exactly end − begin bytes) into an array the result
 * owns. Every host edge-moe runs on is little-endian, like the format. Tensors of other dtypes
 * are refused here, naming the tensor.
 */
export function decodeTensor(entry: SafetensorsEntry, raw: Uint8Array): SafetensorsTensor {
  if (!DECODED.has(entry.dtype)) {
    bad(`tensor ${entry.name} has dtype ${entry.dtype}; edge-moe reads F32, F16, BF16 and I32 tensors (convert this one, e.g. with torch: tensor.float())`);
  }
  if (raw.byteLength !== entry.end - entry.begin) bad(`tensor ${entry.name}: got ${raw.byteLength} bytes for its ${entry.end - entry.begin}`);
  const type = entry.dtype as SafetensorsDType;
  // An aligned copy the result owns (not slice(): a Node Buffer's slice is a view).
  const copy = new Uint8Array(raw);
  let data: Float32Array | Int32Array;
  if (type === "I32") data = new Int32Array(copy.buffer);
  else if (type === "F32") data = new Float32Array(copy.buffer);
  else {
    const halves = new Uint16Array(copy.buffer);
    const count = halves.length;
    data = new Float32Array(count);
    if (type === "F16") {
      const table = f16Lookup();
      for (let i = 0; i < count; i++) data[i] = table[halves[i]];
    } else {
      const bits = new Uint32Array(data.buffer);
      for (let i = 0; i < count; i++) bits[i] = halves[i] << 16;
    }
  }
  return { dtype: type, shape: entry.shape.slice(), data };
}

function asBytes(bytes: unknown): Uint8Array {
  if (bytes instanceof Uint8Array) return bytes;
  if (bytes instanceof ArrayBuffer) return new Uint8Array(bytes);
  return bad("expected a Uint8Array or an ArrayBuffer");
}

/** Parses and validates a safetensors file into typed arrays (copies: the result owns its data). */
export function readSafetensors(bytes: Uint8Array | ArrayBuffer): SafetensorsFile {
  const u8 = asBytes(bytes);
  const headerLength = safetensorsHeaderLength(u8.subarray(0, 8), u8.byteLength);
  const header = parseSafetensorsHeader(u8.subarray(8, 8 + headerLength), u8.byteLength - 8 - headerLength);
  const tensors = Object.create(null) as Record<string, SafetensorsTensor>;
  const metadata = Object.create(null) as Record<string, string>;
  const others = Object.create(null) as Record<string, SafetensorsRawTensor>;
  for (const [key, value] of header.metadata) metadata[key] = value;
  for (const [name, entry] of header.entries) {
    const raw = u8.subarray(header.dataStart + entry.begin, header.dataStart + entry.end);
    if (DECODED.has(entry.dtype)) tensors[name] = decodeTensor(entry, raw);
    else others[name] = { dtype: entry.dtype, shape: entry.shape.slice(), bytes: new Uint8Array(raw) };
  }
  return { tensors, metadata, others };
}

// ---- writing ---------------------------------------------------------------------------------

/** A tensor to write: F32/F16/BF16 from a Float32Array (narrowed, round to nearest even), I32 from an Int32Array, any other dtype as raw bytes. */
export interface SafetensorsInput {
  dtype: string;
  shape: number[];
  data: Float32Array | Int32Array | Uint8Array;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float32 → binary16 bits, round to nearest even (overflow → ±Inf, NaN stays NaN). */
export function f32ToF16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = m & ((1 << shift) - 1);
    let h = m >>> shift;
    if (rest > half || (rest === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++; // may carry into the exponent: correct, up to Inf
  return sign | h;
}

/** float32 → bfloat16 bits, round to nearest even (NaN stays NaN). */
export function f32ToBf16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * A safetensors file: tensors in the given order, contiguous, after a header padded with spaces
 * to a multiple of 8 bytes (so every tensor starts 8-byte aligned in the file when the tensors
 * before it have sizes that are multiples of 8).
 */
export function writeSafetensors(
  tensors: Map<string, SafetensorsInput> | Record<string, SafetensorsInput>,
  metadata?: Map<string, string> | Record<string, string>,
): Uint8Array {
  const list = tensors instanceof Map ? [...tensors] : Object.keys(tensors).map((k) => [k, tensors[k]] as const);
  const meta = metadata instanceof Map ? [...metadata] : metadata ? Object.keys(metadata).map((k) => [k, metadata[k]] as const) : [];
  const invalid = (message: string): never => {
    throw new MoEError("INVALID_CONFIG", `writeSafetensors: ${message}`);
  };
  const parts: string[] = [];
  if (meta.length) {
    for (const [k, v] of meta) if (typeof v !== "string") invalid(`metadata ${k} must be a string`);
    parts.push(`"__metadata__":{${meta.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`);
  }
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of list) {
    if (name === "__metadata__") invalid('"__metadata__" cannot name a tensor');
    const bits = DTYPE_BITS.get(t.dtype) ?? invalid(`tensor ${name}: unknown dtype ${JSON.stringify(t.dtype)}`);
    if (!t.shape.every((s) => Number.isSafeInteger(s) && s >= 0)) invalid(`tensor ${name}: invalid shape [${t.shape}]`);
    const count = t.shape.reduce((a, b) => a * b, 1);
    let blob: Uint8Array;
    if (t.dtype === "F32" || t.dtype === "F16" || t.dtype === "BF16") {
      if (!(t.data instanceof Float32Array) || t.data.length !== count) invalid(`tensor ${name}: ${t.dtype} needs a Float32Array of ${count} values`);
      const src = t.data as Float32Array;
      if (t.dtype === "F32") blob = new Uint8Array(src.buffer.slice(src.byteOffset, src.byteOffset + src.byteLength));
      else {
        const halves = new Uint16Array(count);
        const narrow = t.dtype === "F16" ? f32ToF16Bits : f32ToBf16Bits;
        for (let i = 0; i < count; i++) halves[i] = narrow(src[i]);
        blob = new Uint8Array(halves.buffer);
      }
    } else if (t.dtype === "I32") {
      if (!(t.data instanceof Int32Array) || t.data.length !== count) invalid(`tensor ${name}: I32 needs an Int32Array of ${count} values`);
      blob = new Uint8Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
    } else {
      if (!(t.data instanceof Uint8Array) || t.data.length * 8 !== count * bits)
        invalid(`tensor ${name}: ${t.dtype} needs ${(count * bits) / 8} raw bytes in a Uint8Array`);
      blob = t.data as Uint8Array;
    }
    parts.push(`${JSON.stringify(name)}:${JSON.stringify({ dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + blob.byteLength] })}`);
    blobs.push(blob);
    offset += blob.byteLength;
  }
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let at = 8 + headerLength;
  for (const blob of blobs) {
    out.set(blob, at);
    at += blob.byteLength;
  }
  return out;
}

// ---- sharded checkpoints ---------------------------------------------------------------------

export interface SafetensorsIndex {
  /** Tensor name → shard file name. */
  weightMap: Map<string, string>;
  metadata: Map<string, unknown>;
}

/** Parses `model.safetensors.index.json` ({ metadata?, weight_map: { name: file } }). */
export function parseSafetensorsIndex(json: string | Uint8Array): SafetensorsIndex {
  const what = "model.safetensors.index.json";
  let value: unknown;
  try {
    value = JSON.parse(typeof json === "string" ? json : new TextDecoder("utf-8", { fatal: true }).decode(json));
  } catch (error) {
    bad(`${what} is not UTF-8 JSON (${(error as Error).message})`);
  }
  if (!isObject(value) || !isObject(value.weight_map)) bad(`${what} must be an object with a "weight_map" object (tensor name → shard file)`);
  const weightMap = new Map<string, string>();
  const map = value.weight_map;
  for (const name of Object.keys(map)) {
    const file = map[name];
    if (typeof file !== "string" || file === "") bad(`${what}: weight_map[${JSON.stringify(name)}] is not a file name`);
    weightMap.set(name, file);
  }
  const metadata = new Map<string, unknown>();
  if (isObject(value.metadata)) for (const k of Object.keys(value.metadata)) metadata.set(k, value.metadata[k]);
  return { weightMap, metadata };
}
