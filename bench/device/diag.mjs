// Where a large-batch GPU forward spends its time (bench/device/run.sh DIAG=1): the full forward;
// the same layer shape with 4-wide experts (gating, plan, upload, readback and combine: everything
// but the expert GEMMs); that tiny layer on the CPU (the gating alone); and a CPU profile of the
// JavaScript during GPU forwards (top self times).
//   node bench/device/diag.mjs <out.json>
import { Session } from "node:inspector/promises";
import { writeFileSync } from "node:fs";
import { createMoE } from "../../dist/index.js";
import { makeInput, makeWeights } from "../cases.mjs";

const CASES = [
  { shape: { d: 512, h: 2048, n: 8, k: 2 }, expert: "relu" },
  { shape: { d: 1024, h: 1024, n: 64, k: 4 }, expert: "swiglu" },
];
const BATCH = 4096;
const median = async (fn, reps = 7) => {
  await fn();
  const t = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    await fn();
    t.push(performance.now() - t0);
  }
  return t.sort((a, b) => a - b)[reps >> 1];
};
const report = [];
for (const c of CASES) {
  const { d, h, n, k } = c.shape;
  const x = makeInput(BATCH, d);
  const config = (hidden) => ({ dModel: d, dHidden: hidden, numExperts: n, k, expert: c.expert, weights: makeWeights({ ...c.shape, h: hidden }, c.expert) });
  const full = await createMoE({ ...config(h), backend: "gpu" });
  const tiny = await createMoE({ ...config(4), backend: "gpu" });
  const row = {
    case: `${c.expert} d${d} h${h} n${n} k${k}`,
    batch: BATCH,
    gpuFull: await median(() => full.forward(x)),
    gpuTinyExperts: await median(() => tiny.forward(x)),
    cpuTinyExperts: await median(() => tiny.forwardSync(x)),
  };
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  for (let r = 0; r < 10; r++) await full.forward(x);
  const { profile } = await session.post("Profiler.stop");
  session.disconnect();
  const self = new Map();
  const dt = profile.timeDeltas;
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (dt[i] ?? 0)));
  const byName = new Map();
  for (const node of profile.nodes) {
    const f = node.callFrame;
    const name = `${f.functionName || "(anon)"} ${f.url.split("/").pop()}:${f.lineNumber}`;
    byName.set(name, (byName.get(name) ?? 0) + (self.get(node.id) ?? 0));
  }
  row.profileTopMsPerCall = [...byName]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 12)
    .map(([name, us]) => [name, +(us / 1000 / 10).toFixed(3)]);
  full.dispose();
  tiny.dispose();
  report.push(row);
  console.log(JSON.stringify(row, null, 1));
  writeFileSync(process.argv[2] ?? "diag.json", JSON.stringify(report, null, 1));
}
process.exit(0);
