// The experts on the GPU, an expert back end (src/plan.ts): weights uploaded once and resident; per
// call only x, the plan (made by the CPU gating, the same plan the CPU experts read) and y move,
// through buffers that are reused and grow only when a batch exceeds their capacity.
//
//   upload x, pairOf, posOf, topkGates, tile tables ──► up:   act = act(x[pairOf] · W1 + b1)
//                                                      down: out = act · W2 + b2
//                                                      combine: y[row] = Σ_slot gate · out[posOf]
//   ◄── read back y (and the call's stamp)
//
// Limits: every weight matrix is cut into slabs that fit the adapter's maxStorageBufferBindingSize
// (columns split when one expert's matrix alone is too big) and slabs are grouped into as few
// buffers as fit; a batch whose per-call buffers would not fit one binding runs in row chunks, each
// a slice of the plan.
import { KIND_NONE, PANEL, Q4_BLOCK } from "../abi.ts";
import type { LayerSpec } from "../config.ts";
import type { CpuEngine } from "../cpu/engine.ts";
import { DTYPE_CODE, KIND_CODE, type PackedLayout } from "../cpu/layout.ts";
import type { ExpertBackend, Plan } from "../plan.ts";
import { MoEError } from "../errors.ts";
import type { MoEWeights, WeightDtype } from "../types.ts";
import { roundUp } from "../cpu/layout.ts";
import { COPY_DST, COPY_SRC, MAP_MODE_READ, MAP_READ_USAGE, MAX_DISPATCH, nextPow2, STORAGE, UNIFORM } from "./constants.ts";
import { givenGpuDevice, sharedGpuDevice, usesShaderF16, type GpuDevice } from "./device.ts";
import { optionalVariant, pipelineFor, type TemplateValues } from "./shaders.ts";

// Tile shape of the grouped GEMM (shaders/grouped_gemm.wgsl): TILE_M positions × TILE_N columns
// per workgroup, THREAD_M × 4 outputs per invocation, so TILE_N/4 × TILE_M/THREAD_M ≤ 128
// invocations (≤ 256, what every adapter allows) and ≤ 10 KiB of workgroup memory.
export const TILE_M = 32;
const THREAD_M = 4;
const TILE_K = 16;
const COMBINE_WORKGROUP = 64;

/** Columns per workgroup for an output of `width` columns: 16, 32 or 64. */
function tileWidth(width: number): number {
  return width <= 16 ? 16 : width <= 32 ? 32 : 64;
}

/** One projection's weights on the GPU: slabs of columns, grouped into buffers. */
export interface Projection {
  /** Weight rows per half-slab: the (padded) inner dimension, a multiple of TILE_K (and of 32 for int4). */
  kRows: number;
  /** 32-bit words of one half-slab (shaders/grouped_gemm.wgsl halfWords: the dtype's layout). */
  halfWords: number;
  halves: 1 | 2;
  bias: boolean;
  tileN: number;
  /** Slab width in columns (multiple of tileN), slabs per expert, and 32-bit words per slab. */
  slabN: number;
  slabsPerExpert: number;
  slabFloats: number;
  /** Row length of this projection's output: slabsPerExpert · slabN floats. */
  width: number;
  shards: Array<{ buffer: GPUBuffer; firstSlab: number; slabs: number }>;
}

/** 32-bit words per column of one half-slab of kRows rows in a dtype (shaders/grouped_gemm.wgsl). */
function wordsPerColumn(dtype: WeightDtype, kRows: number): number {
  switch (dtype) {
    case "f16":
    case "bf16":
      return kRows / 2;
    case "int8":
      return kRows / 4 + 1;
    case "int4":
      return kRows / 8 + kRows / Q4_BLOCK;
    default:
      return kRows;
  }
}

/** Weight rows of a half-slab for an inner dimension `k`: TILE_K steps, whole int4 blocks. */
const kRowsOf = (k: number, dtype: WeightDtype) => roundUp(k, dtype === "int4" ? Q4_BLOCK : TILE_K);

