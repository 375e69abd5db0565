// Safetensors fuzzer: seeded mutations of valid files (bit flips, truncation at every byte of a
// small file, header-length edits, JSON edits of offsets, dtypes, shapes, names and nesting, byte
// insertions and deletions). Every input is judged by an oracle written here from the format's
// rules (its own UTF-8 decoder and JSON parser; nothing from src/): readSafetensors must accept
// exactly what the oracle accepts, return what the oracle reads, and refuse everything else with
// MoEError BAD_SAFETENSORS, never another exception.
// FUZZ_COUNT and FUZZ_SEED override the 10,000 inputs and the seed (scripts/fuzz-safetensors.mjs).
import { describe, expect, it } from "vitest";
import { MoEError, readSafetensors } from "edge-moe";
import { Rng } from "./helpers.ts";

const COUNT = Number(process.env.FUZZ_COUNT ?? 10_000);
const SEED = Number(process.env.FUZZ_SEED ?? 20260);

// ---- the oracle ------------------------------------------------------------------------------

const BITS: Record<string, number> = {
  BOOL: 8,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  I64: 64,
  U64: 64,
  F64: 64,
  C64: 64,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
};
const MAX_HEADER = 100_000_000;
const MAX_DEPTH = 8;

class Invalid extends Error {}
const no = (why: string): never => {
  throw new Invalid(why);
};

/** Strict UTF-8 → string (no overlongs, no surrogates, ≤ U+10FFFF). */
function utf8(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    let cp: number, extra: number, min: number;
    if (b < 0x80) {
      cp = b;
      extra = 0;
      min = 0;
    } else if (b >= 0xc2 && b <= 0xdf) {
      cp = b & 0x1f;
      extra = 1;
      min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
      cp = b & 0x0f;
      extra = 2;
      min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
      cp = b & 0x07;
      extra = 3;
      min = 0x10000;
    } else return no("utf8");
    if (i + extra >= bytes.length + (extra ? 0 : 1)) no("utf8 truncated");
    for (let j = 1; j <= extra; j++) {
      const c = bytes[i + j];
      if (c === undefined || (c & 0xc0) !== 0x80) no("utf8 continuation");
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) no("utf8 value");
    out += String.fromCodePoint(cp);
    i += extra + 1;
  }
  return out;
}

type J = null | boolean | number | string | J[] | { kind: "object"; entries: Array<[string, J]> };

/** JSON (RFC 8259) keeping key order and repeated keys; containers deeper than MAX_DEPTH refused. */
function parseJson(text: string): J {
  let i = 0;
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i])) i++;
  };
  const value = (depth: number): J => {
    ws();
    const c = text[i];
    if (c === "{" || c === "[") {
      if (depth + 1 > MAX_DEPTH) no("depth");
      i++;
      ws();
      if (c === "[") {
        const items: J[] = [];
        if (text[i] === "]") {
          i++;
          return items;
        }
        for (;;) {
          items.push(value(depth + 1));
          ws();
          if (text[i] === ",") {
            i++;
            continue;
          }
          if (text[i] === "]") {
            i++;
            return items;
          }
          no("array");
        }
      }
      const entries: Array<[string, J]> = [];
      if (text[i] === "}") {
        i++;
        return { kind: "object", entries };
      }
      for (;;) {
        ws();
        if (text[i] !== '"') no("key");
        const key = string();
        ws();
        if (text[i++] !== ":") no("colon");
        entries.push([key, value(depth + 1)]);
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return { kind: "object", entries };
        }
        no("object");
      }
    }
    if (c === '"') return string();
    for (const [word, v] of [
      ["true", true],
      ["false", false],
      ["null", null],
    ] as const) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return v;
      }
    }
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(i, i + 400));
    if (!m) return no("value");
    i += m[0].length;
    return Number(m[0]);
  };
  const string = (): string => {
    i++;
    let s = "";
    for (;;) {
      if (i >= text.length) no("unterminated");
      const c = text[i++];
      if (c === '"') return s;
      if (c.charCodeAt(0) < 0x20) no("control");
      if (c !== "\\") {
        s += c;
        continue;
      }
      const e = text[i++];
      const simple: Record<string, string> = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
      if (e in simple) s += simple[e];
      else if (e === "u" && /^[0-9a-fA-F]{4}$/.test(text.slice(i, i + 4))) {
        s += String.fromCharCode(parseInt(text.slice(i, i + 4), 16));
        i += 4;
      } else no("escape");
    }
  };
  // a header nesting deeper than MAX_DEPTH is refused even when it is not JSON: count brackets
  // outside strings first
  let depth = 0;
  for (let j = 0, inString = false; j < text.length; j++) {
    const c = text[j];
    if (inString) {
      if (c === "\\") j++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{" || c === "[") {
      if (++depth > MAX_DEPTH) no("depth");
    } else if (c === "}" || c === "]") depth--;
  }
  const v = value(0);
  ws();
  if (i !== text.length) no("trailing");
  return v;
}

const wellFormed = (s: string) => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (!(d >= 0xdc00 && d <= 0xdfff)) return false;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) return false;
  }
  return true;
};
const isObj = (v: J): v is { kind: "object"; entries: Array<[string, J]> } => typeof v === "object" && v !== null && !Array.isArray(v);
const lastWins = (o: { entries: Array<[string, J]> }) => new Map(o.entries);

