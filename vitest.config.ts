import { defineConfig } from "vitest/config";
import { fileURLToPath } from "node:url";

// Tests exercise the built package (dist/), exactly what a user imports.
export default defineConfig({
  resolve: {
    alias: { "edge-moe": fileURLToPath(new URL("./dist/index.js", import.meta.url)) },
  },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
  },
});
