// Drives the conformance suite in every runtime (used by test/runtimes.test.ts, Node only):
// packs the package with `npm pack` and installs the tarball into a scratch consumer project,
// bundles the suite's entries as a user of each runtime would, runs them, and parses the reports.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rename, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { build, type BuildOptions } from "esbuild";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const HERE = fileURLToPath(new URL(".", import.meta.url));
const bin = (name: string) => join(ROOT, "node_modules", ".bin", name);

// ---- running a command ----------------------------------------------------------------------

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCommand(
  command: string,
  args: string[],
  options: { cwd: string; env?: Record<string, string>; timeoutMs?: number },
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 90_000);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

// ---- reports --------------------------------------------------------------------------------

export interface ParsedReport {
  passed: number;
  failed: number;
  /** variant → SHA-256 of its outputs */
  hashes: Record<string, string>;
  failures: string[];
  text: string;
}

/** Reads a report printed by the suite; its last line must be `N passed, N failed`. */
export function parseReport(text: string): ParsedReport {
  const lines = text.trim().split("\n");
  const summary = /^(\d+) passed, (\d+) failed$/.exec(lines[lines.length - 1] ?? "");
  if (!summary) throw new Error(`no "N passed, N failed" line at the end of:\n${text}`);
  const hashes: Record<string, string> = {};
  for (const line of lines) {
    const m = /^hash (\S+) ([0-9a-f]{64})$/.exec(line);
    if (m) hashes[m[1]] = m[2];
  }
  return { passed: Number(summary[1]), failed: Number(summary[2]), hashes, failures: lines.filter((l) => l.startsWith("FAIL")), text };
}

// ---- the consumer project -------------------------------------------------------------------

export interface Consumer {
  /** Scratch folder holding the tarball and the consumer. */
  tmp: string;
  /** The consumer project: node_modules/edge-moe is the installed tarball. */
  dir: string;
  /** Paths inside the tarball, as `npm pack --json` lists them. */
  packedFiles: string[];
}

type ExportEntry = string | { [condition: string]: ExportEntry };

/** Resolves a package.json "exports" entry for a list of conditions, as Node's resolver does. */
export function resolveExport(entry: ExportEntry | undefined, conditions: string[]): string | undefined {
  if (entry === undefined || typeof entry === "string") return entry;
  for (const [key, value] of Object.entries(entry)) {
    if (key === "default" || conditions.includes(key)) {
      const found = resolveExport(value, conditions);
      if (found) return found;
    }
  }
  return undefined;
}

/** `npm pack`, then the tarball extracted as node_modules/edge-moe of a fresh project. */
export async function packAndInstall(): Promise<Consumer> {
  const tmp = await mkdtemp(join(tmpdir(), "edge-moe-runtimes-"));
  const packed = await runCommand("npm", ["pack", "--json", "--pack-destination", tmp], { cwd: ROOT, timeoutMs: 60_000 });
  if (packed.code !== 0) throw new Error(`npm pack failed:\n${packed.stderr}`);
  const [info] = JSON.parse(packed.stdout) as Array<{ filename: string; version: string; files: Array<{ path: string }> }>;
  const dir = join(tmp, "consumer");
  await mkdir(join(dir, "node_modules"), { recursive: true });
  const untar = await runCommand("tar", ["-xzf", join(tmp, info.filename), "-C", join(dir, "node_modules")], { cwd: tmp });
  if (untar.code !== 0) throw new Error(`tar failed: ${untar.stderr}`);
  await rename(join(dir, "node_modules", "package"), join(dir, "node_modules", "edge-moe"));
  await writeFile(
    join(dir, "package.json"),
    JSON.stringify({ name: "consumer", private: true, type: "module", dependencies: { "edge-moe": info.version } }, null, 2),
  );
  return { tmp, dir, packedFiles: info.files.map((f) => f.path) };
}

/**
 * Bundles the suite's entries into the consumer: cli.mjs and page.mjs leave `edge-moe` to the
 * runtime's own resolution; workerd/ and edge/ are bundled with the package as a user would.
 */