/** Cuts a projection with `cols` output columns into slabs and buffers that fit `maxBytes`. */
function planProjection(
  cols: number,
  kRows: number,
  halves: 1 | 2,
  bias: boolean,
  numExperts: number,
  maxBytes: number,
  dtype: WeightDtype,
): Omit<Projection, "shards"> & { slabsPerShard: number } {
  const tileN = tileWidth(cols);
  const words = halves * wordsPerColumn(dtype, kRows) + (bias ? 1 : 0);
  const maxSlabN = Math.floor(maxBytes / (4 * words) / tileN) * tileN;
  if (maxSlabN < tileN) {
    throw new MoEError(
      "GPU_ERROR",
      `one weight column block (${kRows} rows × ${tileN} columns, ${dtype}) exceeds this adapter's maxStorageBufferBindingSize (${maxBytes} bytes); use backend "cpu"`,
    );
  }
  const slabsPerExpert = Math.ceil(roundUp(cols, tileN) / maxSlabN);
  const slabN = roundUp(Math.ceil(cols / slabsPerExpert), tileN);
  const slabFloats = words * slabN;
  const slabsPerShard = Math.min(numExperts * slabsPerExpert, Math.floor(maxBytes / (4 * slabFloats)));
  return {
    kRows,
    halfWords: wordsPerColumn(dtype, kRows) * slabN,
    halves,
    bias,
    tileN,
    slabN,
    slabsPerExpert,
    slabFloats,
    width: slabsPerExpert * slabN,
    slabsPerShard,
  };
}

/**
 * A quantized layer's expert weights as the CPU engine packed them (src/cpu/layout.ts,
 * assembly/quant.ts): the GPU slabs are filled from these, so both back ends compute with the same
 * quantized values and scales.
 */
export interface PackedExperts {
  /** The engine's memory now (it may have grown since). */
  heap(): ArrayBuffer | SharedArrayBuffer;
  layout: PackedLayout;
  /** Byte addresses of the packed w1, b1, w2, b2 (b1, b2: 0 for swiglu). */
  ptr: { w1: number; b1: number; w2: number; b2: number };
}

/** The packed expert weights of an engine, for openGpuExperts. */
export function packedExpertsOf(engine: CpuEngine): PackedExperts {
  const { w1, b1, w2, b2 } = engine.weightPtr;
  return { heap: () => engine.kernels.memory.buffer, layout: engine.packed, ptr: { w1, b1, w2, b2 } };
}

const isPacked = (weights: Map<keyof MoEWeights, Float32Array> | PackedExperts): weights is PackedExperts => !(weights instanceof Map);

/** Byte ranges of the per-call input buffer, for a capacity of `rows` rows. */
interface InputLayout {
  rows: number;
  x: number;
  pairOf: number;
  posOf: number;
  gates: number;
  /** Tile tables, one per weight buffer of each projection: byte offset and entries (header included). */
  upTiles: Array<{ offset: number; entries: number }>;
  downTiles: Array<{ offset: number; entries: number }>;
  bytes: number;
}

/** The per-call buffers for one capacity and their bind groups. */
interface CallBuffers {
  layout: InputLayout;
  inputs: GPUBuffer;
  act: GPUBuffer;
  out: GPUBuffer;
  y: GPUBuffer;
  upGroups: GPUBindGroup[];
  downGroups: GPUBindGroup[];
  combineGroup: GPUBindGroup;
}

export class GpuExperts implements ExpertBackend {
  readonly name = "gpu";
  readonly device: GPUDevice;
  readonly description: string;
  readonly software: boolean;
  /** Why the GPU can no longer be used (device lost or a failed call), once it happened. */
  failure: string | undefined;
  /** Called once, when the device is lost. */
  onLost: ((reason: string) => void) | undefined;

  private readonly spec: LayerSpec;
  readonly up: Projection;
  readonly down: Projection;
  readonly pipelines: { up: GPUComputePipeline; down: GPUComputePipeline; combine: GPUComputePipeline };
  /** The grouped GEMMs read the f16 weights as f16 values (shaders/f16_native.wgsl). */
  readonly shaderF16: boolean;
  readonly xStride: number; // x row length on the GPU, d rounded up to 4
  private readonly maxBinding: number;
  private readonly maxBuffer: number;
  readonly align: number;
  /** Rows one pass can take (the per-call buffers fit one binding each). */
  readonly maxRows: number;
  private readonly callInfo: GPUBuffer;
  /** The Shape uniform of each GEMM pass (shaders/grouped_gemm.wgsl): the layer's sizes. */
  readonly upShape: GPUBuffer;
  readonly downShape: GPUBuffer;
  private call: CallBuffers | undefined;
  private readback: GPUBuffer | undefined;
  /** x of the running call, rows padded to xStride: the upload source. */
  private hostX = new Float32Array(0);
  private hostTiles = new Uint32Array(0);
  private hostStaging = new ArrayBuffer(0);
  private readonly callWords = new ArrayBuffer(32);
  private stamp = 0;
  private disposed = false;

