// readSafetensors: every golden file reads back as documented and round-trips; F16/BF16 widen
// exactly; every kind of malformed file is refused with BAD_SAFETENSORS and a message naming what
// is wrong. Small files are built by hand here (format: u64 LE header length, JSON header, data).
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { MoEError, readSafetensors, type SafetensorsFile } from "edge-moe";
import { listCases, readCaseBytes, Rng, sameBits } from "./helpers.ts";

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
      x: [B, d],
      w_gate: [d, n],
      clean_logits: [B, n],
      noisy_logits: [B, n],
      gates: [B, n],
      topk_indices: [B, k],
      topk_gates: [B, k],
      y: [B, d],
      importance: [n],
      load: [n],
      loss_importance: [1],
      loss_load: [1],
      dy: [B, d],
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
      [0x3c00, 1],
      [0xc000, -2],
      [0x3555, 0.333251953125],
      [0x7bff, 65504],
      [0x0400, 2 ** -14],
      [0x0001, 2 ** -24],
      [0x83ff, -1023 * 2 ** -24],
      [0x0000, 0],
      [0x8000, -0],
      [0x7c00, Infinity],
      [0xfc00, -Infinity],
      [0x7e00, Number.NaN],
      [0x4248, 3.140625],
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
      [0x3f80, 1],
      [0xc000, -2],
      [0x4049, 3.140625],
      [0x7f7f, 3.3895313892515355e38],
      [0x0080, 2 ** -126],
      [0x0001, 2 ** -133],
      [0x0000, 0],
      [0x8000, -0],
      [0x7f80, Infinity],
      [0xff80, -Infinity],
      [0x7fc0, Number.NaN],
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
  ["unknown dtype F65", () => oneTensor({ ...good, dtype: "F65" }), /tensor t has dtype "F65"; known: BOOL, U8/],
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
  [
    "length mismatch with shape and dtype",
    () => oneTensor({ ...good, shape: [3] }),
    /tensor t of shape \[3\] and dtype F32 needs 12 bytes, its offsets give 8/,
  ],
  ["length mismatch for F16", () => oneTensor({ ...good, dtype: "F16" }), /dtype F16 needs 4 bytes, its offsets give 8/],
  [
    "overlapping tensors",
    () => withHeader(JSON.stringify({ a: { ...good, data_offsets: [0, 8] }, b: { ...good, data_offsets: [4, 12] } }), f32Bytes(3)),
    /tensors a and b overlap/,
  ],
  ["the same bytes claimed twice", () => withHeader(JSON.stringify({ b: good, a: good }), f32Bytes(2)), /tensors (a and b|b and a) overlap/],
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

// ---- hardening: names as keys, zero-size tensors, BOMs, nesting, other dtypes ---------------
// These use the module directly (src/): the header parser and the writer for ranged loading.