interface OracleTensor {
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}
interface OracleFile {
  tensors: Map<string, OracleTensor>;
  metadata: Map<string, string>;
  dataStart: number;
}

function oracle(bytes: Uint8Array): OracleFile {
  if (bytes.length < 8) no("short");
  let n = 0n;
  for (let j = 7; j >= 0; j--) n = (n << 8n) | BigInt(bytes[j]);
  if (n < 2n || n > BigInt(MAX_HEADER) || 8n + n > BigInt(bytes.length)) no("header length");
  const headerBytes = bytes.subarray(8, 8 + Number(n));
  if (headerBytes[0] !== 0x7b) no("start");
  const root = parseJson(utf8(headerBytes));
  if (!isObj(root)) no("not an object");
  const dataLength = bytes.length - 8 - Number(n);
  const names = new Set<string>();
  const tensors = new Map<string, OracleTensor>();
  const metadata = new Map<string, string>();
  for (const [name, entry] of (root as { entries: Array<[string, J]> }).entries) {
    if (names.has(name)) no("duplicate");
    names.add(name);
    if (!wellFormed(name)) no("surrogate");
    if (name === "__metadata__") {
      if (!isObj(entry)) no("metadata");
      for (const [k, v] of lastWins(entry as { entries: Array<[string, J]> })) {
        if (typeof v !== "string" || !wellFormed(k) || !wellFormed(v)) no("metadata value");
        metadata.set(k, v as string);
      }
      continue;
    }
    if (!isObj(entry)) no("entry");
    const fields = lastWins(entry as { entries: Array<[string, J]> });
    for (const k of fields.keys()) if (!["dtype", "shape", "data_offsets"].includes(k)) no("field");
    const dtype = fields.get("dtype"),
      shape = fields.get("shape"),
      offsets = fields.get("data_offsets");
    if (typeof dtype !== "string" || !Object.hasOwn(BITS, dtype)) no("dtype");
    const safe = (v: J) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
    if (!Array.isArray(shape) || !shape.every(safe)) no("shape");
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(safe)) no("offsets");
    const [begin, end] = offsets as number[];
    if (begin > end || end > dataLength) no("bounds");
    const bits = (shape as number[]).reduce((a, s) => a * BigInt(s), 1n) * BigInt(BITS[dtype as string]);
    if (bits > BigInt(Number.MAX_SAFE_INTEGER) || bits % 8n !== 0n || BigInt(end - begin) * 8n !== bits) no("size");
    tensors.set(name, { dtype: dtype as string, shape: (shape as number[]).map((s) => s + 0), begin, end });
  }
  const spans = [...tensors.values()].filter((t) => t.end > t.begin);
  for (let a = 0; a < spans.length; a++) {
    for (let b = a + 1; b < spans.length; b++) if (spans[a].begin < spans[b].end && spans[b].begin < spans[a].end) no("overlap");
  }
  return { tensors, metadata, dataStart: 8 + Number(n) };
}