  private constructor(
    gpu: GpuDevice,
    spec: LayerSpec,
    up: Projection,
    down: Projection,
    pipelines: GpuExperts["pipelines"],
    maxBinding: number,
    shaderF16: boolean,
  ) {
    this.device = gpu.device;
    this.shaderF16 = shaderF16;
    this.description = gpu.description;
    this.software = gpu.software;
    this.spec = spec;
    this.up = up;
    this.down = down;
    this.pipelines = pipelines;
    this.xStride = roundUp(spec.dModel, 4);
    this.maxBinding = maxBinding;
    this.maxBuffer = Math.max(maxBinding, this.device.limits.maxBufferSize);
    this.align = Math.max(256, this.device.limits.minStorageBufferOffsetAlignment);
    this.maxRows = this.rowsThatFit();
    this.callInfo = this.createBuffer("edge-moe call", 32, UNIFORM | COPY_DST);
    const shapeOf = (label: string, aStride: number, p: Projection) => {
      const buffer = this.createBuffer(label, 32, UNIFORM | COPY_DST);
      this.device.queue.writeBuffer(buffer, 0, Uint32Array.of(spec.k, aStride / 4, p.kRows, p.slabN / 4, p.width / 4));
      return buffer;
    };
    this.upShape = shapeOf("edge-moe up shape", this.xStride, up);
    this.downShape = shapeOf("edge-moe down shape", up.width, down);
    void this.device.lost.then((info) => {
      if (this.disposed) return;
      const reason = `the GPU device was lost (${info.reason}${info.message ? `: ${info.message}` : ""})`;
      this.failure ??= reason;
      this.onLost?.(reason);
    });
  }

  /** Uploads the weights (the validated arrays of createMoE) and compiles the three passes. */
  static async create(gpu: GpuDevice, spec: LayerSpec, weights: Map<keyof MoEWeights, Float32Array> | PackedExperts): Promise<GpuExperts> {
    const { device } = gpu;
    const { dModel: d, dHidden: h, numExperts: n, expert } = spec;
    const maxBinding = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
    const swiglu = expert === "swiglu";
    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    let scopes: Promise<Array<GPUError | null>> | undefined;
    const popScopes = () => (scopes ??= Promise.all([device.popErrorScope(), device.popErrorScope()]));
    const shards: GPUBuffer[] = [];
    try {
      // Quantized weights come packed (their f32 values do not exist); f32 ones as arrays.
      const dtype = isPacked(weights) ? weights.layout.dtype : "f32";
      const upPlan = planProjection(h, kRowsOf(d, dtype), swiglu ? 2 : 1, !swiglu, n, maxBinding, dtype);
      const downPlan = planProjection(d, kRowsOf(upPlan.width, dtype), 1, !swiglu, n, maxBinding, dtype);
      const allocate = (plan: typeof upPlan): Projection => {
        const projection: Projection = { ...plan, shards: [] };
        const totalSlabs = n * plan.slabsPerExpert;
        for (let first = 0; first < totalSlabs; first += plan.slabsPerShard) {
          const slabs = Math.min(plan.slabsPerShard, totalSlabs - first);
          const buffer = device.createBuffer({ label: "edge-moe weights", size: 4 * slabs * plan.slabFloats, usage: STORAGE | COPY_DST });
          shards.push(buffer);
          projection.shards.push({ buffer, firstSlab: first, slabs });
        }
        return projection;
      };
      const up = allocate(upPlan);
      const down = allocate(downPlan);
      const gemm = (p: Projection, gather: boolean, activation: number): TemplateValues => ({
        TILE_M,
        TILE_N: p.tileN,
        TILE_K,
        THREAD_M,
        GATHER: gather,
        ACTIVATION: activation,
        HAS_BIAS: p.bias,
        DTYPE: DTYPE_CODE[dtype],
      });
      const gemmPasses = (f16: boolean) => {
        const name = f16 ? "grouped_gemm_f16" : "grouped_gemm";
        return Promise.all([pipelineFor(device, name, gemm(up, true, KIND_CODE[expert])), pipelineFor(device, name, gemm(down, false, KIND_NONE))]);
      };
      // f16 weights are read as f16 values where the device has `shader-f16`; the integer unpacking
      // where it has not, or where its compiler rejects that variant.
      const [[[upPipe, downPipe], f16], combinePipe] = await Promise.all([
        optionalVariant(device, dtype === "f16" && usesShaderF16(device), gemmPasses),
        pipelineFor(device, "combine", {}),
      ]);
      const error = (await popScopes()).find((e) => e);
      if (error) throw new Error(error.message);
      const experts = new GpuExperts(gpu, spec, up, down, { up: upPipe, down: downPipe, combine: combinePipe }, maxBinding, f16);
      if (isPacked(weights)) experts.writePacked(weights);
      else experts.writeWeights(weights);
      return experts;
    } catch (error) {
      void popScopes().catch(() => undefined);
      for (const b of shards) b.destroy();
      if (error instanceof MoEError) throw error;
      throw new MoEError("GPU_ERROR", `setting up the GPU experts failed: ${(error as Error).message}; use backend "cpu"`, { cause: error });
    }
  }

