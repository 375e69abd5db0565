// Structural types for the GPU buffers of the resident path (layer.forward with a GPUBuffer x):
// what the package reads of a buffer, so that its published types need no WebGPU type package.
// A real GPUBuffer (browsers, Deno, Dawn in Node) satisfies them.

/** A WebGPU buffer, as far as the package uses it. */
export interface GPUBufferLike {
  /** Bytes. */
  readonly size: number;
  /** GPUBufferUsage flags. */
  readonly usage: number;
  /** "unmapped" when the GPU may use it (absent in older implementations). */
  readonly mapState?: string;
  readonly label?: string;
  mapAsync(mode: number, offset?: number, size?: number): Promise<void>;
  getMappedRange(offset?: number, size?: number): ArrayBuffer;
  unmap(): void;
  destroy(): void;
}

/** Is `value` a GPU buffer (the shape of one: WebGPU has no global class to test in every host)? */
export function isGpuBuffer(value: unknown): value is GPUBufferLike {
  if (typeof value !== "object" || value === null || ArrayBuffer.isView(value)) return false;
  const b = value as Partial<GPUBufferLike>;
  return typeof b.size === "number" && typeof b.usage === "number" && typeof b.mapAsync === "function" && typeof b.destroy === "function";
}
