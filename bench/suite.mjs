// The benchmark suite of one runtime: measures the machine, then for every case and batch size
// times every engine this runtime offers (edge-moe's builds, the GPU path, the TF.js and ONNX
// Runtime peers, plain JS) with tinybench, interleaved: each round runs every engine's iterations
// back to back; the figure is the median of all rounds' samples, and every round's own median is
// kept, so that ratios between engines can be taken round by round. A round that starts while
// other processes use the machine is retaken (see `load`). Runtime-neutral; the host's entry
// (entry.mjs, browser.mjs) passes in what differs: modules, probes, the peers, the load reader.
import {
  BATCHES,
  EXPERTS,
  QUANT_BOUND,
  QUANT_DTYPES,
  SHAPES,
  caseName,
  forwardBytes,
  forwardBytesOf,
  forwardFlops,
  isQuantCase,
  makeInput,
  makeWeights,
  relativeRms,
} from "./cases.mjs";
import { createPlainJs } from "./plain-js.mjs";
import { createTfjsPeer } from "./peer-tfjs.mjs";
import { relativeError } from "./peer-ort.mjs";
import { makeSpeedProbe, measureMachine } from "./machine.mjs";

/**
 * options:
 *   runtime, version        names for the report
 *   createMoE, Bench        edge-moe's createMoE, tinybench's Bench
 *   probes                  { simd, relaxed? } WebAssembly.Modules of bench/assembly/machine.ts
 *   builds                  edge-moe engines: [{ name, wasmBuild, threads }]
 *   tf, tfThreads           the TF.js namespace (wasm backend set) and its thread count, or undefined
 *   peers                   more peers: [{ name, experts, create(shape, expert, weights) → Promise<{
 *                           forward(x, batch) → Promise<y>, dispose() }> }] (the ONNX Runtime
 *                           configurations); their y must agree with edge-moe's within PEER_TOLERANCE
 *                           (relative) before they are timed, and experts outside `experts` are not run;
 *                           a peer with `dtype` ("int8", "int4": ORT's QMoE) runs on the quantized
 *                           cases only, held to QUANT_BOUND[dtype] instead
 *   dtypes                  the quantized dtypes (bench/cases.mjs QUANT_DTYPES: int8, int4, w8a8) to run
 *                           on the builds named in quantBuilds, on the cases of QUANT_CASES only; each
 *                           engine's y must agree with the f32 y of the same run within QUANT_BOUND
 *                           (relative RMS) before it is timed
 *   quantBuilds             names of the builds (of `builds`) that get quantized engines
 *   load                    () → { running, threads } | { load1 } | undefined: the OS's load, read
 *                           before every round (see roundIsBusy); undefined: not readable here
 *   plainJs                 run the plain-JS baseline (slow: seconds per call at large B)
 *   gpu                     try edge-moe's GPU path
 *   shapes, experts, batches   subsets of the cases (default: all)
 *   roundMs, rounds         time per engine per round, and rounds (interleaving)
 *   maxCallMs               an engine whose call is estimated (from the previous batch) to take
 *                           longer is not run at this batch (plain JS, software GPUs at large B)
 *   machine                 measure the machine (default true)
 *   evict                   flush the caches before each timed call (default true)
 *   speed                   probe the machine's speed around every engine's block of samples
 *                           (default true; bench/machine.mjs makeSpeedProbe): see `now` below
 *   log                     progress lines
 */
