#!/usr/bin/env bash
# The GPU host's side of a remote benchmark run (bench/device/README.md). In the folder where
# build/gpu-host.tar (from bench/device/prepare.sh) was unpacked:
#   OUT=/tmp/edge-moe-out bash bench/device/run.sh
# Unpacks Node, Dawn, tinybench and the Vulkan loader; finds a Vulkan driver that gives Dawn an
# adapter; runs the golden vectors and the router's calibration on the GPU (test/device/gpu-check.ts)
# and the Node benchmark with the GPU path (bench/run.mjs). Everything lands in $OUT.
# GPUTESTS=1 runs the Node GPU test suites instead, DIAG=1 the time breakdown, TILES=1 the tile sweep.
# Installs the Vulkan loader's .deb files into / (dpkg -x) and runs ldconfig: run it as root on a
# host (or container) that is there for the run.
set -uo pipefail
OUT=${OUT:-/tmp/edge-moe-out}
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*"; }
for f in .device/*.deb; do dpkg -x "$f" /; done
ldconfig
mkdir -p /tmp/bin node_modules/webgpu/dist/linux-x64 node_modules/tinybench
xz -dc .device/node.xz > /tmp/bin/node && chmod +x /tmp/bin/node
xz -dc .device/dawn.node.xz > node_modules/webgpu/dist/linux-x64/dawn.node
cp .device/webgpu/* node_modules/webgpu/
cp -r .device/tinybench/. node_modules/tinybench/
export PATH=/tmp/bin:$PATH
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
{ nvidia-smi; lscpu; free -g; ldconfig -p | grep -i vulkan; find / -xdev -name '*icd*.json' -path '*vulkan*' 2>/dev/null;
  for l in $(find / -xdev -name 'libGLX_nvidia.so.0' 2>/dev/null); do echo "$l:"; ldd "$l"; done; } > "$OUT/machine.txt" 2>&1
log "node $(node --version)"

# a Vulkan driver that gives Dawn an adapter: the caller's VK_ICD_FILENAMES, the loader's default,
# else each NVIDIA ICD file found
probe='const { create } = await import("webgpu"); const a = await create([]).requestAdapter({ powerPreference: "high-performance" });
console.log(a ? `adapter: ${a.info?.vendor} ${a.info?.architecture} ${a.info?.device} ${a.info?.description}` : "no adapter"); process.exit(a ? 0 : 1);'
found=no
for icd in ${VK_ICD_FILENAMES:-} default $(find / -xdev -name '*icd*.json' -path '*vulkan*' 2>/dev/null | grep -i nvidia) /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; do
  if [ "$icd" != default ]; then export VK_ICD_FILENAMES=$icd VK_DRIVER_FILES=$icd; else unset VK_ICD_FILENAMES VK_DRIVER_FILES; fi
  if timeout 60 node --input-type=module -e "$probe" 2>&1 | tee -a "$OUT/machine.txt"; then found=yes; log "driver: ${icd:-loader default}"; break; fi
done
[ $found = yes ] || { log "no WebGPU adapter"; exit 1; }

if [ -n "${GPUTESTS:-}" ]; then
  log "the Node GPU suites (test/gpu.test.ts, test/gpu_golden.test.ts) with a vitest stand-in"
  CI=true timeout 300 node test/gpu-suites.bundle.mjs 2>&1 | tee "$OUT/gpu-suites.log"
  exit "${PIPESTATUS[0]}"
fi
if [ -n "${DIAG:-}" ]; then
  log "where a large-batch GPU forward spends its time"
  timeout 200 node bench/device/diag.mjs "$OUT/diag.json" 2>&1 | tee "$OUT/diag.log"
  exit 0
fi
if [ -n "${TILES:-}" ]; then
  log "tile-shape sweep"
  timeout 300 node bench/device/tiles.mjs "$OUT/tiles.json" 2>&1 | tee "$OUT/tiles.log"
  exit 0
fi
log "golden vectors and calibration on the GPU"
timeout 200 node test/gpu-check.bundle.mjs "$OUT/gpu-check.json" 2>&1 | tee "$OUT/gpu-check.log"
log "benchmark"
timeout "${BENCH_SECONDS:-360}" node bench/run.mjs --runtimes=node --no-build --no-readme --no-peer --no-ort --no-quant --no-plain --quick \
  --batches=1,8,64,512,4096 --max-call-ms=400 --out="$OUT/bench" 2>&1 | tee "$OUT/bench.log"
log "done"