// ---- the inputs --------------------------------------------------------------------------------

interface Spec {
  name: string;
  dtype: string;
  shape: number[];
}

function build(header: string, data: Uint8Array, pad = true): Uint8Array {
  let json = new TextEncoder().encode(header);
  if (pad && json.length % 8) {
    const p = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function validFile(rng: Rng): { header: Record<string, unknown>; entries: Array<[string, unknown]>; data: Uint8Array } {
  const pool: Spec[] = [
    { name: "w", dtype: "F32", shape: [2, 3] },
    { name: "h", dtype: "F16", shape: [3] },
    { name: "b", dtype: "BF16", shape: [2, 2] },
    { name: "i", dtype: "I32", shape: [2] },
    { name: "q", dtype: "I8", shape: [5] },
    { name: "d", dtype: "F64", shape: [1] },
    { name: "e", dtype: "F32", shape: [0, 4] },
    { name: "__proto__", dtype: "F32", shape: [] },
    { name: "é名", dtype: "U16", shape: [1, 1] },
    { name: "f4", dtype: "F4", shape: [2, 3] },
  ];
  const chosen = pool.filter(() => rng.uniform() < 0.5);
  if (chosen.length === 0) chosen.push(pool[0]);
  const entries: Array<[string, unknown]> = [];
  if (rng.uniform() < 0.5) entries.push(["__metadata__", { format: "pt", 'k"ey': "v\\al", __proto__x: "p" }]);
  let offset = 0;
  for (const t of chosen) {
    const size = (t.shape.reduce((a, s) => a * s, 1) * BITS[t.dtype]) / 8;
    entries.push([t.name, { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] }]);
    offset += size;
  }
  const data = new Uint8Array(offset + (rng.uniform() < 0.2 ? 3 : 0));
  for (let j = 0; j < data.length; j++) data[j] = Math.floor(rng.uniform() * 256);
  return { header: {}, entries, data };
}

const serialize = (entries: Array<[string, unknown]>) => `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`;

function jsonEdit(rng: Rng, entries: Array<[string, unknown]>): string {
  // biome-ignore lint/suspicious/noExplicitAny: JSON edits of arbitrary shape
  const e = entries.map(([k, v]) => [k, structuredClone(v)] as [string, any]);
  const tensors = e.filter(([k]) => k !== "__metadata__");
  const pick = () => tensors[Math.floor(rng.uniform() * tensors.length)][1];
  const anyValue = () => rng.pick<unknown>([-1, 0, 1, 2, 3, 8, 1.5, 2 ** 53, 1e308, "2", null, [], {}, true, -0]);
  switch (Math.floor(rng.uniform() * 12)) {
    case 0: {
      const t = pick();
      t.data_offsets[rng.int(0, 1)] += rng.pick([-8, -1, 1, 2, 4, 8]);
      break;
    }
    case 1: {
      const t = pick();
      t.data_offsets = rng.pick([[0, 0], [t.data_offsets[1], t.data_offsets[0]], [0], [0, 4, 8], "0-4", [anyValue(), 4]]);
      break;
    }
    case 2: {
      const t = pick();
      t.dtype = rng.pick(["F32", "F16", "BF16", "I32", "I8", "U8", "F64", "F4", "F6_E2M3", "C64", "f32", "Q4", "", 32, null]);
      break;
    }
    case 3: {
      const t = pick();
      const s = t.shape as unknown[];
      rng.pick([() => s.push(rng.pick([0, 1, 2])), () => s.pop(), () => (s[0] = anyValue()), () => (t.shape = anyValue())])();
      break;
    }
    case 4: {
      // names: duplicate, empty, __proto__, a lone surrogate, __metadata__ as a tensor
      const [k, v] = tensors[0];
      const text = serialize(e);
      return rng.pick([
        () => text.replace(/}$/, `,${JSON.stringify(k)}:${JSON.stringify(v)}}`),
        () => text.replace(JSON.stringify(k), '""'),
        () => text.replace(JSON.stringify(k), '"__proto__"'),
        () => text.replace(JSON.stringify(k), rng.pick(['"\\ud800"', '"\\udc00x"', '"\\ud83d\\ude00"'])),
        () => text.replace(JSON.stringify(k), '"__metadata__"'),
      ])();
    }
    case 5: {
      // nesting
      const levels = rng.pick([1, 4, 5, 6, 7, 50, 5000]);
      const t = pick();
      let v: unknown = t.shape;
      for (let j = 0; j < levels; j++) v = [v];
      t.shape = levels > 100 ? [] : v;
      const text = serialize(e);
      return levels > 100 ? text.replace('"shape":[]', `"shape":${"[".repeat(levels)}${"]".repeat(levels)}`) : text;
    }
    case 6:
      pick()[rng.pick(["extra", "dtype ", "data_offsets"])] = anyValue();
      break;
    case 7: {
      const t = pick();
      delete t[rng.pick(["dtype", "shape", "data_offsets"])];
      break;
    }
    case 8:
      e.push(["__metadata__", rng.pick([{ a: 1 }, ["x"], "v", { a: "\ud800" }, { b: "ok" }, null])]);
      break;
    case 9: {
      const j = rng.int(0, e.length - 1);
      e[j] = [e[j][0], anyValue()];
      break;
    }
    case 10: {
      // shift every offset (a gap at the start), or make two tensors share bytes
      for (const [, t] of tensors) t.data_offsets = t.data_offsets.map((o: number) => o + rng.pick([0, 1, 4]));
      break;
    }
    default: {
      const t = pick();
      t.shape = [rng.pick([2 ** 40, 2 ** 52, 3 ** 33]), rng.pick([0, 2 ** 20, 7])];
    }
  }
  return serialize(e);
}

