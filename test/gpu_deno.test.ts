// Every golden vector through the GPU path in Deno's built-in WebGPU (test/deno/gpu_golden.ts),
// run as a child process. Deno's wgpu accepts Debian's lavapipe, so on a machine without a GPU the
// child is pointed at it (never at SwiftShader, which the Node suites use through Dawn).
// No adapter: FAILS under CI=true, reported as skipped with the reason elsewhere.
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DENO, runDenoGpuScript } from "./gpu_support.ts";
import { isCI } from "./helpers.ts";

interface DenoReport {
  noAdapter?: string;
  adapter?: string;
  cases?: Array<{
    name: string;
    ok: boolean;
    backend: string;
    topkExact: boolean;
    gatesErr: number;
    yErr: number;
    cpuErr: number;
    evalErr: number;
    error?: string;
  }>;
  loss?: { ok: boolean; injectedBackend: string; lostBackend: string; laterBackend: string; yErr: number; warnings: string[]; error?: string };
}

const runDeno = () => runDenoGpuScript<DenoReport>("test/deno/gpu_golden.ts");

const run = existsSync(DENO) ? runDeno() : undefined;

describe("golden vectors on the GPU (Deno, built-in WebGPU)", () => {
  if (!run) {
    if (isCI()) {
      it("has the deno runtime (required under CI)", () => {
        throw new Error("the deno package is not installed (npm ci)");
      });
    } else {
      it.skip("skipped: the deno package is not installed (npm ci)", () => undefined);
    }
    return;
  }
  const { report, output, status } = run;
  if (report?.noAdapter !== undefined) {
    if (isCI()) {
      it("has a WebGPU adapter (required under CI)", () => {
        throw new Error(`Deno found no WebGPU adapter: ${report.noAdapter}`);
      });
    } else {
      it.skip(`skipped: Deno found no WebGPU adapter (${report.noAdapter})`, () => undefined);
    }
    return;
  }

  it("the Deno script ran every case and exited 0", () => {
    expect(report, output.slice(-4000)).toBeDefined();
    expect(report!.cases!.length).toBe(19);
    expect(status, output.slice(-4000)).toBe(0);
    console.log(`Deno GPU golden vectors ran on: ${report!.adapter}`);
  });

  it("gpu: a caller's device, destroyed while a call is in flight: the call completes on the CPU, one warning", () => {
    const loss = report?.loss;
    expect(loss, output.slice(-4000)).toBeDefined();
    expect(loss!.error).toBeUndefined();
    expect(loss!.injectedBackend).toBe("gpu");
    expect(loss!.lostBackend).toBe("cpu");
    expect(loss!.laterBackend).toBe("cpu");
    expect(loss!.yErr).toBeLessThanOrEqual(1e-4);
    expect(loss!.warnings.length).toBe(1);
    expect(["GPU_LOST", "GPU_ERROR"]).toContain(loss!.warnings[0]);
  });

  for (const c of report?.cases ?? []) {
    it(`${c.name}: on the GPU, top-k exact, y ≤ 1e-4 of the reference and of the CPU path`, () => {
      expect(c.error).toBeUndefined();
      expect(c.backend).toBe("gpu");
      expect(c.topkExact).toBe(true);
      expect(c.gatesErr).toBeLessThanOrEqual(1e-4);
      expect(c.yErr).toBeLessThanOrEqual(1e-4);
      expect(c.cpuErr).toBeLessThanOrEqual(1e-4);
      expect(c.evalErr).toBeLessThanOrEqual(1e-4);
      expect(c.ok).toBe(true);
    });
  }
});
