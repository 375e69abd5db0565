// Worker chaos: what happens to a worker-hosted layer (createMoEWorker) when its worker is
// terminated during a call, crashes, never loads, or is not edge-moe's; per-call timeouts and
// signals; disposal. Every call must settle, with a typed MoEError, within a deadline, and the
// program must survive. Shared by the Node, Deno, Bun (cli.mjs) and Chromium (page) runs, which pass
// `spawn(kind)`: a new worker running test/chaos/<kind>-worker.mjs or edge-moe/worker ("edge-moe").
// Returns report lines: "ok <name>" / "FAIL <name>: why", then "N passed, N failed".

const DEADLINE_MS = 5_000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits for `promise` at most DEADLINE_MS: { value } or { error }, or throws when it did not settle. */
async function settled(promise, what, deadline = DEADLINE_MS) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${deadline} ms`)), deadline);
  });
  try {
    return await Promise.race([
      promise.then(
        (value) => ({ value }),
        (error) => ({ error }),
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function expectCode(outcome, code, what) {
  if (!outcome.error) throw new Error(`${what} resolved; expected ${code}`);
  const e = outcome.error;
  if (e?.name !== "MoEError" || e.code !== code) throw new Error(`${what} rejected with ${e?.name} ${e?.code ?? ""}: ${e?.message}; expected MoEError ${code}`);
  if (!(e.message.length > 20)) throw new Error(`${what}: a message that says nothing: ${e.message}`);
}

export async function runChaos({ createMoE, createMoEWorker, spawn }) {
  const lines = [];
  let passed = 0,
    failed = 0;
  const workers = [];
  /** `handled`: the caller watches the worker's errors itself (needed when they fire before createMoEWorker listens). */
  const make = (kind, options = {}) => {
    const w = spawn(kind, options);
    workers.push(w);
    return w;
  };
  const config = { dModel: 64, dHidden: 64, numExperts: 8, k: 2, expert: "relu", init: { seed: 5 }, wasmBuild: "simd" };
  const small = Float32Array.from({ length: 4 * 64 }, (_, i) => Math.sin(i));
  // a batch that keeps the worker busy for a while (tens of ms or more)
  const big = Float32Array.from({ length: 60_000 * 64 }, (_, i) => Math.cos(i));

  const test = async (name, body) => {
    try {
      await body();
      passed++;
      lines.push(`ok   ${name}`);
    } catch (error) {
      failed++;
      lines.push(`FAIL ${name}: ${error?.message ?? error}`);
    }
  };

  await test("a worker layer computes the local layer's bits; asyncDispose releases it", async () => {
    const layer = await createMoEWorker(make("edge-moe"), config);
    const local = await createMoE(config);
    const got = await layer.forward(small, { train: true, seed: 9 });
    const want = await local.forward(small, { train: true, seed: 9 });
    if (!got.y.every((v, i) => Object.is(v, want.y[i]))) throw new Error("y differs from the local layer");
    local.dispose();
    const dispose = Symbol.asyncDispose ? layer[Symbol.asyncDispose] : layer.disposeAsync;
    const out = await settled(dispose.call(layer), "asyncDispose");
    if (out.error) throw out.error;
    expectCode(await settled(layer.forward(small), "forward after dispose"), "DISPOSED", "forward after dispose");
  });

  await test("terminate during a call: the call and every later one reject WORKER_ERROR", async () => {
    const worker = make("edge-moe");
    const layer = await createMoEWorker(worker, config);
    await layer.forward(small); // loaded and serving
    const inFlight = layer.forward(big); // posted: the worker is receiving or computing it
    worker.terminate();
    expectCode(await settled(inFlight, "the call in flight"), "WORKER_ERROR", "the call in flight");
    expectCode(await settled(layer.forward(small), "a later call"), "WORKER_ERROR", "a later call");
    expectCode(await settled(layer.getWeights(), "getWeights"), "WORKER_ERROR", "getWeights");
    const out = await settled(layer.disposeAsync(), "disposeAsync on the dead worker");
    if (out.error) throw out.error;
  });

  await test("a crash inside the worker: calls reject WORKER_ERROR", async () => {
    const worker = make("crash");
    const layer = await createMoEWorker(worker, config);
    await layer.forward(small);
    worker.postMessage("crash");
    const inFlight = settled(layer.forward(big), "the call in flight");
    // a call in flight may finish before the crash; once the crash is seen, every call rejects
    const first = await inFlight;
    if (first.error) expectCode(first, "WORKER_ERROR", "the call in flight");
    const until = Date.now() + DEADLINE_MS;
    for (;;) {
      const out = await settled(layer.forward(small), "a call after the crash");
      if (out.error) {
        expectCode(out, "WORKER_ERROR", "a call after the crash");
        break;
      }
      if (Date.now() > until) throw new Error("calls still succeed after the crash");
      await sleep(20);
    }
  });

  await test("a worker that never loads: createMoEWorker rejects WORKER_ERROR (its error event)", async () => {
    const started = Date.now();
    expectCode(await settled(createMoEWorker(make("broken"), config), "createMoEWorker"), "WORKER_ERROR", "createMoEWorker");
    // the error event, not the 10 s handshake timeout, ended it
    if (Date.now() - started > DEADLINE_MS) throw new Error("too slow");
  });

  await test("a worker whose load error fired before the call: WORKER_ERROR within timeoutMs", async () => {
    const worker = make("broken", { handled: true });
    await sleep(500);
    expectCode(await settled(createMoEWorker(worker, config, { timeoutMs: 1_000 }), "createMoEWorker"), "WORKER_ERROR", "createMoEWorker");
  });

  await test("a live worker that is not edge-moe's: WORKER_ERROR within timeoutMs", async () => {
    // the handshake timeout, or sooner where the runtime closes the channel the worker dropped (Bun)
    const out = await settled(createMoEWorker(make("foreign"), config, { timeoutMs: 400 }), "createMoEWorker", 2_000);
    expectCode(out, "WORKER_ERROR", "createMoEWorker");
  });

  await test("per-call timeoutMs and signal reject WORKER_ERROR; the layer stays usable", async () => {
    const layer = await createMoEWorker(make("edge-moe"), config);
    expectCode(await settled(layer.forward(big, { timeoutMs: 1 }), "forward with timeoutMs 1"), "WORKER_ERROR", "forward with timeoutMs 1");
    const controller = new AbortController();
    const aborted = layer.forward(big, { signal: controller.signal });
    controller.abort();
    expectCode(await settled(aborted, "an aborted forward"), "WORKER_ERROR", "an aborted forward");
    expectCode(await settled(layer.forward(small, { signal: AbortSignal.abort() }), "an already aborted signal"), "WORKER_ERROR", "an already aborted signal");
    expectCode(await settled(layer.forward(small, { timeoutMs: -1 }), "timeoutMs -1"), "INVALID_CONFIG", "timeoutMs -1");
    const ok = await settled(layer.forward(small, { timeoutMs: 30_000, signal: new AbortController().signal }), "a normal call");
    if (ok.error) throw ok.error;
    const local = await createMoE(config);
    const want = await local.forward(small);
    local.dispose();
    if (!ok.value.y.every((v, i) => Object.is(v, want.y[i]))) throw new Error("y differs after the timed-out calls");
    await layer.disposeAsync();
  });

  for (const w of workers) w.terminate();
  lines.push(`${passed} passed, ${failed} failed`);
  return lines.join("\n");
}
