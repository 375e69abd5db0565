// Layers are disposable: `using` ends a layer at the end of its scope, as dispose() does.
import { describe, expect, it } from "vitest";
import { createMoE, MoEError, type MoELocalLayer } from "edge-moe";

describe("explicit resource management", () => {
  it("`using` disposes of the layer when its scope ends; later calls fail with DISPOSED", async () => {
    let escaped: MoELocalLayer | undefined;
    {
      using layer = await createMoE({ dModel: 4, dHidden: 8, numExperts: 4, k: 2, expert: "relu", init: { seed: 1 }, wasmBuild: "simd-threads", threads: 2 });
      expect((await layer.forward(new Float32Array(8))).y.length).toBe(8);
      escaped = layer;
    }
    const error = await escaped.forward(new Float32Array(8)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(MoEError);
    expect((error as MoEError).code).toBe("DISPOSED");
  });
});
