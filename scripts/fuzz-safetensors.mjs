// node scripts/fuzz-safetensors.mjs [count] [seed] — the safetensors fuzzer of
// test/fuzz-safetensors.test.ts at a larger count (default 100,000 inputs) and any seed, on the
// built package (run npm run build first). Same mutations, same independent oracle.
import { spawnSync } from "node:child_process";

const count = Number(process.argv[2] ?? 100_000);
const seed = Number(process.argv[3] ?? Date.now() % 1_000_000);
if (!Number.isSafeInteger(count) || count < 1 || !Number.isSafeInteger(seed)) {
  console.error("usage: node scripts/fuzz-safetensors.mjs [count ≥ 1] [integer seed]");
  process.exit(2);
}
console.log(`fuzzing readSafetensors: ${count} inputs, seed ${seed}`);
const root = new URL("..", import.meta.url).pathname;
const run = spawnSync("npx", ["vitest", "run", "test/fuzz-safetensors.test.ts"], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, FUZZ_COUNT: String(count), FUZZ_SEED: String(seed) },
});
process.exit(run.status ?? 1);