describe("hardening", () => {
  const st = () => import("../src/safetensors.ts");
  const errors = () => import("../src/errors.ts");
  const expectBad = async (f: () => unknown, message: RegExp) => {
    const { MoEError: SrcError } = await errors();
    let error: unknown;
    try {
      f();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SrcError);
    expect((error as MoEError).code).toBe("BAD_SAFETENSORS");
    expect((error as MoEError).message).toMatch(message);
  };

  it("a tensor and a metadata key named __proto__ are read like any other name", async () => {
    const { readSafetensors: read } = await st();
    // by hand: an object literal's __proto__ key sets the prototype, and JSON.stringify would drop it
    const g = JSON.stringify(good);
    const h = JSON.stringify({ ...good, data_offsets: [8, 16] });
    const bytes = withHeader(`{"__metadata__":{"__proto__":"meta","constructor":"c"},"__proto__":${g},"constructor":${h}}`, f32Bytes(4));
    const file = read(bytes);
    expect(Object.keys(file.tensors).sort()).toEqual(["__proto__", "constructor"]);
    expect(Array.from(file.tensors["__proto__"].data)).toEqual([1, 1]);
    expect(file.metadata["__proto__"]).toBe("meta");
    expect(Object.keys(file.metadata).sort()).toEqual(["__proto__", "constructor"]);
    expect(Object.getPrototypeOf(file.tensors)).toBe(null);
  });

  it("a zero-size tensor at another tensor's offset is accepted whatever the key order", async () => {
    const { readSafetensors: read } = await st();
    const empty = { dtype: "F32", shape: [0], data_offsets: [0, 0] };
    const inside = { dtype: "F32", shape: [0, 5], data_offsets: [4, 4] };
    for (const order of [
      { a: good, e: empty, i: inside },
      { e: empty, i: inside, a: good },
      { i: inside, a: good, e: empty },
    ]) {
      const file = read(withHeader(JSON.stringify(order), f32Bytes(2)));
      expect(Object.keys(file.tensors).sort()).toEqual(["a", "e", "i"]);
      expect(file.tensors.i.shape).toEqual([0, 5]);
      expect(file.tensors.i.data.length).toBe(0);
    }
    // still bounded by the data section
    await expectBad(() => read(withHeader(JSON.stringify({ a: good, e: { ...empty, data_offsets: [9, 9] } }), f32Bytes(2))), /spans bytes \[9, 9\) outside/);
  });

  it("a header with a UTF-8 byte-order mark, or leading whitespace, is refused", async () => {
    const { readSafetensors: read } = await st();
    const json = new TextEncoder().encode(JSON.stringify({ t: good }));
    const bom = new Uint8Array(json.length + 3);
    bom.set([0xef, 0xbb, 0xbf]);
    bom.set(json, 3);
    await expectBad(() => read(withRawHeader(bom, f32Bytes(2))), /must start with "\{" \(a UTF-8 byte-order mark is not allowed\)/);
    await expectBad(() => read(withHeader(` ${JSON.stringify({ t: good })}`, f32Bytes(2))), /starts with byte 0x20/);
    expect(Array.from(read(withRawHeader(json, f32Bytes(2))).tensors.t.data)).toEqual([1, 1]);
  });

  it("a 10 MiB header nested 2·10^6 levels deep is refused in well under a second", async () => {
    const { readSafetensors: read } = await st();
    const depth = 2_000_000;
    const text = `{"a":${"[".repeat(depth)}${"]".repeat(depth)}}`.padEnd(10 * 2 ** 20, " ");
    const bytes = withHeader(text);
    const t0 = performance.now();
    await expectBad(() => read(bytes), /nests deeper than 8 levels/);
    expect(performance.now() - t0).toBeLessThan(1000);
    // brackets inside strings do not count
    const names = read(withHeader(JSON.stringify({ __metadata__: { "[[[[[[[[[[": "{{{{{{{{{{{{" } })));
    expect(names.metadata["[[[[[[[[[["]).toBe("{{{{{{{{{{{{");
  });

  it("tensors of other dtypes are parsed raw and refused only when decoded", async () => {
    const { readSafetensors: read, parseSafetensorsHeader, decodeTensor, safetensorsHeaderLength } = await st();
    const f64 = new Float64Array([1, 2]);
    const bytes = encode({
      w: { dtype: "F32", shape: [2], bytes: f32Bytes(2) },
      d: { dtype: "F64", shape: [2], bytes: bytesOf(f64 as never) },
      q: { dtype: "I8", shape: [3], bytes: Uint8Array.from([1, 2, 255]) },
    });
    const file = read(bytes);
    expect(Object.keys(file.tensors)).toEqual(["w"]);
    expect(file.others.d.dtype).toBe("F64");
    expect(new Float64Array(file.others.d.bytes.slice().buffer)).toEqual(f64);
    expect(Array.from(file.others.q.bytes)).toEqual([1, 2, 255]);
    const n = safetensorsHeaderLength(bytes.subarray(0, 8), bytes.length);
    const header = parseSafetensorsHeader(bytes.subarray(8, 8 + n), bytes.length - 8 - n);
    const d = header.entries.get("d")!;
    await expectBad(() => decodeTensor(d, bytes.subarray(8 + n + d.begin, 8 + n + d.end)), /tensor d has dtype F64; edge-moe reads F32, F16, BF16 and I32/);
    // sizes are still checked for them
    await expectBad(
      () => read(withHeader(JSON.stringify({ d: { dtype: "F64", shape: [2], data_offsets: [0, 8] } }), f32Bytes(2))),
      /dtype F64 needs 16 bytes, its offsets give 8/,
    );
    await expectBad(
      () => read(withHeader(JSON.stringify({ f: { dtype: "F4", shape: [3], data_offsets: [0, 2] } }), f32Bytes(2))),
      /not a whole number of bytes/,
    );
  });

  it("duplicate names, unexpected fields and lone surrogates are refused", async () => {
    const { readSafetensors: read } = await st();
    await expectBad(() => read(withHeader(`{"t":${JSON.stringify(good)},"t":${JSON.stringify(good)}}`, f32Bytes(2))), /the name "t" appears twice/);
    await expectBad(() => read(oneTensor({ ...good, extra: 1 })), /unexpected field "extra"/);
    await expectBad(() => read(withHeader(`{"\\ud800":${JSON.stringify(good)}}`, f32Bytes(2))), /lone surrogate/);
  });

  it("the header parser needs only the header: a ranged read of a file's first bytes", async () => {
    const { parseSafetensorsHeader, safetensorsHeaderLength, writeSafetensors, decodeTensor } = await st();
    const bytes = writeSafetensors({
      a: { dtype: "F32", shape: [3], data: Float32Array.from([1, 2, 3]) },
      b: { dtype: "I32", shape: [1], data: Int32Array.from([7]) },
    });
    const n = safetensorsHeaderLength(bytes.subarray(0, 8), bytes.length);
    const header = parseSafetensorsHeader(bytes.slice(8, 8 + n), bytes.length - 8 - n);
    expect(header.dataStart).toBe(8 + n);
    expect([...header.entries.keys()]).toEqual(["a", "b"]);
    const b = header.entries.get("b")!;
    expect(Array.from(decodeTensor(b, bytes.slice(header.dataStart + b.begin, header.dataStart + b.end)).data)).toEqual([7]);
  });
});

