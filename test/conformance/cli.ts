// Conformance entry for Node, Deno and Bun: `<runtime> cli.mjs [local|worker] [rangeUrl wholeUrl]`. "worker" runs the
// layers inside edge-moe/worker (Deno and Bun have Web Workers). Prints the report, exits 1 on failure.
import { createMoE, createMoEWorker } from "edge-moe";
import { Report, runConformance, runLoaderChecks } from "./suite.ts";
import { buildSelectionChecks, hostVariants } from "./host.ts";

const g = globalThis as unknown as {
  Deno?: { args: string[]; exit(code: number): never; version: { deno: string } };
  Bun?: { version: string };
  process: { argv: string[]; versions: { node: string }; exit(code: number): never };
};
const args = g.Deno ? g.Deno.args : g.process.argv.slice(2);
const mode = args[0] ?? "local";
// the loader checks' URLs: the fixture on a server with Range support and on one without
const [range, whole] = args.slice(1);
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
  await runLoaderChecks(report, {
    path: "fixtures/deepseek_v3/model.safetensors",
    urls: range && whole ? { range, whole } : undefined,
    config: { wasmBuild: "simd" },
  });
  if (!range || !whole) report.lines.push("# no fixture server given: loader URL checks not run");
}
console.log(report.text);
const code = report.failed === 0 && report.passed > 0 ? 0 : 1;
if (g.Deno) g.Deno.exit(code);
else g.process.exit(code);
