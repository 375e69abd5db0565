// A threaded layer's worker pool (src/cpu/threads.ts), in child processes of Node, Deno and Bun: a
// layer that is never disposed does not keep the program alive; a globalThis.Worker replaced by
// Node's worker_threads.Worker (onnxruntime-web does that) does not break threads: 2; layers that
// are garbage-collected without dispose() end their threads.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SCRIPT = "test/reliability/threads-lifetime.mjs";
const BIN = (name: string) => `${ROOT}node_modules/.bin/${name}`;

type Command = (args: string[], flags?: string[]) => [string, string[]];
const RUNTIMES: Record<"node" | "deno" | "bun", Command> = {
  node: (args, flags = []) => [process.execPath, [...flags, SCRIPT, ...args]],
  deno: (args) => [BIN("deno"), ["run", "--allow-read", "--no-lock", SCRIPT, ...args]],
  bun: (args) => [BIN("bun"), [SCRIPT, ...args]],
};

/** Runs a child; resolves with its exit code and output, or `timedOut` when it had to be killed. */
function run(command: string, args: string[], limitMs: number): Promise<{ code: number | null; out: string; timedOut: boolean; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { cwd: ROOT, env: { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" } });
    let out = "";
    let timedOut = false;
    child.stdout.on("data", (c) => (out += c));
    child.stderr.on("data", (c) => (out += c));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, limitMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out, timedOut, ms: performance.now() - started });
    });
  });
}

describe("a threaded layer's workers", () => {
  for (const [runtime, argv] of Object.entries(RUNTIMES)) {
    it(`${runtime}: a layer never disposed lets the program exit`, async () => {
      const [command, args] = argv(["undisposed"]);
      const r = await run(command, args, 8_000);
      expect(r.timedOut, `${runtime} did not exit within 8 s:\n${r.out}`).toBe(false);
      expect(r.code, r.out).toBe(0);
      expect(r.out).toContain("ok undisposed");
    });

    it(`${runtime}: globalThis.Worker set to worker_threads.Worker, threads: 2 works`, async () => {
      const [command, args] = argv(["global-worker"]);
      const r = await run(command, args, 30_000);
      expect(r.code, r.out).toBe(0);
      expect(r.out).toContain("ok global-worker");
    });
  }

  it("node: layers collected without dispose() end their worker threads", async () => {
    const [command, args] = RUNTIMES.node(["gc"], ["--expose-gc"]);
    const r = await run(command, args, 30_000);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/ok gc/);
  });
});
