// Memory: after a layer has seen its largest batch, in training mode and then in eval mode, its
// WebAssembly memory does not grow across 10,000 forward calls of any batch size up to that one
// (an arena is laid out once per batch capacity: one for the call, one for the training state
// that backward reads; nothing is allocated per call). Growth is observed where it can only happen:
// WebAssembly.Memory.prototype.grow (the kernels never execute memory.grow; the engine grows the
// memory from JavaScript when it lays out weights or scratch).
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createMoE, type MoEConfig } from "edge-moe";
import { configOf, randomWeights, Rng, type LayerShape } from "./helpers.ts";

let grows = 0;
const nativeGrow = WebAssembly.Memory.prototype.grow;
beforeEach(() => {
  grows = 0;
  WebAssembly.Memory.prototype.grow = function (this: WebAssembly.Memory, delta: number) {
    grows++;
    return nativeGrow.call(this, delta);
  };
});
afterEach(() => {
  WebAssembly.Memory.prototype.grow = nativeGrow;
});

const CALLS = 10_000;
const MAX_BATCH = 64;

describe("wasm memory does not grow after the largest batch", () => {
  const rng = new Rng(42);
  // wide rows, small experts: the scratch of B = 64 outgrows what creation left, and a call is cheap
  const shape: LayerShape = { d: 512, h: 16, n: 4, k: 2, expert: "swiglu", noisy: true };
  const config: MoEConfig = configOf(shape, randomWeights(rng, shape));
  const inputs = Array.from({ length: MAX_BATCH }, (_, i) => rng.normals((i + 1) * shape.d));

  for (const [name, extra] of [
    ["simd", { wasmBuild: "simd" }],
    ["simd-threads, 2 threads", { wasmBuild: "simd-threads", threads: 2 }],
  ] as const) {
    it(`${name}: ${CALLS} forwards of B = 1..${MAX_BATCH}, eval and training mode`, async () => {
      const layer = await createMoE({ ...config, ...extra });
      try {
        const before = grows;
        layer.forwardSync(inputs[MAX_BATCH - 1], { train: true, seed: 1 });
        layer.forwardSync(inputs[MAX_BATCH - 1]);
        // the largest batch lays out the arenas: the counter sees it (so the check below can fail)
        expect(grows).toBeGreaterThan(before);
        const after = grows;
        for (let call = 0; call < CALLS; call++) {
          const x = inputs[(call * 37) % MAX_BATCH];
          if (call % 3 === 0) layer.forwardSync(x, { train: true, seed: call });
          else layer.forwardSync(x);
        }
        expect(grows - after, "memory.grow calls after the largest batch").toBe(0);
      } finally {
        layer.dispose();
      }
    });
  }
});
