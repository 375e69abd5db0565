// loadMoELayer: config.json + checkpoint files + a layer → that layer's MoE block in edge-moe's
// layout, reading only the safetensors headers and the layer's tensors.
import { openCheckpoint, type Checkpoint } from "./checkpoint.ts";
import { loadError } from "./errors.ts";
import { checkShape, convertLayer, describeFamily, type ConvertedLayer, type FamilyDescription } from "./families.ts";
import { checkAborted, type FileValue, type LoadProgress } from "./sources.ts";

export type { ConvertedLayer, FamilyDescription, Family, Routing, PlannedTensor, TensorRole } from "./families.ts";
export type { FileValue, LoadProgress } from "./sources.ts";
export type { LoadErrorCode } from "./errors.ts";
export { describeFamily, convertLayer, FAMILIES } from "./families.ts";
export { openCheckpoint, INDEX_FILE } from "./checkpoint.ts";
export { openSource } from "./sources.ts";

export interface LoadLayerOptions {
  /** The model's config.json, parsed; config.model_type picks the family. */
  config: unknown;
  /** File name → bytes or where to read them: "model.safetensors", or shards + "model.safetensors.index.json". */
  files: Record<string, FileValue> | Map<string, FileValue>;
  /** Decoder layer index (switch_transformers: encoder block index), or the block's tensor-name prefix. */
  layer: number | string;
  onProgress?: (progress: LoadProgress) => void;
  /** Notes that do not fail the load (a server that ignores range requests). Default: console.warn. */
  onNote?: (note: string) => void;
  signal?: AbortSignal;
  fetch?: typeof fetch;
}

/** Finds every planned tensor, checks its shape, and tells a dense layer from a missing one. */
async function verify(description: FamilyDescription, checkpoint: Checkpoint): Promise<void> {
  const router = description.tensors[0];
  if (!(await checkpoint.info(router.name))) {
    for (const probe of description.denseProbe) {
      if (await checkpoint.info(probe)) {
        throw loadError(
          "DENSE_LAYER",
          `${description.prefix} is a dense MLP in this checkpoint (it holds ${probe}, no router ${router.name}); pick a sparse layer`,
        );
      }
    }
    throw loadError(
      "MISSING_WEIGHT",
      `the checkpoint has no router ${router.name}: is layer ${JSON.stringify(description.layer ?? description.prefix)} in this model (and in these files)?`,
    );
  }
  for (const planned of description.tensors) {
    const found = await checkpoint.info(planned.name);
    if (!found) {
      throw loadError(
        "MISSING_WEIGHT",
        `tensor ${planned.name} (${planned.role}${planned.expert === undefined ? "" : ` of expert ${planned.expert}`}, shape [${planned.shape}]) is not in the checkpoint`,
      );
    }
    checkShape(planned, found.entry.shape);
    if (!["F32", "F16", "BF16"].includes(found.entry.dtype)) {
      throw loadError(
        "WEIGHT_SHAPE",
        `tensor ${planned.name} in ${found.file} has dtype ${found.entry.dtype}; edge-moe reads F32, F16 and BF16 weights (dequantize or convert the checkpoint)`,
      );
    }
  }
}

/** Reads one layer's MoE block and converts it (see ConvertedLayer). */
export async function loadMoELayer(options: LoadLayerOptions): Promise<ConvertedLayer> {
  const description = describeFamily(options.config, options.layer);
  checkAborted(options.signal, "loading the checkpoint");
  const checkpoint = await openCheckpoint(options.files, {
    signal: options.signal,
    onProgress: options.onProgress,
    onNote: options.onNote ?? ((note) => console.warn(`edge-moe: ${note}`)),
    fetch: options.fetch,
  });
  try {
    await verify(description, checkpoint);
    const tensors = await checkpoint.read(description.tensors.map((t) => t.name));
    checkAborted(options.signal, "loading the checkpoint");
    return convertLayer(description, tensors);
  } finally {
    await checkpoint.close();
  }
}
