#!/usr/bin/env bash
# The full test suite: installs what is missing, builds, and runs every suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run build
npx vitest run
