// ONNX models of one Mixture-of-Experts layer around ONNX Runtime's fused operator
// com.microsoft::MoE, written by a minimal protobuf (proto3 wire format) writer. Plain ESM, no
// host APIs: the benchmark's ORT peer (bench/peer-ort.mjs) uses it in every runtime, and
// test/ort-moe.test.ts checks the operator against float64 references with it. qmoeModel writes
// the quantized com.microsoft::QMoE (test/ort-qmoe.test.ts).
//
// The operator's layout: expert weights [experts, out, in]; fc1 of SwiGLU with swiglu_fusion = 1
// holds gate and up rows interleaved (row 2r = gate r, row 2r+1 = up r); biases [experts, out].
// normalize_routing_weights = 1 renormalises the k picked softmax probabilities, which equals a
// softmax over the top-k logits (the paper's gating at inference).

// Chunks, not one array of numbers: the largest case's initializers are hundreds of MiB, which a
// number[] would hold at 8 bytes a byte; nested messages are spliced in without copying.
class Pb {
  constructor() {
    /** @type {Uint8Array[]} */
    this.chunks = [];
    /** @type {number[]} */
    this.small = [];
    this.length = 0;
  }
  flush() {
    if (this.small.length) {
      this.chunks.push(Uint8Array.from(this.small));
      this.small = [];
    }
  }
  /** @param {bigint | number} v */
  varint(v) {
    let x = BigInt.asUintN(64, BigInt(v));
    do {
      const byte = Number(x & 0x7fn);
      x >>= 7n;
      this.small.push(x ? byte | 0x80 : byte);
      this.length++;
    } while (x);
  }
  /** @param {number} field @param {number} wire */
  key(field, wire) {
    this.varint((field << 3) | wire);
  }
  /** @param {number} field @param {number | bigint} v */
  int(field, v) {
    this.key(field, 0);
    this.varint(v);
    return this;
  }
  /** @param {number} field @param {number} v */
  float(field, v) {
    this.key(field, 5);
    this.small.push(...new Uint8Array(new Float32Array([v]).buffer));
    this.length += 4;
    return this;
  }
  /** @param {number} field @param {Uint8Array} v */
  bytes(field, v) {
    this.key(field, 2);
    this.varint(v.length);
    this.flush();
    this.chunks.push(v);
    this.length += v.length;
    return this;
  }
  /** @param {number} field @param {string} v */
  string(field, v) {
    return this.bytes(field, new TextEncoder().encode(v));
  }
  /** @param {number} field @param {Pb} m */
  message(field, m) {
    this.key(field, 2);
    this.varint(m.length);
    this.flush();
    m.flush();
    this.chunks.push(...m.chunks);
    this.length += m.length;
    return this;
  }
  done() {
    this.flush();
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

const FLOAT = 1;
const UINT8 = 2;

/** @param {string} name @param {number[]} dims @param {Float32Array | Uint8Array} data float32, or uint8 for a Uint8Array */
function tensorProto(name, dims, data) {
  const t = new Pb();
  for (const d of dims) t.int(1, d);
  return t
    .int(2, data instanceof Uint8Array ? UINT8 : FLOAT)
    .string(8, name)
    .bytes(9, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
}

/** @param {string} name @param {(number | string)[]} dims a string is a symbolic dimension */
function valueInfo(name, dims) {
  const shape = new Pb();
  for (const d of dims) shape.message(1, typeof d === "string" ? new Pb().string(2, d) : new Pb().int(1, d));
  return new Pb().string(1, name).message(2, new Pb().message(1, new Pb().int(1, FLOAT).message(2, shape)));
}

/** @typedef {["int", number] | ["float", number] | ["string", string]} Attr */

/** @param {string} name @param {Attr} attr */
function attribute(name, [kind, v]) {
  const a = new Pb().string(1, name);
  if (kind === "int") return a.int(3, v).int(20, 2);
  if (kind === "float") return a.float(2, /** @type {number} */ (v)).int(20, 1);
  return a.bytes(4, new TextEncoder().encode(/** @type {string} */ (v))).int(20, 3);
}

/**
 * @typedef {object} MoEModelSpec
 * @property {number | string} batch   rows of x; a string makes it a symbolic dimension
 * @property {number} d                model width
 * @property {number} h                expert hidden width
 * @property {number} n                experts
 * @property {number} k                experts per row
 * @property {"relu" | "swiglu"} activation
 * @property {Float32Array} fc1        [n, fc1Out, d], fc1Out = h (relu) or 2h (swiglu, interleaved)
 * @property {Float32Array} fc2        [n, d, h]
 * @property {Float32Array} [fc1Bias]  [n, fc1Out]
 * @property {Float32Array} [fc2Bias]  [n, d]
 * @property {Float32Array} [wGate]    [d, n]: the graph computes the router logits x · wGate;
 *                                     without it the logits are a second input, router_logits [batch, n]
 * @property {0 | 1} [normalize]       normalize_routing_weights (default 1)
 */

/**
 * The MoE and QMoE operators' shared attributes: top-k, the renormalised softmax, the activation.
 * SwiGLU as plain SiLU gating, silu(gate) · up: the operator's SwiGLU is gate · σ(α·gate) · (up + β),
 * clamped at swiglu_limit.
 * @returns {Record<string, Attr>}
 */
function routingAttrs(k, normalize, swiglu) {
  const attrs = /** @type {Record<string, Attr>} */ ({
    k: ["int", k],
    normalize_routing_weights: ["int", normalize],
    activation_type: ["string", swiglu ? "swiglu" : "relu"],
  });
  if (swiglu) Object.assign(attrs, { swiglu_fusion: ["int", 1], activation_alpha: ["float", 1], activation_beta: ["float", 0], swiglu_limit: ["float", 3e38] });
  return attrs;
}

/** A graph that starts with router_logits = input · w_gate when the gate weights are given (else router_logits is an input). */
function gatingGraph(wGate) {
  const graph = new Pb();
  if (wGate) graph.message(1, new Pb().string(1, "input").string(1, "w_gate").string(2, "router_logits").string(3, "gate").string(4, "MatMul"));
  return graph;
}

/** The model around a graph: its inputs and output, the IR version and the two opsets. */
function modelOf(graph, batch, d, n, wGate) {
  graph.message(11, valueInfo("input", [batch, d]));
  if (!wGate) graph.message(11, valueInfo("router_logits", [batch, n]));
  graph.message(12, valueInfo("output", [batch, d]));
  return new Pb()
    .int(1, 8) // ir_version
    .string(2, "edge-moe")
    .message(7, graph)
    .message(8, new Pb().string(1, "").int(2, 17))
    .message(8, new Pb().string(1, "com.microsoft").int(2, 1))
    .done();
}

/**
 * One ONNX model: x [batch, d] (→ MatMul(wGate) →) com.microsoft::MoE → output [batch, d].
 * Inputs are named "input" (and "router_logits" without wGate).
 * @param {MoEModelSpec} spec
 * @returns {Uint8Array} the serialized ModelProto
 */
export function moeModel(spec) {
  const { batch, d, h, n, k, activation, fc1, fc2, fc1Bias, fc2Bias, wGate, normalize = 1 } = spec;
  const swiglu = activation === "swiglu";
  const fc1Out = swiglu ? 2 * h : h;
  if (fc1.length !== n * fc1Out * d || fc2.length !== n * d * h)
    throw new RangeError(`moeModel: fc1 must hold ${n}·${fc1Out}·${d} and fc2 ${n}·${d}·${h} values`);
  const attrs = routingAttrs(k, normalize, swiglu);

  const graph = gatingGraph(wGate);
  const moe = new Pb()
    .string(1, "input")
    .string(1, "router_logits")
    .string(1, "fc1")
    .string(1, fc1Bias ? "fc1_bias" : "")
    .string(1, "fc2");
  if (fc2Bias) moe.string(1, "fc2_bias");
  moe.string(2, "output").string(3, "moe").string(4, "MoE").string(7, "com.microsoft");
  for (const [name, value] of Object.entries(attrs)) moe.message(5, attribute(name, value));
  graph.message(1, moe).string(2, "moe");
  if (wGate) graph.message(5, tensorProto("w_gate", [d, n], wGate));
  graph.message(5, tensorProto("fc1", [n, fc1Out, d], fc1));
  if (fc1Bias) graph.message(5, tensorProto("fc1_bias", [n, fc1Out], fc1Bias));
  graph.message(5, tensorProto("fc2", [n, d, h], fc2));
  if (fc2Bias) graph.message(5, tensorProto("fc2_bias", [n, d], fc2Bias));
  return modelOf(graph, batch, d, n, wGate);
}

/**
 * fc1 of a SwiGLU expert set in the operator's layout, from gate and up rows [n, h, d] each
 * (the [out, in] layout): row 2r is gate row r, row 2r+1 up row r.
 * @param {ArrayLike<number>} gate @param {ArrayLike<number>} up
 * @param {number} n @param {number} h @param {number} d
 */
export function interleaveSwiglu(gate, up, n, h, d) {
  const fc1 = new Float32Array(n * 2 * h * d);
  for (let e = 0; e < n; e++) {
    for (let r = 0; r < h; r++) {
      const src = (e * h + r) * d;
      const dst = (e * 2 * h + 2 * r) * d;
      for (let i = 0; i < d; i++) {
        fc1[dst + i] = gate[src + i];
        fc1[dst + d + i] = up[src + i];
      }
    }
  }
  return fc1;
}

/**
 * Per expert, [rows, cols] → [cols, rows]: edge-moe's [in, out] expert matrices to the operator's [out, in].
 * @param {Float32Array} a [n, rows, cols] @param {number} n @param {number} rows @param {number} cols
 */
export function transposeExperts(a, n, rows, cols) {
  const t = new Float32Array(n * rows * cols);
  for (let e = 0; e < n; e++) {
    const o = e * rows * cols;
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[o + c * rows + r] = a[o + r * cols + c];
  }
  return t;
}

/**
 * The model of a benchmark case from edge-moe's weight layout (bench/cases.mjs makeWeights:
 * wGate [d, n]; relu w1 [n, d, h], b1 [n, h], w2 [n, h, d], b2 [n, d]; swiglu wGateProj and wUp
 * [n, d, h], wDown [n, h, d]). gelu is not offered: the operator's gelu is the tanh approximation.
 * @param {{ d: number, h: number, n: number, k: number }} shape
 * @param {"relu" | "swiglu"} expert
 * @param {Record<string, Float32Array>} w
 * @param {number | string} [batch] default: a symbolic dimension, one model for every batch size
 */
export function caseModel({ d, h, n, k }, expert, w, batch = "batch") {
  if (expert === "swiglu") {
    const fc1 = interleaveSwiglu(transposeExperts(w.wGateProj, n, d, h), transposeExperts(w.wUp, n, d, h), n, h, d);
    return moeModel({ batch, d, h, n, k, activation: "swiglu", fc1, fc2: transposeExperts(w.wDown, n, h, d), wGate: w.wGate });
  }
  if (expert !== "relu") throw new RangeError(`caseModel: ${expert} experts are not compared on ONNX Runtime (relu and swiglu are)`);
  return moeModel({
    batch,
    d,
    h,
    n,
    k,
    activation: "relu",
    fc1: transposeExperts(w.w1, n, d, h),
    fc1Bias: w.b1,
    fc2: transposeExperts(w.w2, n, h, d),
    fc2Bias: w.b2,
    wGate: w.wGate,
  });
}

// ---- com.microsoft::QMoE ------------------------------------------------------------------------
//
// The quantized operator takes the same routing and layout with uint8 expert weights
// [experts, out, in / (8 / bits)] and one float scale per output row [experts, out]; with no
// zero-point inputs a stored value q means (q − 2^(bits−1)) · scale (symmetric, offset by half
// the range). 4-bit values are packed two per byte, the even column in the low nibble.

/**
 * Symmetric quantization of expert matrices [n, out, in] (the operator's layout) to ORT's QMoE
 * convention, one scale per output row (blockSize 0) or per row and block of blockSize input
 * columns: scale = max|w| / (2^(bits−1) − 1), q = clamp(round(w / scale), −2^(bits−1),
 * 2^(bits−1) − 1) + 2^(bits−1); an all-zero row or block gets scale 1.
 * @param {Float32Array} w [n, out, in] @param {number} n @param {number} out @param {number} inDim
 * @param {8 | 4} bits @param {number} [blockSize] 0 (default), or a power of two ≥ 16 dividing inDim
 * @returns {{ q: Uint8Array, scales: Float32Array, dequantized: Float32Array }} q [n, out, in·bits/8],
 *   scales [n, out] or [n, out, in / blockSize]
 */
export function quantizeExperts(w, n, out, inDim, bits, blockSize = 0) {
  if (bits !== 8 && bits !== 4) throw new RangeError(`quantizeExperts: bits must be 8 or 4, not ${bits}`);
  if (bits === 4 && inDim % 2 !== 0) throw new RangeError(`quantizeExperts: 4-bit packing needs an even input width, not ${inDim}`);
  if (w.length !== n * out * inDim) throw new RangeError(`quantizeExperts: w must hold ${n}·${out}·${inDim} values, not ${w.length}`);
  if (blockSize !== 0 && (blockSize < 16 || (blockSize & (blockSize - 1)) !== 0 || inDim % blockSize !== 0))
    throw new RangeError(`quantizeExperts: blockSize must be 0 or a power of two ≥ 16 that divides the input width ${inDim}, not ${blockSize}`);
  const block = blockSize || inDim;
  const half = 1 << (bits - 1);
  const qmax = half - 1;
  const rowBytes = (inDim * bits) / 8;
  const q = new Uint8Array(n * out * rowBytes);
  const scales = new Float32Array((n * out * inDim) / block);
  const dequantized = new Float32Array(w.length);
  for (let r = 0; r < n * out; r++) {
    for (let b0 = 0; b0 < inDim; b0 += block) {
      const o = r * inDim + b0;
      let amax = 0;
      for (let i = 0; i < block; i++) amax = Math.max(amax, Math.abs(w[o + i]));
      const scale = Math.fround(amax > 0 ? amax / qmax : 1);
      scales[(r * inDim + b0) / block] = scale;
      for (let i = 0; i < block; i++) {
        const v = Math.min(qmax, Math.max(-half, Math.round(w[o + i] / scale)));
        dequantized[o + i] = v * scale;
        const u = v + half;
        const col = b0 + i;
        if (bits === 8) q[r * rowBytes + col] = u;
        else q[r * rowBytes + (col >> 1)] |= (col & 1) === 0 ? u : u << 4;
      }
    }
  }
  return { q, scales, dequantized };
}

/**
 * @typedef {object} QMoEModelSpec
 * @property {number | string} batch   rows of x; a string makes it a symbolic dimension
 * @property {number} d                model width
 * @property {number} h                expert hidden width
 * @property {number} n                experts
 * @property {number} k                experts per row
 * @property {"relu" | "swiglu"} activation
 * @property {8 | 4} bits              expert_weight_bits
 * @property {Uint8Array} fc1          [n, fc1Out, d·bits/8] (quantizeExperts of the MoE layout)
 * @property {Float32Array} fc1Scales  [n, fc1Out], or [n, fc1Out, d / blockSize]
 * @property {Uint8Array} fc2          [n, d, h·bits/8]
 * @property {Float32Array} fc2Scales  [n, d], or [n, d, h / blockSize]
 * @property {number} [blockSize]      0 (default): one scale per output row; else the attribute block_size
 * @property {Float32Array} [fc1Bias]  [n, fc1Out]
 * @property {Float32Array} [fc2Bias]  [n, d]
 * @property {Float32Array} [wGate]    [d, n]; without it the router logits are an input
 * @property {0 | 1} [normalize]       normalize_routing_weights (default 1)
 */

/**
 * One ONNX model: x [batch, d] (→ MatMul(wGate) →) com.microsoft::QMoE → output [batch, d].
 * Inputs are named "input" (and "router_logits" without wGate).
 * @param {QMoEModelSpec} spec
 * @returns {Uint8Array} the serialized ModelProto
 */
export function qmoeModel(spec) {
  const { batch, d, h, n, k, activation, bits, fc1, fc1Scales, fc2, fc2Scales, fc1Bias, fc2Bias, wGate, normalize = 1, blockSize = 0 } = spec;
  if (bits !== 8 && bits !== 4) throw new RangeError(`qmoeModel: bits must be 8 or 4, not ${bits}`);
  const swiglu = activation === "swiglu";
  const fc1Out = swiglu ? 2 * h : h;
  if (fc1.length !== (n * fc1Out * d * bits) / 8 || fc2.length !== (n * d * h * bits) / 8)
    throw new RangeError(`qmoeModel: fc1 must hold ${n}·${fc1Out}·${d}·${bits}/8 bytes and fc2 ${n}·${d}·${h}·${bits}/8`);
  const blocks1 = blockSize ? d / blockSize : 1;
  const blocks2 = blockSize ? h / blockSize : 1;
  if (fc1Scales.length !== n * fc1Out * blocks1 || fc2Scales.length !== n * d * blocks2)
    throw new RangeError(`qmoeModel: fc1Scales must hold ${n}·${fc1Out}·${blocks1} values and fc2Scales ${n}·${d}·${blocks2}`);
  const attrs = routingAttrs(k, normalize, swiglu);
  attrs.expert_weight_bits = ["int", bits];
  if (blockSize) attrs.block_size = ["int", blockSize];

  const graph = gatingGraph(wGate);
  const moe = new Pb()
    .string(1, "input")
    .string(1, "router_logits")
    .string(1, "fc1")
    .string(1, "fc1_scales")
    .string(1, fc1Bias ? "fc1_bias" : "")
    .string(1, "fc2")
    .string(1, "fc2_scales");
  if (fc2Bias) moe.string(1, "fc2_bias");
  moe.string(2, "output").string(3, "qmoe").string(4, "QMoE").string(7, "com.microsoft");
  for (const [name, value] of Object.entries(attrs)) moe.message(5, attribute(name, value));
  graph.message(1, moe).string(2, "qmoe");
  if (wGate) graph.message(5, tensorProto("w_gate", [d, n], wGate));
  graph.message(5, tensorProto("fc1", [n, fc1Out, (d * bits) / 8], fc1));
  graph.message(5, tensorProto("fc1_scales", blockSize ? [n, fc1Out, blocks1] : [n, fc1Out], fc1Scales));
  if (fc1Bias) graph.message(5, tensorProto("fc1_bias", [n, fc1Out], fc1Bias));
  graph.message(5, tensorProto("fc2", [n, d, (h * bits) / 8], fc2));
  graph.message(5, tensorProto("fc2_scales", blockSize ? [n, d, blocks2] : [n, d], fc2Scales));
  if (fc2Bias) graph.message(5, tensorProto("fc2_bias", [n, d], fc2Bias));
  return modelOf(graph, batch, d, n, wGate);
}

/**
 * caseModel's com.microsoft::QMoE counterpart: the case's experts in the operator's layout,
 * quantized by quantizeExperts (8 bits: one scale per output row, edge-moe's int8 granularity;
 * 4 bits: blockSize 32 by default, edge-moe's int4 blocks of 32 input rows); gate and biases f32.
 * @param {{ d: number, h: number, n: number, k: number }} shape
 * @param {"relu" | "swiglu"} expert
 * @param {Record<string, Float32Array>} w
 * @param {8 | 4} bits
 * @param {number} [blockSize] default 0 at 8 bits, 32 at 4 bits
 * @param {number | string} [batch]
 */
export function qcaseModel({ d, h, n, k }, expert, w, bits, blockSize = bits === 4 ? 32 : 0, batch = "batch") {
  const swiglu = expert === "swiglu";
  if (!swiglu && expert !== "relu") throw new RangeError(`qcaseModel: ${expert} experts are not compared on ONNX Runtime (relu and swiglu are)`);
  const fc1 = swiglu ? interleaveSwiglu(transposeExperts(w.wGateProj, n, d, h), transposeExperts(w.wUp, n, d, h), n, h, d) : transposeExperts(w.w1, n, d, h);
  const q1 = quantizeExperts(fc1, n, swiglu ? 2 * h : h, d, bits, blockSize);
  const q2 = quantizeExperts(transposeExperts(swiglu ? w.wDown : w.w2, n, h, d), n, d, h, bits, blockSize);
  return qmoeModel({
    batch,
    d,
    h,
    n,
    k,
    activation: expert,
    bits,
    blockSize,
    fc1: q1.q,
    fc1Scales: q1.scales,
    fc2: q2.q,
    fc2Scales: q2.scales,
    fc1Bias: swiglu ? undefined : w.b1,
    fc2Bias: swiglu ? undefined : w.b2,
    wGate: w.wGate,
  });
}
