// Run by test/threads_web.test.ts under Deno and Bun: the thread pool's checks
// (test/threads_web/checks.ts) on the built package, Web Workers counted. Prints one JSON report
// on its last line.
import { createMoE } from "../../dist/index.js";
import { countWebWorkers, runThreadChecks } from "../threads_web/checks.ts";

const g = globalThis as { Deno?: { version: { deno: string }; exit(code: number): never }; Bun?: { version: string } };
const host = g.Deno ? `deno ${g.Deno.version.deno}` : g.Bun ? `bun ${g.Bun.version}` : "unknown";
const webWorkers = countWebWorkers();
console.log(JSON.stringify(await runThreadChecks(createMoE, host, webWorkers)));
// dispose() ends the workers; exit in case a runtime keeps its event loop alive a little longer
g.Deno?.exit(0);
