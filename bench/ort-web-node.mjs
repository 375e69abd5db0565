// onnxruntime-web in Node and Bun, one worker thread per thread count. onnxruntime-web fixes its
// thread count (env.wasm.numThreads) when its wasm module starts, and there a second copy of its
// entry cannot load beside the first (both register their backends in the one
// onnxruntime-common; the browser build's threads start from blob: URLs, which Bun's workers cannot load), so
// the 1- and 2-thread configurations each live in a worker of their own, which has its own
// module graph. A call costs one message each way on top of ORT's run: `ping` measures that.
// worker_threads only; the worker regenerates the case's weights (bench/cases.mjs, same
// seed) instead of receiving hundreds of MiB by message.
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

if (!isMainThread && workerData?.ortWeb) {
  const { makeWeights } = await import("./cases.mjs");
  const { createOrtPeer } = await import("./peer-ort.mjs");
  const ort = await import("onnxruntime-web");
  ort.env.wasm.numThreads = workerData.threads;
  // one session per kind of model ("f32", or the QMoE bits), each replaced by the next case's
  const sessions = new Map();
  parentPort.on("message", async (m) => {
    const key = m.bits ?? "f32";
    try {
      if (m.type === "create") {
        await sessions.get(key)?.dispose();
        sessions.delete(key);
        const shape = m.shape;
        sessions.set(key, await createOrtPeer(ort, shape, m.expert, makeWeights(shape, m.expert), { ep: "wasm", threads: workerData.threads, bits: m.bits }));
        parentPort.postMessage({ id: m.id, threads: ort.env.wasm.numThreads });
      } else if (m.type === "run") {
        parentPort.postMessage({ id: m.id, y: await sessions.get(key).forward(m.x, m.batch) });
      } else if (m.type === "ping") {
        parentPort.postMessage({ id: m.id });
      } else if (m.type === "dispose") {
        await sessions.get(key)?.dispose();
        sessions.delete(key);
        parentPort.postMessage({ id: m.id });
      }
    } catch (error) {
      parentPort.postMessage({ id: m.id, error: String(error?.message ?? error) });
    }
  });
}

/**
 * A worker hosting onnxruntime-web at `threads` threads; `peer(shape, expert, bits?)` makes the
 * case's session there (com.microsoft::QMoE at `bits`, else the f32 MoE; one session of each at a time)
 * and returns the suite's peer interface.
 * @param {number} threads
 */
export function startOrtWebWorker(threads) {
  const worker = new Worker(new URL(import.meta.url), { workerData: { ortWeb: true, threads } });
  worker.unref();
  let next = 0;
  const pending = new Map();
  worker.on("message", (m) => {
    const p = pending.get(m.id);
    pending.delete(m.id);
    if (m.error) p?.reject(new Error(m.error));
    else p?.resolve(m);
  });
  let failed;
  const fail = (e) => {
    failed ??= e;
    for (const p of pending.values()) p.reject(failed);
    pending.clear();
  };
  worker.on("error", fail);
  worker.on("exit", (code) => fail(new Error(`the onnxruntime-web worker exited (${code})`)));
  const call = (message) =>
    new Promise((resolve, reject) => {
      if (failed) return reject(failed);
      const id = next++;
      pending.set(id, { resolve, reject });
      worker.postMessage({ ...message, id });
    });
  return {
    async peer(shape, expert, bits) {
      const { threads: got } = await call({ type: "create", shape, expert, bits });
      return {
        threads: got,
        forward: async (x, batch) => (await call({ type: "run", x, batch, bits })).y,
        dispose: () => call({ type: "dispose", bits }),
      };
    },
    /** Median ms of an empty round trip to the worker (what a call pays beyond ORT's run). */
    async ping(times = 200) {
      const ms = [];
      for (let i = 0; i < times; i++) {
        const t0 = performance.now();
        await call({ type: "ping" });
        ms.push(performance.now() - t0);
      }
      return ms.sort((a, b) => a - b)[ms.length >> 1];
    },
    terminate: () => worker.terminate(),
  };
}
