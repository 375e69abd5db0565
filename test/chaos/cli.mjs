// The chaos tests (chaos.mjs) in Node (worker_threads), Deno or Bun (Web Workers). Prints the report;
// the program must then end by itself (no worker, timer or port of edge-moe's keeps it alive).
import { createMoE, createMoEWorker } from "../../dist/index.js";
import { runChaos } from "./chaos.mjs";

const url = (kind) => new URL(kind === "edge-moe" ? "../../dist/worker.js" : `./${kind}-worker.mjs`, import.meta.url);
let spawn;
if (globalThis.Deno || globalThis.Bun) {
  spawn = (kind, { handled }) => {
    const worker = new Worker(url(kind), { type: "module" });
    // Deno ends the program on a worker error nobody prevents; before createMoEWorker listens, that is the caller's to do
    if (handled) worker.addEventListener("error", (event) => event.preventDefault());
    return worker;
  };
} else {
  const { Worker } = await import("node:worker_threads");
  // A worker_threads Worker is an EventEmitter: an "error" nobody listens to ends the program. A
  // worker whose load error fires before createMoEWorker listens is the caller's to watch.
  spawn = (kind, { handled }) => {
    const worker = new Worker(url(kind));
    if (handled) worker.on("error", () => {});
    return worker;
  };
}
const report = await runChaos({ createMoE, createMoEWorker, spawn });
console.log(report);
