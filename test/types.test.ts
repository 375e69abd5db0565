// The published types stand alone: a consumer of the packed tarball with skipLibCheck: false,
// types: [] and no @webgpu/types compiles (NodeNext and Bundler resolution); the declarations it
// loads name no WebGPU global type; `webgpu` is an optional peer dependency; the source maps in
// dist/ embed their sources and never point outside the package.
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packAndInstall, ROOT, runCommand, type Consumer } from "./conformance/harness.ts";

const tsc = join(ROOT, "node_modules", ".bin", "tsc");

// Uses every export of both entry points, a GPU device given as a plain structural object, and
// one deliberate mistake per entry point that the package's types must reject (so that types
// resolving to `any` would fail the compile through an unused @ts-expect-error).
const CONSUMER = `
import { bestWasmBuild, createMoE, createMoEWorker, MoEError, readSafetensors } from "edge-moe";
import type { Calibration, ForwardResult, GPUDeviceLike, Gradients, MoEConfig, MoEErrorCode, MoELayer, MoELocalLayer, MoEWorkerLike, SafetensorsFile, WasmBuild } from "edge-moe";
import { serveMoE, type MoEMessageScope } from "edge-moe/worker";

export async function run(device: GPUDeviceLike | undefined, worker: MoEWorkerLike, scope: MoEMessageScope): Promise<number> {
  const config: MoEConfig = { dModel: 4, dHidden: 8, numExperts: 4, k: 2, expert: "swiglu", init: { seed: 1 }, backend: device ? "auto" : "cpu", gpu: device };
  const layer: MoELocalLayer = await createMoE(config);
  const result: ForwardResult = await layer.forward(new Float32Array(8), { train: true, seed: 3 });
  const grads: Gradients = await layer.backward(new Float32Array(result.y.length));
  await layer.step({ lr: 0.1, optimizer: "adam" });
  const calibration: Calibration = await layer.calibrate({ batchSizes: [1, 8] });
  const remote: MoELayer = await createMoEWorker(worker, config);
  remote.dispose();
  layer.dispose();
  serveMoE(scope);
  const build: WasmBuild | undefined = bestWasmBuild();
  const file: SafetensorsFile = readSafetensors(new Uint8Array(8));
  const code: MoEErrorCode | undefined = new MoEError("INVALID_CONFIG", "x").code;
  // @ts-expect-error: dModel is a number
  await createMoE({ ...config, dModel: "4" });
  // @ts-expect-error: serveMoE needs a scope
  serveMoE();
  // A device shaped like WebGPU's, written out without any WebGPU types.
  const fake = { limits: {}, queue: { writeBuffer(buffer: object, offset: number, data: ArrayBufferView) {} }, createBuffer(descriptor: { size: number; usage: number }) { return {}; } };
  const accepted: MoEConfig = { ...config, gpu: fake };
  return grads.x.length + calibration.crossover + (build?.length ?? 0) + Object.keys(file.tensors).length + (code ? 1 : 0) + accepted.k;
}
`;

const COMPILER_OPTIONS = {
  target: "ES2022",
  lib: ["ES2022", "DOM"],
  strict: true,
  noEmit: true,
  skipLibCheck: false,
  types: [],
};

let consumer: Consumer;

beforeAll(async () => {
  consumer = await packAndInstall();
  await writeFile(join(consumer.dir, "main.ts"), CONSUMER);
}, 120_000);

afterAll(async () => {
  if (consumer) await rm(consumer.tmp, { recursive: true, force: true });
});

async function compile(name: string, options: Record<string, unknown>): Promise<{ output: string; files: string[] }> {
  const dir = join(consumer.dir, name);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "main.ts"), CONSUMER);
  await writeFile(join(dir, "tsconfig.json"), JSON.stringify({ compilerOptions: { ...COMPILER_OPTIONS, ...options }, files: ["main.ts"] }, null, 2));
  const result = await runCommand(tsc, ["-p", "tsconfig.json", "--listFiles"], { cwd: dir, timeoutMs: 90_000 });
  const output = `${result.stdout}${result.stderr}`;
  expect(result.code, output).toBe(0);
  const files = result.stdout
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.endsWith(".ts"));
  return { output, files };
}

/** The package's declaration files among the files of a compiled program. */
function packageDeclarations(files: string[]): string[] {
  const pkg = join(consumer.dir, "node_modules", "edge-moe");
  return files.map((f) => resolve(consumer.dir, f)).filter((f) => !relative(pkg, f).startsWith(".."));
}

/** WebGPU's global type names (GPUDevice, GPUBuffer, …) in code, comments and `own` names left out. */
function webGpuNames(source: string, own: ReadonlySet<string> = new Set()): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
  return [...new Set(code.match(/\bGPU[A-Z][A-Za-z]*\b/g) ?? [])].filter((name) => !own.has(name));
}

/** The type names the declarations themselves declare. */
function declaredNames(sources: string[]): Set<string> {
  return new Set(sources.flatMap((source) => [...source.matchAll(/\b(?:interface|type|class)\s+(\w+)/g)].map((m) => m[1])));
}

