// The loader checks inside a dedicated worker of the Chromium page (page.ts starts it): loadMoE in
// a worker context, reading the fixture from the page's server with and without Range support.
// Bundled with `edge-moe` resolved to the installed package's browser build (harness.ts). Posts
// back the report's lines, counts and hashes.
import { Report, runLoaderChecks } from "./suite.ts";

const scope = self as unknown as { onmessage: (() => void) | null; postMessage(message: unknown): void };
scope.onmessage = async () => {
  const report = new Report();
  const base = `${location.origin}/fixtures`;
  try {
    await runLoaderChecks(report, {
      urls: { range: `${base}/range/deepseek_v3/model.safetensors`, whole: `${base}/whole/deepseek_v3/model.safetensors` },
      config: { wasmBuild: "simd" },
    });
  } catch (error) {
    report.failed++;
    report.lines.push(`FAIL loader worker: ${(error as Error)?.message ?? String(error)}`);
  }
  scope.postMessage({ lines: report.lines, passed: report.passed, failed: report.failed, hashes: report.hashes });
};
