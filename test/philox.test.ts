// Philox4x32-10 (the gating noise's generator, assembly/rng.ts) against the known-answer vectors
// published with Random123 (kat_vectors: philox4x32, 10 rounds), in every kernel build, and against
// an independent BigInt implementation of the round function on random counters and keys.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Rng } from "./helpers.ts";

interface Hook {
  memory: WebAssembly.Memory;
  heapBase(): number;
  philoxBlock(dst: number, c0: number, c1: number, c2: number, c3: number, k0: number, k1: number): void;
}

const wasmUrl = (build: string) => new URL(`../dist/edge-moe.${build}.wasm`, import.meta.url);

function load(build: string): Hook {
  const bytes = readFileSync(wasmUrl(build));
  // The threaded builds import their (shared) memory and export it again.
  const imports: WebAssembly.Imports = build.endsWith("-threads")
    ? { env: { memory: new WebAssembly.Memory({ initial: 17, maximum: 65536, shared: true }) } }
    : {};
  const { exports } = new WebAssembly.Instance(new WebAssembly.Module(bytes), imports);
  return exports as unknown as Hook;
}

function philoxWasm(hook: Hook, ctr: readonly number[], key: readonly number[]): number[] {
  const at = hook.heapBase();
  hook.philoxBlock(at, ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1]);
  return Array.from(new Uint32Array(hook.memory.buffer, at, 4));
}

/** Philox4x32-10 from its definition (Salmon et al., SC 2011), in BigInt: no shared code with the kernel. */
function philoxReference(ctr: readonly number[], key: readonly number[]): number[] {
  const mask = 0xffffffffn;
  let [c0, c1, c2, c3] = ctr.map((v) => BigInt(v >>> 0));
  let [k0, k1] = key.map((v) => BigInt(v >>> 0));
  for (let round = 0; round < 10; round++) {
    const p0 = 0xd2511f53n * c0;
    const p1 = 0xcd9e8d57n * c2;
    [c0, c1, c2, c3] = [(p1 >> 32n) ^ c1 ^ k0, p1 & mask, (p0 >> 32n) ^ c3 ^ k1, p0 & mask];
    k0 = (k0 + 0x9e3779b9n) & mask;
    k1 = (k1 + 0xbb67ae85n) & mask;
  }
  return [c0, c1, c2, c3].map(Number);
}

// Random123 kat_vectors, philox4x32 with 10 rounds: counter (4 words), key (2 words) → output.
const KAT: Array<{ ctr: number[]; key: number[]; out: number[] }> = [
  { ctr: [0, 0, 0, 0], key: [0, 0], out: [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8] },
  { ctr: [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], key: [0xffffffff, 0xffffffff], out: [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd] },
  { ctr: [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], key: [0xa4093822, 0x299f31d0], out: [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1] },
];

const hex = (words: number[]) => words.map((w) => w.toString(16).padStart(8, "0")).join(" ");

describe("Philox4x32-10: Random123's known-answer vectors", () => {
  it("the BigInt reference reproduces them (the vectors are read correctly)", () => {
    for (const { ctr, key, out } of KAT) expect(hex(philoxReference(ctr, key))).toBe(hex(out));
  });
  // Node 20 compiles relaxed SIMD only behind a flag: there, the relaxed builds' vectors are
  // checked by test/relaxed-train.test.ts, which runs Node with it.
  const builds = ["simd", "relaxed", "simd-threads", "relaxed-threads"].filter((build) => WebAssembly.validate(readFileSync(wasmUrl(build))));
  it("every build this host compiles is checked; the others are relaxed ones", () => {
    expect(builds).toEqual(expect.arrayContaining(["simd", "simd-threads"]));
  });
  for (const build of builds) {
    it(`edge-moe.${build}.wasm`, () => {
      const hook = load(build);
      for (const { ctr, key, out } of KAT) expect(hex(philoxWasm(hook, ctr, key)), hex(ctr)).toBe(hex(out));
    });
  }
});

describe("Philox4x32-10: the kernel against the reference on random blocks", () => {
  it("1000 random counters and keys agree word for word", () => {
    const hook = load("simd");
    const rng = new Rng(0x9e37);
    for (let i = 0; i < 1000; i++) {
      const ctr = [rng.nextU32(), rng.nextU32(), rng.nextU32(), rng.nextU32()];
      const key = [rng.nextU32(), rng.nextU32()];
      expect(philoxWasm(hook, ctr, key), `${hex(ctr)} / ${hex(key)}`).toEqual(philoxReference(ctr, key));
    }
  });
});