export async function runSuite(options) {
  const {
    runtime,
    version,
    createMoE,
    Bench,
    probes,
    builds,
    tf,
    tfThreads = 1,
    plainJs = false,
    gpu = false,
    peers = [],
    dtypes = [],
    quantBuilds = [],
    load,
    shapes = SHAPES,
    experts = EXPERTS,
    batches = BATCHES,
    roundMs = 250,
    rounds = 3,
    maxCallMs = 20000,
    log = () => {},
  } = options;
  const started = Date.now();
  const report = { runtime, version, started: new Date(started).toISOString(), machine: undefined, cases: [], notes: [] };
  const evict = options.evict !== false && probes ? await makeEvictor(probes.simd) : undefined;
  const speed = options.speed !== false && probes ? { probe: await makeSpeedProbe(probes), peaks: [], relaxedPeaks: [], reads: [] } : undefined;
  const loadState = { retaken: 0, keptBusy: 0, rounds: 0, readable: Boolean(load?.()) };
  report.notes.push(
    loadState.readable
      ? `a round that started while other processes were runnable (${BUSY_RULE}) was retaken, up to ${MAX_RETAKES} times, after waiting up to ${QUIET_WAIT_MS} ms for a quiet moment`
      : "the OS's load is not readable in this runtime: rounds were not retaken when other processes used the machine",
  );
  if (evict)
    report.notes.push(
      `caches flushed before every timed call (a ${EVICT_BYTES / 2 ** 20} MiB read, untimed): weights come from memory, as in a model whose other layers run between two calls of this one`,
    );
  if (options.machine !== false && probes) {
    log(`${runtime}: measuring the machine`);
    report.machine = await measureMachine(Bench, probes);
    log(`${runtime}: ${JSON.stringify(report.machine)}`);
  }
  for (const shape of shapes) {
    for (const expert of experts) {
      const name = caseName(shape, expert);
      log(`${runtime}: ${name}`);
      report.cases.push(
        await runCase({
          shape,
          expert,
          name,
          createMoE,
          Bench,
          builds,
          tf,
          tfThreads,
          peers,
          dtypes,
          quantBuilds,
          plainJs,
          gpu,
          batches,
          roundMs,
          rounds,
          maxCallMs,
          log,
          runtime,
          evict,
          speed,
          load,
          loadState,
        }),
      );
    }
  }
  if (options.machine !== false && probes) {
    // measured again at the end: the figure used is the better one (the host drifts)
    const again = await measureMachine(Bench, probes);
    for (const key of ["simdPeak", "relaxedPeak", "dotPeak", "relaxedDotPeak", "bandwidth1", "bandwidth2"]) {
      if (again[key] !== undefined) report.machine[key] = Math.max(report.machine[key] ?? 0, again[key]);
    }
    report.machineEnd = again;
  }
  if (speed?.peaks.length) {
    // every engine's `now` is relative to the best of these: the machine at its fastest in this run
    report.speed = {
      peak: summary(speed.peaks),
      relaxedPeak: speed.relaxedPeaks.length ? summary(speed.relaxedPeaks) : undefined,
      read: speed.reads.length ? summary(speed.reads) : undefined,
    };
    report.notes.push(
      `the machine's speed, probed around every engine's samples: register-only SIMD peak ${range(report.speed.peak, "GFLOP/s")}` +
        (report.speed.relaxedPeak ? `; relaxed madd peak ${range(report.speed.relaxedPeak, "GFLOP/s")}` : "") +
        (report.speed.read ? `; the cache flush's one-stream read ${range(report.speed.read, "GB/s")}` : ""),
    );
    // the roofline's peaks are the run's best moments: these probes count as much as the start's and the end's
    if (report.machine) {
      report.machine.simdPeak = Math.max(report.machine.simdPeak, report.speed.peak.best);
      if (report.machine.relaxedPeak !== undefined && report.speed.relaxedPeak) {
        report.machine.relaxedPeak = Math.max(report.machine.relaxedPeak, report.speed.relaxedPeak.best);
      }
    }
  }
  if (loadState.readable) {
    report.load = { rounds: loadState.rounds, retaken: loadState.retaken, keptBusy: loadState.keptBusy };
    report.notes.push(
      `load: ${loadState.rounds} rounds kept, ${loadState.retaken} retaken, ${loadState.keptBusy} kept although busy after ${MAX_RETAKES} retakes`,
    );
  }
  report.seconds = (Date.now() - started) / 1000;
  return report;
}

