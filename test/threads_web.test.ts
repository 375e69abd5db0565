// The thread pool's Web Worker path (browsers: a blob: module worker per thread; Node's
// worker_threads are tested in test/threads.test.ts): test/threads_web/checks.ts in
// headless Chromium on a cross-origin-isolated page, both on the page (whose main thread may not
// block on Atomics.wait) and inside a module Web Worker (whose layers start nested workers):
// threads 2 and 3 give the bits of threads 1, and the pool's Web Workers are counted as they start.
// Then the same checks in Deno and Bun (test/deno/threads.ts), whose pools must take worker_threads.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { browserImports, CHROMIUM_PATH, packAndInstall, ROOT, runOnChromiumPage, type Consumer } from "./conformance/harness.ts";
import { isCI } from "./helpers.ts";
import { EXPECTED_WORKERS, type ThreadReport } from "./threads_web/checks.ts";

/** Checks per host: per shape, batches × 2 modes × 3 comparisons + 2 pools × (gradients + weights). */
const MIN_CHECKS = 188;

function expectClean(report: ThreadReport | undefined, host: string): void {
  expect(report, `${host} sent no report`).toBeDefined();
  console.log(`${host}: ${report!.checks} checks, ${report!.webWorkersStarted} Web Workers, hardwareConcurrency ${report!.hardwareConcurrency}`);
  expect(report!.error, report!.error).toBeUndefined();
  expect(report!.host).toBe(host);
  expect(report!.expectedWorkers).toBe(EXPECTED_WORKERS);
  expect(report!.checks).toBeGreaterThanOrEqual(MIN_CHECKS);
  // the large batches split the gating GEMM across the threads (src/cpu/engine.ts)
  expect(report!.splitGatingChecks).toBeGreaterThan(0);
  expect(report!.mismatches).toEqual([]);
}

/** Bundles the page and worker entries into the consumer, `edge-moe` left to the served package. */
async function bundle(consumer: Consumer): Promise<void> {
  const imports = await browserImports(consumer);
  await build({
    entryPoints: { "threads-page": join(ROOT, "test", "threads_web", "page.ts"), "threads-worker": join(ROOT, "test", "threads_web", "worker.ts") },
    outdir: consumer.dir,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    logLevel: "warning",
    // A module worker has no import map: the package's URL is written into both bundles.
    plugins: [
      {
        name: "served-package",
        setup: (b) =>
          b.onResolve({ filter: /^edge-moe(\/|$)/ }, (args) => {
            const url = imports[args.path];
            return url ? { path: url, external: true } : { errors: [{ text: `no browser export for ${args.path}` }] };
          }),
      },
    ],
  });
}

describe("the thread pool on Web Workers in headless Chromium: threads 2 and 3 give the bits of threads 1", () => {
  if (!existsSync(CHROMIUM_PATH)) {
    if (isCI()) {
      it("has Chromium (required under CI)", () => {
        throw new Error(`${CHROMIUM_PATH} is missing: install chromium or set CHROMIUM_PATH`);
      });
    } else {
      it.skip(`skipped: ${CHROMIUM_PATH} is missing (set CHROMIUM_PATH)`, () => undefined);
    }
    return;
  }

  let consumer: Consumer | undefined;
  let reports: { page?: ThreadReport; worker?: ThreadReport } = {};

  beforeAll(async () => {
    consumer = await packAndInstall();
    await bundle(consumer);
    const html = `<!doctype html><meta charset="utf-8"><title>edge-moe threads</title>
<script type="module" src="/threads-page.mjs"></script>`;
    const { result, pageErrors } = await runOnChromiumPage<{ page?: ThreadReport; worker?: ThreadReport; error?: string }>({
      root: consumer.dir,
      html,
      // cross-origin isolated: SharedArrayBuffer and shared wasm memory exist on the page and in its workers
      headers: { "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp" },
      resultGlobal: "__threads",
      timeoutMs: 240_000,
    });
    if (result.error) throw new Error(`the page failed: ${result.error}`);
    if (pageErrors.length > 0) throw new Error(`uncaught errors on the page: ${pageErrors.join("; ")}`);
    reports = result;
  }, 360_000);

  afterAll(async () => {
    if (consumer) await rm(consumer.tmp, { recursive: true, force: true });
  });

  for (const where of ["page", "worker"] as const) {
    it(`on the ${where === "page" ? "page (its main thread may not block)" : "module Web Worker (nested workers)"}`, () => {
      const report = reports[where];
      expectClean(report, `chromium ${where}`);
      expect(report!.crossOriginIsolated).toBe(true);
      // the page's main thread cannot block, so the pool's caller must not sleep (CALLER_MAY_BLOCK):
      // the checks' millisecond chunks make it wait past its spin, where a sleep would throw
      expect(report!.mayBlock).toBe(where === "worker");
      // one Web Worker per thread beyond the first, for each pool: the Web Worker path ran
      expect(report!.webWorkersStarted).toBe(EXPECTED_WORKERS);
      expect(report!.webWorkerKinds).toEqual(["blob: module"]);
    });
  }
});

describe("the same checks in Deno and Bun, on worker_threads: threads 2 and 3 give the bits of threads 1", () => {
  const cache = mkdtempSync(join(tmpdir(), "edge-moe-threads-"));
  afterAll(() => rmSync(cache, { recursive: true, force: true }));

  for (const runtime of ["deno", "bun"] as const) {
    it(runtime, () => {
      const bin = join(ROOT, "node_modules", ".bin", runtime);
      if (!existsSync(bin)) throw new Error(`${bin} is missing: run npm ci (deno and bun are dev dependencies)`);
      const args = runtime === "deno" ? ["run", "--allow-read", "--no-lock", "test/deno/threads.ts"] : ["test/deno/threads.ts"];
      const env = { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", DENO_DIR: join(cache, "deno"), BUN_INSTALL_CACHE_DIR: join(cache, "bun") };
      const child = spawnSync(bin, args, { cwd: ROOT, env, encoding: "utf8", timeout: 300_000 });
      const output = `${child.stdout ?? ""}${child.stderr ?? ""}`;
      const line = (child.stdout ?? "").trim().split("\n").pop() ?? "";
      const report = line.startsWith("{") ? (JSON.parse(line) as ThreadReport) : undefined;
      expect(report, output.slice(-4000)).toBeDefined();
      expect(report!.host).toMatch(new RegExp(`^${runtime} `));
      expectClean(report, report!.host);
      expect(child.status, output.slice(-4000)).toBe(0);
      // their pools take worker_threads (no global Worker), so an undisposed layer never holds the program
      expect(report!.webWorkersStarted).toBe(0);
    });
  }
});
