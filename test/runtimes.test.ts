// One conformance suite (test/conformance/suite.ts), run in every runtime against the packed
// tarball installed into a scratch project: Node, Deno, Bun, headless Chromium (page, worker
// module, GPU where offered), Cloudflare workerd (miniflare) and Vercel edge-runtime (strict).
// Each run prints `N passed, N failed` and a SHA-256 of its outputs; the "simd" hashes must agree.
import { readdirSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  bundleEntries,
  packAndInstall,
  parseReport,
  ROOT,
  runChromium,
  runCli,
  runEdgeRuntime,
  runWorkerd,
  type Consumer,
  type ParsedReport,
} from "./conformance/harness.ts";
import { isCI } from "./helpers.ts";

/** Checks per variant: 7 golden cases + 4 dtypes + 4 (seeded ×2, errors, out buffers). Fewer means a run was cut short. */
const CHECKS_PER_VARIANT = 15;

let consumer: Consumer;
const reports = new Map<string, ParsedReport>();

function accept(name: string, report: ParsedReport, variants: number): void {
  const hashes = Object.entries(report.hashes)
    .map(([v, h]) => `${v} ${h.slice(0, 16)}`)
    .join(", ");
  console.log(`${name}: ${report.passed} passed, ${report.failed} failed; ${hashes}`);
  expect(report.failures, `${name}:\n${report.text}`).toEqual([]);
  expect(report.failed).toBe(0);
  expect(report.passed).toBeGreaterThanOrEqual(variants * CHECKS_PER_VARIANT);
  reports.set(name, report);
}

beforeAll(async () => {
  consumer = await packAndInstall();
  await bundleEntries(consumer);
}, 120_000);

afterAll(async () => {
  if (consumer) await rm(consumer.tmp, { recursive: true, force: true });
});

describe("the packed tarball", () => {
  it("holds every file a consumer needs and nothing from test/ or bench/", () => {
    const files = consumer.packedFiles;
    const wasmBuilds = readdirSync(join(ROOT, "dist"))
      .filter((f) => f.endsWith(".wasm"))
      .map((f) => `dist/${f}`);
    expect(wasmBuilds).toEqual(expect.arrayContaining(["dist/edge-moe.simd.wasm", "dist/edge-moe.relaxed.wasm"]));
    for (const needed of [
      "package.json",
      "README.md",
      "dist/index.js",
      "dist/browser.js",
      "dist/workerd.js",
      "dist/worker.js",
      "dist/index.d.ts",
      "dist/worker.d.ts",
      "dist/types/index.d.ts",
      ...wasmBuilds,
    ]) {
      expect(files, needed).toContain(needed);
    }
    expect(files.filter((f) => /^(test|bench|src|assembly|scripts|node_modules)\//.test(f))).toEqual([]);
  });
});

describe("the conformance suite in every runtime", () => {
  it("reads its report format", () => {
    expect(() => parseReport("ok   a\n1 passed, 0 failed\nextra")).toThrow();
    expect(parseReport(`FAIL x: y\nhash simd ${"a".repeat(64)}\n0 passed, 1 failed`)).toMatchObject({ failed: 1, hashes: { simd: "a".repeat(64) } });
  });

  for (const runtime of ["node", "deno", "bun"] as const) {
    it(`${runtime}`, async () => {
      const { report } = await runCli(consumer, runtime, "local");
      accept(runtime, report, 2);
    });
  }

  it("node --experimental-wasm-relaxed-simd: the relaxed build is detected and picked", async () => {
    const { report } = await runCli(consumer, "node", "local", ["--experimental-wasm-relaxed-simd"]);
    expect(Object.keys(report.hashes)).toContain("auto-relaxed");
    accept("node-relaxed-flag", report, 2);
  });

  for (const runtime of ["deno", "bun"] as const) {
    it(`${runtime}, layers inside edge-moe/worker`, async () => {
      const { report } = await runCli(consumer, runtime, "worker");
      accept(`${runtime}-worker`, report, 2);
    });
  }

  it("headless Chromium: page, edge-moe/worker, GPU", async () => {
    const results = await runChromium(consumer);
    accept("chromium-page", parseReport(results.page), 2);
    accept("chromium-worker", parseReport(results.worker), 2);
    if (results.gpu.startsWith("skip:")) {
      // Only a missing adapter may skip the GPU run, and never under CI (Chromium's SwiftShader
      // offers one); a layer that fails on an adapter fails the test.
      console.log(`chromium-gpu: ${results.gpu}`);
      expect(results.gpu).toMatch(/^skip: no WebGPU adapter/);
      expect(isCI(), "Chromium offered no WebGPU adapter").toBe(false);
    } else {
      accept("chromium-gpu", parseReport(results.gpu), 1);
    }
  });

  it("Cloudflare workerd (miniflare)", async () => {
    accept("workerd", await runWorkerd(consumer), 2);
  });

  it("Vercel edge-runtime, strict mode, module injected", async () => {
    accept("edge-runtime", await runEdgeRuntime(consumer), 1);
  });
});

describe("determinism", () => {
  it('the "simd" build gives bit-identical outputs in every runtime', () => {
    const cpuRuns = ["node", "node-relaxed-flag", "deno", "bun", "deno-worker", "bun-worker", "chromium-page", "chromium-worker", "workerd", "edge-runtime"];
    expect([...reports.keys()]).toEqual(expect.arrayContaining(cpuRuns));
    const simd = Object.fromEntries(cpuRuns.map((name) => [name, reports.get(name)!.hashes.simd]));
    for (const [name, hash] of Object.entries(simd)) expect(hash, `${name} printed no simd hash`).toMatch(/^[0-9a-f]{64}$/);
    expect(new Set(Object.values(simd)).size, JSON.stringify(simd, null, 1)).toBe(1);
    // loadMoE gives the same layer, from bytes, paths and URLs alike, in every runtime that loads one
    const loaderRuns = ["node", "node-relaxed-flag", "deno", "bun", "chromium-page", "chromium-worker", "workerd", "edge-runtime"];
    const loader = Object.fromEntries(loaderRuns.map((name) => [name, reports.get(name)!.hashes.loader]));
    for (const [name, hash] of Object.entries(loader)) expect(hash, `${name} printed no loader hash`).toMatch(/^[0-9a-f]{64}$/);
    expect(new Set(Object.values(loader)).size, JSON.stringify(loader, null, 1)).toBe(1);
    // Where the default ("auto") picks the simd build, it is the same computation.
    for (const [name, r] of reports) {
      if (r.hashes["auto-simd"]) expect(r.hashes["auto-simd"], name).toBe(r.hashes.simd);
    }
  });
});
