// Browser entry of test/threads_web.test.ts (bundled with edge-moe left to the served package):
// the thread pool's checks on a cross-origin-isolated page, whose main thread may not block on
// Atomics.wait, then inside a module Web Worker, whose pools start nested workers. Leaves
// { page, worker } reports (or { error }) in `window.__threads`.
import { createMoE } from "edge-moe";
import { countWebWorkers, runThreadChecks, type ThreadReport } from "./checks.ts";

// The worker that runs the second half is made with the page's own Worker, so it is not counted.
const PageWorker = globalThis.Worker;
const webWorkers = countWebWorkers();

function inWorker(): Promise<ThreadReport> {
  const worker = new PageWorker(new URL("/threads-worker.mjs", location.href), { type: "module" });
  return new Promise<ThreadReport>((resolve, reject) => {
    worker.onmessage = (e: MessageEvent<ThreadReport>) => resolve(e.data);
    worker.onerror = (e: ErrorEvent) => reject(new Error(`the test worker failed: ${e.message || "it did not load"}`));
  }).finally(() => worker.terminate());
}

const w = window as unknown as { __threads?: { page?: ThreadReport; worker?: ThreadReport; error?: string } };
try {
  const page = await runThreadChecks(createMoE, "chromium page", webWorkers);
  w.__threads = { page, worker: await inWorker() };
} catch (error) {
  w.__threads = { error: String((error as Error)?.stack ?? error) };
}
