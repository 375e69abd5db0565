// Getting a WebGPU device: the caller's (`createMoE({ gpu: device })`), `navigator.gpu` where the
// host has one (Deno, browsers, workers), or in Node and Bun the optional `webgpu` package (Dawn),
// imported only when a layer asks for a GPU.

/** A device the GPU expert path can use, and what it is. */
export interface GpuDevice {
  device: GPUDevice;
  /** The adapter, in words (vendor, architecture, device, description; whatever it tells). */
  description: string;
  /** A CPU implementation of WebGPU (SwiftShader, llvmpipe/lavapipe, WARP, …): correct but slow. */
  software: boolean;
}

/** Why there is no device: a sentence for the NO_GPU error and the warning. */
export interface NoGpu {
  reason: string;
}

// Dawn's GPU object, held for the life of the process: Dawn crashes when it is garbage-collected
// while devices it made are alive.
let dawnGpu: GPU | undefined;
// One device per process for every layer that did not bring its own; requested on first use,
// requested anew after it is lost.
let sharedDevice: Promise<GpuDevice | NoGpu> | undefined;

const SOFTWARE_ADAPTER = /swiftshader|llvmpipe|lavapipe|softpipe|software|warp|basic render|microsoft basic/i;

/** Describes an adapter from its GPUAdapterInfo (Dawn, Deno and browsers fill different fields). */
export function describeAdapter(info: GPUAdapterInfo | undefined, fallbackAdapter = false): { description: string; software: boolean } {
  const named = (v: unknown): v is string => typeof v === "string" && v !== "" && !/^(0x)?[0-9a-f]+$/i.test(v); // not a bare PCI id
  const ids = info ? [info.vendor, info.architecture, info.device].filter(named) : [];
  const description = (named(info?.description) ? info.description : ids.join(" ")) || "unknown WebGPU adapter";
  const isFallback = fallbackAdapter || (info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter === true;
  return { description, software: isFallback || SOFTWARE_ADAPTER.test(`${description} ${ids.join(" ")}`) };
}

/** The host's GPU object: navigator.gpu, else Dawn from the `webgpu` package in Node and Bun. */
async function hostGpu(): Promise<GPU | NoGpu> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  const g = globalThis as { process?: { versions?: { node?: string; bun?: string } } };
  if (!g.process?.versions?.node && !g.process?.versions?.bun) {
    return { reason: "this runtime has no navigator.gpu (WebGPU is not available here)" };
  }
  if (dawnGpu) return dawnGpu;
  // A computed specifier: bundlers for the browser leave it alone, Node and Bun resolve it at run time.
  const specifier = "webgpu";
  let dawn: { create(flags: string[]): GPU };
  try {
    dawn = (await import(/* @vite-ignore */ specifier)) as typeof dawn;
  } catch (error) {
    return { reason: `Node/Bun need the optional package "webgpu" (Dawn) for WebGPU: npm install webgpu (${(error as Error).message})` };
  }
  try {
    dawnGpu = dawn.create([]);
  } catch (error) {
    return { reason: `the "webgpu" package (Dawn) failed to start: ${(error as Error).message}` };
  }
  return dawnGpu;
}

async function requestDevice(): Promise<GpuDevice | NoGpu> {
  const gpu = await hostGpu();
  if ("reason" in gpu) return gpu;
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (error) {
    return { reason: `requestAdapter() failed: ${(error as Error).message}` };
  }
  if (!adapter) {
    return {
      reason: "requestAdapter() found no WebGPU adapter (no GPU driver; on Linux without a GPU, a software Vulkan driver serves: see the README section GPU)",
    };
  }
  // The adapter's own limits, not the defaults: bigger bindings mean fewer weight buffers.
  const limits = adapter.limits;
  const requiredLimits: Record<string, number> = {
    maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
    maxBufferSize: limits.maxBufferSize,
  };
  // Where the adapter offers them: subgroups for the resident path's top-k and statistics,
  // shader-f16 for the grouped GEMMs of f16 weights.
  const requiredFeatures = (["subgroups", "shader-f16"] as GPUFeatureName[]).filter((f) => adapter.features?.has(f));
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ label: "edge-moe", requiredLimits, requiredFeatures });
  } catch (error) {
    return { reason: `requestDevice() failed: ${(error as Error).message}` };
  }
  const { description, software } = describeAdapter(adapter.info, (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter);
  return { device, description, software };
}

/**
 * The process's shared device (requested once; requested again after it is lost), or why there
 * is none.
 */
export function sharedGpuDevice(): Promise<GpuDevice | NoGpu> {
  if (!sharedDevice) {
    const request = requestDevice();
    sharedDevice = request;
    void request.then((got) => {
      if ("reason" in got) {
        if (sharedDevice === request) sharedDevice = undefined; // ask again next time
        return;
      }
      void got.device.lost.then(() => {
        if (sharedDevice === request) sharedDevice = undefined;
      });
    });
  }
  return sharedDevice;
}

/** Whether the grouped GEMMs of f16 weights read them as f16 values on this device (shaders/f16_native.wgsl). */
export function usesShaderF16(device: GPUDevice): boolean {
  return device.features?.has("shader-f16") === true;
}

/** A caller-given device, checked to look like a GPUDevice. */
export function givenGpuDevice(device: unknown): GpuDevice | undefined {
  const d = device as GPUDevice | null | undefined;
  if (!d || typeof d !== "object" || typeof d.createBuffer !== "function" || typeof d.queue?.writeBuffer !== "function" || !d.limits) {
    return undefined;
  }
  const { description, software } = describeAdapter((d as { adapterInfo?: GPUAdapterInfo }).adapterInfo);
  return { device: d, description, software };
}
