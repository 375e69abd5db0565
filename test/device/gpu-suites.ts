// The Node GPU suites (test/gpu.test.ts, test/gpu_golden.test.ts) on a machine without vitest:
// bundled by bench/device/prepare.sh with `vitest` aliased to ./vitest-shim.ts into
// test/gpu-suites.bundle.mjs (beside the suites, whose fixture paths it keeps; --ignore-annotations:
// the package's "sideEffects": false would drop these bare imports).
//   node test/gpu-suites.bundle.mjs     exits 1 when a test fails or none passed
import "../gpu.test.ts";
import "../gpu_golden.test.ts";
import { runRegistered } from "./vitest-shim.ts";

const counts = await runRegistered((line) => console.log(line));
console.log(`GPU suites: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped`);
process.exit(counts.failed === 0 && counts.passed > 0 ? 0 : 1);
