// edge-moe/worker, plus a way to crash it on purpose: the message "crash" throws an uncaught error
// (test/chaos/chaos.mjs).
import "../../dist/worker.js";

const crash = (data) => {
  if (data === "crash")
    setTimeout(() => {
      throw new Error("chaos: crashed on purpose");
    });
};
const threads = globalThis.process?.getBuiltinModule?.("node:worker_threads");
if (threads && !threads.isMainThread && threads.parentPort) threads.parentPort.on("message", crash);
else self.addEventListener("message", (event) => crash(event.data));