function mutate(rng: Rng, round: number): Uint8Array {
  const base = validFile(rng);
  const file = build(serialize(base.entries), base.data, rng.uniform() < 0.9);
  const kind = round % 7;
  if (kind === 0) {
    // bit flips, mostly in the header
    const out = file.slice();
    const flips = rng.int(1, 3);
    const headerEnd = 8 + Number(new DataView(file.buffer).getBigUint64(0, true));
    for (let j = 0; j < flips; j++) {
      const at = rng.uniform() < 0.8 ? rng.int(0, headerEnd - 1) : rng.int(0, out.length - 1);
      out[at] ^= 1 << rng.int(0, 7);
    }
    return out;
  }
  if (kind === 1) return file.subarray(0, rng.int(0, file.length)); // truncation
  if (kind === 2) {
    // header-length edits
    const out = file.slice();
    const n = new DataView(out.buffer).getBigUint64(0, true);
    const v = rng.pick([n - 1n, n + 1n, n - 8n, n + 8n, 0n, 1n, 2n, 2n ** 63n, 2n ** 64n - 1n, BigInt(MAX_HEADER) + 1n, BigInt(out.length)]);
    new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, v), true);
    return out;
  }
  if (kind === 3) {
    // a UTF-8 BOM, leading whitespace, raw bytes inserted or deleted in the header
    const text = new TextEncoder().encode(serialize(base.entries));
    const at = rng.int(0, text.length);
    const ins = rng.pick([[0xef, 0xbb, 0xbf], [0x20], [0xff], [0xc3], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0x22], [0x5b], [0x7d], [0x00]]);
    const edited = rng.uniform() < 0.5 ? [...text.subarray(0, at), ...ins, ...text.subarray(at)] : [...text.subarray(0, at), ...text.subarray(at + 1)];
    const bytes = Uint8Array.from(rng.uniform() < 0.3 ? [...ins, ...text] : edited);
    const out = new Uint8Array(8 + bytes.length + base.data.length);
    new DataView(out.buffer).setBigUint64(0, BigInt(bytes.length), true);
    out.set(bytes, 8);
    out.set(base.data, 8 + bytes.length);
    return out;
  }
  // JSON edits (the header length kept consistent)
  return build(jsonEdit(rng, base.entries), base.data, rng.uniform() < 0.9);
}

