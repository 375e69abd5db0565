// Conformance entry for Cloudflare workerd: a module worker whose fetch answers with the report
// (status 500 on failure). Bundled as a user would: esbuild --conditions=workerd,worker,browser
// --loader:.wasm=copy, the .wasm files uploaded as CompiledWasm modules.
import { createMoE } from "edge-moe";
import { Report, runConformance, runLoaderChecks } from "./suite.ts";
import { buildSelectionChecks, hostVariants } from "./host.ts";

export default {
  async fetch(request: Request): Promise<Response> {
    // the loader checks' URLs (a local fixture server), from the query
    const query = new URL(request.url).searchParams;
    const range = query.get("range");
    const whole = query.get("whole");
    const report = new Report();
    report.lines.push("# workerd");
    await buildSelectionChecks(report);
    await runConformance(createMoE, hostVariants(), report);
    await runLoaderChecks(report, { urls: range && whole ? { range, whole } : undefined, config: { wasmBuild: "simd" } });
    return new Response(report.text, { status: report.failed === 0 ? 200 : 500 });
  },
};