  /** The bind group entries of a weight buffer in a grouped GEMM: binding 3, and 6 (its f16 view) with shaderF16. */
  weightEntries(buffer: GPUBuffer): GPUBindGroupEntry[] {
    const entries: GPUBindGroupEntry[] = [{ binding: 3, resource: { buffer } }];
    if (this.shaderF16) entries.push({ binding: 6, resource: { buffer } });
    return entries;
  }

  /**
   * Writes the expert weights (input layout, as createMoE takes them) into the resident slabs:
   * at creation, and again when training changed them (layer.step).
   */
  writeWeights(weights: Map<keyof MoEWeights, Float32Array>): void {
    const { dModel: d, dHidden: h } = this.spec;
    const w = (name: keyof MoEWeights) => weights.get(name)!;
    const swiglu = this.spec.expert === "swiglu";
    const write = (p: Projection, halves: Float32Array[], bias: Float32Array | undefined, srcRows: number, srcCols: number) => {
      const slab = new Float32Array(p.slabFloats); // padding: rows past srcRows are never written
      for (const shard of p.shards) {
        for (let g = shard.firstSlab; g < shard.firstSlab + shard.slabs; g++) {
          const e = Math.floor(g / p.slabsPerExpert);
          const col0 = (g % p.slabsPerExpert) * p.slabN;
          const cols = Math.max(0, Math.min(p.slabN, srcCols - col0));
          if (cols < p.slabN) slab.fill(0); // a last, partial slab: its padding columns are zero
          halves.forEach((src, half) => {
            for (let r = 0; r < srcRows; r++) {
              const from = e * srcRows * srcCols + r * srcCols + col0;
              slab.set(src.subarray(from, from + cols), half * p.kRows * p.slabN + r * p.slabN);
            }
          });
          if (bias) {
            const from = e * srcCols + col0;
            slab.set(bias.subarray(from, from + cols), p.halves * p.kRows * p.slabN);
          }
          this.device.queue.writeBuffer(shard.buffer, 4 * (g - shard.firstSlab) * p.slabFloats, slab);
        }
      }
    };
    if (swiglu) {
      write(this.up, [w("wGateProj"), w("wUp")], undefined, d, h);
      write(this.down, [w("wDown")], undefined, h, d);
    } else {
      write(this.up, [w("w1")], w("b1"), d, h);
      write(this.down, [w("w2")], w("b2"), h, d);
    }
  }