export async function bundleEntries(consumer: Consumer): Promise<void> {
  const common: BuildOptions = {
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    loader: { ".safetensors": "binary" },
    nodePaths: [join(consumer.dir, "node_modules")],
    logLevel: "warning",
  };
  await build({
    ...common,
    entryPoints: { cli: join(HERE, "cli.ts"), page: join(HERE, "page.ts") },
    outdir: consumer.dir,
    outExtension: { ".js": ".mjs" },
    external: ["edge-moe", "edge-moe/*"],
  });
  // Deno as its README example imports it: `npm:edge-moe`.
  await build({
    ...common,
    entryPoints: { "cli-deno-npm": join(HERE, "cli.ts") },
    outdir: consumer.dir,
    outExtension: { ".js": ".mjs" },
    plugins: [{ name: "npm-specifier", setup: (b) => b.onResolve({ filter: /^edge-moe(\/|$)/ }, (args) => ({ path: `npm:${args.path}`, external: true })) }],
  });
  // The Chromium page's loader worker: a module worker has no import map, so `edge-moe` is
  // rewritten to the installed package's browser build, as the page's import map resolves it.
  const pkg = JSON.parse(await readFile(join(consumer.dir, "node_modules", "edge-moe", "package.json"), "utf8"));
  const browserEntry = resolveExport(pkg.exports["."], ["browser", "import"]);
  if (!browserEntry) throw new Error("the package exports no browser build");
  await build({
    ...common,
    entryPoints: { "loader-worker": join(HERE, "loader-worker.ts") },
    outdir: consumer.dir,
    outExtension: { ".js": ".mjs" },
    plugins: [
      {
        name: "browser-package",
        setup: (b) => b.onResolve({ filter: /^edge-moe$/ }, () => ({ path: `/node_modules/edge-moe/${browserEntry.replace(/^\.\//, "")}`, external: true })),
      },
    ],
  });
  await build({
    ...common,
    entryPoints: { worker: join(HERE, "workerd.ts") },
    outdir: join(consumer.dir, "workerd"),
    conditions: ["workerd", "worker", "browser"],
    loader: { ".safetensors": "binary", ".wasm": "copy" },
  });
  await build({
    ...common,
    format: "iife",
    entryPoints: { edge: join(HERE, "edge.ts") },
    outdir: join(consumer.dir, "edge"),
    conditions: ["edge-light", "worker", "browser"],
    // A script has no import.meta; the bundle never reaches for its own files here (module injected).
    define: { "import.meta.url": '"https://edge.invalid/edge.js"' },
  });
}

// ---- the loader's fixture over HTTP ---------------------------------------------------------

const FAMILY_FIXTURES = join(ROOT, "test", "fixtures", "families");
/** The loader checks' checkpoint (test/conformance/cases.ts), relative to FAMILY_FIXTURES. */
const LOADER_MODEL = "deepseek_v3/model.safetensors";

/**
 * Serves the family fixtures at /range/<family>/<file> (Range requests answered with 206) and
 * /whole/<family>/<file> (Range ignored: 200 and the whole body). Returns false for other paths.
 */
async function serveFixture(path: string, request: IncomingMessage, response: ServerResponse): Promise<boolean> {
  const m = /^\/(range|whole)\/([\w.-]+\/[\w.-]+)$/.exec(path);
  if (!m) return false;
  let body: Buffer;
  try {
    body = await readFile(join(FAMILY_FIXTURES, m[2]));
  } catch {
    response.writeHead(404).end();
    return true;
  }
  const range = /^bytes=(\d+)-(\d+)$/.exec(request.headers.range ?? "");
  if (m[1] === "range" && range) {
    const begin = Number(range[1]);
    const end = Math.min(Number(range[2]), body.length - 1);
    response
      .writeHead(206, {
        "content-range": `bytes ${begin}-${end}/${body.length}`,
        "content-length": String(end + 1 - begin),
        "access-control-allow-origin": "*",
      })
      .end(body.subarray(begin, end + 1));
  } else {
    response.writeHead(200, { "content-length": String(body.length), "access-control-allow-origin": "*" }).end(body);
  }
  return true;
}

