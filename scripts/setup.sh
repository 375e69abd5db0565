#!/usr/bin/env bash
# Installs what the demo and the tests need when it is missing: npm packages (exact versions from
# package-lock.json) and, for the GPU and browser tests, Debian's mesa-vulkan-drivers (lavapipe)
# and chromium (whose SwiftShader Vulkan ICD Dawn accepts). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  # onnxruntime-node (a test peer) ships its CPU binary; its install script would download GPU ones
  ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
fi

# The demo needs only npm packages; the test suite also needs the Vulkan drivers and Chromium.
if [ "${1:-}" != "--demo" ] && [ "${EDGE_MOE_SKIP_APT:-}" != "1" ]; then
  missing=()
  [ -f /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || [ -f /usr/share/vulkan/icd.d/lvp_icd.aarch64.json ] || missing+=(mesa-vulkan-drivers)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "setup: apt-get install ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -q || true
      apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
      echo "setup: missing Debian packages ${missing[*]} (need root and apt-get to install them)" >&2
    fi
  fi
fi

if [ ! -f dist/index.js ] || [ -n "$(find src assembly shaders scripts/build.mjs package.json -newer dist/index.js -print -quit 2>/dev/null)" ]; then
  npm run build
fi
