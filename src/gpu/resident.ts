// The resident path: a forward whose x is a GPUBuffer runs the whole layer on the GPU and hands
// back GPUBuffers, with no readback between the passes (docs/gpu-resident.md):
//
//   x ──► [pad rows, when dModel % 4 ≠ 0]
//     ──► gating GEMM: logits = x·[W_g | W_noise]             shaders/gating_gemm.wgsl
//     ──► std, H (seeded Philox normals or given noise)        shaders/gating_noise.wgsl
//     ──► top-k + softmax, per-expert counts                   shaders/gating_topk.wgsl
//     ──► [training: importance, load, losses]                 shaders/gating_stats.wgsl, gating_losses.wgsl
//     ──► offsets, tile tables, indirect dispatch arguments    shaders/plan_scan.wgsl
//     ──► pairOf / posOf                                       shaders/plan_scatter.wgsl
//     ──► grouped GEMM up, down; combine (the expert back end's own pipelines and weights)
//     ──► copies into y, topkIndices, topkGates; a few bytes read back (call stamp, flags, statistics)
//
// The expert weights are the GPU expert back end's (src/gpu/experts.ts), not a second copy; the
// gating weights are uploaded once, at the layer's first resident call. The call awaits its small
// readback: that is how a lost device (GPU_LOST) and non-finite logits (NON_FINITE_INPUT) surface.
import { checkSeed, type LayerSpec } from "../config.ts";
import { fail, MoEError } from "../errors.ts";
import type { GpuStatus, MoEWeights, ResidentForwardOptions, ResidentForwardResult } from "../types.ts";
import { roundUp } from "../cpu/layout.ts";
import { COPY_DST, COPY_SRC, INDIRECT, MAP_MODE_READ, MAP_READ_USAGE as MAP_READ, MAX_DISPATCH, nextPow2, STORAGE, UNIFORM } from "./constants.ts";
import { TILE_M, type GpuExperts, type Projection } from "./experts.ts";
import { optionalVariant, pipelineFor, type ShaderName, type TemplateValues } from "./shaders.ts";
import { isGpuBuffer, type GPUBufferLike } from "./types.ts";

/** Rows and columns of one workgroup's tile of the gating GEMM (shaders/gating_gemm.wgsl). */
const GATING_TILE = 16;
/** Invocations of a workgroup of the element-wise passes. */
const WORKGROUP = 64;

/** Whether the resident path uses the subgroup variants of top-k and the statistics on this device. */
export function usesSubgroups(device: GPUDevice): boolean {
  return device.features?.has("subgroups") === true;
}

/** Workgroups g as (x, y) under the per-dimension limit (the shaders index x + y·65535). */
const split = (g: number): [number, number] => [Math.min(g, MAX_DISPATCH), Math.ceil(g / MAX_DISPATCH)];

/** What the resident path reads of the GPU expert back end (its weights, pipelines and shapes). */
type ExpertsView = Pick<GpuExperts, "device" | "maxRows" | "up" | "down" | "pipelines" | "upShape" | "downShape" | "xStride" | "align" | "weightEntries">;

/** What the layer gives a resident call. */
export interface ResidentHost {
  spec: LayerSpec;
  /** The layer's usable GPU expert back end (undefined: none, lost or failed; `status` says which). */
  experts: GpuExperts | undefined;
  status: GpuStatus;
  /** The current gating weights (wGate, and wNoise with noisy gating), input layout. */
  gatingWeights(): MoEWeights;
  /** Takes the layer's next own noise stream (called once the call is committed). */
  nextStream(): number;
  /** Forgets the last training forward's state (a resident call leaves none for backward). */
  dropState(): void;
}

