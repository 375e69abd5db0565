// The relaxed builds' training path (backward, SGD and Adam steps) in the suite: Node 20 compiles
// relaxed SIMD only with --experimental-wasm-relaxed-simd, so test/relaxed/train.mjs runs in a child
// Node with that flag, on every golden case, next to the simd build; relaxed-threads (2 threads)
// must give the relaxed build's bits. It also checks the Philox vectors in the relaxed kernels.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { listCases, TOL } from "./helpers.ts";

interface CaseReport {
  name: string;
  yGolden: number;
  gradGolden: Record<string, number>;
  gradVsSimd: Record<string, number>;
  sgdVsSimd: Record<string, number>;
  adamMaxDiff: number;
  adamLr: number;
  threadsSameBits: boolean;
  identicalToSimd: boolean;
}

const script = fileURLToPath(new URL("./relaxed/train.mjs", import.meta.url));
const child = spawnSync(process.execPath, ["--experimental-wasm-relaxed-simd", script], { encoding: "utf8", timeout: 300_000 });
const output = `${child.stdout ?? ""}${child.stderr ?? ""}`;
const last = (child.stdout ?? "").trim().split("\n").pop() ?? "";
const report = last.startsWith("{") ? (JSON.parse(last) as { best: string; philox: Record<string, boolean>; cases: CaseReport[] }) : undefined;

describe("relaxed SIMD training (node --experimental-wasm-relaxed-simd)", () => {
  it("the child ran every golden case with the relaxed build picked", () => {
    expect(child.status, output.slice(-4000)).toBe(0);
    expect(report, output.slice(-4000)).toBeDefined();
    expect(report!.best).toBe("relaxed");
    expect(report!.cases.map((c) => c.name)).toEqual(listCases().map((c) => c.name));
  });

  it("Philox4x32-10 known-answer vectors in edge-moe.relaxed.wasm and edge-moe.relaxed-threads.wasm", () => {
    expect(report?.philox).toEqual({ relaxed: true, "relaxed-threads": true });
  });

  for (const info of listCases()) {
    it(`${info.name}: gradients match the vectors and the simd build at 1e-4; the steps agree; relaxed-threads gives the same bits`, () => {
      const c = report?.cases.find((r) => r.name === info.name);
      expect(c, output.slice(-4000)).toBeDefined();
      expect(c!.yGolden).toBeLessThanOrEqual(TOL);
      expect(Object.keys(c!.gradGolden).length).toBeGreaterThan(1);
      for (const [key, err] of Object.entries(c!.gradGolden)) expect(err, `grad ${key} against the vectors`).toBeLessThanOrEqual(TOL);
      expect(Object.keys(c!.gradVsSimd).sort()).toEqual(Object.keys(c!.gradGolden).sort());
      for (const [key, err] of Object.entries(c!.gradVsSimd)) expect(err, `grad ${key} against simd`).toBeLessThanOrEqual(TOL);
      for (const [key, err] of Object.entries(c!.sgdVsSimd)) expect(err, `${key} after an SGD step against simd`).toBeLessThanOrEqual(TOL);
      // Adam moves each weight by at most its lr per step, whatever the gradient: a gradient that
      // rounds to a different sign near zero may move the other way, nothing more.
      expect(c!.adamMaxDiff).toBeLessThanOrEqual(2 * c!.adamLr);
      expect(c!.threadsSameBits).toBe(true);
    });
  }
});
