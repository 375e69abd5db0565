// Module Web Worker entry of test/threads_web.test.ts: the thread pool's checks inside a worker,
// where each threaded layer starts its own (nested) workers; posts one report to the page.
import { createMoE } from "edge-moe";
import { countWebWorkers, runThreadChecks } from "./checks.ts";

const webWorkers = countWebWorkers();
self.postMessage(await runThreadChecks(createMoE, "chromium worker", webWorkers));