  /**
   * Writes a quantized layer's packed expert weights (the CPU panels: PANEL columns × kPad rows,
   * swiglu's gate and up panels interleaved) into the slabs, in the shader's layout for the dtype.
   */
  writePacked(packed: PackedExperts): void {
    const { dModel: d, dHidden: h } = this.spec;
    const { layout, ptr } = packed;
    const { dtype, hp, dp, w1Bytes, w2Bytes, panelBytes, downPanelBytes } = layout;
    const heap = packed.heap();
    const u8 = new Uint8Array(heap);
    const u16 = new Uint16Array(heap);
    const u32 = new Uint32Array(heap);
    const swiglu = this.spec.expert === "swiglu";
    /** One matrix of one expert: its first panel, the stride between its panels, rows (real and padded). */
    interface Source {
      base: number;
      step: number;
      rows: number;
      kPad: number;
    }
    const write = (p: Projection, halves: (e: number) => Source[], bias: { ptr: number; padded: number } | undefined, srcCols: number) => {
      const slab = new Uint32Array(p.slabFloats);
      const n = p.slabN;
      for (const shard of p.shards) {
        for (let g = shard.firstSlab; g < shard.firstSlab + shard.slabs; g++) {
          const e = Math.floor(g / p.slabsPerExpert);
          const col0 = (g % p.slabsPerExpert) * n;
          const cols = Math.max(0, Math.min(n, srcCols - col0));
          slab.fill(0);
          halves(e).forEach(({ base, step, rows, kPad }, half) => {
            const at = half * p.halfWords;
            for (let c = 0; c < cols; c++) {
              const col = col0 + c;
              const panel = base + Math.floor(col / PANEL) * step;
              const j = col % PANEL;
              if (dtype === "f16" || dtype === "bf16") {
                for (let r = 0; r < rows; r++) slab[at + r * (n / 2) + (c >> 1)] |= u16[(panel + 16 * r + 2 * j) / 2] << (16 * (c & 1));
              } else if (dtype === "int8") {
                for (let r = 0; r < rows; r++) slab[at + r * (n / 4) + (c >> 2)] |= u8[panel + 8 * r + j] << (8 * (c & 3));
                slab[at + p.kRows * (n / 4) + c] = u32[(panel + 8 * kPad + 4 * j) / 4];
              } else {
                const blockBytes = (Q4_BLOCK * PANEL) / 2 + 4 * PANEL;
                for (let o = 0; o < Math.ceil(rows / 8); o++) slab[at + o * n + c] = u32[(panel + (o >> 2) * blockBytes + 32 * (o & 3) + 4 * j) / 4];
                for (let b = 0; b < Math.ceil(rows / Q4_BLOCK); b++)
                  slab[at + (p.kRows / 8 + b) * n + c] = u32[(panel + b * blockBytes + (Q4_BLOCK * PANEL) / 2 + 4 * j) / 4];
              }
            }
          });
          if (bias) for (let c = 0; c < cols; c++) slab[p.halves * p.halfWords + c] = u32[(bias.ptr + 4 * (e * bias.padded + col0 + c)) / 4];
          this.device.queue.writeBuffer(shard.buffer, 4 * (g - shard.firstSlab) * p.slabFloats, slab);
        }
      }
    };
    const upStep = (swiglu ? 2 : 1) * panelBytes;
    const up = (e: number): Source[] => {
      const base = ptr.w1 + e * w1Bytes;
      const gate = { base, step: upStep, rows: d, kPad: d };
      return swiglu ? [gate, { ...gate, base: base + panelBytes }] : [gate];
    };
    const down = (e: number): Source[] => [{ base: ptr.w2 + e * w2Bytes, step: downPanelBytes, rows: h, kPad: hp }];
    write(this.up, up, swiglu ? undefined : { ptr: ptr.b1, padded: hp }, h);
    write(this.down, down, swiglu ? undefined : { ptr: ptr.b2, padded: dp }, d);
  }

  private createBuffer(label: string, size: number, usage: number): GPUBuffer {
    return this.device.createBuffer({ label, size: roundUp(Math.max(size, 16), 16), usage });
  }

  // ---- per-call buffers ---------------------------------------------------------------------

  private inputLayout(rows: number): InputLayout {
    const pairs = rows * this.spec.k;
    let at = 0;
    const region = (bytes: number) => {
      const offset = roundUp(at, this.align);
      at = offset + Math.max(bytes, 16);
      return offset;
    };
    const tables = (p: Projection) =>
      p.shards.map((shard) => {
        // Σ over the shard's slabs g of ⌈m(g)/TILE_M⌉ ≤ Σ ⌊m(g)/TILE_M⌋ + (non-empty slabs), and
        // Σ m(g) ≤ slabsPerExpert · pairs (each expert's rows counted once per slab of it)
        const entries = 1 + Math.floor((p.slabsPerExpert * pairs) / TILE_M) + Math.min(shard.slabs, pairs * p.slabsPerExpert);
        return { offset: region(16 * entries), entries };
      });
    const x = region(4 * rows * this.xStride);
    const pairOf = region(4 * pairs);
    const posOf = region(4 * pairs);
    const gates = region(4 * pairs);
    const upTiles = tables(this.up);
    const downTiles = tables(this.down);
    return { rows, x, pairOf, posOf, gates, upTiles, downTiles, bytes: roundUp(at, 16) };
  }

