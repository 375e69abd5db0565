// The documentation against the code: the error codes of docs/api.md and the README are exactly
// MoEErrorCode's, the README stays a short page, every relative link of the Markdown pages leads
// to a file (and heading) that exists, and the README's Node worker example runs as written.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("..", import.meta.url));
const read = (path: string) => readFileSync(join(root, path), "utf8");

/** The string literals of the `MoEErrorCode` union in src/errors.ts. */
function sourceCodes(): string[] {
  const source = read("src/errors.ts");
  const start = source.indexOf("export type MoEErrorCode");
  expect(start, "src/errors.ts declares MoEErrorCode").toBeGreaterThanOrEqual(0);
  const rest = source
    .slice(start)
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/\/\/.*$/gm, "");
  const body = rest.slice(0, rest.indexOf(";"));
  return [...body.matchAll(/"([A-Z_]+)"/g)].map((m) => m[1]!);
}

/** The codes in the first column of the table under docs/api.md's "## Errors" heading. */
function documentedCodes(): string[] {
  const doc = read("docs/api.md");
  const start = doc.indexOf("\n## Errors\n");
  expect(start, 'docs/api.md has a "## Errors" section').toBeGreaterThanOrEqual(0);
  const next = doc.indexOf("\n## ", start + 1);
  const section = doc.slice(start, next < 0 ? doc.length : next);
  return [...section.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]!);
}

const sorted = (codes: string[]) => [...codes].sort();

describe("error codes", () => {
  it("docs/api.md's errors table lists exactly the codes of MoEErrorCode, each once", () => {
    const source = sourceCodes();
    const documented = documentedCodes();
    expect(source.length).toBeGreaterThan(10);
    expect(new Set(documented).size, "a code appears twice in docs/api.md's errors table").toBe(documented.length);
    const missingInDocs = source.filter((c) => !documented.includes(c));
    const unknownInDocs = documented.filter((c) => !source.includes(c));
    expect(missingInDocs, "codes of src/errors.ts missing from docs/api.md").toEqual([]);
    expect(unknownInDocs, "codes in docs/api.md that src/errors.ts does not have").toEqual([]);
  });

  it("the README's errors paragraph names exactly the same codes", () => {
    const readme = read("README.md");
    const start = readme.indexOf("**Errors.**");
    expect(start).toBeGreaterThanOrEqual(0);
    const paragraph = readme.slice(start, readme.indexOf("\n\n", start));
    expect(sorted([...paragraph.matchAll(/`([A-Z_]{4,})`/g)].map((m) => m[1]!))).toEqual(sorted(sourceCodes()));
  });
});

describe("README", () => {
  it("is at most 16 KiB", () => {
    expect(statSync(join(root, "README.md")).size).toBeLessThanOrEqual(16384);
  });
});

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  const text = markdown.replace(/^```[\s\S]*?^```/gm, "");
  for (const m of text.matchAll(/^#{1,6} +(.*)$/gm)) {
    const slug = m[1]!
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\- _]/gu, "")
      .replace(/ /g, "-");
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    out.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return out;
}

function markdownPages(): string[] {
  const docs = readdirSync(join(root, "docs"))
    .filter((f) => f.endsWith(".md"))
    .map((f) => `docs/${f}`);
  return ["README.md", ...docs, "bench/device/README.md", "bench/diagnostics/README.md"];
}

describe("links", () => {
  it("docs/ has the pages the README links to", () => {
    for (const page of ["api", "runtimes", "training", "gpu", "numerics", "benchmarks", "architecture", "perf-notes"]) {
      expect(existsSync(join(root, `docs/${page}.md`)), `docs/${page}.md`).toBe(true);
    }
  });

  it("every relative link of the Markdown pages leads to a file, and to a heading there", () => {
    const broken: string[] = [];
    for (const page of markdownPages()) {
      const text = read(page).replace(/^```[\s\S]*?^```/gm, "");
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/i.test(target)) continue; // https:, mailto:
        const [path, anchor] = target.split("#") as [string, string | undefined];
        const file = path === "" ? join(root, page) : join(root, dirname(page), path);
        if (!existsSync(file)) {
          broken.push(`${page}: ${target} (no ${relative(root, file)})`);
          continue;
        }
        if (anchor && file.endsWith(".md") && !anchors(readFileSync(file, "utf8")).has(anchor)) {
          broken.push(`${page}: ${target} (no heading #${anchor})`);
        }
      }
    }
    expect(broken).toEqual([]);
  });
});

/** The fenced block of `markdown` whose first line is `firstLine`. */
function block(markdown: string, firstLine: string): string {
  const at = markdown.indexOf("```js\n" + firstLine + "\n");
  expect(at, `a js block starting with ${firstLine}`).toBeGreaterThanOrEqual(0);
  const start = at + "```js\n".length;
  return markdown.slice(start, markdown.indexOf("\n```", start) + 1);
}

describe("the README's Node worker example", () => {
  it("runs as written in Node (a worker_threads Worker running edge-moe/worker)", () => {
    const readme = read("README.md");
    // Inside the repository "edge-moe" resolves to the package itself (a self-reference through
    // package.json's exports), as it does for a user who installed it.
    const dir = join(root, "build/docs-example");
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    // the example's weights and x: zero gate weights (every expert equally likely) and zero experts
    const given = [
      "const [d, h, n] = [512, 1024, 16];",
      "const weights = { w1: new Float32Array(n * d * h), b1: new Float32Array(n * h), w2: new Float32Array(n * h * d), b2: new Float32Array(n * d).fill(0.5) };",
      "const x = new Float32Array(3 * d).fill(1);",
    ].join("\n");
    const check =
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the source of a generated script
      '\nif (y.length !== 3 * 512 || y[0] !== 0.5) throw new Error(`unexpected y: ${y.length} values, y[0] = ${y[0]}`);\nconsole.log("example ok");\n';
    writeFileSync(join(dir, "main.mjs"), `${given}\n${block(readme, "// main.mjs")}${check}`);
    const output = execFileSync(process.execPath, [join(dir, "main.mjs")], { cwd: dir, encoding: "utf8", timeout: 60_000 });
    expect(output).toContain("example ok");
    rmSync(dir, { recursive: true, force: true });
  });
});