/** The per-call buffers of one capacity (rows), reused by every call up to it. */
interface CallBuffers {
  rows: number;
  xPad: GPUBuffer | undefined;
  logits: GPUBuffer;
  noise: GPUBuffer;
  std: GPUBuffer;
  h: GPUBuffer;
  topkIdx: GPUBuffer;
  topkGates: GPUBuffer;
  nextIdx: GPUBuffer;
  counts: GPUBuffer;
  cursors: GPUBuffer;
  flags: GPUBuffer;
  offsets: GPUBuffer;
  pairOf: GPUBuffer;
  posOf: GPUBuffer;
  descriptors: GPUBuffer;
  tiles: GPUBuffer;
  indirect: GPUBuffer;
  act: GPUBuffer;
  out: GPUBuffer;
  y: GPUBuffer;
  stats: GPUBuffer;
  /** Per projection and weight buffer: its table (byte offset, bytes) and indirect arguments' byte offset. */
  upTables: Array<{ offset: number; bytes: number; indirect: number }>;
  downTables: Array<{ offset: number; bytes: number; indirect: number }>;
  groups: Record<"noise" | "topk" | "stats" | "losses" | "scan" | "scatter" | "combine", GPUBindGroup>;
  upGroups: GPUBindGroup[] | undefined; // with xPad (else made per call: x is the caller's)
  downGroups: GPUBindGroup[];
}

type Pipelines = Record<"gemm" | "noise" | "topk" | "stats" | "losses" | "scan" | "scatter" | "pad", GPUComputePipeline>;

/** The resident state of each GPU expert back end, once set up, and while it is being set up. */
const residents = new WeakMap<GpuExperts, Resident>();
const opening = new WeakMap<GpuExperts, Promise<Resident>>();

/** Marks the resident gating weights of these experts stale: the next resident call uploads them again (after a training step). */
export function invalidateResidentGating(experts: GpuExperts | undefined): void {
  const resident = experts && residents.get(experts);
  if (resident) resident.gatingStale = true;
}

/** Releases the resident path's buffers of these experts (the layer is disposed). */
export function disposeResident(experts: GpuExperts | undefined): void {
  const resident = experts && residents.get(experts);
  if (resident) resident.dispose();
}

class Resident {
  readonly spec: LayerSpec;
  readonly device: GPUDevice;
  readonly experts: ExpertsView;
  gatingStale = true;
  lost: string | undefined;
  /** The top-k and statistics passes are the subgroup variants. */
  readonly subgroups: boolean;
  private disposed = false;
  private readonly ldl: number;
  private readonly gateWeights: GPUBuffer;
  private readonly pipelines: Pipelines;
  private readonly uniforms: Record<"gemm" | "noise" | "topk" | "stats" | "losses" | "scan" | "scatter" | "pad" | "combine", GPUBuffer>;
  private call: CallBuffers | undefined;
  private stamp = 0;

  private constructor(spec: LayerSpec, experts: ExpertsView, pipelines: Pipelines, gateWeights: GPUBuffer, subgroups: boolean) {
    this.spec = spec;
    this.subgroups = subgroups;
    this.experts = experts;
    this.device = experts.device;
    this.pipelines = pipelines;
    this.gateWeights = gateWeights;
    this.ldl = spec.noisyGating ? 2 * spec.numExperts : spec.numExperts;
    const uniform = (label: string) => this.buffer(`edge-moe resident ${label}`, 48, UNIFORM | COPY_DST);
    this.uniforms = {
      gemm: uniform("gemm"),
      noise: uniform("noise"),
      topk: uniform("topk"),
      stats: uniform("stats"),
      losses: uniform("losses"),
      scan: uniform("scan"),
      scatter: uniform("scatter"),
      pad: uniform("pad"),
      combine: uniform("combine"),
    };
    void this.device.lost.then((info) => {
      this.lost ??= `the GPU device was lost (${info.reason}${info.message ? `: ${info.message}` : ""})`;
    });
  }

  /** The resident state of these experts: set up once (calls that arrive meanwhile share the setup). */
  static open(experts: GpuExperts, spec: LayerSpec): Promise<Resident> {
    const ready = residents.get(experts);
    if (ready && !ready.disposed) return Promise.resolve(ready);
    let pending = opening.get(experts);
    if (!pending) {
      pending = Resident.setUp(experts, spec).finally(() => opening.delete(experts));
      opening.set(experts, pending);
    }
    return pending;
  }