/** A local server of the family fixtures (serveFixture); `urls` are the loader checks' two URLs. */
export async function fixtureServer(): Promise<{ urls: { range: string; whole: string }; close(): Promise<void> }> {
  const server = createServer((request, response) => {
    const path = decodeURIComponent(new URL(request.url ?? "/", "http://localhost").pathname);
    void serveFixture(path, request, response).then((served) => {
      if (!served) response.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    urls: { range: `${base}/range/${LOADER_MODEL}`, whole: `${base}/whole/${LOADER_MODEL}` },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

// ---- runtimes -------------------------------------------------------------------------------

/**
 * Node, Deno or Bun running cli.mjs (mode "local" or "worker"), with extra runtime flags; Deno's
 * local run imports `npm:edge-moe` (cli-deno-npm.mjs), its worker run the bare `edge-moe`.
 */
export async function runCli(
  consumer: Consumer,
  runtime: "node" | "deno" | "bun",
  mode: "local" | "worker",
  flags: string[] = [],
): Promise<{ report: ParsedReport; result: CommandResult }> {
  const command = runtime === "node" ? process.execPath : bin(runtime);
  const script = runtime === "deno" && mode === "local" ? "cli-deno-npm.mjs" : "cli.mjs";
  // the loader checks read the fixture from a path in the consumer and from the fixture server
  await mkdir(join(consumer.dir, "fixtures", "deepseek_v3"), { recursive: true });
  await copyFile(join(FAMILY_FIXTURES, LOADER_MODEL), join(consumer.dir, "fixtures", LOADER_MODEL));
  const server = await fixtureServer();
  const urls = [server.urls.range, server.urls.whole];
  const args =
    runtime === "deno" ? ["run", "--allow-read", "--allow-net=127.0.0.1", "--no-lock", ...flags, script, mode, ...urls] : [...flags, script, mode, ...urls];
  const env = { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", DENO_DIR: join(consumer.tmp, "deno-cache"), BUN_INSTALL_CACHE_DIR: join(consumer.tmp, "bun-cache") };
  const result = await runCommand(command, args, { cwd: consumer.dir, env }).finally(() => server.close());
  let report: ParsedReport;
  try {
    report = parseReport(result.stdout);
  } catch {
    throw new Error(`${runtime} ${mode} exited with ${result.code} and no report:\n${result.stdout}\n${result.stderr}`);
  }
  if ((result.code === 0) !== (report.failed === 0)) throw new Error(`${runtime} exit code ${result.code} disagrees with its report`);
  return { report, result };
}

/** Cloudflare workerd through miniflare: the bundled worker, .wasm files as CompiledWasm modules. */
export async function runWorkerd(consumer: Consumer): Promise<ParsedReport> {
  const { Miniflare } = await import("miniflare");
  // The modules listed as wrangler uploads them: the bundle, and each .wasm esbuild copied beside
  // it as a CompiledWasm module. (Listed, not discovered: miniflare's scan stops at any computed
  // dynamic import(), such as the optional Dawn import of the GPU path, which workerd never runs.)
  const root = join(consumer.dir, "workerd");
  const wasmFiles = (await readdir(root)).filter((f) => f.endsWith(".wasm"));
  if (wasmFiles.length === 0) throw new Error("the workerd bundle imports no .wasm module");
  const mf = new Miniflare({
    modulesRoot: root,
    modules: [{ type: "ESModule", path: join(root, "worker.js") }, ...wasmFiles.map((f) => ({ type: "CompiledWasm" as const, path: join(root, f) }))],
    compatibilityDate: "2025-01-01",
  });
  const server = await fixtureServer();
  try {
    const response = await mf.dispatchFetch(`http://localhost/?range=${encodeURIComponent(server.urls.range)}&whole=${encodeURIComponent(server.urls.whole)}`);
    const text = await response.text();
    const report = parseReport(text);
    if ((response.status === 200) !== (report.failed === 0)) throw new Error(`workerd status ${response.status} disagrees with its report`);
    return report;
  } finally {
    await mf.dispose();
    await server.close();
  }
}

/** Vercel's edge-runtime in strict mode, the simd module compiled outside the VM and injected. */
export async function runEdgeRuntime(consumer: Consumer): Promise<ParsedReport> {
  const { EdgeRuntime } = await import("edge-runtime");
  // The subpath export a user imports (`edge-moe/edge-moe.simd.wasm?module`), resolved by Node.
  const bytes = await readFile(createRequire(join(consumer.dir, "package.json")).resolve("edge-moe/edge-moe.simd.wasm"));
  const module = new WebAssembly.Module(bytes); // as Vercel's build step does for `import m from "x.wasm?module"`
  const server = await fixtureServer();
  const runtime = new EdgeRuntime({
    codeGeneration: { strings: false, wasm: false },
    extend: (context) => Object.assign(context, { __edgeMoEWasm: module, __edgeMoEBytes: new Uint8Array(bytes), __fixtureUrls: server.urls }),
  });
  try {
    runtime.evaluate(await readFile(join(consumer.dir, "edge", "edge.js"), "utf8"));
    return parseReport(await runtime.evaluate<Promise<string>>("globalThis.__conformance"));
  } finally {
    await server.close();
  }
}

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html",
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".map": "application/json",
};

/** Debian's Chromium, or the one CHROMIUM_PATH names. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** The package's entries a browser imports ("browser" exports), as URLs of the served consumer. */
export async function browserImports(consumer: Consumer): Promise<Record<string, string>> {
  const pkg = JSON.parse(await readFile(join(consumer.dir, "node_modules", "edge-moe", "package.json"), "utf8"));
  const conditions = ["browser", "import"];
  const imports: Record<string, string> = {};
  for (const [specifier, subpath] of [
    ["edge-moe", "."],
    ["edge-moe/worker", "./worker"],
  ]) {
    const target = resolveExport(pkg.exports[subpath], conditions);
    if (!target) throw new Error(`the package exports nothing for ${subpath} under ${conditions}`);
    imports[specifier] = `/node_modules/edge-moe/${target.replace(/^\.\//, "")}`;
  }
  return imports;
}

export interface ChromiumPage {
  /** Folder served at the root of http://127.0.0.1:<port>/. */
  root: string;
  /** The document served at "/". */
  html: string;
  /** Headers of every response (e.g. COOP/COEP for a cross-origin-isolated page). */
  headers?: Record<string, string>;
  /** The page is done when window[resultGlobal] is defined; its value is the result. */
  resultGlobal: string;
  /** Answers a request itself (returns true) before the folder is looked up. */
  serve?: (path: string, request: IncomingMessage, response: ServerResponse) => Promise<boolean>;
  timeoutMs?: number;
}

/**
 * Serves a folder and a document from localhost, opens it in headless Chromium (driven by
 * playwright-core) and waits for the page to leave its result in a global. Returns the result and
 * the page's uncaught errors.
 */
export async function runOnChromiumPage<T>(run: ChromiumPage): Promise<{ result: T; pageErrors: string[] }> {
  const headers = run.headers ?? {};
  const server = createServer(async (request, response) => {
    const path = decodeURIComponent(new URL(request.url ?? "/", "http://localhost").pathname);
    if (path === "/") {
      response.writeHead(200, { ...headers, "content-type": "text/html" }).end(run.html);
      return;
    }
    if (run.serve && (await run.serve(path, request, response))) return;
    const file = normalize(join(run.root, path));
    if (!file.startsWith(run.root)) return void response.writeHead(403).end();
    try {
      const body = await readFile(file);
      response.writeHead(200, { ...headers, "content-type": CONTENT_TYPES[extname(file)] ?? "application/octet-stream" }).end(body);
    } catch {
      response.writeHead(404, headers).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;

  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      "--no-sandbox",
      "--enable-unsafe-webgpu",
      "--disable-gpu-sandbox",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  const pageErrors: string[] = [];
  const consoleErrors: string[] = [];
  try {
    const page = await browser.newPage();
    page.on("pageerror", (error) => pageErrors.push(String(error)));
    page.on("console", (message) => {
      if (message.type() === "error") consoleErrors.push(message.text());
    });
    await page.goto(`http://127.0.0.1:${port}/`);
    const key = run.resultGlobal;
    try {
      await page.waitForFunction((k) => (window as unknown as Record<string, unknown>)[k] !== undefined, key, {
        timeout: run.timeoutMs ?? 100_000,
        polling: 200,
      });
    } catch (error) {
      throw new Error(`the page left no ${key} (${(error as Error).message}); errors: ${[...pageErrors, ...consoleErrors].join("; ") || "none"}`);
    }
    const result = await page.evaluate((k) => (window as unknown as Record<string, unknown>)[k], key);
    return { result: result as T, pageErrors };
  } finally {
    await browser.close();
    await new Promise((resolve) => server.close(resolve));
  }
}

/**
 * Headless Chromium on a page served from localhost: an import map built from the package's
 * "browser" exports, then page.mjs. Returns its report texts.
 */
export async function runChromium(consumer: Consumer): Promise<Record<string, string>> {
  const imports = await browserImports(consumer);
  const html = `<!doctype html><meta charset="utf-8"><title>edge-moe conformance</title>
<script type="importmap">${JSON.stringify({ imports })}</script>
<script type="module" src="/page.mjs"></script>`;
  const serve = (path: string, request: IncomingMessage, response: ServerResponse) =>
    path.startsWith("/fixtures/") ? serveFixture(path.slice("/fixtures".length), request, response) : Promise.resolve(false);
  const { result, pageErrors } = await runOnChromiumPage<Record<string, string>>({ root: consumer.dir, html, resultGlobal: "__conformance", serve });
  if (result.error) throw new Error(`the page failed: ${result.error}`);
  if (pageErrors.length > 0) throw new Error(`uncaught errors on the page: ${pageErrors.join("; ")}`);
  return result;
}
