// A live worker that is not edge-moe's: it reads every message and answers none (test/chaos/chaos.mjs).
const ignore = () => {};
const threads = globalThis.process?.getBuiltinModule?.("node:worker_threads");
if (threads && !threads.isMainThread && threads.parentPort) threads.parentPort.on("message", ignore);
else self.addEventListener("message", ignore);
