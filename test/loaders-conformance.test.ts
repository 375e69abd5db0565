// The loader checks of the conformance suite (test/conformance/suite.ts runLoaderChecks) run here
// in Node too, against the same fixture server the runtimes use: from bytes, a path, and URLs on a
// server with and without Range support; and the bundled config is the fixture's config.json.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DEEPSEEK_V3_CONFIG } from "./conformance/family-config.ts";
import { fixtureServer } from "./conformance/harness.ts";
import { loadMoE } from "edge-moe";

const dir = new URL("./fixtures/families/deepseek_v3/", import.meta.url).pathname;

describe("the conformance suite's loader fixture", () => {
  it("its config is the fixture's config.json", () => {
    expect(DEEPSEEK_V3_CONFIG).toEqual(JSON.parse(readFileSync(`${dir}config.json`, "utf8")));
  });

  it("the fixture server answers Range requests on /range/ and ignores them on /whole/; loadMoE reads both to the same bits", async () => {
    const server = await fixtureServer();
    try {
      const size = readFileSync(`${dir}model.safetensors`).length;
      const ranged = await fetch(server.urls.range, { headers: { Range: "bytes=0-7" } });
      expect(ranged.status).toBe(206);
      expect(ranged.headers.get("content-range")).toBe(`bytes 0-7/${size}`);
      expect((await ranged.arrayBuffer()).byteLength).toBe(8);
      const whole = await fetch(server.urls.whole, { headers: { Range: "bytes=0-7" } });
      expect(whole.status).toBe(200);
      expect((await whole.arrayBuffer()).byteLength).toBe(size);
      const x = new Float32Array(16 * 3).map((_, i) => Math.sin(i));
      const outputs = [];
      for (const [model, notes] of [
        [server.urls.range, 0],
        [server.urls.whole, 1],
        [`${dir}model.safetensors`, 0],
      ] as const) {
        const seen: string[] = [];
        const layer = await loadMoE({ config: DEEPSEEK_V3_CONFIG, files: { "model.safetensors": model }, layer: 1, onNote: (n) => seen.push(n) });
        expect(seen.length, String(model)).toBe(notes);
        outputs.push(Array.from(layer.forwardSync(x).y));
        layer.dispose();
      }
      expect(outputs[1]).toEqual(outputs[0]);
      expect(outputs[2]).toEqual(outputs[0]);
    } finally {
      await server.close();
    }
  });
});