describe("a consumer with skipLibCheck: false, types: [] and no @webgpu/types", () => {
  it("has neither @webgpu/types nor any @types package to lean on", () => {
    expect(readdirSync(join(consumer.dir, "node_modules"))).toEqual(["edge-moe"]);
  });

  for (const [name, options] of [
    ["NodeNext", { module: "NodeNext", moduleResolution: "NodeNext" }],
    ["Bundler", { module: "ESNext", moduleResolution: "Bundler" }],
  ] as const) {
    it(`compiles against dist/index.d.ts and dist/worker.d.ts (${name} resolution)`, async () => {
      const { files } = await compile(name.toLowerCase(), options);
      const declarations = packageDeclarations(files);
      const names = declarations.map((f) => relative(join(consumer.dir, "node_modules", "edge-moe"), f));
      expect(names).toEqual(expect.arrayContaining(["dist/index.d.ts", "dist/worker.d.ts", "dist/types/types.d.ts"]));
      const sources = declarations.map((file) => readFileSync(file, "utf8"));
      const own = declaredNames(sources);
      expect(own).toContain("GPUDeviceLike");
      declarations.forEach((file, i) => {
        expect(webGpuNames(sources[i], own), `${relative(consumer.dir, file)} names a WebGPU global type`).toEqual([]);
      });
    });
  }

  it("`using` a layer type-checks where the consumer's library has Symbol.dispose (ESNext.Disposable)", async () => {
    const dir = join(consumer.dir, "disposable");
    await mkdir(dir, { recursive: true });
    await writeFile(
      join(dir, "main.ts"),
      `
import { createMoE, loadMoE, type MoELocalLayer } from "edge-moe";
export async function run(): Promise<number> {
  using layer = await createMoE({ dModel: 4, dHidden: 8, numExperts: 4, k: 2, expert: "relu", init: { seed: 1 } });
  const typed: MoELocalLayer = layer;
  typed[Symbol.dispose]();
  return (await layer.forward(new Float32Array(4))).y.length + (typeof loadMoE === "function" ? 1 : 0);
}
`,
    );
    const options = { ...COMPILER_OPTIONS, lib: ["ES2022", "DOM", "ESNext.Disposable"], module: "NodeNext", moduleResolution: "NodeNext" };
    await writeFile(join(dir, "tsconfig.json"), JSON.stringify({ compilerOptions: options, files: ["main.ts"] }));
    const result = await runCommand(tsc, ["-p", "tsconfig.json"], { cwd: dir, timeoutMs: 90_000 });
    expect(result.code, `${result.stdout}${result.stderr}`).toBe(0);
  });

  it("the WebGPU check finds a WebGPU type in code and ignores one in a comment", () => {
    const source = "/** a GPUDevice */ export declare const a: GPUDeviceLike; // GPUBuffer\nlet b: GPUQueue;\ninterface GPUDeviceLike {}";
    expect(webGpuNames(source, declaredNames([source]))).toEqual(["GPUQueue"]);
  });
});

describe("package.json", () => {
  it("declares webgpu as an optional peer dependency, and keeps it as a dev dependency", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    expect(pkg.peerDependencies?.webgpu).toMatch(/\d/);
    expect(pkg.peerDependenciesMeta?.webgpu).toEqual({ optional: true });
    expect(pkg.devDependencies?.webgpu).toMatch(/^\d+\.\d+\.\d+$/);
    expect(pkg.dependencies?.webgpu).toBeUndefined();
  });
});

describe("source maps in dist/", () => {
  const maps = readdirSync(join(ROOT, "dist")).filter((f) => f.endsWith(".map"));

  it("every bundle has one, with every source embedded", () => {
    expect(maps.sort()).toEqual(["browser.js.map", "index.js.map", "worker.js.map", "workerd.js.map"]);
    for (const file of maps) {
      const map = JSON.parse(readFileSync(join(ROOT, "dist", file), "utf8"));
      expect(map.sources.length, file).toBeGreaterThan(5);
      expect(map.sourcesContent?.length, file).toBe(map.sources.length);
      for (const content of map.sourcesContent) expect(typeof content, file).toBe("string");
    }
  });

  it("sources are relative paths that stay inside the package", () => {
    for (const file of maps) {
      const map = JSON.parse(readFileSync(join(ROOT, "dist", file), "utf8"));
      expect(map.sourceRoot ?? "", file).toBe("");
      for (const source of map.sources as string[]) {
        expect(source, file).not.toMatch(/^(\/|[a-z]+:)/i);
        const inPackage = relative(ROOT, resolve(ROOT, "dist", source));
        expect(inPackage.startsWith(".."), `${file}: ${source}`).toBe(false);
        // the package's sources, or a bundler stub (a module with no file: `node:` in a browser)
        expect(inPackage, `${file}: ${source}`).toMatch(/^(src\/|shaders\/|dist\/virtual\/no-node\/node-\w+$)/);
      }
    }
  });
});
