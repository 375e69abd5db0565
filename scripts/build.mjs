// npm run build: AssemblyScript → wasm-opt -O3 → esbuild bundle + type declarations, into dist/.
// Everything is built into a private folder first and swapped into place at the end, so a test
// run reading dist/ never sees half a build.
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, renameSync, statSync, writeFileSync, existsSync } from "node:fs";
import { relative, resolve, sep } from "node:path";
import { build } from "esbuild";

const root = new URL("..", import.meta.url).pathname;
const bin = (name) => `${root}node_modules/.bin/${name}`;
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: "inherit" });

const work = `${root}build/tmp-${process.pid}`;
const out = `${work}/dist`;
mkdirSync(out, { recursive: true });

try {
  // Wasm builds: one AssemblyScript source, one target per feature set (asconfig.json targets).
  // wasm-opt needs the same feature flags the module uses.
  const common = ["--enable-bulk-memory", "--enable-sign-ext", "--enable-nontrapping-float-to-int", "--enable-mutable-globals"];
  const wasmTargets = [
    { target: "simd", features: ["--enable-simd", ...common] },
    { target: "relaxed", features: ["--enable-simd", "--enable-relaxed-simd", ...common] },
    // Threaded builds: the memory is imported and shared (the engine makes it, src/cpu/threads.ts
    // instantiates the same module on it in each worker).
    { target: "simd-threads", features: ["--enable-simd", "--enable-threads", ...common] },
    { target: "relaxed-threads", features: ["--enable-simd", "--enable-relaxed-simd", "--enable-threads", ...common] },
  ];
  for (const { target, features } of wasmTargets) {
    const raw = `${work}/edge-moe.${target}.raw.wasm`;
    const file = `${out}/edge-moe.${target}.wasm`;
    run(bin("asc"), ["assembly/index.ts", "--config", "asconfig.json", "--target", target, "--outFile", raw]);
    run(bin("wasm-opt"), [raw, "-O3", ...features, "-o", file]);
    console.log(`wasm  dist/edge-moe.${target}.wasm  ${statSync(file).size} bytes`);
  }

  // JavaScript: ESM bundles, one per way of getting the .wasm (package.json "exports" conditions
  // pick one): each swaps src/cpu/wasm-source.ts for its variant. WGSL sources are inlined as strings.
  // Only the index bundle (Node, Deno, Bun) keeps `node:` imports; in the others they become a
  // module that throws when loaded, so a user's browser or workerd bundler has nothing to resolve
  // (code paths guarded for Node never load them there).
  const bundles = [
    { name: "index", entry: "src/index.ts", wasmSource: "wasm-source.ts", node: true }, // node, deno, bun, default: file or fetch, detected
    { name: "browser", entry: "src/index.ts", wasmSource: "wasm-source.browser.ts", node: false }, // fetch only
    { name: "workerd", entry: "src/index.ts", wasmSource: "wasm-source.workerd.ts", node: false }, // .wasm imported as modules
    { name: "worker", entry: "src/worker.ts", wasmSource: "wasm-source.browser.ts", node: false }, // edge-moe/worker (Web Workers)
  ];
  for (const bundle of bundles) {
    await build({
      entryPoints: { [bundle.name]: `${root}${bundle.entry}` },
      outdir: out,
      bundle: true,
      format: "esm",
      platform: "neutral",
      target: "es2022",
      sourcemap: true,
      sourcesContent: true,
      loader: { ".wgsl": "text" },
      external: bundle.node ? ["node:*", "webgpu"] : ["webgpu"],
      plugins: [
        {
          name: "wasm-source",
          setup(b) {
            b.onResolve({ filter: /^\.\/wasm-source\.ts$/ }, () => ({ path: `${root}src/cpu/${bundle.wasmSource}` }));
            if (!bundle.node) {
              b.onResolve({ filter: /^node:/ }, (args) => ({ path: args.path, namespace: "no-node" }));
              b.onLoad({ filter: /.*/, namespace: "no-node" }, (args) => ({
                contents: `throw new Error(${JSON.stringify(`${args.path} is not available in this runtime`)});`,
                loader: "js",
              }));
            }
            // The workerd variant's `import m from "./edge-moe.*.wasm"`: left to the user's bundler,
            // relative to dist/ where the .wasm files lie.
            b.onResolve({ filter: /\.wasm$/ }, (args) => ({ path: args.path, external: true }));
          },
        },
      ],
      logLevel: "warning",
    });
  }

  // Source maps: esbuild writes `sources` relative to the private folder; rewrite them relative to
  // dist/, where the maps end up, so that they name the package's own src/ (../src/…) and never a
  // path outside it. The sources themselves travel inside the maps (sourcesContent): src/ is not
  // published.
  for (const file of readdirSync(out).filter((f) => f.endsWith(".js.map"))) {
    const map = JSON.parse(readFileSync(`${out}/${file}`, "utf8"));
    map.sources = map.sources.map((source) => {
      // A module of a plugin namespace (the `node:` stubs above) is no file: named virtual/….
      const virtual = /^([a-z-]+):(.*)$/.exec(source);
      if (virtual) return `virtual/${virtual[1]}/${virtual[2].replace(/[^\w.-]/g, "-")}`;
      const absolute = resolve(out, source);
      const inRoot = relative(root, absolute);
      if (inRoot.startsWith("..") || resolve(root, inRoot) !== absolute) throw new Error(`${file}: source ${source} lies outside the package`);
      return relative(`${root}dist`, absolute).split(sep).join("/");
    });
    if (!Array.isArray(map.sourcesContent) || map.sourcesContent.length !== map.sources.length) {
      throw new Error(`${file}: sourcesContent must hold every source`);
    }
    writeFileSync(`${out}/${file}`, JSON.stringify(map));
  }

  // Type declarations.
  run(bin("tsc"), ["-p", "tsconfig.json", "--outDir", `${out}/types`]);
  writeFileSync(`${out}/index.d.ts`, `export * from "./types/index.js";\n`);
  writeFileSync(`${out}/worker.d.ts`, `export * from "./types/worker.js";\n`);

  // Swap into place.
  const old = `${work}/old`;
  if (existsSync(`${root}dist`)) renameSync(`${root}dist`, old);
  renameSync(out, `${root}dist`);
  console.log("build: dist/ ready");
} finally {
  rmSync(work, { recursive: true, force: true });
}
