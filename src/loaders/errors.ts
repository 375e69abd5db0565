// The loaders' errors: MoEErrors with the loader codes of src/errors.ts.
import { MoEError, type MoEErrorCode } from "../errors.ts";

export type LoadErrorCode = Extract<MoEErrorCode, "ABORTED" | "SOURCE_ERROR" | "MISSING_FILE" | "UNKNOWN_MODEL_TYPE" | "DENSE_LAYER">;

export function loadError(code: MoEErrorCode, message: string, cause?: unknown): MoEError {
  return new MoEError(code, message, cause === undefined ? undefined : { cause });
}
