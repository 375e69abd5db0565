// loadMoE: a pretrained layer as a working MoE block, composed over createMoE's public API.
//
// createMoE routes with the paper's rule (softmax over the k selected logits). The families'
// rules differ (softmax over all n without renormalisation, sigmoid with a choice bias and
// groups, scaling), so the routing is computed here (route.ts, from x · wGate) and the experts
// run in one createMoE pass over "selector" rows: each (row, slot) pair becomes a row
// [x, onehot(expert)] of width d + n, the inner layer's router is [0; I] so its top-1 is exactly
// that expert with gate 1, and the experts' weights are zero on the selector inputs and outputs.
// y = Σ_slot gate · expert(x), plus the shared expert (a 1-expert layer, gate 1) × its factor.
// Same arithmetic as a native pass; the price is d + n wide inputs and B·k rows. When the engine
// takes a routing rule and a shared expert itself, this file reduces to loadMoELayer + createMoE.
import { MoEError } from "../errors.ts";
import { createMoE } from "../layer.ts";
import type { MoEConfig, MoELocalLayer } from "../types.ts";
import { loadMoELayer, type LoadLayerOptions } from "./index.ts";
import type { ConvertedLayer, FamilyDescription, Routing } from "./families.ts";
import { route } from "./route.ts";

/** createMoE's options that a checkpoint does not fix (backend, threads, wasm, …). */
export type LoadMoERuntimeOptions = Omit<MoEConfig, "dModel" | "dHidden" | "numExperts" | "k" | "expert" | "weights" | "init" | "noisyGating" | "noiseEpsilon" | "wImportance" | "wLoad">;

export interface LoadMoEOptions extends LoadLayerOptions, LoadMoERuntimeOptions {}

export interface LoadedMoEResult {
  /** [B, d]: routed experts + shared expert, no residual. */
  y: Float32Array;
  /** [B, k], descending selection score. */
  topkIndices: Int32Array;
  /** [B, k], the factor each routed expert's output is multiplied by. */
  topkGates: Float32Array;
}

export interface LoadedMoE {
  readonly description: FamilyDescription;
  readonly routing: Routing;
  forward(x: Float32Array): Promise<LoadedMoEResult>;
  forwardSync(x: Float32Array): LoadedMoEResult;
  dispose(): void;
}

function selectorWeights(layer: ConvertedLayer): MoEConfig["weights"] {
  const { dModel: d, dHidden: h, numExperts: n, expert, weights } = layer.config;
  const dw = d + n;
  const wGate = new Float32Array(dw * n);
  for (let e = 0; e < n; e++) wGate[(d + e) * n + e] = 1;
  // [n, d, h] → [n, d + n, h]: zero rows for the selector inputs
  const widenIn = (w: Float32Array) => {
    const out = new Float32Array(n * dw * h);
    for (let e = 0; e < n; e++) out.set(w.subarray(e * d * h, (e + 1) * d * h), e * dw * h);
    return out;
  };
  // [n, h, d] → [n, h, d + n]: zero columns for the selector outputs
  const widenOut = (w: Float32Array) => {
    const out = new Float32Array(n * h * dw);
    for (let e = 0; e < n; e++) for (let i = 0; i < h; i++) out.set(w.subarray((e * h + i) * d, (e * h + i + 1) * d), (e * h + i) * dw);
    return out;
  };
  if (expert === "swiglu") return { wGate, wGateProj: widenIn(weights.wGateProj!), wUp: widenIn(weights.wUp!), wDown: widenOut(weights.wDown!) };
  return { wGate, w1: widenIn(weights.w1!), b1: new Float32Array(n * h), w2: widenOut(weights.w2!), b2: new Float32Array(n * dw) };
}

/** Loads one layer (loadMoELayer) and returns it as a working block. */
export async function loadMoE(options: LoadMoEOptions): Promise<LoadedMoE> {
  const { config: _c, files: _f, layer: _l, onProgress: _p, onNote: _n, signal: _s, fetch: _fe, ...runtime } = options;
  const loaded = await loadMoELayer(options);
  const { dModel: d, dHidden: h, numExperts: n, k, expert, weights } = loaded.config;
  const routed = await createMoE({ ...runtime, dModel: d + n, dHidden: h, numExperts: n, k: 1, expert, noisyGating: false, weights: selectorWeights(loaded) });
  let shared: MoELocalLayer | undefined;
  try {
    if (loaded.shared) {
      const s = loaded.shared;
      shared = await createMoE({
        ...runtime, dModel: d, dHidden: s.dHidden, numExperts: 1, k: 1, expert: "swiglu", noisyGating: false,
        weights: { wGate: new Float32Array(d), wGateProj: s.wGateProj, wUp: s.wUp, wDown: s.wDown },
      });
    }
  } catch (error) {
    routed.dispose();
    throw error;
  }

  const prepare = (x: Float32Array) => {
    if (!(x instanceof Float32Array) || x.length === 0 || x.length % d !== 0) {
      throw new MoEError("INPUT_SHAPE", `x must be a non-empty Float32Array of B × ${d} values (hidden_size ${d}), got ${x instanceof Float32Array ? `${x.length} values` : typeof x}`);
    }
    const b = x.length / d;
    const logits = new Float32Array(b * n);
    for (let r = 0; r < b; r++) {
      for (let e = 0; e < n; e++) {
        let acc = 0;
        for (let i = 0; i < d; i++) acc += x[r * d + i] * weights.wGate[i * n + e];
        logits[r * n + e] = acc;
      }
    }
    const { topkIndices, topkGates } = route(logits, b, n, k, loaded.routing);
    const rows = new Float32Array(b * k * (d + n));
    for (let r = 0; r < b; r++) {
      for (let s = 0; s < k; s++) {
        const o = (r * k + s) * (d + n);
        rows.set(x.subarray(r * d, (r + 1) * d), o);
        rows[o + d + topkIndices[r * k + s]] = 1;
      }
    }
    return { b, rows, topkIndices, topkGates };
  };
  const finish = (x: Float32Array, b: number, yRows: Float32Array, ySharedOut: Float32Array | undefined, topkIndices: Int32Array, topkGates: Float32Array): LoadedMoEResult => {
    const y = new Float32Array(b * d);
    for (let r = 0; r < b; r++) {
      for (let s = 0; s < k; s++) {
        const g = topkGates[r * k + s];
        const o = (r * k + s) * (d + n);
        for (let i = 0; i < d; i++) y[r * d + i] += g * yRows[o + i];
      }
      if (ySharedOut) {
        const gate = loaded.shared!.gate;
        let factor = 1;
        if (gate) {
          let z = 0;
          for (let i = 0; i < d; i++) z += x[r * d + i] * gate[i];
          factor = 1 / (1 + Math.exp(-z));
        }
        for (let i = 0; i < d; i++) y[r * d + i] += factor * ySharedOut[r * d + i];
      }
    }
    return { y, topkIndices, topkGates };
  };

  return {
    description: loaded.description,
    routing: loaded.routing,
    async forward(x) {
      const p = prepare(x);
      const [a, s] = await Promise.all([routed.forward(p.rows), shared?.forward(x)]);
      return finish(x, p.b, a.y, s?.y, p.topkIndices, p.topkGates);
    },
    forwardSync(x) {
      const p = prepare(x);
      return finish(x, p.b, routed.forwardSync(p.rows).y, shared?.forwardSync(x).y, p.topkIndices, p.topkGates);
    },
    dispose() {
      routed.dispose();
      shared?.dispose();
    },
  };
}
