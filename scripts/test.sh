#!/usr/bin/env bash
# The full test suite: installs what is missing, builds, type-checks src/ and test/, runs every
# suite (vitest: the CPU path, the GPU path on software Vulkan drivers, training, threads, and the
# conformance suite in Node, Deno, Bun, Chromium, workerd and edge-runtime), then the linter and
# formatter check (Biome: npm run lint; npm run format fixes what it can).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run build
npm run typecheck
npx vitest run
npm run lint
