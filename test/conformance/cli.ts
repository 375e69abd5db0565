// Conformance entry for Node, Deno and Bun: `<runtime> cli.mjs [local|worker]`. "worker" runs the
// layers inside edge-moe/worker (Deno and Bun have Web Workers). Prints the report, exits 1 on failure.
import { createMoE, createMoEWorker } from "edge-moe";
import { Report, runConformance } from "./suite.ts";
import { buildSelectionChecks, hostVariants } from "./host.ts";

const g = globalThis as unknown as {
  Deno?: { args: string[]; exit(code: number): never; version: { deno: string } };
  Bun?: { version: string };
  process: { argv: string[]; versions: { node: string }; exit(code: number): never };
};
const mode = (g.Deno ? g.Deno.args : g.process.argv.slice(2))[0] ?? "local";
const runtime = g.Deno ? `deno ${g.Deno.version.deno}` : g.Bun ? `bun ${g.Bun.version}` : `node ${g.process.versions.node}`;

const report = new Report();
report.lines.push(`# ${runtime}, ${mode}`);
if (mode === "worker") {
  const worker = new Worker(import.meta.resolve("edge-moe/worker"), { type: "module" });
  await runConformance((config) => createMoEWorker(worker, config), hostVariants(), report);
  worker.terminate();
} else {
  await buildSelectionChecks(report);
  await runConformance(createMoE, hostVariants(), report);
}
console.log(report.text);
const code = report.failed === 0 && report.passed > 0 ? 0 : 1;
if (g.Deno) g.Deno.exit(code);
else g.process.exit(code);
