// One call's routing plan, and the interface every expert back end implements.
//
// The gating (CPU kernels) turns x into a Plan: for each row its k experts and gates, and the
// (row, slot) pairs sorted by expert (a counting sort, as ggml's mul_mat_id groups rows), so that a
// back end streams each expert's weights once for all of its rows. A back end reads the plan and
// writes y; it never reaches into another back end or into the gating's memory.

/** The routing of one call. Immutable: a back end only reads it. */
export interface Plan {
  /** Rows B. */
  readonly batch: number;
  /** Experts per row. */
  readonly k: number;
  readonly numExperts: number;
  readonly dModel: number;
  /** x [B, dModel], row-major. */
  readonly x: Float32Array;
  /** [B, k]: each row's experts, by descending selection score. */
  readonly topkIndices: Int32Array;
  /** [B, k]: the weight each of those experts' outputs is multiplied by. */
  readonly topkGates: Float32Array;
  /** [n + 1]: expert e owns positions [expertOffsets[e], expertOffsets[e + 1]) of the sorted pairs. */
  readonly expertOffsets: Int32Array;
  /** [B·k]: the pair (row·k + slot) at each sorted position; stable, row-major within an expert. */
  readonly pairOf: Int32Array;
  /** [B·k]: the sorted position of each pair (the inverse of pairOf). */
  readonly posOf: Int32Array;
  /** Rows [first, first + rows) as a plan of their own (its own counting sort). */
  slice(first: number, rows: number): Plan;
}

/** Where a call's experts run. */
export interface ExpertBackend {
  readonly name: "cpu" | "gpu";
  /** y [B, dModel] = Σ_slot gate · expert(x row), for the plan's rows. */
  run(plan: Plan, y: Float32Array): void | Promise<void>;
  dispose(): void;
}

/**
 * A plan held in JavaScript arrays: x and the top-k are taken as they are (not copied), the
 * sorted pairs are computed here. The same counting sort as the kernels' buildPlan
 * (assembly/experts.ts), so both give the same plan.
 */
export function planOf(x: Float32Array, topkIndices: Int32Array, topkGates: Float32Array, k: number, numExperts: number): Plan {
  const pairs = topkIndices.length;
  const batch = pairs / k;
  const expertOffsets = new Int32Array(numExperts + 1);
  const pairOf = new Int32Array(pairs);
  const posOf = new Int32Array(pairs);
  for (let q = 0; q < pairs; q++) expertOffsets[topkIndices[q] + 1]++;
  for (let e = 0; e < numExperts; e++) expertOffsets[e + 1] += expertOffsets[e];
  const cursor = expertOffsets.slice(0, numExperts);
  for (let q = 0; q < pairs; q++) {
    const p = cursor[topkIndices[q]]++;
    pairOf[p] = q;
    posOf[q] = p;
  }
  const dModel = x.length / batch;
  return Object.freeze({
    batch,
    k,
    numExperts,
    dModel,
    x,
    topkIndices,
    topkGates,
    expertOffsets,
    pairOf,
    posOf,
    slice: (first: number, rows: number) => sliceOf(x, topkIndices, topkGates, k, numExperts, first, rows),
  });
}

/** Rows [first, first + rows) of a plan's inputs as a plan of their own. */
export function sliceOf(x: Float32Array, topkIndices: Int32Array, topkGates: Float32Array, k: number, numExperts: number, first: number, rows: number): Plan {
  const d = x.length / (topkIndices.length / k);
  if (!Number.isInteger(first) || !Number.isInteger(rows) || first < 0 || rows < 1 || first + rows > topkIndices.length / k) {
    throw new RangeError(`plan.slice(${first}, ${rows}) is outside the plan's ${topkIndices.length / k} rows`);
  }
  return planOf(
    x.subarray(first * d, (first + rows) * d),
    topkIndices.subarray(first * k, (first + rows) * k),
    topkGates.subarray(first * k, (first + rows) * k),
    k,
    numExperts,
  );
}
