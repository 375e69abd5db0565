// Worker chaos (test/chaos/chaos.mjs) in Node (worker_threads running dist/worker.js), Deno and Bun
// (Web Workers), each in a child process that must also end by itself afterwards, and in headless
// Chromium (a page served from the repository, Web Workers): terminate during a call, a crash inside
// the worker, a worker that never loads, one that is not edge-moe's, per-call timeouts and signals.
// Every call settles, with a typed MoEError, within a deadline; the program survives.
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = (name: string) => join(ROOT, "node_modules", ".bin", name);
/** Chaos cases per run: fewer passed means a run was cut short. */
const CASES = 7;

function run(command: string, args: string[], limitMs: number): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: ROOT, env: { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" } });
    let stdout = "", stderr = "", timedOut = false;
    child.stdout.on("data", (c) => (stdout += c));
    child.stderr.on("data", (c) => (stderr += c));
    const timer = setTimeout(() => { timedOut = true; child.kill("SIGKILL"); }, limitMs);
    child.on("error", reject);
    child.on("close", (code) => { clearTimeout(timer); resolve({ code, stdout, stderr, timedOut }); });
  });
}

function accept(name: string, report: string): void {
  const summary = /^(\d+) passed, (\d+) failed$/m.exec(report);
  expect(summary, `${name}: no summary line:\n${report}`).not.toBeNull();
  expect(report.split("\n").filter((l) => l.startsWith("FAIL")), `${name}:\n${report}`).toEqual([]);
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
    const types: Record<string, string> = { ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".map": "application/json" };
    const server = createServer(async (request, response) => {
      const path = decodeURIComponent(new URL(request.url ?? "/", "http://localhost").pathname);
      if (path === "/") return void response.writeHead(200, { "content-type": "text/html" }).end(html);
      const file = normalize(join(ROOT, path));
      if (!file.startsWith(join(ROOT, "dist")) && !file.startsWith(join(ROOT, "test", "chaos"))) return void response.writeHead(404).end();
      try {
        const body = await readFile(file);
        response.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" }).end(body);
      } catch {
        response.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    const { chromium } = await import("playwright-core");
    const browser = await chromium.launch({
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
    });
    try {
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${port}/`);
      await page.waitForFunction(() => (window as unknown as { __chaos?: string }).__chaos !== undefined, null, { timeout: 60_000, polling: 100 });
      const report = await page.evaluate(() => (window as unknown as { __chaos: string }).__chaos);
      console.log(`chromium chaos:\n${report}`);
      accept("chromium", report);
    } finally {
      await browser.close();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
