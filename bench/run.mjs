// npm run bench: the cross-runtime benchmark suite, one command.
//   node bench/run.mjs [--quick] [--runtimes=node,deno,bun,chromium] [--cases=relu-512,...]
//                      [--batches=1,64] [--no-peer] [--no-ort] [--no-plain] [--out=DIR]
//                      [--max-call-ms=N] [--no-readme] [--no-build] [--probes-only] [--report-only]
//                      [--no-gpu] [--dtypes=f32,int8,int4,w8a8 | --no-quant]
// --dtypes picks the dtypes of edge-moe's expert weights to time: f32 (every build, every case)
// and the quantized ones (int8, int4, w8a8 = int8 weights with int8 activations; default all), which
// run on SIMD 1T and relaxed 2T, in Node, on bench/cases.mjs QUANT_CASES only, with ONNX Runtime's
// QMoE (8 and 4 bits) beside them; --no-quant is --dtypes=f32. --no-peer leaves out TF.js, --no-ort the ONNX Runtime peers (onnxruntime-web at 1 and 2
// threads in every runtime, onnxruntime-node at 1 and 2 intra-op threads in Node);
// --no-build measures dist/ and the probes in build/bench/ as they are (a machine without the
// toolchain: bench/device/run.sh); --no-gpu leaves out the GPU path (A/B runs of CPU kernels:
// swap dist/*.wasm between runs); --out writes the results elsewhere than bench/results;
// --report-only measures nothing: it renders results.md, chart.svg, the README table and the
// tables of docs/benchmarks.md again from the results.json already in the output folder (after a
// change to bench/report.mjs); --no-readme leaves README.md and docs/benchmarks.md alone.
// Builds the machine probes, runs bench/suite.mjs in Node, Deno, Bun and headless Chromium (one
// after another, so they do not share the cores), and writes bench/results/: results.json (every
// figure), results.md (the tables), chart.svg (time per token vs batch), the README's compact
// "Benchmarks" table and docs/benchmarks.md's full tables, each between its markers.
import { execFileSync, spawn } from "node:child_process";
import { createServer } from "node:http";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { extname, join, normalize } from "node:path";
import { BATCHES, EXPERTS, QUANT_DTYPES, SHAPES } from "./cases.mjs";
import { renderChart, renderDocsSection, renderMarkdown, renderReadmeSection } from "./report.mjs";

const root = new URL("..", import.meta.url).pathname;
const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const [k, v] = a.replace(/^--/, "").split("=");
    return [k, v ?? true];
  }),
);
const quick = Boolean(args.quick);
const runtimes = String(args.runtimes ?? "node,deno,bun,chromium").split(",");
const outDir = args.out ? String(args.out) : join(root, "bench/results");
const rawDir = join(outDir, "raw");
mkdirSync(rawDir, { recursive: true });

// ---- what runs where ---------------------------------------------------------------------------
const T = 2; // threads of the threaded builds (and of the peer's threaded configuration)
const allBuilds = [
  { name: "simd 1T", wasmBuild: "simd", threads: 1 },
  { name: "relaxed 1T", wasmBuild: "relaxed", threads: 1 },
  { name: `simd ${T}T`, wasmBuild: "simd-threads", threads: T },
  { name: `relaxed ${T}T`, wasmBuild: "relaxed-threads", threads: T },
];
let shapes = SHAPES;
let experts = EXPERTS;
let batches = BATCHES;
if (args.cases) {
  // e.g. --cases=relu-512,swiglu-256: expert and d of the shapes to keep
  const keep = String(args.cases)
    .split(",")
    .map((c) => c.split("-"));
  shapes = SHAPES.filter((s) => keep.some(([, d]) => Number(d) === s.d));
  experts = EXPERTS.filter((e) => keep.some(([ex]) => ex === e));
}
if (args.batches) batches = String(args.batches).split(",").map(Number);
const maxCallMs = Number(args["max-call-ms"] ?? (quick ? 1500 : 15000)); // engines estimated slower are skipped at that batch
const common = { shapes, experts, batches, roundMs: quick ? 60 : 250, rounds: quick ? 2 : 3, maxCallMs };
const ortThreads = args["no-ort"] ? [] : [1, T];
const dtypes = String(args["no-quant"] ? "f32" : (args.dtypes ?? "f32,int8,int4,w8a8")).split(",");
const unknownDtype = dtypes.find((dt) => dt !== "f32" && !QUANT_DTYPES[dt]);
if (unknownDtype) throw new Error(`--dtypes: ${unknownDtype} is none of f32, ${Object.keys(QUANT_DTYPES).join(", ")}`);
// the quantized engines: the one-thread baseline and the best two-thread build
const quant = { dtypes: dtypes.filter((dt) => dt !== "f32"), quantBuilds: ["simd 1T", `relaxed ${T}T`] };
// without f32 only the builds that carry the quantized engines run (their f32 y is the reference)
const builds = dtypes.includes("f32") ? allBuilds : allBuilds.filter((b) => quant.quantBuilds.includes(b.name));
const plan = {
  node: { builds, peer: !args["no-peer"], ortWeb: ortThreads, ortNode: ortThreads, plainJs: !args["no-plain"], gpu: !args["no-gpu"], ...quant },
  deno: { builds, ortWeb: ortThreads, gpu: !args["no-gpu"] },
  bun: { builds, ortWeb: ortThreads },
  chromium: { builds, peer: !args["no-peer"], ortWeb: ortThreads, gpu: !args["no-gpu"] },
};

