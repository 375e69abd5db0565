// readSafetensors: every golden file reads back as documented and round-trips; F16/BF16 widen
// exactly; every kind of malformed file is refused with BAD_SAFETENSORS and a message naming what
// is wrong. Small files are built by hand here (format: u64 LE header length, JSON header, data).
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { MoEError, readSafetensors, type SafetensorsFile } from "edge-moe";
import { listCases, readCaseBytes, sameBits } from "./helpers.ts";

// ---- a minimal writer ------------------------------------------------------------------------

interface RawTensor {
  dtype: string;
  shape: unknown;
  bytes: Uint8Array;
}

/** A safetensors file with the tensors stored contiguously in the given order. */
function encode(tensors: Record<string, RawTensor>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] };
    offset += t.bytes.length;
  }
  const data = new Uint8Array(offset);
  offset = 0;
  for (const t of Object.values(tensors)) {
    data.set(t.bytes, offset);
    offset += t.bytes.length;
  }
  return withHeader(JSON.stringify(header), data);
}

/** Header text padded with spaces to 8-byte alignment (as the golden files), then data. */
function withHeader(json: string, data: Uint8Array = new Uint8Array(0), declaredLength?: number): Uint8Array {
  let text = new TextEncoder().encode(json);
  const padded = Math.ceil(text.length / 8) * 8;
  if (padded !== text.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(text);
    text = p;
  }
  return withRawHeader(text, data, declaredLength);
}

