// The GPU checks of a machine with a real GPU (bench/device/run.sh; no vitest there): every golden
// vector through the GPU expert path at the tolerances of test/gpu_golden.test.ts, then the
// router's calibration on the benchmark shapes. Bundled by bench/device/prepare.sh into
// test/gpu-check.bundle.mjs (beside helpers.ts, whose fixture paths it keeps).
//   node test/gpu-check.bundle.mjs <report.json>
// Prints one line per case and exits 1 when any check fails or there is no GPU adapter.
import { writeFileSync } from "node:fs";
import { createMoE, type ForwardResult } from "edge-moe";
import { listCases, loadCase, relErr, TOL } from "../helpers.ts";
import { makeWeights, SHAPES, EXPERTS, caseName } from "../../bench/cases.mjs";

interface CaseReport {
  name: string;
  topkExact: boolean;
  yErr: number;
  gatesErr: number;
  gpuVsCpu: number;
  evalGpuVsCpu: number;
  lossesEqual: boolean;
  passed: boolean;
}

const reportPath = process.argv[2] ?? "gpu-check.json";
const report: { adapter?: string; software?: boolean; cases: CaseReport[]; calibration: unknown[]; failed: number; error?: string } = {
  cases: [],
  calibration: [],
  failed: 0,
};

// written after every step: a crash of the driver leaves what was measured before it
const save = () => writeFileSync(reportPath, JSON.stringify(report, null, 1));
const sameIndices = (a: Int32Array, b: ArrayLike<number>) => a.length === b.length && a.every((v, i) => v === b[i]);

try {
  for (const info of listCases()) {
    const golden = loadCase(info);
    const layer = await createMoE({ ...golden.config, backend: "gpu" });
    report.adapter ??= layer.gpuStatus.adapter;
    report.software ??= layer.gpuStatus.software;
    const options = { train: true, noise: golden.noise };
    const gpu: ForwardResult = await layer.forward(golden.x, options);
    const cpu = layer.forwardSync(golden.x, options);
    const gpuEval = await layer.forward(golden.x);
    const cpuEval = layer.forwardSync(golden.x);
    layer.dispose();
    const c: CaseReport = {
      name: info.name,
      topkExact: gpu.backend === "gpu" && sameIndices(gpu.topkIndices, golden.tensor("topk_indices")),
      yErr: relErr(gpu.y, golden.f32("y")),
      gatesErr: relErr(gpu.topkGates, golden.f32("topk_gates")),
      gpuVsCpu: relErr(gpu.y, cpu.y),
      evalGpuVsCpu: gpuEval.backend === "gpu" && sameIndices(gpuEval.topkIndices, cpuEval.topkIndices) ? relErr(gpuEval.y, cpuEval.y) : Infinity,
      lossesEqual: gpu.lossImportance === cpu.lossImportance && gpu.lossLoad === cpu.lossLoad,
      passed: false,
    };
    c.passed = c.topkExact && c.lossesEqual && Math.max(c.yErr, c.gatesErr, c.gpuVsCpu, c.evalGpuVsCpu) <= TOL;
    if (!c.passed) report.failed++;
    report.cases.push(c);
    save();
    const e = (v: number) => v.toExponential(1);
    console.log(`${c.passed ? "pass" : "FAIL"} ${c.name}: y ${e(c.yErr)}, gates ${e(c.gatesErr)}, gpu−cpu ${e(c.gpuVsCpu)} (eval ${e(c.evalGpuVsCpu)})`);
  }
  console.log(
    `golden vectors on the GPU (${report.adapter}${report.software ? ", software" : ""}): ${report.cases.length - report.failed}/${report.cases.length} passed`,
  );

  // the router's crossover on the benchmark shapes: B·k above which a forward goes to the GPU
  for (const shape of SHAPES) {
    for (const expert of EXPERTS) {
      const layer = await createMoE({
        dModel: shape.d,
        dHidden: shape.h,
        numExperts: shape.n,
        k: shape.k,
        expert,
        weights: makeWeights(shape, expert),
        backend: "auto",
        threads: "auto",
      });
      const calibration = await layer.calibrate({ batchSizes: [1, 8, 32, 128, 512], repeats: 3 });
      layer.dispose();
      report.calibration.push({ name: caseName(shape, expert), ...calibration });
      save();
      const rows = calibration.samples.map((s) => `B=${s.batch} cpu ${s.cpuMs.toFixed(2)} gpu ${s.gpuMs.toFixed(2)}`).join(" | ");
      console.log(`calibrate ${caseName(shape, expert)}: crossover B·k = ${calibration.crossover} (${rows})`);
    }
  }
} catch (error) {
  report.error = String((error as Error)?.stack ?? error);
  report.failed++;
  console.log(`error: ${report.error}`);
}
save();
process.exit(report.failed === 0 && report.cases.length > 0 ? 0 : 1);
