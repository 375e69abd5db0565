// Conformance entry for Cloudflare workerd: a module worker whose fetch answers with the report
// (status 500 on failure). Bundled as a user would: esbuild --conditions=workerd,worker,browser
// --loader:.wasm=copy, the .wasm files uploaded as CompiledWasm modules.
import { createMoE } from "edge-moe";
import { Report, runConformance } from "./suite.ts";
import { buildSelectionChecks, hostVariants } from "./host.ts";

export default {
  async fetch(): Promise<Response> {
    const report = new Report();
    report.lines.push("# workerd");
    await buildSelectionChecks(report);
    await runConformance(createMoE, hostVariants(), report);
    return new Response(report.text, { status: report.failed === 0 ? 200 : 500 });
  },
};