async function runCase(c) {
  const { shape, expert, createMoE, builds, tf, peers, plainJs, gpu, batches, log, runtime } = c;
  // the quantized engines' reference is the f32 y of the first engine, an f32 build
  const quantHere = builds.length > 0 && isQuantCase(shape, expert);
  const dtypes = quantHere ? c.dtypes.filter((dt) => QUANT_DTYPES[dt]) : [];
  const weights = makeWeights(shape, expert);
  const base = { dModel: shape.d, dHidden: shape.h, numExperts: shape.n, k: shape.k, expert, weights };
  /** name → { forward(x, batch) → y | Promise<y>, dispose(), maxBatch?, sync } */
  const engines = new Map();
  const result = { name: c.name, shape, expert, batches: [], engines: {}, gating: undefined };

  for (const build of builds) {
    try {
      const layer = await createMoE({ ...base, wasmBuild: build.wasmBuild, threads: build.threads });
      const outs = new Map();
      engines.set(build.name, {
        kind: "edge-moe",
        forward: (x, batch) => {
          let out = outs.get(batch);
          if (!out) outs.set(batch, (out = { y: new Float32Array(batch * shape.d), topkIndices: new Int32Array(batch * shape.k) }));
          layer.forwardSync(x, { out });
          return out.y;
        },
        touched: (x, batch) => new Set(layer.forwardSync(x).topkIndices).size,
        dispose: () => layer.dispose(),
      });
    } catch (error) {
      result.engines[build.name] = { unavailable: String(error?.message ?? error) };
      log(`${runtime}: ${build.name} unavailable: ${error?.message ?? error}`);
    }
  }
  for (const build of builds.filter((b) => c.quantBuilds.includes(b.name))) {
    for (const dt of dtypes) {
      const name = `${dt} ${build.name}`;
      const { dtype, activations } = QUANT_DTYPES[dt];
      try {
        const layer = await createMoE({ ...base, dtype, activations, wasmBuild: build.wasmBuild, threads: build.threads });
        const outs = new Map();
        engines.set(name, {
          kind: "edge-moe-q",
          dtype: dt,
          forward: (x, batch) => {
            let out = outs.get(batch);
            if (!out) outs.set(batch, (out = { y: new Float32Array(batch * shape.d), topkIndices: new Int32Array(batch * shape.k) }));
            layer.forwardSync(x, { out });
            return out.y;
          },
          dispose: () => layer.dispose(),
        });
        result.engines[name] = { dtype: dt, bound: QUANT_BOUND[dt] };
      } catch (error) {
        result.engines[name] = { dtype: dt, unavailable: String(error?.message ?? error) };
        log(`${runtime}: ${name} unavailable: ${error?.message ?? error}`);
      }
    }
  }
  if (gpu) {
    try {
      // the host side (gating, plan) on every hardware thread, as a server with a GPU would run it
      const layer = await createMoE({ ...base, backend: "gpu", threads: "auto" });
      const status = layer.gpuStatus;
      result.engines.gpu = { adapter: status.adapter, software: status.software, threads: "auto" };
      engines.set("gpu", {
        kind: "gpu",
        async: true,
        software: status.software,
        forward: async (x) => (await layer.forward(x)).y,
        dispose: () => layer.dispose(),
      });
    } catch (error) {
      result.engines.gpu = { unavailable: String(error?.message ?? error) };
    }
  }
  if (tf) {
    const peer = createTfjsPeer(tf, shape, expert, weights);
    engines.set(`tfjs ${c.tfThreads}T`, { kind: "peer", forward: peer.forward, dispose: peer.dispose });
  }
  for (const peer of peers) {
    if (peer.dtype && !dtypes.includes(peer.dtype)) continue;
    if (peer.experts && !peer.experts.includes(expert)) {
      result.engines[peer.name] = { unavailable: `${expert} experts are not compared on this peer` };
      continue;
    }
    try {
      const p = await peer.create(shape, expert, weights);
      engines.set(peer.name, { kind: "peer", async: true, checked: !peer.dtype, dtype: peer.dtype, forward: p.forward, dispose: p.dispose });
      result.engines[peer.name] = { threads: p.threads, ...(peer.dtype ? { dtype: peer.dtype, bound: QUANT_BOUND[peer.dtype] } : {}) };
    } catch (error) {
      result.engines[peer.name] = { unavailable: String(error?.message ?? error) };
      log(`${runtime}: ${peer.name} unavailable: ${error?.message ?? error}`);
    }
  }
  if (plainJs) {
    engines.set("plain JS", { kind: "plain", forward: createPlainJs(shape, expert, weights) });
  }

  const reference = [...engines.values()].find((e) => e.kind === "edge-moe");
  for (const batch of batches) {
    const x = makeInput(batch, shape.d);
    const row = {
      batch,
      flops: forwardFlops(shape, expert, batch),
      expertsTouched: reference ? reference.touched(x, batch) : undefined,
      engines: {},
    };
    row.bytes = row.expertsTouched === undefined ? undefined : forwardBytes(shape, expert, row.expertsTouched);
    if (dtypes.length && row.expertsTouched !== undefined) {
      // what each dtype's forward must read: bench/cases.mjs forwardBytesOf
      row.bytesOf = Object.fromEntries(dtypes.map((dt) => [dt, forwardBytesOf(shape, expert, row.expertsTouched, dt)]));
    }
    result.batches.push(row);
    await timeEngines(c, engines, x, batch, row);
  }
  // Gating alone (target: ≤ 10% of a forward at B = 64): the same layer with 8-wide experts, in
  // training mode (fused gating GEMM + seeded noise + top-k + losses + plan); the experts' share
  // left in it is an upper bound of ~1/h of theirs.
  if (reference && batches.includes(64)) {
    const tiny = await createMoE({
      ...base,
      dHidden: 8,
      weights: { wGate: weights.wGate, wNoise: weights.wNoise },
      init: { seed: 1 },
      wasmBuild: builds[0].wasmBuild,
    });
    const x = makeInput(64, shape.d);
    const bench = new c.Bench({ time: 0, iterations: 50, warmupIterations: 10, warmupTime: 0 });
    bench.add("gating", () => tiny.forwardSync(x, { train: true, seed: 1 }));
    await bench.run();
    result.gating = { batch: 64, ms: bench.tasks[0].result.latency.p50, build: builds[0].name };
    tiny.dispose();
  }
  for (const engine of engines.values()) await engine.dispose?.();
  return result;
}

