// The golden cases of the conformance suite: every expert kind, noisy and clean gating, odd sizes
// (SIMD tails, odd n), k = n, B = 1 and d = 1. The files are bundled into the suite as bytes
// (esbuild --loader:.safetensors=binary), so one bundle runs unchanged in every runtime.
import oddReluNoisy from "../fixtures/vectors/odd_relu_noisy_k2_n8_d13_h37.safetensors";
import reluClean from "../fixtures/vectors/relu_clean_k1_n16_d256.safetensors";
import keqnReluNoisy from "../fixtures/vectors/keqn_relu_noisy_k4_n4.safetensors";
import oddGeluClean from "../fixtures/vectors/odd_gelu_clean_k2_n5_d7_h21.safetensors";
import b1GeluNoisy from "../fixtures/vectors/b1_d1_gelu_noisy_k2_n4.safetensors";
import oddSwigluNoisy from "../fixtures/vectors/odd_swiglu_noisy_k4_n7_d31_h19.safetensors";
import keqnSwigluClean from "../fixtures/vectors/keqn_swiglu_clean_k4_n4.safetensors";

export const CONFORMANCE_CASES: ReadonlyArray<{ name: string; bytes: Uint8Array }> = [
  { name: "odd_relu_noisy_k2_n8_d13_h37", bytes: oddReluNoisy },
  { name: "relu_clean_k1_n16_d256", bytes: reluClean },
  { name: "keqn_relu_noisy_k4_n4", bytes: keqnReluNoisy },
  { name: "odd_gelu_clean_k2_n5_d7_h21", bytes: oddGeluClean },
  { name: "b1_d1_gelu_noisy_k2_n4", bytes: b1GeluNoisy },
  { name: "odd_swiglu_noisy_k4_n7_d31_h19", bytes: oddSwigluNoisy },
  { name: "keqn_swiglu_clean_k4_n4", bytes: keqnSwigluClean },
];

// A family checkpoint for the loader's checks: deepseek_v3's fixture (test/fixtures/families/),
// its config.json as an object (family-config.ts).
export { default as deepseekModel } from "../fixtures/families/deepseek_v3/model.safetensors";
export { default as deepseekGolden } from "../fixtures/families/deepseek_v3/golden.safetensors";
export { DEEPSEEK_V3_CONFIG } from "./family-config.ts";