  private static async setUp(experts: GpuExperts, spec: LayerSpec): Promise<Resident> {
    let resident: Resident;
    const view = experts;
    const device = view.device;
    const { numExperts: n, k, dModel: d } = spec;
    const ldl = spec.noisyGating ? 2 * n : n;
    const compile = (name: ShaderName, values: TemplateValues = {}) => pipelineFor(device, name, values);
    const maxBinding = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
    if (4 * d * ldl > maxBinding) {
      throw new MoEError(
        "GPU_ERROR",
        `the gating weights (${4 * d * ldl} bytes) exceed this adapter's maxStorageBufferBindingSize (${maxBinding}); pass x as a Float32Array (gating on the CPU)`,
      );
    }
    device.pushErrorScope("validation");
    let gateWeights: GPUBuffer | undefined;
    try {
      gateWeights = device.createBuffer({ label: "edge-moe gating weights", size: roundUp(Math.max(16, 4 * d * ldl), 16), usage: STORAGE | COPY_DST });
      const keep = Math.min(k + 1, n);
      // The subgroup variants where the device has them; the plain passes where it has not, or
      // where its compiler rejects them.
      const gatingPasses = (subgroups: boolean) =>
        Promise.all(
          subgroups
            ? [compile("gating_topk_subgroup", { K: k, KEEP: keep }), compile("gating_stats_subgroup"), compile("gating_losses_subgroup")]
            : [compile("gating_topk", { K: k, KEEP: keep }), compile("gating_stats"), compile("gating_losses")],
        );
      const [[[topk, stats, losses], subgroups], gemm, noise, scan, scatter, pad] = await Promise.all([
        optionalVariant(device, usesSubgroups(device), gatingPasses),
        compile("gating_gemm", { TILE: GATING_TILE }),
        compile("gating_noise"),
        compile("plan_scan", { TILE_M: TILE_M }),
        compile("plan_scatter"),
        compile("pad_rows"),
      ]);
      const error = await device.popErrorScope();
      if (error) throw new Error(error.message);
      resident = new Resident(spec, view, { gemm, noise, topk, stats, losses, scan, scatter, pad }, gateWeights, subgroups);
    } catch (error) {
      gateWeights?.destroy();
      throw new MoEError("GPU_ERROR", `setting up the resident GPU path failed: ${(error as Error).message}`, { cause: error });
    }
    residents.set(experts, resident);
    return resident;
  }

  /** Uploads W_g (and W_noise) side by side, [d, ldl]. */
  writeGating(weights: MoEWeights): void {
    const { dModel: d, numExperts: n, noisyGating } = this.spec;
    const both = new Float32Array(d * this.ldl);
    const wGate = weights.wGate!;
    for (let r = 0; r < d; r++) {
      both.set(wGate.subarray(r * n, r * n + n), r * this.ldl);
      if (noisyGating) both.set(weights.wNoise!.subarray(r * n, r * n + n), r * this.ldl + n);
    }
    this.device.queue.writeBuffer(this.gateWeights, 0, both);
    this.gatingStale = false;
  }

  private buffer(label: string, size: number, usage: number): GPUBuffer {
    return this.device.createBuffer({ label, size: roundUp(Math.max(size, 16), 16), usage });
  }