describe("writeSafetensors", () => {
  it("round-trips F32, I32, raw dtypes and metadata; the header is space-padded to 8 bytes", async () => {
    const { readSafetensors: read, writeSafetensors } = await st0();
    const rng = new Rng(99);
    const a = Float32Array.from(rng.normals(7));
    const bytes = writeSafetensors(
      new Map([
        ["a", { dtype: "F32", shape: [7], data: a }],
        ["i", { dtype: "I32", shape: [2, 1], data: Int32Array.from([-3, 5]) }],
        ["u", { dtype: "U8", shape: [3], data: Uint8Array.from([9, 8, 7]) }],
        ["__proto__", { dtype: "F32", shape: [], data: Float32Array.from([2]) }],
      ]),
      { format: "pt", __proto__x: "y" },
    );
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    expect(new TextDecoder().decode(bytes.subarray(8, 8 + n))).toMatch(/} *$/);
    const file = read(bytes);
    expect(sameBits(file.tensors.a.data, a)).toBe(true);
    expect(Array.from(file.tensors.i.data)).toEqual([-3, 5]);
    expect(file.tensors.i.shape).toEqual([2, 1]);
    expect(Array.from(file.others.u.bytes)).toEqual([9, 8, 7]);
    expect(Array.from(file.tensors["__proto__"].data)).toEqual([2]);
    expect({ ...file.metadata }).toEqual({ format: "pt", __proto__x: "y" });
  });

  it("F16 and BF16 narrow with round-to-nearest-even and widen back exactly", async () => {
    const { readSafetensors: read, writeSafetensors, f32ToF16Bits, f32ToBf16Bits } = await st0();
    const cases: Array<[number, number, number]> = [
      // value, F16 bits, BF16 bits
      [1, 0x3c00, 0x3f80],
      [-2, 0xc000, 0xc000],
      [65504, 0x7bff, 0x4780],
      [65520, 0x7c00, 0x4780],
      [2 ** -24, 0x0001, 0x3380],
      [2 ** -25, 0x0000, 0x3300],
      [3 * 2 ** -26, 0x0001, 0x3340],
      [1 + 2 ** -11, 0x3c00, 0x3f80],
      [1 + 3 * 2 ** -11, 0x3c02, 0x3f80],
      [-0, 0x8000, 0x8000],
      [Infinity, 0x7c00, 0x7f80],
      [1 + 2 ** -8, 0x3c04, 0x3f80],
      [1 + 3 * 2 ** -8, 0x3c0c, 0x3f82],
    ];
    for (const [v, h, b] of cases) {
      expect(f32ToF16Bits(v).toString(16), `F16 of ${v}`).toBe(h.toString(16));
      expect(f32ToBf16Bits(v).toString(16), `BF16 of ${v}`).toBe(b.toString(16));
    }
    expect(f32ToF16Bits(NaN) & 0x7fff).toBeGreaterThan(0x7c00);
    expect(f32ToBf16Bits(NaN) & 0x7fff).toBeGreaterThan(0x7f80);
    // every F16 value survives F16 → F32 → F16
    const all = new Uint16Array(65536).map((_, i) => i);
    const wide = read(encode({ h: { dtype: "F16", shape: [65536], bytes: bytesOf(all) } })).tensors.h.data as Float32Array;
    const back = read(writeSafetensors({ h: { dtype: "F16", shape: [65536], data: wide } })).tensors.h.data as Float32Array;
    expect(sameBits(back, wide)).toBe(true);
  });

  it("refuses inconsistent input with INVALID_CONFIG", async () => {
    const { writeSafetensors } = await st0();
    expect(() => writeSafetensors({ a: { dtype: "F32", shape: [3], data: new Float32Array(2) } })).toThrow(/F32 needs a Float32Array of 3 values/);
    expect(() => writeSafetensors({ a: { dtype: "Q4", shape: [3], data: new Uint8Array(2) } })).toThrow(/unknown dtype "Q4"/);
    expect(() => writeSafetensors({ __metadata__: { dtype: "F32", shape: [0], data: new Float32Array(0) } })).toThrow(/cannot name a tensor/);
  });
});

describe("parseSafetensorsIndex", () => {
  it("reads weight_map into a Map, __proto__ included, and refuses a malformed index", async () => {
    const { parseSafetensorsIndex } = await st0();
    const index = parseSafetensorsIndex(
      '{"metadata":{"total_size":12},"weight_map":{"a":"model-00001-of-00002.safetensors","__proto__":"model-00002-of-00002.safetensors"}}',
    );
    expect([...index.weightMap]).toEqual([
      ["a", "model-00001-of-00002.safetensors"],
      ["__proto__", "model-00002-of-00002.safetensors"],
    ]);
    expect(index.metadata.get("total_size")).toBe(12);
    expect(() => parseSafetensorsIndex("{}")).toThrow(/must be an object with a "weight_map" object/);
    expect(() => parseSafetensorsIndex('{"weight_map":{"a":3}}')).toThrow(/weight_map\["a"\] is not a file name/);
    expect(() => parseSafetensorsIndex("{")).toThrow(/is not UTF-8 JSON/);
  });
});

const st0 = () => import("../src/safetensors.ts");