  /** The most rows whose per-call buffers each fit one binding (and the input buffer one buffer). */
  private rowsThatFit(): number {
    const { dModel: d, k } = this.spec;
    const perRow = Math.max(4 * this.xStride, 4 * k * this.up.width, 4 * k * this.down.width, 4 * d, 16 * k);
    let rows = Math.max(1, Math.floor((this.maxBinding - 16) / perRow));
    while (rows > 1 && this.inputLayout(rows).bytes > this.maxBuffer) rows = Math.floor(rows * 0.9);
    return rows;
  }

  private ensureCapacity(rows: number): CallBuffers {
    if (this.call && this.call.layout.rows >= rows) return this.call;
    const capacity = Math.min(this.maxRows, nextPow2(rows));
    const layout = this.inputLayout(capacity);
    const pairs = capacity * this.spec.k;
    const old = this.call;
    if (old) {
      for (const b of [old.inputs, old.act, old.out, old.y]) b.destroy();
    }
    const inputs = this.createBuffer("edge-moe inputs", layout.bytes, STORAGE | COPY_DST);
    const act = this.createBuffer("edge-moe act", 4 * pairs * this.up.width, STORAGE);
    const out = this.createBuffer("edge-moe out", 4 * pairs * this.down.width, STORAGE);
    const y = this.createBuffer("edge-moe y", 4 * (capacity * this.spec.dModel + 1), STORAGE | COPY_SRC);
    const range = (offset: number, size: number): GPUBufferBinding => ({ buffer: inputs, offset, size });
    const pairBytes = 4 * pairs;
    const gemmGroups = (pipeline: GPUComputePipeline, p: Projection, tables: InputLayout["upTiles"], a: GPUBufferBinding, c: GPUBuffer, shape: GPUBuffer) =>
      p.shards.map((shard, s) =>
        this.device.createBindGroup({
          layout: pipeline.getBindGroupLayout(0),
          entries: [
            { binding: 0, resource: a },
            { binding: 1, resource: range(layout.pairOf, pairBytes) },
            { binding: 2, resource: range(tables[s].offset, 16 * tables[s].entries) },
            ...this.weightEntries(shard.buffer),
            { binding: 4, resource: { buffer: c } },
            { binding: 5, resource: { buffer: shape } },
          ],
        }),
      );
    this.call = {
      layout,
      inputs,
      act,
      out,
      y,
      upGroups: gemmGroups(this.pipelines.up, this.up, layout.upTiles, range(layout.x, 4 * capacity * this.xStride), act, this.upShape),
      downGroups: gemmGroups(this.pipelines.down, this.down, layout.downTiles, { buffer: act }, out, this.downShape),
      combineGroup: this.device.createBindGroup({
        layout: this.pipelines.combine.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: out } },
          { binding: 1, resource: range(layout.posOf, pairBytes) },
          { binding: 2, resource: range(layout.gates, pairBytes) },
          { binding: 3, resource: { buffer: y } },
          { binding: 4, resource: { buffer: this.callInfo } },
        ],
      }),
    };
    this.hostTiles = new Uint32Array(layout.bytes / 4);
    return this.call;
  }

  /** The host-side x copy and the readback buffer, sized for a whole batch (one that fits()). */
  private ensureBatch(batch: number): GPUBuffer {
    const d = this.spec.dModel;
    if (this.hostX.length < batch * this.xStride) this.hostX = new Float32Array(nextPow2(batch) * this.xStride);
    const bytes = 4 * (batch * d + 1);
    if (!this.readback || this.readback.size < bytes) {
      this.readback?.destroy();
      this.readback = this.createBuffer("edge-moe readback", Math.min(this.maxBuffer, 4 * (nextPow2(batch) * d + 1)), MAP_READ_USAGE | COPY_DST);
    }
    return this.readback;
  }

  /** Can a batch of this many rows run here (one readback buffer holds its y)? */
  fits(batch: number): boolean {
    return 4 * (batch * this.spec.dModel + 1) <= this.maxBuffer;
  }

  // ---- one call -----------------------------------------------------------------------------

  /**
   * y [B, d] = the experts over the plan. Uploads and submits synchronously (the plan is not read
   * once this returns), then reads y back. Rejects when the device is lost or a GPU operation
   * fails; the caller then runs the plan on another back end.
   */
  run(plan: Plan, y: Float32Array): Promise<void> {
    if (this.failure) return Promise.reject(new MoEError("GPU_ERROR", this.failure));
    const d = this.spec.dModel;
    const { batch } = plan;
    const device = this.device;

    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    let readback: GPUBuffer;
    try {
      readback = this.ensureBatch(batch);
      // x, rows padded to xStride: uploaded from here, chunk by chunk.
      const x = plan.x;
      if (this.xStride === d) this.hostX.set(x);
      else for (let r = 0; r < batch; r++) this.hostX.set(x.subarray(r * d, r * d + d), r * this.xStride);

      this.stamp = (this.stamp % 0xffffff) + 1;
      const rowsPerPass = Math.min(batch, this.maxRows);
      for (let r0 = 0; r0 < batch; r0 += rowsPerPass) {
        const rows = Math.min(rowsPerPass, batch - r0);
        this.submitPass(rows < batch ? plan.slice(r0, rows) : plan, r0, readback);
      }
    } catch (error) {
      void device.popErrorScope().catch(() => undefined);
      void device.popErrorScope().catch(() => undefined);
      throw error;
    }
    const scopes = Promise.all([device.popErrorScope(), device.popErrorScope()]);
    const stamp = this.stamp;
    const floats = batch * d + 1;
    return (async () => {
      const [errors] = await Promise.all([scopes, readback.mapAsync(MAP_MODE_READ, 0, 4 * floats)]);
      try {
        const error = errors.find((e) => e);
        if (error) throw new MoEError("GPU_ERROR", `a GPU operation failed: ${error.message}`);
        const mapped = new Float32Array(readback.getMappedRange(0, 4 * floats));
        // A lost device can hand back a buffer its work never wrote: trust y only with this call's stamp.
        if (mapped[batch * d] !== stamp) throw new MoEError("GPU_ERROR", this.failure ?? "the GPU did not complete the call");
        y.set(mapped.subarray(0, batch * d));
      } finally {
        readback.unmap();
      }
    })();
  }

  /**
   * `view` itself, or where it lies in shared wasm memory (the threaded builds) a copy in
   * `hostStaging`: Dawn's writeBuffer rejects views of a SharedArrayBuffer ("Invalid argument").
   * writeBuffer copies its source at the call, so the one staging buffer serves every upload.
   */
  private unshared<T extends Int32Array | Float32Array>(view: T): T {
    if (!(typeof SharedArrayBuffer === "function" && view.buffer instanceof SharedArrayBuffer)) return view;
    if (this.hostStaging.byteLength < view.byteLength) this.hostStaging = new ArrayBuffer(nextPow2(view.byteLength));
    const copy = new (view.constructor as new (b: ArrayBuffer, o: number, l: number) => T)(this.hostStaging, 0, view.length);
    copy.set(view);
    return copy;
  }

  /** Uploads the rows of `plan` (rows [r0, r0 + plan.batch) of the call) and submits the three passes. */
  private submitPass(plan: Plan, r0: number, readback: GPUBuffer): void {
    const d = this.spec.dModel;
    const rows = plan.batch;
    const call = this.ensureCapacity(rows);
    const { layout } = call;
    const queue = this.device.queue;
    queue.writeBuffer(call.inputs, layout.x, this.hostX, r0 * this.xStride, rows * this.xStride);
    queue.writeBuffer(call.inputs, layout.pairOf, this.unshared(plan.pairOf));
    queue.writeBuffer(call.inputs, layout.posOf, this.unshared(plan.posOf));
    queue.writeBuffer(call.inputs, layout.gates, this.unshared(plan.topkGates));

    // Tile tables: per weight buffer, the tiles of TILE_M positions of each of its slabs' experts.
    const offsets = plan.expertOffsets;
    const tiles = this.hostTiles;
    const fillTables = (p: Projection, tables: InputLayout["upTiles"]): number[] =>
      p.shards.map((shard, sIdx) => {
        const base = tables[sIdx].offset / 4;
        let count = 0;
        for (let g = shard.firstSlab; g < shard.firstSlab + shard.slabs; g++) {
          const e = Math.floor(g / p.slabsPerExpert);
          const slab4 = ((g - shard.firstSlab) * p.slabFloats) / 4;
          const col4 = ((g % p.slabsPerExpert) * p.slabN) / 4;
          const first = offsets[e];
          const m = offsets[e + 1] - first;
          for (let t0 = 0; t0 < m; t0 += TILE_M) {
            const at = base + 4 * (1 + count++);
            tiles[at] = first + t0;
            tiles[at + 1] = Math.min(TILE_M, m - t0);
            tiles[at + 2] = slab4;
            tiles[at + 3] = col4;
          }
        }
        if (count >= tables[sIdx].entries) throw new Error(`tile table overflow (${count} tiles)`); // a bound above is wrong
        tiles[base] = count;
        queue.writeBuffer(call.inputs, tables[sIdx].offset, tiles, base, 4 * (1 + count));
        return count;
      });
    const upCounts = fillTables(this.up, layout.upTiles);
    const downCounts = fillTables(this.down, layout.downTiles);
    const info = new DataView(this.callWords);
    info.setUint32(0, rows, true);
    info.setFloat32(4, this.stamp, true);
    info.setUint32(8, d, true);
    info.setUint32(12, this.down.width / 4, true);
    info.setUint32(16, plan.k, true);
    queue.writeBuffer(this.callInfo, 0, this.callWords);

    const encoder = this.device.createCommandEncoder({ label: "edge-moe experts" });
    const pass = encoder.beginComputePass({ label: "edge-moe experts" });
    const gemm = (pipeline: GPUComputePipeline, p: Projection, groups: GPUBindGroup[], counts: number[]) => {
      pass.setPipeline(pipeline);
      counts.forEach((count, sIdx) => {
        if (count === 0) return;
        pass.setBindGroup(0, groups[sIdx]);
        pass.dispatchWorkgroups(p.slabN / p.tileN, Math.min(count, MAX_DISPATCH), Math.ceil(count / MAX_DISPATCH));
      });
    };
    gemm(this.pipelines.up, this.up, call.upGroups, upCounts);
    gemm(this.pipelines.down, this.down, call.downGroups, downCounts);
    const groups = Math.ceil((rows * Math.ceil(d / 4)) / COMBINE_WORKGROUP);
    pass.setPipeline(this.pipelines.combine);
    pass.setBindGroup(0, call.combineGroup);
    pass.dispatchWorkgroups(Math.min(groups, MAX_DISPATCH), Math.ceil(groups / MAX_DISPATCH));
    pass.end();
    encoder.copyBufferToBuffer(call.y, 0, readback, 4 * r0 * d, 4 * rows * d);
    // The stamp lands after this pass's rows: the next pass's y overwrites it, the last pass's stays.
    encoder.copyBufferToBuffer(call.y, 4 * rows * d, readback, 4 * (r0 + rows) * d, 4);
    queue.submit([encoder.finish()]);
  }

  /** Releases the GPU buffers (not the device: it is shared, or the caller's). */
  dispose(): void {
    this.disposed = true;
    this.failure ??= "the layer was disposed";
    for (const p of [this.up, this.down]) for (const shard of p.shards) shard.buffer.destroy();
    if (this.call) for (const b of [this.call.inputs, this.call.act, this.call.out, this.call.y]) b.destroy();
    this.readback?.destroy();
    for (const b of [this.callInfo, this.upShape, this.downShape]) b.destroy();
    this.call = undefined;
    this.readback = undefined;
  }
}

