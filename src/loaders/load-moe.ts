// loadMoE: the MoE block of one layer of a pretrained checkpoint, as a layer of createMoE's. The
// family's router (src/loaders/families.ts) becomes createMoE's `routing`, its shared expert
// `shared`: the gating kernels apply the family's rule, and the plan and both expert back ends run
// the layer as any other.
import { createMoE } from "../layer.ts";
import type { MoEConfig, MoELocalLayer } from "../types.ts";
import { loadMoELayer, type LoadLayerOptions } from "./index.ts";
import type { FamilyDescription } from "./families.ts";

/** createMoE's options that a checkpoint does not fix (backend, threads, wasm, gpu, …). */
export type LoadMoERuntimeOptions = Omit<
  MoEConfig,
  "dModel" | "dHidden" | "numExperts" | "k" | "expert" | "weights" | "init" | "noisyGating" | "noiseEpsilon" | "wImportance" | "wLoad" | "routing" | "shared"
>;

export interface LoadMoEOptions extends LoadLayerOptions, LoadMoERuntimeOptions {}

/** A loaded layer: createMoE's layer, and what was loaded. */
export type LoadedMoE = MoELocalLayer & {
  /** The family, the block's tensor prefix, its sizes and routing, and notes on what is not reproduced. */
  readonly description: FamilyDescription;
};

/** Loads one layer's MoE block (reading only its tensors) and creates the layer. */
export async function loadMoE(options: LoadMoEOptions): Promise<LoadedMoE> {
  const { config: _config, files: _files, layer: _layer, onProgress: _progress, onNote: _note, signal: _signal, fetch: _fetch, ...runtime } = options;
  const loaded = await loadMoELayer(options);
  const { routing, shared } = loaded;
  const layer = await createMoE({
    ...runtime,
    ...loaded.config,
    routing: {
      score: routing.score,
      renormalize: routing.renormalize,
      scale: routing.scale,
      ...(routing.score === "sigmoid" && { renormEpsilon: routing.renormEpsilon }),
      ...(routing.choiceBias && { choiceBias: routing.choiceBias }),
      ...(routing.groups && { groups: routing.groups }),
    },
    ...(shared && { shared: { dHidden: shared.dHidden, gated: shared.gate !== undefined } }),
    weights: {
      ...loaded.config.weights,
      ...(shared && { sharedGateProj: shared.wGateProj, sharedUp: shared.wUp, sharedDown: shared.wDown }),
      ...(shared?.gate && { sharedGate: shared.gate }),
    },
  });
  return Object.assign(layer, { description: loaded.description });
}
