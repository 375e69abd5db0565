// Past 2 GiB of wasm memory: layers whose scratch (a huge batch) or weights (a huge hidden width)
// end between 2 and 4 GiB compute the right y, dx, weights and steps (checked against a float64
// reference of the rows and entries they look at), and what would pass 4 GiB is refused with a
// typed error. Each case runs in a child process, so its memory does not stay in the test worker.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const SCRIPT = fileURLToPath(new URL("./reliability/big-memory.mjs", import.meta.url));

function run(...args: string[]): { ok: boolean; maxMemory: number; failures: string[] } {
  const child = spawnSync(process.execPath, [SCRIPT, ...args], { encoding: "utf8", timeout: 90_000 });
  const line = child.stdout.trim().split("\n").pop() ?? "";
  expect(line, `no report (exit ${child.status}, signal ${child.signal}):\n${child.stderr}`).toMatch(/^\{/);
  return JSON.parse(line);
}

describe("wasm memory between 2 and 4 GiB", () => {
  // 2 threads: the pool's kernels (gating GEMM, gather, expert GEMMs, combine: the same functions
  // the serial pass calls) and its control block's pointers; backward and the steps run serially.
  // (`node test/reliability/big-memory.mjs scratch 1` runs the serial pass alone.)
  it("scratch past 2 GiB (1.7M rows), 2 threads: eval y and top-k, training y and dx", () => {
    const report = run("scratch", "2");
    expect(report.failures).toEqual([]);
    expect(report.maxMemory).toBeGreaterThan(2 ** 31);
  });

  it("weights past 2 GiB: y, the getWeights round trip, and a typed refusal past 4 GiB", () => {
    const report = run("weights");
    expect(report.failures).toEqual([]);
    expect(report.maxMemory).toBeGreaterThan(2 ** 31);
  });

  for (const optimizer of ["sgd", "adam"]) {
    it(`gradients${optimizer === "adam" ? " and Adam's moments" : ""} past 2 GiB: backward and an ${optimizer} step`, () => {
      const report = run(optimizer);
      expect(report.failures).toEqual([]);
      expect(report.maxMemory).toBeGreaterThan(2 ** 31);
    });
  }
});
