// Unknown option keys through a layer of the built package: forward, forwardSync, backward, step and
// calibrate reject a misspelt option with INVALID_CONFIG naming the nearest valid one, and the
// rejected call changes nothing (the training state survives for backward).
import { describe, expect, it } from "vitest";
import { createMoE, MoEError, type MoEConfig, type MoELocalLayer } from "edge-moe";
import { configOf, randomWeights, Rng, type LayerShape } from "./helpers.ts";

const shape: LayerShape = { expert: "gelu", d: 8, h: 6, n: 4, k: 2, noisy: true };
const config = (): MoEConfig => configOf(shape, randomWeights(new Rng(11), shape));
const B = 3;

async function rejection(call: () => unknown): Promise<MoEError> {
  try {
    await call();
  } catch (error) {
    expect(error).toBeInstanceOf(MoEError);
    return error as MoEError;
  }
  throw new Error("expected the call to fail, and it succeeded");
}

async function withLayer(body: (layer: MoELocalLayer, x: Float32Array) => Promise<void>): Promise<void> {
  const layer = await createMoE(config());
  try {
    await body(layer, new Rng(5).normals(B * shape.d));
  } finally {
    layer.dispose();
  }
}

type Loose = never;

describe("layer calls reject unknown option keys (INVALID_CONFIG, nearest valid key)", () => {
  it('forward(x, { trian: true }) → did you mean "train"?', async () => {
    await withLayer(async (layer, x) => {
      const error = await rejection(() => layer.forward(x, { trian: true } as Loose));
      expect(error.code).toBe("INVALID_CONFIG");
      expect(error.message).toBe('options.trian is not an option of forward; did you mean "train"?');
    });
  });
  it("forwardSync and forward's options.out", async () => {
    await withLayer(async (layer, x) => {
      expect((await rejection(() => layer.forwardSync(x, { sed: 1 } as Loose))).message).toContain(
        'options.sed is not an option of forward; did you mean "seed"?',
      );
      const out = { Y: new Float32Array(B * shape.d) };
      expect((await rejection(() => layer.forward(x, { out } as Loose))).message).toContain("options.out.Y is not an option");
    });
  });
  it('backward(dy, { weight: false }) → "weights"; the training state survives the rejected call', async () => {
    await withLayer(async (layer, x) => {
      await layer.forward(x, { train: true, seed: 1 });
      const dy = new Float32Array(B * shape.d).fill(0.5);
      const error = await rejection(() => layer.backward(dy, { weight: false } as Loose));
      expect(error.code).toBe("INVALID_CONFIG");
      expect(error.message).toBe('options.weight is not an option of backward; did you mean "weights"?');
      const grads = await layer.backward(dy, { weights: false });
      expect(grads.x.length).toBe(B * shape.d);
    });
  });
  it('step({ lr, optimiser }) → "optimizer"; the weights are unchanged', async () => {
    await withLayer(async (layer, x) => {
      await layer.forward(x, { train: true, seed: 1 });
      await layer.backward(new Float32Array(B * shape.d).fill(0.5));
      const before = await layer.getWeights();
      const error = await rejection(() => layer.step({ lr: 0.1, optimiser: "adam" } as Loose));
      expect(error.code).toBe("INVALID_CONFIG");
      expect(error.message).toBe('options.optimiser is not an option of step; did you mean "optimizer"?');
      expect(await layer.getWeights()).toEqual(before);
      await layer.step({ lr: 0.1 });
      expect(await layer.getWeights()).not.toEqual(before);
    });
  });
  it('calibrate({ batchSize }) → "batchSizes"', async () => {
    await withLayer(async (layer) => {
      const error = await rejection(() => layer.calibrate({ batchSize: [4] } as Loose));
      expect(error.code).toBe("INVALID_CONFIG");
      expect(error.message).toBe('options.batchSize is not an option of calibrate; did you mean "batchSizes"?');
    });
  });
});
