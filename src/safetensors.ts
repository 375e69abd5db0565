// safetensors (https://github.com/huggingface/safetensors, format description in its README):
//   u64 little-endian header length N · N bytes of UTF-8 JSON · raw little-endian data.
// Each header entry: name → { dtype, shape, data_offsets: [begin, end] } relative to the data
// section; "__metadata__" maps strings to strings. Everything is validated before use.
import { MoEError } from "./errors.ts";

export type SafetensorsDType = "F32" | "F16" | "BF16" | "I32";

export interface SafetensorsTensor {
  /** The dtype stored in the file; F16 and BF16 are widened to Float32Array. */
  dtype: SafetensorsDType;
  shape: number[];
  data: Float32Array | Int32Array;
}

export interface SafetensorsFile {
  tensors: Record<string, SafetensorsTensor>;
  metadata: Record<string, string>;
}

const DTYPE_BYTES: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2, I32: 4 };
/** Headers beyond this are refused (the reference implementation's limit is 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

function bad(message: string): never {
  throw new MoEError("BAD_SAFETENSORS", `not a valid safetensors file: ${message}`);
}

function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Parses and validates a safetensors file into typed arrays (copies: the result owns its data). */
export function readSafetensors(bytes: Uint8Array | ArrayBuffer): SafetensorsFile {
  const u8 = bytes instanceof Uint8Array ? bytes : bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : bad("expected a Uint8Array or an ArrayBuffer");
  if (u8.byteLength < 8) bad(`${u8.byteLength} bytes is shorter than the 8-byte header length`);
  const view = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (headerLength < 2 || headerLength > MAX_HEADER_BYTES) bad(`header length ${headerLength} is out of range`);
  if (8 + headerLength > u8.byteLength) bad(`header length ${headerLength} runs past the end of the ${u8.byteLength}-byte file`);

  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(u8.subarray(8, 8 + headerLength)));
  } catch (error) {
    bad(`the header is not UTF-8 JSON (${(error as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) bad("the header is not a JSON object");

  const dataStart = 8 + headerLength;
  const dataLength = u8.byteLength - dataStart;
  const metadata: Record<string, string> = {};
  const tensors: Record<string, SafetensorsTensor> = {};
  const spans: Array<[number, number, string]> = [];

  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof entry !== "object" || entry === null || Array.isArray(entry)) bad("__metadata__ must be an object of strings");
      for (const [key, value] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof value !== "string") bad(`__metadata__.${key} is not a string`);
        metadata[key] = value;
      }
      continue;
    }
    if (typeof entry !== "object" || entry === null) bad(`entry ${name} is not an object`);
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) bad(`tensor ${name} has dtype ${JSON.stringify(dtype)}; supported: F32, F16, BF16, I32`);
    if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s) && s >= 0)) bad(`tensor ${name} has an invalid shape`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      bad(`tensor ${name} has invalid data_offsets`);
    }
    const [begin, end] = offsets as [number, number];
    const type = dtype as SafetensorsDType;
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (end < begin || end > dataLength) bad(`tensor ${name} spans bytes [${begin}, ${end}) outside the ${dataLength}-byte data section`);
    if (end - begin !== count * DTYPE_BYTES[type]) bad(`tensor ${name} of shape [${shape}] and dtype ${type} needs ${count * DTYPE_BYTES[type]} bytes, its offsets give ${end - begin}`);
    spans.push([begin, end, name]);

    // An aligned copy the result owns (not slice(): a Node Buffer's slice is a view).
    // Every host edge-moe runs on is little-endian, like the format.
    const raw = new Uint8Array(u8.subarray(dataStart + begin, dataStart + end));
    let data: Float32Array | Int32Array;
    if (type === "I32") data = new Int32Array(raw.buffer);
    else if (type === "F32") data = new Float32Array(raw.buffer);
    else {
      const halves = new Uint16Array(raw.buffer);
      data = new Float32Array(count);
      if (type === "F16") for (let i = 0; i < count; i++) data[i] = f16ToF32(halves[i]);
      else new Uint32Array(data.buffer).set(Array.from(halves, (v) => v << 16));
    }
    tensors[name] = { dtype: type, shape: shape as number[], data };
  }

  spans.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i][0] < spans[i - 1][1]) bad(`tensors ${spans[i - 1][2]} and ${spans[i][2]} overlap`);
  }
  return { tensors, metadata };
}
