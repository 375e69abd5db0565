import { createMoE } from "../dist/index.js";
import { makeWeights, makeInput, SHAPES } from "./cases.mjs";
const shape = SHAPES[0];
const w = makeWeights(shape, "relu");
const L = await createMoE({ dModel: shape.d, dHidden: shape.h, numExperts: shape.n, k: shape.k, expert: "relu", weights: w, wasmBuild: "simd" });
const ev = new Float32Array(16 * 2 ** 20).fill(1);
const evict = () => { let s = 0; for (let i = 0; i < ev.length; i += 16) s += ev[i]; return s; };
for (const B of [64, 512]) {
  const x = makeInput(B, shape.d);
  const out = { y: new Float32Array(B * shape.d) };
  const ts = [], tw = [];
  for (let r = 0; r < 8; r++) {
    evict(); let t = performance.now(); L.forwardSync(x, { out }); ts.push(performance.now() - t);
    t = performance.now(); L.forwardSync(x, { out }); tw.push(performance.now() - t);
  }
  const med = (a) => a.sort((p, q) => p - q)[a.length >> 1];
  console.log(B, "cold", med(ts).toFixed(2), "warm", med(tw).toFixed(2));
}