  /** The per-call buffers for at least `rows` rows. */
  private ensureCapacity(rows: number): CallBuffers {
    if (this.call && this.call.rows >= rows) return this.call;
    const e = this.experts;
    const { dModel: d, numExperts: n, k } = this.spec;
    const capacity = Math.min(e.maxRows, nextPow2(rows));
    const pairs = capacity * k;
    this.releaseCall();
    const S = STORAGE;
    const b = (label: string, bytes: number, usage = S) => this.buffer(`edge-moe resident ${label}`, bytes, usage);
    // Tile tables, each at an aligned offset (they are bound as ranges), and 3 indirect words each.
    let at = 0;
    let indirectAt = 0;
    const descriptorWords: number[] = [];
    const tables = (p: Projection) =>
      p.shards.map((shard) => {
        const entries = 1 + Math.floor((p.slabsPerExpert * pairs) / TILE_M) + Math.min(shard.slabs, pairs * p.slabsPerExpert);
        const offset = roundUp(at, e.align);
        at = offset + 16 * entries;
        const indirect = indirectAt;
        indirectAt += 12;
        descriptorWords.push(offset / 4, shard.firstSlab, shard.slabs, p.slabsPerExpert, p.slabFloats / 4, p.slabN / 4, indirect / 4, p.slabN / p.tileN);
        return { offset, bytes: 16 * entries, indirect };
      });
    const upTables = tables(e.up);
    const downTables = tables(e.down);
    const call: CallBuffers = {
      rows: capacity,
      xPad: d % 4 === 0 ? undefined : b("x rows", 4 * capacity * e.xStride),
      logits: b("logits", 4 * capacity * this.ldl),
      noise: b("noise", 4 * capacity * n, S | COPY_DST),
      std: b("std", 4 * capacity * n),
      h: b("H", 4 * capacity * n),
      topkIdx: b("top-k indices", 4 * pairs, S | COPY_SRC),
      topkGates: b("top-k gates", 4 * pairs, S | COPY_SRC),
      nextIdx: b("next index", 4 * capacity),
      counts: b("counts", 4 * n, S | COPY_DST),
      cursors: b("cursors", 4 * n, S | COPY_DST),
      flags: b("flags", 16, S | COPY_DST | COPY_SRC),
      offsets: b("offsets", 4 * (n + 1)),
      pairOf: b("pairOf", 4 * pairs),
      posOf: b("posOf", 4 * pairs),
      descriptors: b("tile descriptors", 4 * descriptorWords.length, S | COPY_DST),
      tiles: b("tiles", at),
      indirect: b("indirect", indirectAt, S | INDIRECT),
      act: b("act", 4 * pairs * e.up.width),
      out: b("out", 4 * pairs * e.down.width),
      y: b("y", 4 * (capacity * d + 1), S | COPY_SRC),
      stats: b("statistics", 4 * (2 * n + 2), S | COPY_SRC),
      upTables,
      downTables,
      groups: undefined as unknown as CallBuffers["groups"],
      upGroups: undefined,
      downGroups: [],
    };
    this.device.queue.writeBuffer(call.descriptors, 0, Uint32Array.from(descriptorWords));
    const p = this.pipelines;
    const u = this.uniforms;
    const group = (pipeline: GPUComputePipeline, resources: GPUBindingResource[]) =>
      this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: resources.map((resource, binding) => ({ binding, resource })) });
    const buf = (buffer: GPUBuffer): GPUBufferBinding => ({ buffer });
    call.groups = {
      noise: group(p.noise, [buf(call.logits), buf(call.noise), buf(call.std), buf(call.h), buf(call.flags), buf(u.noise)]),
      topk: group(p.topk, [buf(call.h), buf(call.topkIdx), buf(call.topkGates), buf(call.nextIdx), buf(call.counts), buf(u.topk)]),
      stats: group(p.stats, [
        buf(call.logits),
        buf(call.std),
        buf(call.h),
        buf(call.topkIdx),
        buf(call.topkGates),
        buf(call.nextIdx),
        buf(call.stats),
        buf(u.stats),
      ]),
      losses: group(p.losses, [buf(call.stats), buf(u.losses)]),
      scan: group(p.scan, [buf(call.counts), buf(call.descriptors), buf(call.offsets), buf(call.tiles), buf(call.indirect), buf(u.scan)]),
      scatter: group(p.scatter, [buf(call.topkIdx), buf(call.offsets), buf(call.cursors), buf(call.pairOf), buf(call.posOf), buf(u.scatter)]),
      combine: group(e.pipelines.combine, [buf(call.out), buf(call.posOf), buf(call.topkGates), buf(call.y), buf(u.combine)]),
    };
    if (call.xPad) call.upGroups = this.gemmGroups(call, "up", buf(call.xPad));
    call.downGroups = this.gemmGroups(call, "down", buf(call.act));
    this.call = call;
    return call;
  }

  /** Bind groups of one projection's grouped GEMM, one per weight buffer. */
  private gemmGroups(call: CallBuffers, which: "up" | "down", a: GPUBufferBinding): GPUBindGroup[] {
    const e = this.experts;
    const projection = which === "up" ? e.up : e.down;
    const tables = which === "up" ? call.upTables : call.downTables;
    const pipeline = which === "up" ? e.pipelines.up : e.pipelines.down;
    return projection.shards.map((shard, s) =>
      this.device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: a },
          { binding: 1, resource: { buffer: call.pairOf } },
          { binding: 2, resource: { buffer: call.tiles, offset: tables[s].offset, size: tables[s].bytes } },
          ...e.weightEntries(shard.buffer),
          { binding: 4, resource: { buffer: which === "up" ? call.act : call.out } },
          { binding: 5, resource: { buffer: which === "up" ? e.upShape : e.downShape } },
        ],
      }),
    );
  }

  private releaseCall(): void {
    const c = this.call;
    if (!c) return;
    for (const b of [
      c.xPad,
      c.logits,
      c.noise,
      c.std,
      c.h,
      c.topkIdx,
      c.topkGates,
      c.nextIdx,
      c.counts,
      c.cursors,
      c.flags,
      c.offsets,
      c.pairOf,
      c.posOf,
      c.descriptors,
      c.tiles,
      c.indirect,
      c.act,
      c.out,
      c.y,
      c.stats,
    ])
      b?.destroy();
    this.call = undefined;
  }

  /**
   * Encodes and submits one call (synchronously: x may be written by the caller right after this
   * returns; the queue orders it), then awaits its few bytes of readback.
   */
  run(
    x: GPUBuffer,
    batch: number,
    train: boolean,
    noise: Float32Array | undefined,
    seed: { key: number; stream: number },
    out: ResidentForwardOptions["out"],
  ): Promise<ResidentForwardResult> {
    const device = this.device;
    const { dModel: d, numExperts: n, k, noisyGating } = this.spec;
    const e = this.experts;
    const pairs = batch * k;
    const noisy = train && noisyGating;
    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    const created: GPUBuffer[] = [];
    let readback: GPUBuffer;
    let result: ResidentForwardResult;
    let stamp: number;
    const statsBytes = train ? 4 * (2 * n + 2) : 0;
    try {
      const call = this.ensureCapacity(batch);
      const queue = device.queue;
      const u = this.uniforms;
      const words = (buffer: GPUBuffer, ...values: Array<[number, "u" | "f"]>) => {
        const view = new DataView(new ArrayBuffer(roundUp(4 * values.length, 16)));
        values.forEach(([v, type], i) => (type === "u" ? view.setUint32(4 * i, v, true) : view.setFloat32(4 * i, v, true)));
        queue.writeBuffer(buffer, 0, view.buffer);
      };
      this.stamp = (this.stamp % 0xffffff) + 1;
      stamp = this.stamp;
      const mode = !noisy ? 0 : noise ? 2 : 1;
      if (noise) queue.writeBuffer(call.noise, 0, noise);
      words(u.pad, [batch, "u"], [d, "u"], [e.xStride, "u"]);
      words(u.gemm, [batch, "u"], [d, "u"], [noisy ? 2 * n : n, "u"], [this.ldl, "u"]);
      words(
        u.noise,
        [batch, "u"],
        [n, "u"],
        [this.ldl, "u"],
        [mode, "u"],
        [seed.key >>> 0, "u"],
        [Math.floor(seed.key / 2 ** 32) >>> 0, "u"],
        [seed.stream >>> 0, "u"],
        [this.spec.checkFinite ? 1 : 0, "u"],
        [this.spec.noiseEpsilon, "f"],
      );
      words(u.topk, [batch, "u"], [n, "u"]);
      words(u.stats, [batch, "u"], [n, "u"], [k, "u"], [this.ldl, "u"], [noisy && k < n ? 1 : 0, "u"]);
      words(u.losses, [n, "u"], [this.spec.wImportance, "f"], [this.spec.wLoad, "f"]);
      words(u.scan, [n, "u"], [call.upTables.length + call.downTables.length, "u"]);
      words(u.scatter, [pairs, "u"]);
      words(u.combine, [batch, "u"], [stamp, "f"], [d, "u"], [e.down.width / 4, "u"], [k, "u"]);

      const xBinding: GPUBufferBinding = { buffer: x, offset: 0, size: 4 * batch * d };
      const gemmGroup = device.createBindGroup({
        layout: this.pipelines.gemm.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: xBinding },
          { binding: 1, resource: { buffer: this.gateWeights } },
          { binding: 2, resource: { buffer: call.logits } },
          { binding: 3, resource: { buffer: u.gemm } },
        ],
      });
      const upGroups = call.upGroups ?? this.gemmGroups(call, "up", xBinding);

      const fresh = (label: string, bytes: number) => {
        const buffer = device.createBuffer({ label: `edge-moe ${label}`, size: bytes, usage: STORAGE | COPY_SRC | COPY_DST });
        created.push(buffer);
        return buffer;
      };
      const yOut = (out?.y as GPUBuffer | undefined) ?? fresh("y", 4 * batch * d);
      const idxOut = (out?.topkIndices as GPUBuffer | undefined) ?? fresh("topkIndices", 4 * pairs);
      const gatesOut = (out?.topkGates as GPUBuffer | undefined) ?? fresh("topkGates", 4 * pairs);
      readback = device.createBuffer({ label: "edge-moe resident readback", size: 16 + statsBytes, usage: MAP_READ | COPY_DST });
      created.push(readback);

      const encoder = device.createCommandEncoder({ label: "edge-moe resident" });
      encoder.clearBuffer(call.counts);
      encoder.clearBuffer(call.cursors);
      encoder.clearBuffer(call.flags);
      const pass = encoder.beginComputePass({ label: "edge-moe resident" });
      const dispatch = (pipeline: GPUComputePipeline, group: GPUBindGroup, x: number, y = 1, z = 1) => {
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(x, y, z);
      };
      const p = this.pipelines;
      if (call.xPad) {
        dispatch(
          p.pad,
          device.createBindGroup({
            layout: p.pad.getBindGroupLayout(0),
            entries: [
              { binding: 0, resource: xBinding },
              { binding: 1, resource: { buffer: call.xPad } },
              { binding: 2, resource: { buffer: u.pad } },
            ],
          }),
          ...split(Math.ceil((batch * e.xStride) / WORKGROUP)),
        );
      }
      const rowTiles = Math.ceil(batch / GATING_TILE);
      dispatch(p.gemm, gemmGroup, Math.ceil((noisy ? 2 * n : n) / GATING_TILE), ...split(rowTiles));
      dispatch(p.noise, call.groups.noise, ...split(Math.ceil((batch * n) / WORKGROUP)));
      dispatch(p.topk, call.groups.topk, ...split(Math.ceil(batch / WORKGROUP)));
      if (train) {
        dispatch(p.stats, call.groups.stats, ...split(n));
        dispatch(p.losses, call.groups.losses, 1);
      }
      dispatch(p.scan, call.groups.scan, 1);
      dispatch(p.scatter, call.groups.scatter, ...split(Math.ceil(pairs / WORKGROUP)));
      const gemm = (pipeline: GPUComputePipeline, groups: GPUBindGroup[], tables: CallBuffers["upTables"]) => {
        pass.setPipeline(pipeline);
        groups.forEach((group, s) => {
          pass.setBindGroup(0, group);
          pass.dispatchWorkgroupsIndirect(call.indirect, tables[s].indirect);
        });
      };
      gemm(e.pipelines.up, upGroups, call.upTables);
      gemm(e.pipelines.down, call.downGroups, call.downTables);
      dispatch(e.pipelines.combine, call.groups.combine, ...split(Math.ceil((batch * Math.ceil(d / 4)) / WORKGROUP)));
      pass.end();
      encoder.copyBufferToBuffer(call.y, 0, yOut, 0, 4 * batch * d);
      encoder.copyBufferToBuffer(call.topkIdx, 0, idxOut, 0, 4 * pairs);
      encoder.copyBufferToBuffer(call.topkGates, 0, gatesOut, 0, 4 * pairs);
      encoder.copyBufferToBuffer(call.y, 4 * batch * d, readback, 0, 4);
      encoder.copyBufferToBuffer(call.flags, 0, readback, 4, 4);
      if (train) encoder.copyBufferToBuffer(call.stats, 0, readback, 16, statsBytes);
      queue.submit([encoder.finish()]);
      result = { y: yOut, topkIndices: idxOut, topkGates: gatesOut, batch, backend: "gpu" };
    } catch (error) {
      void device.popErrorScope().catch(() => undefined);
      void device.popErrorScope().catch(() => undefined);
      for (const b of created) b.destroy();
      throw new MoEError("GPU_ERROR", `the resident GPU call could not be submitted: ${(error as Error).message}`, { cause: error });
    }
    const scopes = Promise.all([device.popErrorScope(), device.popErrorScope()]);
    return this.finish(readback, scopes, stamp, result, train, created);
  }

  /** Awaits the call's readback: the stamp says the work ran, the flags and statistics come with it. */
  private async finish(
    readback: GPUBuffer,
    scopes: Promise<Array<GPUError | null>>,
    stamp: number,
    result: ResidentForwardResult,
    train: boolean,
    created: GPUBuffer[],
  ): Promise<ResidentForwardResult> {
    const n = this.spec.numExperts;
    const [errors, mapped] = await Promise.all([
      scopes.catch(() => [] as Array<GPUError | null>),
      readback.mapAsync(MAP_MODE_READ).then(
        () => true,
        () => false,
      ),
    ]);
    const fault = (error: MoEError) => {
      for (const b of created) b.destroy();
      return error;
    };
    const error = errors.find((e) => e);
    if (error) {
      throw fault(
        new MoEError(
          "GPU_ERROR",
          `a GPU operation of the resident call failed: ${error.message} (x and out buffers must be buffers of the layer's device, unmapped, not destroyed)`,
        ),
      );
    }
    let words: ArrayBuffer | undefined;
    if (mapped) {
      words = readback.getMappedRange().slice(0);
      readback.unmap();
    }
    readback.destroy();
    // A lost device can resolve the mapping of a buffer its work never wrote: only the stamp says the call ran.
    if (!words || new Float32Array(words, 0, 1)[0] !== stamp) {
      this.lost ??= "the GPU device was lost during the call";
      throw fault(
        new MoEError(
          "GPU_LOST",
          `${this.lost}; the call's input lived on it, so it cannot finish on the CPU. Make a layer on a new device: createMoE({ ...config, gpu: newDevice, weights: await layer.getWeights() })`,
        ),
      );
    }
    if (new Uint32Array(words, 4, 1)[0] !== 0) {
      throw fault(
        new MoEError(
          "NON_FINITE_INPUT",
          "x holds NaN or ±Infinity, or x·W_g overflowed float32; the outputs of this call are not valid (inputs must be finite)",
        ),
      );
    }
    if (train) {
      const stats = new Float32Array(words, 16, 2 * n + 2);
      result.importance = stats.slice(0, n);
      result.load = stats.slice(n, 2 * n);
      result.lossImportance = stats[2 * n];
      result.lossLoad = stats[2 * n + 1];
    }
    return result;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.releaseCall();
    this.gateWeights.destroy();
    for (const b of Object.values(this.uniforms)) b.destroy();
  }
}

