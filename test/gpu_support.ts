// WebGPU for the GPU suites in Node: Dawn from the `webgpu` package, on whatever adapter the
// machine has. On a Linux machine without a GPU, Dawn rejects Debian 12's lavapipe, so it is
// pointed at the SwiftShader Vulkan driver that Debian's chromium package ships, unless the
// caller already chose a driver with VK_ICD_FILENAMES.
//
// The rule for a missing adapter: under CI (any non-empty CI variable) a GPU suite FAILS;
// elsewhere it is reported as skipped, with the reason in the skipped test's name (gpuSuite below).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, it } from "vitest";
import { isCI } from "./helpers.ts";

export const SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json";
export const LAVAPIPE_ICD = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json";

function hasHardwareGpu(): boolean {
  const dri = existsSync("/dev/dri") && readdirSync("/dev/dri").some((f) => f.startsWith("renderD"));
  return dri || existsSync("/dev/nvidia0");
}

// Before anything loads Dawn: the Vulkan loader reads this when Dawn creates its instance.
if (!process.env.VK_ICD_FILENAMES && !hasHardwareGpu() && existsSync(SWIFTSHADER_ICD)) {
  process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
}

// Dawn's GPU object stays referenced for the life of the test process (Dawn crashes when it is
// collected while its devices live).
let dawn: GPU | undefined;

export interface GpuProbe {
  adapter: GPUAdapter | undefined;
  /** Why there is no adapter. */
  reason: string;
}

/** Dawn's adapter on this machine, or why there is none. */
export async function probeGpu(): Promise<GpuProbe> {
  try {
    const { create } = (await import("webgpu")) as { create(flags: string[]): GPU };
    dawn ??= create([]);
    const adapter = await dawn.requestAdapter();
    if (adapter) return { adapter, reason: "" };
    return { adapter: undefined, reason: `Dawn found no WebGPU adapter (VK_ICD_FILENAMES=${process.env.VK_ICD_FILENAMES ?? "unset"})` };
  } catch (error) {
    return { adapter: undefined, reason: `the webgpu package (Dawn) did not load: ${(error as Error).message}` };
  }
}

/** A fresh device (of a fresh adapter: an adapter makes one device), with the adapter's buffer limits. */
export async function newDevice(): Promise<GPUDevice> {
  const adapter = await dawn?.requestAdapter();
  if (!adapter) throw new Error("newDevice() needs a successful probeGpu() first");
  return adapter.requestDevice({
    requiredLimits: {
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize,
    },
  });
}

/**
 * A describe block that needs a WebGPU adapter. Without one it FAILS under CI (any non-empty CI)
 * and is reported as skipped, with the reason, elsewhere.
 */
export function gpuSuite(name: string, probe: GpuProbe, body: () => void): void {
  if (probe.adapter) {
    describe(name, body);
    return;
  }
  describe(name, () => {
    if (isCI()) {
      it(`has a WebGPU adapter (required under CI, here CI=${process.env.CI})`, () => {
        throw new Error(`no WebGPU adapter: ${probe.reason}`);
      });
    } else {
      it.skip(`skipped: no WebGPU adapter (${probe.reason})`, () => undefined);
    }
  });
}

/** The deno binary of the `deno` npm package (absent where it is not installed). */
export const DENO = fileURLToPath(new URL("../node_modules/.bin/deno", import.meta.url));

/**
 * Runs a test/deno/ script in Deno's built-in WebGPU, on lavapipe unless VK_ICD_FILENAMES names
 * another driver than SwiftShader (Deno's wgpu does not take SwiftShader): its report is the last
 * stdout line that starts with "{", as JSON.
 */
export function runDenoGpuScript<T>(script: string): { report: T | undefined; output: string; status: number | null } {
  const env = { ...process.env };
  if (env.VK_ICD_FILENAMES === SWIFTSHADER_ICD || (!env.VK_ICD_FILENAMES && existsSync(LAVAPIPE_ICD))) env.VK_ICD_FILENAMES = LAVAPIPE_ICD;
  const child = spawnSync(DENO, ["run", "-A", "--import-map=test/deno/import_map.json", script], {
    cwd: fileURLToPath(new URL("..", import.meta.url)),
    env,
    encoding: "utf8",
    timeout: 600_000,
  });
  const output = `${child.stdout ?? ""}${child.stderr ?? ""}`;
  const line = (child.stdout ?? "")
    .split("\n")
    .reverse()
    .find((l) => l.startsWith("{"));
  return { report: line ? (JSON.parse(line) as T) : undefined, output, status: child.status };
}