/** Peers' y must agree with edge-moe's within this, relative to max |y|, to be timed. */
export const PEER_TOLERANCE = 1e-4;

// A round is busy when, at its start, more tasks are runnable than this process's one; the
// count is /proc/loadavg's instantaneous "runnable" field (the best of three reads 1 ms apart, so
// that a blip does not count), not the 1-minute average, which lags by a minute and counts this
// suite's own threads. Where only averages are readable (os.loadavg() without /proc), the 1-minute
// average less this suite's one must stay under half the cores.
const BUSY_RULE =
  "/proc/loadavg: more than 1 runnable task, best of 3 reads 1 ms apart; where only averages are readable, the 1-minute average minus 1 (this suite) ≥ half the cores";
const MAX_RETAKES = 3;
const QUIET_WAIT_MS = 1000;

/** @returns {Promise<boolean | undefined>} whether the machine is busy now (undefined: unknown) */
async function roundIsBusy(load) {
  if (!load) return undefined;
  let best;
  for (let i = 0; i < 3; i++) {
    const l = load();
    if (!l) return undefined;
    const busy = l.running !== undefined ? l.running > 1 : (l.load1 - 1) / (l.cores ?? 2) >= 0.5;
    best = best === undefined ? busy : best && busy;
    if (!best) return false;
    await new Promise((r) => setTimeout(r, 1));
  }
  return best;
}