/** Checks a caller's output buffer for `elements` 4-byte elements. */
function checkOutBuffer(name: string, buffer: unknown, elements: number): void {
  if (buffer === undefined) return;
  if (!isGpuBuffer(buffer)) fail("OUTPUT_SHAPE", `out.${name} must be a GPUBuffer of the layer's device when x is a GPUBuffer`);
  const b = buffer as GPUBufferLike;
  if ((b.usage & COPY_DST) === 0) fail("OUTPUT_SHAPE", `out.${name} needs COPY_DST usage (GPUBufferUsage.COPY_DST): the call copies its result into it`);
  if (b.size < 4 * elements) fail("OUTPUT_SHAPE", `out.${name} holds ${b.size} bytes; it needs ${4 * elements} (${elements} 4-byte elements)`);
  if (b.mapState !== undefined && b.mapState !== "unmapped") fail("OUTPUT_SHAPE", `out.${name} is ${b.mapState}; unmap it before the call`);
}

/**
 * A forward whose x is a GPUBuffer: validates everything (nothing changes when it rejects), then
 * runs the whole layer on the experts' device.
 */
export async function forwardResident(host: ResidentHost, x: GPUBufferLike, options: ResidentForwardOptions): Promise<ResidentForwardResult> {
  const { spec } = host;
  const { dModel: d, numExperts: n, k } = spec;
  const backend = options.backend;
  if (backend !== undefined && backend !== "gpu" && backend !== "auto") {
    fail(
      "INVALID_CONFIG",
      `options.backend must be "gpu" or "auto" when x is a GPUBuffer (it runs where x lives), got ${JSON.stringify(backend)}; read x back into a Float32Array to run on the CPU`,
    );
  }
  const experts = host.experts;
  const resident = experts && residents.get(experts);
  if (!experts || resident?.lost) {
    const reason = resident?.lost ?? host.status.reason ?? "the layer has no GPU";
    if (resident?.lost || (host.status.adapter !== undefined && /lost/i.test(reason))) {
      fail(
        "GPU_LOST",
        `${reason}; a GPUBuffer x of that device cannot be read any more. Make a layer on a new device: createMoE({ ...config, gpu: newDevice, weights: await layer.getWeights() })`,
      );
    }
    if (host.status.adapter !== undefined) fail("GPU_ERROR", `the layer's GPU can no longer be used (${reason}); make a new layer`);
    fail("NO_GPU", `x is a GPUBuffer, and this layer has no GPU (${reason}); create it with backend "gpu" or "auto" and gpu: x's device`);
  }
  if ((x.usage & STORAGE) === 0) fail("INPUT_SHAPE", "x needs STORAGE usage (GPUBufferUsage.STORAGE): the gating GEMM binds it as a storage buffer");
  if (x.mapState !== undefined && x.mapState !== "unmapped") fail("INPUT_SHAPE", `x is ${x.mapState}; unmap it before the call`);
  let batch: number;
  if (options.batch !== undefined) {
    batch = options.batch;
    if (typeof batch !== "number" || !Number.isInteger(batch) || batch < 1)
      fail("INPUT_SHAPE", `options.batch must be a positive integer (rows of x), got ${String(batch)}`);
    if (4 * batch * d > x.size) fail("INPUT_SHAPE", `x holds ${x.size} bytes, fewer than options.batch·dModel·4 = ${batch}·${d}·4 = ${4 * batch * d}`);
  } else {
    if (x.size === 0 || x.size % (4 * d) !== 0) {
      fail("INPUT_SHAPE", `x.size (${x.size} bytes) must be a positive multiple of 4·dModel (${4 * d}): x is f32 [B, ${d}]; or give options.batch`);
    }
    batch = x.size / (4 * d);
  }
  const maxRows = experts.maxRows;
  if (batch > maxRows)
    fail(
      "INPUT_SHAPE",
      `B = ${batch} rows is more than this GPU takes in one resident call (${maxRows}, from its maxStorageBufferBindingSize); split the batch`,
    );
  const train = options.train ?? false;
  if (typeof train !== "boolean") fail("INVALID_CONFIG", "options.train must be a boolean");
  const noise = options.noise;
  if (noise !== undefined) {
    if (!(noise instanceof Float32Array) || noise.length !== batch * n) {
      fail(
        "NOISE_SHAPE",
        `noise must be a Float32Array of B·n = ${batch}·${n} = ${batch * n} standard normals, got ${noise instanceof Float32Array ? `length ${noise.length}` : Object.prototype.toString.call(noise)}`,
      );
    }
    for (let i = 0; i < noise.length; i++) {
      if (!Number.isFinite(noise[i])) fail("NOISE_SHAPE", `noise[${i}] is ${noise[i]}; noise must be finite`);
    }
  }
  const givenSeed = options.seed === undefined ? undefined : checkSeed("options.seed", options.seed);
  const out = options.out;
  if (out !== undefined && (typeof out !== "object" || out === null))
    fail("OUTPUT_SHAPE", "options.out must be an object { y?, topkIndices?, topkGates? } of GPUBuffers");
  checkOutBuffer("y", out?.y, batch * d);
  checkOutBuffer("topkIndices", out?.topkIndices, batch * k);
  checkOutBuffer("topkGates", out?.topkGates, batch * k);

  const r = await Resident.open(experts, spec);
  if (r.lost) fail("GPU_LOST", `${r.lost}; make a layer on a new device: createMoE({ ...config, gpu: newDevice, weights: await layer.getWeights() })`);
  if (r.gatingStale) r.writeGating(host.gatingWeights());
  // committed: the call is this one's from here
  const noisy = train && spec.noisyGating;
  const ownStream = noisy && noise === undefined && givenSeed === undefined;
  const seed = { key: givenSeed ?? spec.seed, stream: ownStream ? host.nextStream() : 0 };
  host.dropState();
  return r.run(x as unknown as GPUBuffer, batch, train, noisy ? noise : undefined, seed, out);
}