// ---- probes --------------------------------------------------------------------------------------
function buildProbes() {
  const out = join(root, "build/bench");
  mkdirSync(out, { recursive: true });
  const asc = join(root, "node_modules/.bin/asc");
  const common = ["--runtime", "stub", "--noAssert", "--use", "abort=", "-O3", "--initialMemory", "1"];
  // run from bench/assembly: asc would otherwise read the package's asconfig.json
  const cwd = join(root, "bench/assembly");
  execFileSync(asc, ["machine.ts", "--enable", "simd", ...common, "--outFile", join(out, "machine-simd.wasm")], { cwd, stdio: "inherit" });
  execFileSync(asc, ["machine.ts", "--enable", "simd,relaxed-simd", ...common, "--outFile", join(out, "machine-relaxed.wasm")], { cwd, stdio: "inherit" });
}

// ---- runtimes ------------------------------------------------------------------------------------
function runProcess(cmd, argv, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd: root, stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, ...env } });
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${argv[0]} exited with ${code}`))));
    child.on("error", reject);
  });
}

async function runHostRuntime(runtime) {
  const out = join(rawDir, `${runtime}.json`);
  const options = JSON.stringify({ ...common, ...plan[runtime], out });
  const entry = "bench/entry.mjs";
  // Dawn (the webgpu package) in Node and Bun: the SwiftShader Vulkan driver that Debian's chromium ships
  const gpuEnv = existsSync("/usr/lib/chromium/vk_swiftshader_icd.json") ? { VK_ICD_FILENAMES: "/usr/lib/chromium/vk_swiftshader_icd.json" } : {};
  if (runtime === "node") await runProcess(process.execPath, ["--experimental-wasm-relaxed-simd", entry, options], gpuEnv);
  if (runtime === "deno") await runProcess(join(root, "node_modules/.bin/deno"), ["run", "-A", entry, options]);
  if (runtime === "bun") await runProcess(join(root, "node_modules/.bin/bun"), [entry, options], gpuEnv);
  return JSON.parse(readFileSync(out, "utf8"));
}

const MIME = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json" };

/** A static server for the repository with the headers that make a page cross-origin isolated. */
function serve() {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    const file = join(root, path);
    if (!file.startsWith(root) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, {
      "content-type": MIME[extname(file)] ?? "application/octet-stream",
      "cross-origin-opener-policy": "same-origin",
      "cross-origin-embedder-policy": "require-corp",
    });
    res.end(readFileSync(file));
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

async function runChromium() {
  const { chromium } = await import("playwright-core");
  const server = await serve();
  const origin = `http://127.0.0.1:${server.address().port}`;
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan", "--js-flags=--max-old-space-size=8192"],
  });
  const run = async (options) => {
    const page = await browser.newPage();
    page.on("console", (m) => console.log(m.text()));
    page.on("pageerror", (e) => console.log(`chromium page error: ${e.message}`));
    await page.goto(`${origin}/bench/browser.html#${encodeURIComponent(JSON.stringify(options))}`);
    await page.waitForFunction(() => window.benchDone, null, { timeout: 0, polling: 1000 });
    const result = await page.evaluate(() => window.benchResult);
    await page.close();
    if (result.error) throw new Error(`chromium: ${result.error}`);
    return result;
  };
  try {
    const report = await run({ ...common, ...plan.chromium, tfThreads: 1 });
    // TF.js fixes its thread count when its backend starts: its threaded configuration gets a page of its own
    const threaded = await run({ ...common, builds: [], peer: true, ortWeb: [], tfThreads: T, machine: false });
    if (threaded.peerThreads !== undefined) {
      report.notes.push(`TF.js asked for ${T} threads got ${threaded.peerThreads} (tf.wasm.getThreadsCount()) in this page: its peer figures are one-thread`);
    } else {
      for (const c of report.cases) {
        const other = threaded.cases.find((t) => t.name === c.name);
        for (const row of c.batches) {
          const o = other?.batches.find((b) => b.batch === row.batch);
          if (o) Object.assign(row.engines, o.engines);
        }
      }
      report.notes.push(`the TF.js ${T}-thread peer ran in a second page (TF.js fixes its thread count at start)`);
    }
    writeFileSync(join(rawDir, "chromium.json"), JSON.stringify(report, null, 1));
    return report;
  } finally {
    await browser.close();
    server.close();
  }
}