const EVICT_BYTES = 64 * 2 ** 20; // twice the 32 MiB L3 of the machines measured so far

/** A function that reads EVICT_BYTES through the probe module: what was cached is gone after it. */
async function makeEvictor(module) {
  const probe = (await WebAssembly.instantiate(module, {})).exports;
  const base = (probe.heapBase() + 63) & ~63;
  probe.memory.grow(Math.ceil((base + EVICT_BYTES - probe.memory.buffer.byteLength) / 65536));
  probe.fillBytes(base, EVICT_BYTES);
  const evict = () => probe.readBytes(base, EVICT_BYTES);
  const t0 = performance.now();
  for (let i = 0; i < 3; i++) evict();
  evict.ms = (performance.now() - t0) / 3;
  return evict;
}

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
const median = (xs) =>
  quantile(
    [...xs].sort((a, b) => a - b),
    0.5,
  );
function summary(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return { best: s[s.length - 1], p90: quantile(s, 0.9), median: quantile(s, 0.5), p10: quantile(s, 0.1), worst: s[0], samples: s.length };
}
const range = (r, unit) =>
  `${r.worst.toFixed(1)}–${r.best.toFixed(1)} ${unit} (10th–90th percentile ${r.p10.toFixed(1)}–${r.p90.toFixed(1)}, median ${r.median.toFixed(1)}, ${r.samples} samples)`;

function maxAbsDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function timeEngines(c, engines, x, batch, row) {
  const { roundMs, rounds, log, runtime } = c;
  const plan = [];
  let referenceY;
  for (const [name, engine] of engines) {
    if (engine.last) {
      const estimate = engine.last.ms * (batch / engine.last.batch);
      if (estimate > c.maxCallMs) {
        row.engines[name] = {
          skipped: `estimated ${(estimate / 1000).toFixed(1)} s per call (from B=${engine.last.batch}), over the suite's ${c.maxCallMs / 1000} s limit`,
        };
        continue;
      }
    }
    // one untimed call: warms the engine up, estimates its time, checks its y
    const t0 = performance.now();
    let y = engine.forward(x, batch);
    if (engine.async) y = await y;
    const first = performance.now() - t0;
    engine.last = { ms: first, batch }; // replaced by the median below: a first call may include one-time work
    y = Float32Array.from(y);
    if (!engine.dtype) referenceY ??= y;
    if (!referenceY) {
      row.engines[name] = { first, error: "no f32 y to check it against (the f32 builds did not run at this batch)" };
      continue;
    }
    const entry = { first, maxAbsDiff: maxAbsDiff(y, referenceY), relErr: relativeError(y, referenceY) };
    row.engines[name] = entry;
    if (engine.checked && !(entry.relErr <= PEER_TOLERANCE)) {
      entry.error = `y disagrees with edge-moe's: max |Δy| / max |y| = ${entry.relErr.toExponential(1)} > ${PEER_TOLERANCE}`;
      log(`${runtime}:   B=${batch} ${name}: ${entry.error}`);
      continue;
    }
    if (engine.dtype) {
      // quantized: relative RMS against the f32 y (referenceY: the first engine, an f32 build)
      entry.dtype = engine.dtype;
      entry.relRms = relativeRms(y, referenceY);
      if (!(entry.relRms <= QUANT_BOUND[engine.dtype])) {
        entry.error = `y disagrees with edge-moe's f32 y: relative RMS ${entry.relRms.toExponential(1)} > ${QUANT_BOUND[engine.dtype]} (${engine.dtype})`;
        log(`${runtime}:   B=${batch} ${name}: ${entry.error}`);
        continue;
      }
    }
    // slow engines (plain JS, software GPUs at large B) get few samples: one round, ≥ 1 call
    const slow = first > 2000;
    const perCall = first + (c.evict?.ms ?? 0);
    const iterations = slow ? 1 : Math.max(2, Math.min(200, Math.ceil(roundMs / Math.max(perCall, 0.01))));
    plan.push({ name, engine, iterations, slow });
  }
  const samples = new Map(plan.map((p) => [p.name, []]));
  // the machine's speed while each engine ran: the speed probe right before and after its block
  // (the rate of the cache flush before each call is kept for the run only: report.speed.read)
  const speeds = new Map(plan.map((p) => [p.name, { peaks: [], relaxedPeaks: [] }]));
  const probeSpeed = (into) => {
    if (!c.speed) return;
    const { simd, relaxed } = c.speed.probe();
    into.peaks.push(simd);
    c.speed.peaks.push(simd);
    if (relaxed !== undefined) {
      into.relaxedPeaks.push(relaxed);
      c.speed.relaxedPeaks.push(relaxed);
    }
  };
  const perRound = new Map(plan.map((p) => [p.name, []]));
  for (let round = 0; round < rounds; round++) {
    // wait for a quiet moment, then run the round; retake it if it started busy
    let kept;
    for (let attempt = 0; attempt <= MAX_RETAKES && !kept; attempt++) {
      let busy = await roundIsBusy(c.load);
      for (let waited = 0; busy && waited < QUIET_WAIT_MS; waited += 50) {
        await new Promise((r) => setTimeout(r, 50));
        busy = await roundIsBusy(c.load);
      }
      const got = await runRound(c, plan, round, x, batch, row, speeds, probeSpeed);
      if (!busy || attempt === MAX_RETAKES) {
        kept = got;
        if (busy) c.loadState.keptBusy++;
        if (busy !== undefined) c.loadState.rounds++;
      } else {
        c.loadState.retaken++;
      }
    }
    for (const [name, s] of kept) {
      samples.get(name).push(...s);
      if (s.length) perRound.get(name).push(median(s));
    }
  }
  for (const [name, s] of samples) {
    if (s.length === 0) continue;
    s.sort((a, b) => a - b);
    const entry = row.engines[name];
    entry.ms = s[s.length >> 1];
    entry.min = s[0];
    entry.samples = s.length;
    entry.gflops = row.flops / entry.ms / 1e6;
    entry.rounds = perRound.get(name);
    const speed = speeds.get(name);
    if (speed.peaks.length) {
      entry.now = { peak: median(speed.peaks), relaxedPeak: speed.relaxedPeaks.length ? median(speed.relaxedPeaks) : undefined };
    }
    engines.get(name).last = { ms: entry.ms, batch };
  }
  log(`${runtime}:   B=${batch} ` + plan.map((p) => `${p.name} ${row.engines[p.name].ms?.toFixed(3)}`).join(" | "));
}

