// A stand-in for the part of vitest that the GPU suites use (describe, it, it.skip, beforeAll,
// afterAll, expect with the matchers below), so that test/gpu.test.ts and test/gpu_golden.test.ts
// run unchanged on a machine without node_modules (bench/device/run.sh, GPUTESTS=1): esbuild
// bundles them with `vitest` aliased to this file (bench/device/prepare.sh). Tests run in
// declaration order when `runRegistered()` is called; it prints one line per test and returns the
// number that failed.
import { isDeepStrictEqual } from "node:util";

type Fn = () => unknown | Promise<unknown>;
interface Suite {
  name: string;
  beforeAll: Fn[];
  afterAll: Fn[];
  children: Array<Suite | { name: string; fn?: Fn }>;
}

const root: Suite = { name: "", beforeAll: [], afterAll: [], children: [] };
let current = root;

export function describe(name: string, body: () => void): void {
  const suite: Suite = { name, beforeAll: [], afterAll: [], children: [] };
  current.children.push(suite);
  const parent = current;
  current = suite;
  try {
    body();
  } finally {
    current = parent;
  }
}

export const it = Object.assign((name: string, fn: Fn, _timeout?: number) => void current.children.push({ name, fn }), {
  skip: (name: string, _fn?: Fn) => void current.children.push({ name }),
});
export const test = it;
export const beforeAll = (fn: Fn, _timeout?: number): void => void current.beforeAll.push(fn);
export const afterAll = (fn: Fn, _timeout?: number): void => void current.afterAll.push(fn);

class AssertionError extends Error {}

function matchers(actual: unknown, message?: string) {
  const check = (ok: boolean, what: string) => {
    if (!ok) throw new AssertionError(`${message ? `${message}: ` : ""}expected ${show(actual)} ${what}`);
  };
  return {
    toBe: (expected: unknown) => check(Object.is(actual, expected), `to be ${show(expected)}`),
    toEqual: (expected: unknown) => check(isDeepStrictEqual(actual, expected), `to equal ${show(expected)}`),
    toBeLessThanOrEqual: (bound: number) => check((actual as number) <= bound, `to be ≤ ${bound}`),
    toBeGreaterThan: (bound: number) => check((actual as number) > bound, `to be > ${bound}`),
    toBeInstanceOf: (type: new (...args: never[]) => unknown) => check(actual instanceof type, `to be a ${type.name}`),
    toBeTruthy: () => check(Boolean(actual), "to be truthy"),
    toContain: (item: unknown) => check((actual as unknown[]).includes(item), `to contain ${show(item)}`),
    toMatch: (pattern: RegExp) => check(pattern.test(String(actual)), `to match ${pattern}`),
  };
}

export const expect = (actual: unknown, message?: string) => matchers(actual, message);

function show(value: unknown): string {
  try {
    const text = JSON.stringify(value, (_, v) => (ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v));
    return text === undefined ? String(value) : text.length > 200 ? `${text.slice(0, 200)}…` : text;
  } catch {
    return String(value);
  }
}

/** Runs every registered test; returns { passed, failed, skipped }. */
export async function runRegistered(log: (line: string) => void): Promise<{ passed: number; failed: number; skipped: number }> {
  const counts = { passed: 0, failed: 0, skipped: 0 };
  const run = async (suite: Suite, path: string[]) => {
    const name = [...path, suite.name].filter(Boolean);
    try {
      for (const fn of suite.beforeAll) await fn();
    } catch (error) {
      counts.failed++;
      log(`FAIL ${name.join(" > ")} (beforeAll): ${(error as Error)?.message ?? error}`);
      return;
    }
    for (const child of suite.children) {
      if ("children" in child) {
        await run(child, name);
        continue;
      }
      const title = [...name, child.name].join(" > ");
      if (!child.fn) {
        counts.skipped++;
        log(`skip ${title}`);
        continue;
      }
      const t0 = performance.now();
      try {
        await child.fn();
        counts.passed++;
        log(`pass ${title} (${(performance.now() - t0).toFixed(0)} ms)`);
      } catch (error) {
        counts.failed++;
        log(`FAIL ${title}: ${(error as Error)?.message ?? error}`);
      }
    }
    for (const fn of suite.afterAll) await fn();
  };
  await run(root, []);
  return counts;
}
