// The thread pool's Web Worker path (browsers, Deno, Bun: a global Worker; Node takes
// worker_threads, tested in test/threads.test.ts): test/deno/threads.ts in Deno and in Bun, every
// output of threads: 2 and 3 the same bits as threads: 1, with the pool's workers counted as they
// start.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("..", import.meta.url));
const cache = mkdtempSync(join(tmpdir(), "edge-moe-threads-web-"));

afterAll(() => rmSync(cache, { recursive: true, force: true }));

interface Report {
  runtime: string;
  workersStarted: number;
  expectedWorkers: number;
  checks: number;
  mismatches: string[];
  error?: string;
}

function run(runtime: "deno" | "bun"): { report: Report | undefined; output: string; status: number | null } {
  const bin = join(root, "node_modules", ".bin", runtime);
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run npm ci (deno and bun are dev dependencies)`);
  const args = runtime === "deno" ? ["run", "--allow-read", "--no-lock", "test/deno/threads.ts"] : ["test/deno/threads.ts"];
  const env = { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", DENO_DIR: join(cache, "deno"), BUN_INSTALL_CACHE_DIR: join(cache, "bun") };
  const child = spawnSync(bin, args, { cwd: root, env, encoding: "utf8", timeout: 300_000 });
  const output = `${child.stdout ?? ""}${child.stderr ?? ""}`;
  const line = (child.stdout ?? "").trim().split("\n").pop() ?? "";
  return { report: line.startsWith("{") ? (JSON.parse(line) as Report) : undefined, output, status: child.status };
}

describe("the thread pool on Web Workers: threads 2 and 3 give the bits of threads 1", () => {
  for (const runtime of ["deno", "bun"] as const) {
    it(runtime, () => {
      const { report, output, status } = run(runtime);
      expect(report, output.slice(-4000)).toBeDefined();
      expect(report!.error, report!.error).toBeUndefined();
      expect(status, output.slice(-4000)).toBe(0);
      expect(report!.runtime).toMatch(new RegExp(`^${runtime} `));
      // one worker per thread beyond the first, for each pool: the Web Worker path ran
      expect(report!.workersStarted).toBe(report!.expectedWorkers);
      expect(report!.expectedWorkers).toBe(9);
      expect(report!.checks).toBeGreaterThanOrEqual(90);
      expect(report!.mismatches).toEqual([]);
    });
  }
});