/**
 * The GPU experts of a layer created with backend "gpu" or "auto": on the caller's device (`gpu`)
 * or the package's shared one, with the weights uploaded. Backend "gpu" fails (NO_GPU, GPU_ERROR)
 * where "auto" gets the reason there is none.
 */
export async function openGpuExperts(
  spec: LayerSpec,
  weights: Map<keyof MoEWeights, Float32Array> | PackedExperts,
  given: unknown,
): Promise<{ experts: GpuExperts } | { reason: string; error?: unknown }> {
  let gpu: GpuDevice | undefined;
  if (given !== undefined) {
    gpu = givenGpuDevice(given);
    if (!gpu) throw new MoEError("INVALID_CONFIG", "gpu must be a GPUDevice (from adapter.requestDevice())");
  } else {
    const got = await sharedGpuDevice();
    if ("reason" in got) {
      if (spec.backend === "gpu") throw new MoEError("NO_GPU", `backend "gpu" needs WebGPU: ${got.reason}; or use backend "auto" (GPU when present) or "cpu"`);
      return { reason: got.reason };
    }
    gpu = got;
  }
  try {
    return { experts: await GpuExperts.create(gpu, spec, weights) };
  } catch (error) {
    if (spec.backend === "gpu") throw error;
    return { reason: (error as Error).message, error };
  }
}