/** One round: every engine's iterations back to back; name → its samples (ms). */
async function runRound(c, plan, round, x, batch, row, speeds, probeSpeed) {
  const { Bench } = c;
  const got = new Map();
  for (const p of plan) {
    if (round > 0 && p.slow) continue;
    const speed = speeds.get(p.name);
    probeSpeed(speed);
    const bench = new Bench({
      time: 0,
      iterations: p.iterations,
      warmupTime: 0,
      warmupIterations: p.slow ? 0 : round === 0 ? Math.min(5, p.iterations) : 1,
      retainSamples: true,
    });
    const fn = p.engine.async
      ? async () => {
          await p.engine.forward(x, batch);
        }
      : () => p.engine.forward(x, batch);
    const flush =
      c.evict &&
      (() => {
        const t0 = performance.now();
        c.evict();
        const ms = performance.now() - t0;
        if (ms > 0 && c.speed) c.speed.reads.push(EVICT_BYTES / ms / 1e6);
      });
    bench.add(p.name, fn, flush ? { beforeEach: flush } : {});
    await bench.run();
    probeSpeed(speed);
    const r = bench.tasks[0].result;
    if (r.state !== "completed") {
      row.engines[p.name].error = String(r.error?.message ?? r.state);
      continue;
    }
    got.set(p.name, r.latency.samples ?? []);
  }
  return got;
}
