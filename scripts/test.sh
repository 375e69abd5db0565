#!/usr/bin/env bash
# The full test suite: installs what is missing, builds, type-checks src/ and test/, runs the
# linter and formatter check (Biome: npm run lint; npm run format fixes what it can), then every
# suite (vitest: the CPU path, the GPU path on software Vulkan drivers, training, threads, and the
# conformance suite in Node, Deno, Bun, Chromium, workerd and edge-runtime), and ends with one
# line "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run build
npm run typecheck
npm run lint
mkdir -p build
npx vitest run --reporter=default --reporter=json --outputFile=build/vitest-results.json
# one plain closing line for whoever reads the log's end
node -e 'const r = JSON.parse(require("fs").readFileSync("build/vitest-results.json", "utf8")); console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed`)'