// ---- main ----------------------------------------------------------------------------------------
function machineName() {
  const info = readFileSync("/proc/cpuinfo", "utf8");
  const model = /model name\s*:\s*(.*)/.exec(info)?.[1]?.trim() ?? cpus()[0]?.model ?? "unknown CPU";
  const flags = /flags\s*:\s*(.*)/.exec(info)?.[1]?.split(" ") ?? [];
  const simd = ["avx512f", "avx2", "fma"].filter((f) => flags.includes(f)).join(", ");
  return `${model} (${cpus().length} vCPU${simd ? `, ${simd}` : ""}), ${Math.round(totalmem() / 2 ** 30)} GiB`;
}

// the kernels measured are the tree's: build first (--no-build to measure dist/ as it is)
if (args["report-only"]) {
  writeReports(JSON.parse(readFileSync(join(outDir, "results.json"), "utf8")));
  process.exit(0);
}
if (!args["no-build"] || !existsSync(join(root, "dist/index.js"))) execFileSync("npm", ["run", "build"], { cwd: root, stdio: "inherit" });
if (!args["no-build"] || !existsSync(join(root, "build/bench/machine-simd.wasm"))) buildProbes();
if (args["probes-only"]) process.exit(0);
const results = { machine: machineName(), date: new Date().toISOString(), quick, threads: T, runtimes: {} };
for (const runtime of runtimes) {
  console.log(`\n=== ${runtime} ===`);
  try {
    results.runtimes[runtime] = runtime === "chromium" ? await runChromium() : await runHostRuntime(runtime);
  } catch (error) {
    console.log(`${runtime} failed: ${error.message}`);
    results.runtimes[runtime] = { runtime, error: String(error.message) };
  }
}
writeFileSync(join(outDir, "results.json"), JSON.stringify(results, null, 1));
writeReports(results);

function writeReports(results) {
  writeFileSync(join(outDir, "results.md"), renderMarkdown(results));
  writeFileSync(join(outDir, "chart.svg"), renderChart(results));
  if (!args["no-readme"]) {
    const readmePath = join(root, "README.md");
    const readme = readFileSync(readmePath, "utf8");
    const updated = renderReadmeSection(readme, results);
    if (updated !== readme) writeFileSync(readmePath, updated);
    const docPath = join(root, "docs/benchmarks.md");
    if (existsSync(docPath)) {
      const doc = readFileSync(docPath, "utf8");
      const updatedDoc = renderDocsSection(doc, results);
      if (updatedDoc !== doc) writeFileSync(docPath, updatedDoc);
    }
  }
  console.log(
    `\nwrote ${outDir}/results.md, chart.svg${args["report-only"] ? " (from its results.json)" : " and results.json"}${args["no-readme"] ? "" : ", the README table and docs/benchmarks.md"}`,
  );
}