function withRawHeader(header: Uint8Array, data: Uint8Array, declaredLength = header.length): Uint8Array {
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(declaredLength), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

const bytesOf = (a: Float32Array | Int32Array | Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function rawOf(file: SafetensorsFile, name: string): RawTensor {
  const t = file.tensors[name];
  if (t.dtype !== "F32" && t.dtype !== "I32") throw new Error("the golden files hold F32 and I32 only");
  return { dtype: t.dtype, shape: t.shape, bytes: bytesOf(t.data) };
}

function expectSameFile(a: SafetensorsFile, b: SafetensorsFile): void {
  expect(Object.keys(b.tensors).sort()).toEqual(Object.keys(a.tensors).sort());
  for (const [name, t] of Object.entries(a.tensors)) {
    const u = b.tensors[name];
    expect([u.dtype, u.shape], name).toEqual([t.dtype, t.shape]);
    expect(sameBits(u.data, t.data), name).toBe(true);
  }
  expect(b.metadata).toEqual(a.metadata);
}

// ---- the golden files ------------------------------------------------------------------------

const cases = listCases();

describe("reads every golden file", () => {
  it.each(cases.map((c) => [c.name, c] as const))("%s: bytes match index.json; tensors have the documented dtypes and shapes", (_n, info) => {
    const bytes = readCaseBytes(info);
    expect(bytes.length).toBe(info.bytes);
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(info.sha256);
    const file = readSafetensors(bytes);
    const { B, d, h, n, k } = info;
    const shapes: Record<string, number[]> = {
      x: [B, d], w_gate: [d, n], clean_logits: [B, n], noisy_logits: [B, n], gates: [B, n],
      topk_indices: [B, k], topk_gates: [B, k], y: [B, d], importance: [n], load: [n],
      loss_importance: [1], loss_load: [1], dy: [B, d],
    };
    if (info.noisy) Object.assign(shapes, { w_noise: [d, n], noise: [B, n], noise_stddev: [B, n] });
    if (info.expert === "swiglu") Object.assign(shapes, { w_gate_proj: [n, d, h], w_up: [n, d, h], w_down: [n, h, d] });
    else Object.assign(shapes, { w1: [n, d, h], b1: [n, h], w2: [n, h, d], b2: [n, d] });
    for (const [name, shape] of Object.entries(shapes)) {
      const t = file.tensors[name];
      expect(t, name).toBeDefined();
      expect(t.shape, name).toEqual(shape);
      expect(t.dtype, name).toBe(name === "topk_indices" ? "I32" : "F32");
      expect(t.data, name).toBeInstanceOf(name === "topk_indices" ? Int32Array : Float32Array);
      expect(t.data.length, name).toBe(shape.reduce((a, b) => a * b, 1));
    }
    for (const key of ["B", "d", "h", "n", "k", "expert", "noisy", "noise_epsilon", "w_importance", "w_load", "load_mode"]) {
      expect(typeof file.metadata[key], key).toBe("string");
    }
    // every topk index names an expert
    expect((file.tensors.topk_indices.data as Int32Array).every((e) => e >= 0 && e < n)).toBe(true);
  });

  it.each(cases.map((c) => [c.name, c] as const))("%s: round trip (read → write → read) is bit-exact", (_n, info) => {
    const file = readSafetensors(readCaseBytes(info));
    const raw = Object.fromEntries(Object.keys(file.tensors).map((name) => [name, rawOf(file, name)]));
    expectSameFile(file, readSafetensors(encode(raw, file.metadata)));
  });

  it("reads a view at an unaligned offset, an ArrayBuffer, and owns its data", () => {
    const bytes = readCaseBytes(cases[cases.length - 1]);
    const direct = readSafetensors(bytes);
    const shifted = new Uint8Array(bytes.length + 3);
    shifted.set(bytes, 3);
    expectSameFile(direct, readSafetensors(shifted.subarray(3)));
    expectSameFile(direct, readSafetensors(shifted.slice(3).buffer));
    // the result does not alias the input
    const copy = new Uint8Array(bytes);
    const file = readSafetensors(copy);
    copy.fill(0xff);
    expectSameFile(direct, file);
  });
});

// ---- dtypes ----------------------------------------------------------------------------------

describe("F16 and BF16 are widened to Float32Array exactly; I32 and F32 are read as is", () => {
  it("F16: normals, subnormals, ±0, ±Inf, NaN", () => {
    // IEEE 754 binary16: sign, 5 exponent bits (bias 15), 10 fraction bits.
    const table: Array<[number, number]> = [
      [0x3c00, 1], [0xc000, -2], [0x3555, 0.333251953125], [0x7bff, 65504], [0x0400, 2 ** -14],
      [0x0001, 2 ** -24], [0x83ff, -1023 * 2 ** -24], [0x0000, 0], [0x8000, -0],
      [0x7c00, Infinity], [0xfc00, -Infinity], [0x7e00, Number.NaN], [0x4248, 3.140625],
    ];
    const halves = Uint16Array.from(table.map(([bits]) => bits));
    const file = readSafetensors(encode({ h: { dtype: "F16", shape: [table.length], bytes: bytesOf(halves) } }));
    const t = file.tensors.h;
    expect(t.dtype).toBe("F16");
    expect(t.shape).toEqual([table.length]);
    expect(t.data).toBeInstanceOf(Float32Array);
    table.forEach(([bits, value], i) => expect(Object.is(t.data[i], value), `0x${bits.toString(16)} → ${t.data[i]}, want ${value}`).toBe(true));
  });

  it("BF16: the top half of a float32, including subnormals, ±0, ±Inf, NaN", () => {
    const table: Array<[number, number]> = [
      [0x3f80, 1], [0xc000, -2], [0x4049, 3.140625], [0x7f7f, 3.3895313892515355e38], [0x0080, 2 ** -126],
      [0x0001, 2 ** -133], [0x0000, 0], [0x8000, -0], [0x7f80, Infinity], [0xff80, -Infinity], [0x7fc0, Number.NaN],
      [0xbe80, -0.25],
    ];
    const halves = Uint16Array.from(table.map(([bits]) => bits));
    const file = readSafetensors(encode({ b: { dtype: "BF16", shape: [3, 4], bytes: bytesOf(halves) } }));
    const t = file.tensors.b;
    expect(t.dtype).toBe("BF16");
    expect(t.shape).toEqual([3, 4]);
    expect(t.data).toBeInstanceOf(Float32Array);
    table.forEach(([bits, value], i) => expect(Object.is(t.data[i], value), `0x${bits.toString(16)} → ${t.data[i]}, want ${value}`).toBe(true));
  });

  it("F16 and BF16 of odd length next to F32 and I32 tensors, a scalar, and an empty tensor", () => {
    const f32 = Float32Array.from([1.5, -0, 1e-45, 3.4028234663852886e38]);
    const i32 = Int32Array.from([-1, 0, 2147483647, -2147483648]);
    const f16 = Uint16Array.from([0x3c00, 0x4000, 0x4200]); // 1, 2, 3
    const bf16 = Uint16Array.from([0x4040]); // 3
    const file = readSafetensors(
      encode(
        {
          f16: { dtype: "F16", shape: [3], bytes: bytesOf(f16) },
          f32: { dtype: "F32", shape: [2, 2], bytes: bytesOf(f32) },
          bf16: { dtype: "BF16", shape: [], bytes: bytesOf(bf16) },
          i32: { dtype: "I32", shape: [4], bytes: bytesOf(i32) },
          empty: { dtype: "F32", shape: [0, 3], bytes: new Uint8Array(0) },
        },
        { note: "hand-built" },
      ),
    );
    expect(Array.from(file.tensors.f16.data)).toEqual([1, 2, 3]);
    expect(sameBits(file.tensors.f32.data, f32)).toBe(true);
    expect(Array.from(file.tensors.bf16.data)).toEqual([3]);
    expect(file.tensors.bf16.shape).toEqual([]);
    expect(file.tensors.i32.data).toBeInstanceOf(Int32Array);
    expect(Array.from(file.tensors.i32.data)).toEqual(Array.from(i32));
    expect(file.tensors.empty.data.length).toBe(0);
    expect(file.metadata).toEqual({ note: "hand-built" });
  });
});

// ---- malformed files -------------------------------------------------------------------------

const f32Bytes = (count: number) => bytesOf(new Float32Array(count).fill(1));
const oneTensor = (entry: Record<string, unknown>, data = f32Bytes(2)) => withHeader(JSON.stringify({ t: entry }), data);
const good = { dtype: "F32", shape: [2], data_offsets: [0, 8] };

const malformed: Array<[string, () => unknown, RegExp]> = [
  ["empty", () => new Uint8Array(0), /0 bytes is shorter than the 8-byte header length/],
  ["7 bytes", () => new Uint8Array(7), /7 bytes is shorter/],
  ["header length 0", () => withRawHeader(new Uint8Array(0), new Uint8Array(8)), /header length 0 is out of range/],
  ["header length past the end", () => withHeader("{}", new Uint8Array(0), 100), /header length 100 runs past the end of the 16-byte file/],
  ["header length 2^63", () => withHeader("{}", new Uint8Array(0), 2 ** 63), /header length .* is out of range/],
  ["header not JSON", () => withHeader("{not json}"), /header is not UTF-8 JSON/],
  ["header not UTF-8", () => withRawHeader(Uint8Array.from([0x7b, 0xff, 0xfe, 0x7d]), new Uint8Array(0)), /header is not UTF-8 JSON/],
  ["header a JSON array", () => withHeader("[]"), /header is not a JSON object/],
  ["header a JSON number", () => withHeader("42"), /header is not a JSON object/],
  ["header JSON null", () => withHeader("null"), /header is not a JSON object/],
  ["a tensor entry that is not an object", () => withHeader('{"t": 3}'), /entry t is not an object/],
  ["unknown dtype F64", () => oneTensor({ ...good, dtype: "F64" }), /tensor t has dtype "F64"; supported: F32, F16, BF16, I32/],
  ["lower-case dtype", () => oneTensor({ ...good, dtype: "f32" }), /dtype "f32"/],
  ["no dtype", () => oneTensor({ shape: [2], data_offsets: [0, 8] }), /tensor t has dtype undefined/],
  ["negative shape", () => oneTensor({ ...good, shape: [-2] }), /tensor t has an invalid shape/],
  ["fractional shape", () => oneTensor({ ...good, shape: [1.5] }), /invalid shape/],
  ["shape not an array", () => oneTensor({ ...good, shape: "2" }), /invalid shape/],
  ["shape with null", () => oneTensor({ ...good, shape: [2, null] }), /invalid shape/],
  ["no data_offsets", () => oneTensor({ dtype: "F32", shape: [2] }), /tensor t has invalid data_offsets/],
  ["three data_offsets", () => oneTensor({ ...good, data_offsets: [0, 4, 8] }), /invalid data_offsets/],
  ["negative offset", () => oneTensor({ ...good, data_offsets: [-8, 0] }), /invalid data_offsets/],
  ["offset past the data", () => oneTensor({ ...good, data_offsets: [8, 16] }), /spans bytes \[8, 16\) outside the 8-byte data section/],
  ["end before begin", () => oneTensor({ ...good, data_offsets: [8, 0] }), /spans bytes \[8, 0\)/],
  ["length mismatch with shape and dtype", () => oneTensor({ ...good, shape: [3] }), /tensor t of shape \[3\] and dtype F32 needs 12 bytes, its offsets give 8/],
  ["length mismatch for F16", () => oneTensor({ ...good, dtype: "F16" }), /dtype F16 needs 4 bytes, its offsets give 8/],
  [
    "overlapping tensors",
    () => withHeader(JSON.stringify({ a: { ...good, data_offsets: [0, 8] }, b: { ...good, data_offsets: [4, 12] } }), f32Bytes(3)),
    /tensors a and b overlap/,
  ],
  [
    "the same bytes claimed twice",
    () => withHeader(JSON.stringify({ b: good, a: good }), f32Bytes(2)),
    /tensors (a and b|b and a) overlap/,
  ],
  ["metadata an array", () => withHeader('{"__metadata__": ["a"]}'), /__metadata__ must be an object of strings/],
  ["metadata a string", () => withHeader('{"__metadata__": "v1"}'), /__metadata__ must be an object of strings/],
  ["metadata value a number", () => withHeader('{"__metadata__": {"version": 2}}'), /__metadata__\.version is not a string/],
  ["not bytes: a string", () => "safetensors" as unknown, /expected a Uint8Array or an ArrayBuffer/],
  ["not bytes: a number array", () => [1, 2, 3] as unknown, /expected a Uint8Array or an ArrayBuffer/],
];

describe("malformed files are refused with BAD_SAFETENSORS and a message naming the problem", () => {
  it.each(malformed)("%s", (_l, build, message) => {
    const input = build();
    let error: unknown;
    try {
      readSafetensors(input as Uint8Array);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(MoEError);
    expect((error as MoEError).code).toBe("BAD_SAFETENSORS");
    expect((error as MoEError).message).toMatch(/^not a valid safetensors file: /);
    expect((error as MoEError).message).toMatch(message);
  });

  it("the same files, made valid, are read (the refusals above are for the stated reason)", () => {
    expect(readSafetensors(withHeader("{}")).tensors).toEqual({});
    expect(Array.from(readSafetensors(oneTensor(good)).tensors.t.data)).toEqual([1, 1]);
    expect(readSafetensors(withHeader('{"__metadata__": {"version": "2"}}')).metadata).toEqual({ version: "2" });
    const two = readSafetensors(withHeader(JSON.stringify({ a: { ...good, data_offsets: [0, 8] }, b: { ...good, data_offsets: [8, 16] } }), f32Bytes(4)));
    expect(Object.keys(two.tensors).sort()).toEqual(["a", "b"]);
  });
});
