// Every golden vector (test/fixtures/vectors) through the GPU expert path in Node (Dawn), at the
// tolerances of the CPU path: top-k exact, y within 1e-4 relative to max|y|; and the GPU and CPU
// outputs of the same layer agree with each other to the same tolerance.
import { afterAll, beforeAll, expect, it } from "vitest";
import { createMoE, type ForwardResult, type MoELocalLayer } from "edge-moe";
import { listCases, loadCase, relErr, TOL, type GoldenCase } from "./helpers.ts";
import { gpuSuite, probeGpu } from "./gpu_support.ts";

const probe = await probeGpu();
const cases = listCases();

gpuSuite("golden vectors on the GPU (Node, Dawn)", probe, () => {
  let adapterName = "";
  afterAll(() => {
    if (adapterName) console.log(`GPU golden vectors ran on: ${adapterName}`);
  });

  it("has the 19 public cases", () => {
    expect(cases.length).toBe(19);
  });

  for (const info of cases) {
    it(`${info.name}: top-k exact, y ≤ 1e-4 of the reference and of the CPU path`, async () => {
      const golden: GoldenCase = loadCase(info);
      const layer: MoELocalLayer = await createMoE({ ...golden.config, backend: "gpu" });
      try {
        adapterName = layer.gpuStatus.adapter ?? "";
        const options = { train: true, noise: golden.noise };
        const gpu: ForwardResult = await layer.forward(golden.x, options);
        const cpu = layer.forwardSync(golden.x, options);
        expect(gpu.backend).toBe("gpu");
        expect(cpu.backend).toBe("cpu");
        expect(Array.from(gpu.topkIndices)).toEqual(Array.from(golden.tensor("topk_indices")));
        expect(relErr(gpu.topkGates, golden.f32("topk_gates"))).toBeLessThanOrEqual(TOL);
        expect(relErr(gpu.y, golden.f32("y"))).toBeLessThanOrEqual(TOL);
        expect(relErr(gpu.y, cpu.y)).toBeLessThanOrEqual(TOL);
        // the losses come from the gating, which runs on the CPU either way
        expect(gpu.lossImportance).toBe(cpu.lossImportance);
        expect(gpu.lossLoad).toBe(cpu.lossLoad);
        // eval mode (no noise) on the GPU agrees with the CPU too
        const gpuEval = await layer.forward(golden.x);
        const cpuEval = layer.forwardSync(golden.x);
        expect(gpuEval.backend).toBe("gpu");
        expect(Array.from(gpuEval.topkIndices)).toEqual(Array.from(cpuEval.topkIndices));
        expect(relErr(gpuEval.y, cpuEval.y)).toBeLessThanOrEqual(TOL);
      } finally {
        layer.dispose();
      }
    }, 300_000);
  }
});

beforeAll(() => {
  if (!probe.adapter) console.log(`GPU golden vectors: no adapter (${probe.reason})`);
});
