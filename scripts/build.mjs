// npm run build: AssemblyScript → wasm-opt -O3 → esbuild bundle + type declarations, into dist/.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { build } from "esbuild";

const root = new URL("..", import.meta.url).pathname;
const bin = (name) => `${root}node_modules/.bin/${name}`;
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: "inherit" });

// Wasm builds: one AssemblyScript source, one target per feature set (asconfig.json targets).
// wasm-opt needs the same feature flags the module uses.
const wasmTargets = [
  { target: "simd", features: ["--enable-simd", "--enable-bulk-memory", "--enable-sign-ext", "--enable-nontrapping-float-to-int", "--enable-mutable-globals"] },
  { target: "relaxed", features: ["--enable-simd", "--enable-relaxed-simd", "--enable-bulk-memory", "--enable-sign-ext", "--enable-nontrapping-float-to-int", "--enable-mutable-globals"] },
];

rmSync(`${root}dist`, { recursive: true, force: true });
mkdirSync(`${root}dist`, { recursive: true });
mkdirSync(`${root}build`, { recursive: true });

for (const { target, features } of wasmTargets) {
  run(bin("asc"), ["assembly/index.ts", "--config", "asconfig.json", "--target", target]);
  const raw = `build/edge-moe.${target}.wasm`;
  const out = `dist/edge-moe.${target}.wasm`;
  run(bin("wasm-opt"), [raw, "-O3", ...features, "-o", out]);
  console.log(`wasm  ${out}  ${statSync(`${root}${out}`).size} bytes`);
}

// JavaScript: one ESM bundle, platform-neutral (runtime differences are detected at run time).
// WGSL sources are inlined as strings.
await build({
  entryPoints: { index: `${root}src/index.ts` },
  outdir: `${root}dist`,
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  sourcemap: true,
  loader: { ".wgsl": "text" },
  external: ["node:*", "webgpu"],
  logLevel: "info",
});

// Type declarations.
run(bin("tsc"), ["-p", "tsconfig.json"]);
writeFileSync(`${root}dist/index.d.ts`, `export * from "./types/index.js";\n`);