// ---- checking one input ------------------------------------------------------------------------

function f16(h: number): number {
  const e = (h >> 10) & 31,
    m = h & 1023,
    s = h >> 15 ? -1 : 1;
  return e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
}

function check(bytes: Uint8Array): "accepted" | "rejected" {
  let want: OracleFile | undefined;
  let why = "";
  try {
    want = oracle(bytes);
  } catch (e) {
    if (!(e instanceof Invalid)) throw e;
    why = e.message;
  }
  let got: ReturnType<typeof readSafetensors> | undefined;
  try {
    got = readSafetensors(bytes);
  } catch (e) {
    if (!(e instanceof MoEError) || e.code !== "BAD_SAFETENSORS") throw new Error(`not a BAD_SAFETENSORS MoEError: ${String(e)}\n${hex(bytes)}`);
    if (want) throw new Error(`refused a file the oracle accepts (${e.message})\n${hex(bytes)}`);
    return "rejected";
  }
  if (!want) throw new Error(`accepted a file the oracle refuses (${why})\n${hex(bytes)}`);
  const names = [...Object.keys(got.tensors), ...Object.keys(got.others)].sort();
  expect(names).toEqual([...want.tensors.keys()].sort());
  expect(Object.entries(got.metadata).sort()).toEqual([...want.metadata].sort());
  for (const [name, t] of want.tensors) {
    const raw = bytes.subarray(want.dataStart + t.begin, want.dataStart + t.end);
    if (["F32", "F16", "BF16", "I32"].includes(t.dtype)) {
      const g = got.tensors[name];
      expect([g.dtype, g.shape]).toEqual([t.dtype, t.shape]);
      if (t.dtype === "F32" || t.dtype === "I32")
        expect(Array.from(new Uint8Array(g.data.buffer, g.data.byteOffset, g.data.byteLength))).toEqual(Array.from(raw));
      else {
        const halves = Array.from({ length: raw.length / 2 }, (_, j) => raw[2 * j] | (raw[2 * j + 1] << 8));
        const widened = halves.map((h) => (t.dtype === "F16" ? f16(h) : new Float32Array(new Uint32Array([h << 16]).buffer)[0]));
        widened.forEach((v, j) => expect(Object.is(g.data[j], v) || (Number.isNaN(v) && Number.isNaN(g.data[j]))).toBe(true));
      }
    } else {
      const o = got.others[name];
      expect([o.dtype, o.shape, Array.from(o.bytes)]).toEqual([t.dtype, t.shape, Array.from(raw)]);
    }
  }
  return "accepted";
}

function hex(bytes: Uint8Array): string {
  const head = bytes.subarray(0, 400);
  return `${bytes.length} bytes: ${new TextDecoder().decode(head.subarray(8)).slice(0, 300)}`;
}

describe(`safetensors fuzzer (${COUNT} mutations, seed ${SEED}) against an independent oracle`, () => {
  it("every byte-prefix of a small valid file: only the whole file is accepted", () => {
    const rng = new Rng(SEED);
    const base = validFile(rng);
    const file = build(serialize(base.entries), base.data);
    // a prefix that cuts the header is refused; longer ones are judged by the oracle inside check()
    for (let len = 0; len < file.length; len++) {
      const verdict = check(file.subarray(0, len));
      if (len < file.length - base.data.length) expect(verdict, `prefix of ${len} bytes`).toBe("rejected");
    }
    expect(check(file)).toBe("accepted");
  });

  it(
    "seeded mutations: accepted exactly when the oracle accepts, same contents; refusals are BAD_SAFETENSORS",
    () => {
      const rng = new Rng(SEED + 1);
      let accepted = 0;
      for (let round = 0; round < COUNT; round++) if (check(mutate(rng, round)) === "accepted") accepted++;
      // both outcomes are exercised in quantity
      expect(accepted).toBeGreaterThan(COUNT * 0.05);
      expect(accepted).toBeLessThan(COUNT * 0.95);
    },
    Math.max(60_000, COUNT * 10),
  );
});
