// Reliability: the short soak (scripts/soak.mjs: 2,000 calls with training mixed in and 50
// create/dispose cycles, at 1 and 2 threads, memory measured after global.gc()) in a child process;
// and rules of the layer's API that a rejected or late call must follow.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { createMoE, MoEError } from "edge-moe";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

describe("soak (short)", () => {
  it("2,000 mixed calls and 50 create/dispose cycles at 1 and 2 threads: memory stays within bounds", () => {
    const child = spawnSync(process.execPath, ["--expose-gc", "scripts/soak.mjs", "--calls", "2000", "--cycles", "50", "--every", "500"], {
      cwd: ROOT,
      encoding: "utf8",
      timeout: 60_000,
    });
    const lines = child.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    const done = lines.at(-1);
    expect(done, child.stderr).toMatchObject({ done: true, finite: true, failures: [] });
    expect(child.status).toBe(0);
    // four phases (calls and cycles, at 1 and 2 threads), each with its growth checked
    expect(lines.filter((l) => "ok" in l).map((l) => l.ok)).toEqual([true, true, true, true]);
  });
});

describe("rules a call must follow", () => {
  const config = { dModel: 8, dHidden: 16, numExperts: 4, k: 2, expert: "relu", init: { seed: 1 } } as const;
  const x = Float32Array.from({ length: 3 * 8 }, (_, i) => Math.sin(i));

  it("noise holding NaN is rejected with NOISE_SHAPE in eval mode too (a malformed option is a bug even where unused)", async () => {
    const layer = await createMoE(config);
    const noise = new Float32Array(3 * 4);
    noise[5] = Number.NaN;
    await expect(layer.forward(x, { noise })).rejects.toMatchObject({ name: "MoEError", code: "NOISE_SHAPE" });
    expect(() => layer.forwardSync(x, { noise })).toThrow(MoEError);
    const clean = await createMoE({ ...config, noisyGating: false });
    await expect(clean.forward(x, { train: true, noise })).rejects.toMatchObject({ code: "NOISE_SHAPE" });
    layer.dispose();
    clean.dispose();
  });

  it("calibrate() after dispose returns a promise rejected with DISPOSED (it does not throw)", async () => {
    const layer = await createMoE(config);
    layer.dispose();
    let promise: Promise<unknown> | undefined;
    expect(() => {
      promise = layer.calibrate();
    }).not.toThrow();
    await expect(promise).rejects.toMatchObject({ name: "MoEError", code: "DISPOSED" });
  });

  it("finite x so large that the gating logits overflow is NON_FINITE_INPUT, and the layer is unchanged", async () => {
    const layer = await createMoE({ ...config, weights: { wGate: Float32Array.from({ length: 8 * 4 }, (_, i) => Math.cos(i)) } });
    const before = await layer.forward(x);
    const huge = x.map((v) => Math.sign(v || 1) * 3.4e38);
    for (const train of [false, true]) {
      await expect(layer.forward(huge, { train })).rejects.toMatchObject({ name: "MoEError", code: "NON_FINITE_INPUT" });
    }
    // without the check the gates would be NaN: the documented way out is the check itself
    expect(Array.from((await layer.forward(x)).y)).toEqual(Array.from(before.y));
    layer.dispose();
  });
});
