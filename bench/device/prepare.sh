#!/usr/bin/env bash
# Packs what a benchmark run on a remote GPU host needs, for a host that may have no Node, no npm
# and no network. Here, in the repository (after npm install):
#   bash bench/device/prepare.sh
# builds dist/ and the machine probes (build/bench/), bundles test/device/gpu-check.ts into
# test/gpu-check.bundle.mjs and the Node GPU suites with a vitest stand-in into
# test/gpu-suites.bundle.mjs, fills .device/ (git-ignored) with what run.sh unpacks on the host:
# this Node binary and Dawn (the webgpu package's linux-x64 build), xz-compressed, tinybench, and
# the Vulkan loader (Debian's libvulkan1 and the GL/EGL libraries Dawn links against), and writes
# build/gpu-host.tar: the repository's tracked files plus everything above. Copy that file to the
# host, unpack it and run bench/device/run.sh there (bench/device/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
node bench/run.mjs --probes-only
bundle() { npx esbuild "$1" --bundle --platform=node --format=esm --target=node20 --external:edge-moe \
  --external:webgpu --alias:vitest=./test/device/vitest-shim.ts --ignore-annotations --outfile="$2" --log-level=warning; }
bundle test/device/gpu-check.ts test/gpu-check.bundle.mjs
bundle test/device/gpu-suites.ts test/gpu-suites.bundle.mjs

mkdir -p .device/webgpu .device/tinybench
[ -s .device/node.xz ] || xz -T0 -9 -c "$(command -v node)" > .device/node.xz
[ -s .device/dawn.node.xz ] || xz -T0 -9 -c node_modules/webgpu/dist/linux-x64/dawn.node > .device/dawn.node.xz
cp node_modules/webgpu/package.json node_modules/webgpu/index.js .device/webgpu/
cp -r node_modules/tinybench/package.json node_modules/tinybench/dist .device/tinybench/
if ! ls .device/libglx0_*.deb >/dev/null 2>&1; then (cd .device && apt-get download libvulkan1 libglvnd0 libglx0 libgl1 libegl1 libgles2 libopengl0); fi
du -sh .device dist build/bench test/gpu-check.bundle.mjs test/gpu-suites.bundle.mjs
# one file to copy: the tracked sources (bench/, test/fixtures, package.json) and what was built above
tar -cf build/gpu-host.tar $(git ls-files) .device dist build/bench test/gpu-check.bundle.mjs test/gpu-suites.bundle.mjs
ls -l build/gpu-host.tar
