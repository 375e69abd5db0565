// Worker chaos (test/chaos/chaos.mjs) in Node (worker_threads running dist/worker.js), Deno and Bun
// (Web Workers), each in a child process that must also end by itself afterwards, and in headless
// Chromium (a page served from the repository, Web Workers): terminate during a call, a crash inside
// the worker, a worker that never loads, one that is not edge-moe's, per-call timeouts and signals.
// Every call settles, with a typed MoEError, within a deadline; the program survives.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { runOnChromiumPage } from "./conformance/harness.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = (name: string) => join(ROOT, "node_modules", ".bin", name);
/** Chaos cases per run: fewer passed means a run was cut short. */
const CASES = 7;

function run(command: string, args: string[], limitMs: number): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: ROOT, env: { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" } });
    let stdout = "",
      stderr = "",
      timedOut = false;
    child.stdout.on("data", (c) => (stdout += c));
    child.stderr.on("data", (c) => (stderr += c));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, limitMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

function accept(name: string, report: string): void {
  const summary = /^(\d+) passed, (\d+) failed$/m.exec(report);
  expect(summary, `${name}: no summary line:\n${report}`).not.toBeNull();
  expect(
    report.split("\n").filter((l) => l.startsWith("FAIL")),
    `${name}:\n${report}`,
  ).toEqual([]);
  expect(Number(summary![1]), report).toBe(CASES);
}

describe("worker chaos", () => {
  const runtimes: Record<string, [string, string[]]> = {
    "node (worker_threads)": [process.execPath, ["test/chaos/cli.mjs"]],
    "deno (Web Workers)": [BIN("deno"), ["run", "--allow-read", "--no-lock", "test/chaos/cli.mjs"]],
    "bun (Web Workers)": [BIN("bun"), ["test/chaos/cli.mjs"]],
  };
  for (const [name, [command, args]] of Object.entries(runtimes)) {
    it(`${name}: every call settles, typed; the program survives and then exits by itself`, async () => {
      const r = await run(command, args, 40_000);
      expect(r.timedOut, `${name} did not exit by itself:\n${r.stdout}\n${r.stderr}`).toBe(false);
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
      accept(name, r.stdout);
    });
  }

  it("headless Chromium (Web Workers)", async () => {
    const html = `<!doctype html><meta charset="utf-8"><title>edge-moe chaos</title>
<script type="module">
  import { createMoE, createMoEWorker } from "/dist/browser.js";
  import { runChaos } from "/test/chaos/chaos.mjs";
  const url = (kind) => kind === "edge-moe" ? "/dist/worker.js" : "/test/chaos/" + kind + "-worker.mjs";
  const spawn = (kind, { handled }) => {
    const worker = new Worker(url(kind), { type: "module" });
    if (handled) worker.addEventListener("error", (event) => event.preventDefault());
    return worker;
  };
  runChaos({ createMoE, createMoEWorker, spawn }).then((r) => (window.__chaos = r), (e) => (window.__chaos = "FAIL page: " + e));
</script>`;
    const { result: report } = await runOnChromiumPage<string>({ root: ROOT, html, resultGlobal: "__chaos", timeoutMs: 60_000 });
    console.log(`chromium chaos:\n${report}`);
    accept("chromium", report);
  });
});
