// Error codes of the loaders that src/errors.ts does not list yet. They are thrown as MoEError
// (same class, same `code` field), so callers can already switch on them.
import { MoEError, type MoEErrorCode } from "../errors.ts";

export type LoadErrorCode =
  /** The caller's AbortSignal fired. */
  | "ABORTED"
  /** A file could not be read: HTTP status, network or file-system error, a value of an unsupported type. */
  | "SOURCE_ERROR"
  /** A file the checkpoint needs (a shard the index names, any *.safetensors) is not in `files`. */
  | "MISSING_FILE"
  /** config.model_type is not one of the supported families. */
  | "UNKNOWN_MODEL_TYPE"
  /** The requested layer is a dense MLP in this model, not a mixture of experts. */
  | "DENSE_LAYER";

export function loadError(code: LoadErrorCode | MoEErrorCode, message: string, cause?: unknown): MoEError {
  return new MoEError(code as MoEErrorCode, message, cause === undefined ? undefined : { cause });
}
